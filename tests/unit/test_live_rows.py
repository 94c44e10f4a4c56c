"""Live rows (`sml ingest`), in process: the label optional, each row's event time from a
column the spec names, Parquet files read with their types, and the ingest summary. The
writes themselves run on a real Delta store in tests/integration/test_ingest.py."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from serverless_ml.datasets import iris, titanic
from serverless_ml.datasets.sources import Source, load_rows, read_csv_file
from serverless_ml.datasets.spec import parse_spec
from serverless_ml.datasets.validation import build_feature_rows
from serverless_ml.errors import DataValidationError, SmlError, SpecError
from serverless_ml.pipelines.ingest import IngestReport, check_event_time_options, read_live_rows

pytestmark = pytest.mark.unit

STAMP = pd.Timestamp("2024-02-01", tz="UTC")


def _things(**extra: object) -> object:
    return parse_spec({
        "name": "things", "label": "y", "classes": [0, 1], "primary_key": "id",
        "features": {"v": {"type": "double", "nullable": True}, "colour": {"type": "string", "categories": ["red", "white"]}},
        **extra,
    }, "things.yaml")


def _csv(tmp_path: Path, text: str, name: str = "things.csv") -> Source:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return Source(read_csv_file(path), str(path), True)


def _refused(call) -> str:  # noqa: ANN001
    with pytest.raises(DataValidationError) as info:
        call()
    assert "\n" not in str(info.value)
    return str(info.value)


# --- the label is optional for live rows, not for a backfill ------------------------------------


def test_a_missing_label_is_null_for_live_rows_and_refused_for_a_backfill(tmp_path: Path) -> None:
    spec = _things()
    source = _csv(tmp_path, "id,v,colour,y\n1,0.5,red,1\n2,,white,\n3,1.5,red,NA\n4,2.5,red,0\n")
    rows = build_feature_rows(source, spec, "live", STAMP, label_required=False)
    assert rows["y"].dtype == "Int64"  # an integer label with a gap: nullable, not float
    assert rows["y"].tolist() == [1, pd.NA, pd.NA, 0]
    # The backfill is unchanged: the first missing label is refused, naming it.
    message = _refused(lambda: build_feature_rows(source, spec, "backfill", STAMP))
    assert message.endswith("column 'y', row 2 (line 3): label is missing")
    # Every label present: the column stays int64, as a backfill's.
    full = _csv(tmp_path, "id,v,colour,y\n1,0.5,red,1\n2,,white,0\n", "full.csv")
    assert build_feature_rows(full, spec, "live", STAMP, label_required=False)["y"].dtype == np.int64


def test_a_label_column_that_is_absent_means_every_label_is_unknown(tmp_path: Path) -> None:
    source = _csv(tmp_path, "id,v,colour\n1,0.5,red\n2,,white\n")
    rows = build_feature_rows(source, _things(), "live", STAMP, label_required=False)
    assert rows["y"].isna().all() and rows["y"].dtype == "Int64"
    assert rows["origin"].tolist() == ["live", "live"]
    # A backfill needs the column, and says so as before.
    message = _refused(lambda: build_feature_rows(source, _things(), "backfill", STAMP))
    assert "missing column(s) 'y'" in message and "expected id, v, colour, y" in message
    # A text label: None where unknown.
    text = iris.SPEC
    path = tmp_path / "iris.csv"
    path.write_text("sepal_length,sepal_width,petal_length,petal_width\n5.1,3.5,1.4,0.2\n")
    rows = build_feature_rows(Source(read_csv_file(path), str(path), True), text, "live", STAMP, label_required=False)
    assert rows["variety"].tolist() == [None]


def test_a_label_that_is_given_must_still_be_a_class(tmp_path: Path) -> None:
    source = _csv(tmp_path, "id,v,colour,y\n1,0.5,red,\n2,,white,2\n")
    message = _refused(lambda: build_feature_rows(source, _things(), "live", STAMP, label_required=False))
    assert message.endswith("column 'y', row 2 (line 3): label 2 is not one of 0, 1")
    path = tmp_path / "iris.csv"
    path.write_text("sepal_length,sepal_width,petal_length,petal_width,variety\n5.1,3.5,1.4,0.2,\n5.1,3.5,1.4,0.2, Rose\n")
    iris_source = Source(read_csv_file(path), str(path), True)
    message = _refused(lambda: build_feature_rows(iris_source, iris.SPEC, "live", STAMP, label_required=False))
    assert message.endswith("column 'variety', row 2 (line 3): label ' Rose' is not one of Setosa, Versicolor, Virginica")


# --- each row's event time from a column ----------------------------------------------------------


def test_event_times_are_read_from_the_named_column_naive_ones_as_utc(tmp_path: Path) -> None:
    spec = _things(event_time_column="seen")
    source = _csv(tmp_path, "id,v,colour,y,seen\n"
                            "1,0.5,red,1,2024-02-01\n"
                            "2,0.5,red,1,2024-02-01T10:30:00\n"
                            "3,0.5,red,1,2024-02-01 10:30:00+02:00\n"
                            "4,0.5,red,1, 2024-02-01T23:59:59.123456Z \n")
    rows = build_feature_rows(source, spec, "live", None, label_required=False, event_time_column="seen")
    assert str(rows["event_time"].dtype) == "datetime64[us, UTC]"
    assert rows["event_time"].tolist() == [
        pd.Timestamp("2024-02-01", tz="UTC"), pd.Timestamp("2024-02-01T10:30", tz="UTC"),
        pd.Timestamp("2024-02-01T08:30", tz="UTC"), pd.Timestamp("2024-02-01T23:59:59.123456", tz="UTC"),
    ]


@pytest.mark.parametrize(("value", "problem"), [
    ("", "event time is missing"),
    ("now", "event time 'now' is not an ISO date or date-time"),
    ("2024-13-01", "event time '2024-13-01' is not an ISO date or date-time"),
    ("01/02/2024", "event time '01/02/2024' is not an ISO date or date-time"),
    ("1969-12-31", "event time '1969-12-31' is outside the supported dates (1970-01-01 to 2261-12-31)"),
    ("9999-01-01", "event time '9999-01-01' is outside the supported dates"),
    ("2024-02-01T10:00:00.123456789", "event time '2024-02-01T10:00:00.123456789' is finer than a microsecond"),
])
def test_a_bad_event_time_is_refused_naming_column_row_and_value(tmp_path: Path, value: str, problem: str) -> None:
    spec = _things(event_time_column="seen")
    source = _csv(tmp_path, f"id,v,colour,y,seen\n1,0.5,red,1,2024-02-01\n2,0.5,red,1,{value}\n")
    message = _refused(lambda: build_feature_rows(source, spec, "live", None, label_required=False, event_time_column="seen"))
    assert f"column 'seen', row 2 (line 3): {problem}" in message


def test_the_event_time_column_must_be_in_the_file(tmp_path: Path) -> None:
    spec = _things(event_time_column="seen")
    source = _csv(tmp_path, "id,v,colour,y\n1,0.5,red,1\n")
    message = _refused(lambda: build_feature_rows(source, spec, "live", None, label_required=False, event_time_column="seen"))
    assert "missing column(s) 'seen'" in message


def test_the_spec_key_event_time_column() -> None:
    assert _things().event_time_column is None
    assert _things(event_time_column="seen").event_time_column == "seen"
    with pytest.raises(SpecError, match=r"^things.yaml: event_time_column must be the name of the source's column"):
        _things(event_time_column=3)
    with pytest.raises(SpecError, match=r"^things.yaml: event_time_column 'y' is the label's column"):
        _things(event_time_column="y")


def test_date_and_an_event_time_column_are_one_too_many(tmp_path: Path) -> None:
    day = dt.date(2024, 2, 1)
    with pytest.raises(SmlError, match=r"^--date 2024-02-01: dataset 'things' takes each row's event time from its column "
                                       r"'seen' \(the spec's event_time_column\); leave --date out$"):
        check_event_time_options(_things(event_time_column="seen"), day)
    check_event_time_options(_things(), day)
    with pytest.raises(SmlError, match="--date 9999-01-01 is outside the supported dates"):
        check_event_time_options(_things(), dt.date(9999, 1, 1))
    # Without a column: --date at midnight UTC, else the time given as now.
    source = _csv(tmp_path, "id,v,colour\n1,0.5,red\n")
    assert read_live_rows(_things(), source, day)["event_time"].tolist() == [STAMP]
    now = pd.Timestamp("2024-03-04T05:06:07.891011", tz="UTC")
    assert read_live_rows(_things(), source, None, now)["event_time"].tolist() == [now]


def test_a_dataset_that_numbers_its_rows_takes_live_keys_from_a_column_of_the_keys_name(tmp_path: Path) -> None:
    source = _csv(tmp_path, "iris_id,sepal_length,sepal_width,petal_length,petal_width\n1001,5.1,3.5,1.4,0.2\n1002,6,3,4,1\n")
    rows = read_live_rows(iris.SPEC, source, dt.date(2024, 2, 1))
    assert rows["iris_id"].tolist() == [1001, 1002]
    numbered = _csv(tmp_path, "sepal_length,sepal_width,petal_length,petal_width\n5.1,3.5,1.4,0.2\n", "numbered.csv")
    assert "missing column(s) 'iris_id'" in _refused(lambda: read_live_rows(iris.SPEC, numbered, dt.date(2024, 2, 1)))


# --- Parquet files: typed columns, validated as text is -------------------------------------------


def _titanic_parquet(tmp_path: Path, data_dir: Path, n: int = 6) -> tuple[pd.DataFrame, Path]:
    raw = read_csv_file(data_dir / "titanic.csv").iloc[:n]
    table = pa.table({
        "PassengerId": pa.array([2000 + i for i in range(n)], pa.int64()),
        "Survived": pa.array([1, None, 0, None, 1, 0][:n], pa.int64()),
        "Pclass": pa.array(raw["Pclass"].astype(int), pa.int32()),
        "Name": pa.array(raw["Name"]).dictionary_encode(),
        "Sex": pa.array(raw["Sex"]),
        "Age": pa.array([None if a == "" else float(a) for a in raw["Age"]], pa.float64()),
        "SibSp": pa.array(raw["SibSp"].astype(int), pa.int64()),
        "Parch": pa.array(raw["Parch"].astype(int), pa.int64()),
        "Fare": pa.array(raw["Fare"].astype(float), pa.float64()),
        "Embarked": pa.array([None if e == "" else e for e in raw["Embarked"]], pa.string()),
    })
    path = tmp_path / "live.parquet"
    pq.write_table(table, path)
    return raw, path


def test_a_parquet_file_gives_the_rows_its_csv_gives(tmp_path: Path, data_dir: Path) -> None:
    raw, path = _titanic_parquet(tmp_path, data_dir)
    source = load_rows(str(path), "titanic")
    assert source.location == str(path) and not source.is_file
    from_parquet = read_live_rows(titanic.SPEC, source, dt.date(2024, 2, 1))
    csv_raw = raw.assign(PassengerId=[str(2000 + i) for i in range(len(raw))], Survived=["1", "", "0", "", "1", "0"])
    csv_path = tmp_path / "live.csv"
    csv_raw.to_csv(csv_path, index=False)
    from_csv = read_live_rows(titanic.SPEC, load_rows(str(csv_path), "titanic"), dt.date(2024, 2, 1))
    pd.testing.assert_frame_equal(from_parquet, from_csv)
    assert from_parquet["survived"].tolist() == [1, pd.NA, 0, pd.NA, 1, 0]
    assert from_parquet["age"].isna().sum() == raw["Age"].eq("").sum()


def test_bad_values_of_a_parquet_file_are_named_by_row(tmp_path: Path) -> None:
    spec = _things()
    path = tmp_path / "things.parquet"
    pq.write_table(pa.table({"id": [1, 2], "v": [0.5, None], "colour": ["red", "blue"], "y": [1, None]}), path)
    message = _refused(lambda: read_live_rows(spec, load_rows(str(path), "things"), dt.date(2024, 2, 1)))
    assert message == f"{path}: column 'colour', row 2: 'blue' is not one of red, white"
    pq.write_table(pa.table({"id": [1, 2], "v": [0.5, None], "colour": ["red", "red"], "y": [1, 3]}), path)
    message = _refused(lambda: read_live_rows(spec, load_rows(str(path), "things"), dt.date(2024, 2, 1)))
    assert message == f"{path}: column 'y', row 2: label 3 is not one of 0, 1"


def test_parquet_timestamps_and_dates_are_event_times(tmp_path: Path) -> None:
    spec = _things(event_time_column="seen")
    path = tmp_path / "things.parquet"
    seen = [dt.datetime(2024, 2, 1, 10, 30), dt.datetime(2024, 2, 2)]
    for column in (pa.array(seen, pa.timestamp("us")), pa.array(seen, pa.timestamp("ms", tz="UTC")),
                   pa.array([s.date() for s in seen], pa.date32())):
        pq.write_table(pa.table({"id": [1, 2], "v": [0.5, 1.0], "colour": ["red", "red"], "seen": column}), path)
        rows = read_live_rows(spec, load_rows(str(path), "things"))
        expected = [pd.Timestamp(s, tz="UTC") for s in seen] if not pa.types.is_date(column.type) \
            else [pd.Timestamp(s.date(), tz="UTC") for s in seen]
        assert rows["event_time"].tolist() == expected, column.type
    pq.write_table(pa.table({"id": [1, 2], "v": [0.5, 1.0], "colour": ["red", "red"],
                             "seen": pa.array([seen[0], None], pa.timestamp("us"))}), path)
    assert "column 'seen', row 2: event time is missing" in _refused(lambda: read_live_rows(spec, load_rows(str(path), "things")))


@pytest.mark.parametrize(("content", "expected"), [
    (b"", "is empty"),
    (b"id,v\n1,2\n", "is not a readable Parquet file"),
])
def test_a_file_named_parquet_that_is_not_one_is_refused(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "rows.parquet"
    path.write_bytes(content)
    with pytest.raises(DataValidationError, match=expected):
        load_rows(str(path), "things")


def test_a_parquet_file_without_rows_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"id": pa.array([], pa.int64())}), path)
    with pytest.raises(DataValidationError, match="has columns but no data rows"):
        load_rows(str(path), "things")


def test_only_http_urls_are_downloaded() -> None:
    with pytest.raises(SmlError, match=r"^--source ftp://example.org/x.csv: only http:// and https:// URLs"):
        load_rows("ftp://example.org/x.csv", "things")


# --- the summary ------------------------------------------------------------------------------------


def test_the_summary_says_what_was_written_and_what_was_left() -> None:
    wrote = IngestReport("titanic", rows=12, inserted=10, unchanged=2, labelled=3, stored_labels=0, data_version=4)
    assert wrote.summary() == "titanic: 12 rows in, 10 inserted (3 labelled, 7 awaiting a label), 2 unchanged; table version 4"
    again = IngestReport("titanic", rows=12, inserted=0, unchanged=12, labelled=0, stored_labels=5, data_version=4)
    assert again.summary() == (
        "titanic: 12 rows in, 0 inserted (0 labelled, 0 awaiting a label), 12 unchanged; nothing written, table version 4\n"
        "  5 of the unchanged rows carried a label: ingest leaves stored rows as they are; attach labels with `sml labels`"
    )
    moved = IngestReport("titanic", rows=12, inserted=0, unchanged=12, labelled=0, stored_labels=0, data_version=4, retimed=2)
    assert moved.summary().endswith(
        "\n  2 of the unchanged rows have another event time than the stored one: ingest leaves stored rows as they are "
        "(a row's event time, like its features, is history)"
    )


def test_a_url_is_downloaded_afresh_each_time_and_nothing_is_left_in_the_cache(tmp_path: Path) -> None:
    """Tomorrow's rows at the same URL are tomorrow's (a backfill's source is cached once)."""
    import functools
    import http.server
    import threading

    served = tmp_path / "served"
    served.mkdir()
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    cache = tmp_path / "cache"
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        (served / "day.csv").write_text("id,v\n1,0.5\n")
        assert load_rows(f"{base}/day.csv", "things", cache).frame["id"].tolist() == ["1"]
        (served / "day.csv").write_text("id,v\n2,0.5\n3,1.5\n")
        assert load_rows(f"{base}/day.csv", "things", cache).frame["id"].tolist() == ["2", "3"]
        pq.write_table(pa.table({"id": [7, 8]}), served / "day.parquet")
        source = load_rows(f"{base}/day.parquet?token=1", "things", cache)
        assert source.frame["id"].tolist() == [7, 8] and not source.is_file
        assert source.location == f"{base}/day.parquet?token=***"  # a secret in the URL is not shown
        (served / "bad.csv").write_bytes(b"id,v\n1,\xff\n")
        with pytest.raises(DataValidationError, match=rf"^source file {base}/bad.csv is not UTF-8 text: byte 0xff on line 2"):
            load_rows(f"{base}/bad.csv", "things", cache)
    finally:
        server.shutdown()
        server.server_close()
    assert not [p.name for p in cache.iterdir()], "a download was left in the cache"
