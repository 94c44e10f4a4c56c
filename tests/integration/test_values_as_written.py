"""Data goes into the store exactly as written (issue 16, "Silent data changes").

A file's fields are read as text and typed by the spec: a ``string`` key, feature or label
keeps its characters (``0001``, ``1e3``, ``02134``, ``NA``), only the texts a column's type
(or the spec) names as missing are missing, and numbers still parse as before. Each case
goes through ``sml features`` into the local store and out through ``read()``.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from serverless_ml.datasets import iris, load_spec_file, titanic
from serverless_ml.datasets.sources import Source, load_source
from serverless_ml.datasets.spec import NUMERIC_MISSING
from serverless_ml.datasets.validation import build_feature_rows
from serverless_ml.errors import DataValidationError
from serverless_ml.feature_store.base import Feature
from serverless_ml.feature_store.local import LocalFeatureStore

pytestmark = pytest.mark.integration

CODES_CSV = """\
code,zip,grade,note,empty_is_text,weight,count,kind
0001,02134,01,NA,,1.5,3,007
1e3,00501,NA,,x,NA,,7
1,2134,02,None,,,N/A,007
1.0,10001,01,null,y,nan,null,7
"""

CODES_SPEC = """\
name: codes
source: {path: codes.csv}
label: kind
classes: ["007", "7"]
primary_key: {column: code, type: string}
features:
  zip: {type: string}
  grade: {type: string, categories: ["01", "02", "NA"]}
  note: {type: string, nullable: true}
  empty_is_text: {type: string, missing_values: []}
  weight: {type: double, nullable: true}
  count: {type: bigint, nullable: true}
"""


def _ok(result) -> str:  # noqa: ANN001
    returncode, stdout, stderr = result
    assert returncode == 0, stderr
    return stdout


def _features(run_cli, tmp_path: Path, store_dir: Path, csv: str, spec: str) -> pd.DataFrame:  # noqa: ANN001
    (tmp_path / "codes.csv").write_text(csv, encoding="utf-8")
    (tmp_path / "codes.yaml").write_text(spec, encoding="utf-8")
    _ok(run_cli("features", "--dataset", "codes.yaml"))
    return LocalFeatureStore(store_dir).get_feature_group("codes", 1).read()


def test_text_columns_keep_their_characters_through_the_store(run_cli, tmp_path: Path, store_dir: Path) -> None:
    table = _features(run_cli, tmp_path, store_dir, CODES_CSV, CODES_SPEC).set_index("code")
    # Four keys, not "1.0" three times and "1000.0": numbers only in a number column.
    assert sorted(table.index) == ["0001", "1", "1.0", "1e3"]
    assert table["zip"].to_dict() == {"0001": "02134", "1e3": "00501", "1": "2134", "1.0": "10001"}
    assert table["grade"].to_dict() == {"0001": "01", "1e3": "NA", "1": "02", "1.0": "01"}
    assert table["kind"].to_dict() == {"0001": "007", "1e3": "7", "1": "007", "1.0": "7"}
    # A text column: only the empty field is missing; NA, None and null are words.
    assert table["note"].to_dict() == {"0001": "NA", "1e3": None, "1": "None", "1.0": "null"}
    # missing_values: [] makes the empty field a value too: stored as "".
    assert table["empty_is_text"].to_dict() == {"0001": "", "1e3": "x", "1": "", "1.0": "y"}
    # Number columns: the empty field and NA, N/A, nan, null are missing, as before.
    assert table.loc["0001", "weight"] == 1.5 and table["weight"].drop("0001").isna().all()
    assert table.loc["0001", "count"] == 3 and table["count"].drop("0001").isna().all()


def test_a_spec_can_say_which_texts_are_missing(run_cli, tmp_path: Path, store_dir: Path) -> None:
    csv = "code,zip,grade,note,empty_is_text,weight,count,kind\nA,1,01,?,,?,-,007\nB,2,02,,,2.5,4,7\n"
    spec = CODES_SPEC.replace("features:", 'missing_values: ["?"]\nfeatures:').replace(
        "count: {type: bigint, nullable: true}", 'count: {type: bigint, nullable: true, missing_values: ["-"]}'
    )
    table = _features(run_cli, tmp_path, store_dir, csv, spec).set_index("code")
    assert table["note"].to_dict() == {"A": None, "B": ""}, "'?' is missing; '' is a value once the spec lists its own"
    assert pd.isna(table.loc["A", "weight"]) and table.loc["B", "weight"] == 2.5
    assert pd.isna(table.loc["A", "count"]) and table.loc["B", "count"] == 4


def test_a_missing_word_the_spec_does_not_list_is_not_a_number(tmp_path: Path) -> None:
    (tmp_path / "codes.csv").write_text("code,zip,grade,note,empty_is_text,weight,count,kind\nA,1,01,,,NA,1,007\n")
    (tmp_path / "codes.yaml").write_text(CODES_SPEC.replace("features:", 'missing_values: [""]\nfeatures:'))
    spec = load_spec_file(tmp_path / "codes.yaml")
    with pytest.raises(DataValidationError, match=r"column 'weight', row 1 \(line 2\): 'NA' is not a number"):
        build_feature_rows(load_source(spec), spec, origin="backfill", event_time="2024-01-01")


def test_numbers_are_the_nearest_double_to_their_text(tmp_path: Path) -> None:
    """pandas' fast parser misses the nearest double by up to 1e-12 relative on long or
    large-exponent decimals; the store holds what Python's float reads."""
    texts = ["0.1", "1.2345678901234567e-15", "9.876543210987654e+19", "123456.78901234567", "5e-324", "1e3"]
    csv = "code,zip,grade,note,empty_is_text,weight,count,kind\n" + "".join(
        f"k{i},1,01,,,{t},{2**53 + 1 if i == 0 else ''},007\n" for i, t in enumerate(texts)
    )
    (tmp_path / "codes.csv").write_text(csv)
    (tmp_path / "codes.yaml").write_text(CODES_SPEC)
    spec = load_spec_file(tmp_path / "codes.yaml")
    rows = build_feature_rows(load_source(spec), spec, origin="backfill", event_time="2024-01-01")
    assert rows["weight"].tolist() == [float(t) for t in texts]
    # A whole number beside missing ones stays exact (a float would round 2**53 + 1).
    assert int(rows["count"].iloc[0]) == 2**53 + 1


