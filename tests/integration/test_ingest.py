"""`sml ingest` end to end: subprocesses adding live rows to a real Delta table that holds
the Titanic backfill: CSV and Parquet files, labels missing for some rows, a re-run that
writes nothing, and a changed row refused with nothing written."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from serverless_ml.datasets import titanic
from serverless_ml.datasets.sources import load_source, read_csv_file
from serverless_ml.feature_store.local import LocalFeatureStore
from serverless_ml.pipelines.features import backfill

pytestmark = pytest.mark.integration

DAY = "2024-02-01"
NEW_IDS = list(range(1001, 1011))


def _summary(stdout: str) -> dict[str, int]:
    match = re.search(
        r"(\d+) rows in, (\d+) inserted \((\d+) labelled, (\d+) awaiting a label\), (\d+) unchanged; .*table version (\d+)", stdout,
    )
    assert match, stdout
    return dict(zip(["rows", "inserted", "labelled", "unlabelled", "unchanged", "version"], map(int, match.groups()), strict=True))


def _live_csv(data_dir: Path, path: Path) -> pd.DataFrame:
    """Three stored passengers as they are, and ten new ones (copies of stored ones under
    new ids), four of them without a label yet."""
    raw = read_csv_file(data_dir / "titanic.csv")
    new = raw.iloc[30:40].assign(PassengerId=[str(i) for i in NEW_IDS])
    new.loc[new.index[:4], "Survived"] = ""
    frame = pd.concat([raw.iloc[:3], new], ignore_index=True)
    frame.to_csv(path, index=False)
    return frame


def test_ingest_adds_live_rows_once_and_refuses_to_change_a_stored_row(
    run_cli, store_dir: Path, tmp_path: Path, data_dir: Path, tree_digest,  # noqa: ANN001
) -> None:
    backfill(titanic.SPEC, LocalFeatureStore(store_dir), load_source(titanic.SPEC, None, data_dir))
    live = _live_csv(data_dir, tmp_path / "live.csv")

    code, out, err = run_cli("ingest", "--dataset", "titanic", "--source", "live.csv", "--date", DAY)
    assert code == 0 and err == "", err
    assert out.startswith("source: live.csv\n")
    assert _summary(out) == {"rows": 13, "inserted": 10, "labelled": 6, "unlabelled": 4, "unchanged": 3, "version": 1}
    assert "3 of the unchanged rows carried a label: ingest leaves stored rows as they are" in out
    # They are backfilled passengers: --date does not move their event time, and it says so.
    assert "3 of the unchanged rows have another event time than the stored one: ingest leaves stored rows" in out
    table = LocalFeatureStore(store_dir).get_feature_group("titanic", 1).read()
    rows = table[table["origin"] == "live"].sort_values("passenger_id")
    assert rows["passenger_id"].tolist() == NEW_IDS
    assert set(rows["event_time"]) == {pd.Timestamp(DAY, tz="UTC")}
    assert rows["survived"].isna().tolist() == [True] * 4 + [False] * 6
    assert rows["survived"].iloc[4:].astype(int).tolist() == live["Survived"].iloc[7:].astype(int).tolist()
    # The stored passengers in the file kept their backfill row.
    assert (table.loc[table["passenger_id"].isin([1, 2, 3]), "origin"] == "backfill").all()
    after = tree_digest(store_dir)

    # The same file again, without --date (another event time): nothing is written.
    code, out, err = run_cli("ingest", "--dataset", "titanic", "--source", "live.csv")
    assert code == 0, err
    assert _summary(out) == {"rows": 13, "inserted": 0, "labelled": 0, "unlabelled": 0, "unchanged": 13, "version": 1}
    assert "nothing written, table version 1" in out
    assert "another event time" not in out  # the time of the ingest, not the user's: not noted
    assert tree_digest(store_dir) == after, "a re-run writes no byte"

    # A Parquet file (typed columns, no label column at all): event time now.
    parquet = live.iloc[3:6].assign(PassengerId=[2001, 2002, 2003]).drop(columns=["Survived"])
    parquet = parquet.assign(Fare=parquet["Fare"].astype(float), Pclass=parquet["Pclass"].astype(int))
    parquet.to_parquet(tmp_path / "more.parquet", index=False)
    before = pd.Timestamp.now(tz="UTC")
    code, out, err = run_cli("ingest", "--dataset", "titanic", "--source", "more.parquet")
    assert code == 0, err
    assert _summary(out) == {"rows": 3, "inserted": 3, "labelled": 0, "unlabelled": 3, "unchanged": 0, "version": 2}
    table = LocalFeatureStore(store_dir).get_feature_group("titanic", 1).read()
    added = table[table["passenger_id"] >= 2001]
    assert added["survived"].isna().all() and (added["event_time"] >= before.floor("s")).all()
    after = tree_digest(store_dir)

    # A stored key with another fare: refused in one line, nothing written.
    changed = live.copy()
    changed.loc[9, "Fare"] = "99.5"
    changed.to_csv(tmp_path / "changed.csv", index=False)
    code, out, err = run_cli("ingest", "--dataset", "titanic", "--source", "changed.csv")
    assert code != 0 and out == ""
    assert err == (
        f"error: changed.csv: row 10 (line 11): passenger_id {NEW_IDS[6]} is stored with 'Fare' (feature 'fare') "
        f"{float(live.loc[9, 'Fare'])}, this file has 99.5; the features of a stored row are history (a scored row's "
        "prediction was made from them), so ingest changes none: nothing written (1 row(s) of the file differ so)\n"
    )
    assert tree_digest(store_dir) == after


def test_a_label_column_spelled_otherwise_is_refused_and_unread_columns_are_named(
    run_cli, store_dir: Path, tmp_path: Path, data_dir: Path, tree_digest,  # noqa: ANN001
) -> None:
    """Found by a user trial: labels under "Risk level" (the spec's "Risk Level") were
    dropped without a word, the rows stored awaiting a label; an extra column went unsaid."""
    backfill(titanic.SPEC, LocalFeatureStore(store_dir), load_source(titanic.SPEC, None, data_dir))
    live = _live_csv(data_dir, tmp_path / "live.csv")
    before = tree_digest(store_dir)
    for other in ("survived", "SURVIVED ", "Survivd"):
        live.rename(columns={"Survived": other}).to_csv(tmp_path / "renamed.csv", index=False)
        code, out, err = run_cli("ingest", "--dataset", "titanic", "--source", "renamed.csv", "--date", DAY)
        assert code != 0 and out == "", out
        assert err.strip() == (f"error: renamed.csv: column {other.strip()!r} is not the label column 'Survived' (names are "
                               "matched exactly): rename it to 'Survived' to store its labels, or leave it out to add "
                               "the rows without labels"), err
        assert tree_digest(store_dir) == before

    raw_columns = set(titanic.SPEC.raw_columns)
    live.assign(Comments="checked").to_csv(tmp_path / "extra.csv", index=False)
    code, out, err = run_cli("ingest", "--dataset", "titanic", "--source", "extra.csv", "--date", DAY)
    assert code == 0, err
    unread = [c for c in [*live.columns, "Comments"] if c not in raw_columns]
    assert "Comments" in unread
    assert f"note: column(s) {', '.join(map(repr, unread))} not read: not in the spec" in out