@pytest.mark.parametrize("spec", [titanic.SPEC, iris.SPEC], ids=["titanic", "iris"])
def test_builtins_read_as_text_store_what_typed_reading_stored(spec, data_dir: Path) -> None:  # noqa: ANN001
    """The built-ins' rows are the same whether the file is read as text and typed by the
    spec (now) or typed by pandas' reader (before)."""
    path = data_dir / f"{spec.name}.csv"
    typed = pd.read_csv(io.StringIO(path.read_text(encoding="utf-8")))
    before = build_feature_rows(Source(typed, str(path), True), spec, "backfill", spec.backfill_event_time)
    now = build_feature_rows(load_source(spec, data_dir=data_dir), spec, "backfill", spec.backfill_event_time)
    pd.testing.assert_frame_equal(now, before, check_exact=True)


def test_numeric_missing_words_are_pandas_defaults() -> None:
    """No numeric file reads differently: a number column's missing texts are the words
    pandas' reader took as missing."""
    from pandas._libs.parsers import STR_NA_VALUES

    assert set(NUMERIC_MISSING) == set(STR_NA_VALUES)


def test_a_key_name_with_a_quote_upserts(tmp_path: Path) -> None:
    """The merge predicate quotes the key's name: a second, changing insert works."""
    store = LocalFeatureStore(tmp_path / "store")
    key = 'odd"key'
    group = store.get_or_create_feature_group(
        "odd", 1, [key], None, features=[Feature(key, "string"), Feature("v", "bigint")]
    )
    group.insert(pd.DataFrame({key: ["a", "b"], "v": [1, 2]}))
    result = group.insert(pd.DataFrame({key: ["b", "c"], "v": [20, 3]}))
    assert (result.inserted, result.updated) == (1, 1)
    assert group.read()["v"].tolist() == [1, 20, 3]
    group.delete(pd.DataFrame({key: ["a"]}))
    assert group.read()[key].tolist() == ["b", "c"]
    assert np.array_equal(group.read()["v"].to_numpy(), [20, 3])


def test_a_typed_file_with_numbers_for_a_text_key_is_refused(run_cli, tmp_path: Path, store_dir: Path) -> None:
    """A Parquet column of numbers has lost how a text key was written (0001 is 1): ingest
    and labels refuse it in one line, rather than add key '1' beside '0001' or label it."""
    before = _features(run_cli, tmp_path, store_dir, CODES_CSV, CODES_SPEC)
    table = store_dir / "codes_1"
    files = sorted(str(p.relative_to(table)) for p in table.rglob("*"))
    rows = pd.DataFrame({"code": [1, 2], "zip": ["02134", "02135"], "grade": ["01", "02"], "note": ["a", "b"],
                         "empty_is_text": ["", ""], "weight": [1.0, 2.0], "count": [1, 2], "kind": ["7", "007"]})
    rows.to_parquet(tmp_path / "live.parquet")
    returncode, stdout, stderr = run_cli("ingest", "--dataset", "codes.yaml", "--source", "live.parquet")
    assert returncode == 2 and stdout == ""
    assert stderr.strip().splitlines() == [
        "error: live.parquet: column 'code' holds numbers, but the key is text: write the keys as "
        "text (a number loses how the key was written: 015051 would become 15051, another key)"
    ]
    pd.DataFrame({"code": [1], "kind": ["7"]}).to_parquet(tmp_path / "labels.parquet")
    returncode, _, stderr = run_cli("labels", "--dataset", "codes.yaml", "--source", "labels.parquet")
    assert returncode == 2
    assert stderr.strip().splitlines() == [
        "error: labels.parquet: column 'code' holds numbers, but the key is text: write the keys "
        "as text (a number loses how the key was written: 015051 would become 15051, another key)"
    ]
    assert sorted(str(p.relative_to(table)) for p in table.rglob("*")) == files
    pd.testing.assert_frame_equal(LocalFeatureStore(store_dir).get_feature_group("codes", 1).read(), before)
    # The same keys as text are taken.
    rows.assign(code=["0002", "0003"]).to_parquet(tmp_path / "live.parquet")
    assert run_cli("ingest", "--dataset", "codes.yaml", "--source", "live.parquet")[0] == 0
