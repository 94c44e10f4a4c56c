"""`sml ingest` in bounded memory on a real Delta store: a file read, compared and written
in parts of 7 rows gives the table, report and refusals that the file read whole gives
(``ingest_rows``, the in-memory path the Hopsworks backend keeps)."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from serverless_ml.datasets import titanic
from serverless_ml.datasets.sources import load_rows, load_source, read_csv_file
from serverless_ml.errors import DataValidationError
from serverless_ml.feature_store import local
from serverless_ml.feature_store.local import LocalFeatureStore
from serverless_ml.pipelines.features import backfill
from serverless_ml.pipelines.ingest import SPOOL_PREFIX, StoredFeaturesChanged, ingest_file, ingest_rows

pytestmark = pytest.mark.integration

DAY = dt.date(2024, 2, 1)
PART = 7


@pytest.fixture
def stores(tmp_path: Path, data_dir: Path) -> tuple[Path, Path]:
    """Two copies of the Titanic backfill: one for the whole file, one for its parts."""
    whole = tmp_path / "whole"
    backfill(titanic.SPEC, LocalFeatureStore(whole), load_source(titanic.SPEC, None, data_dir))
    parts = tmp_path / "parts"
    shutil.copytree(whole, parts)
    return whole, parts


def _live(data_dir: Path, path: Path) -> pd.DataFrame:
    """40 new passengers (a third without a label) with three stored ones among them, in
    different parts."""
    raw = read_csv_file(data_dir / "titanic.csv")
    new = raw.iloc[100:140].assign(PassengerId=[str(i) for i in range(2001, 2041)]).reset_index(drop=True)
    new.loc[new.index[::3], "Survived"] = ""
    frame = pd.concat([new.iloc[:10], raw.iloc[[0]], new.iloc[10:25], raw.iloc[[1]], new.iloc[25:], raw.iloc[[2]]],
                      ignore_index=True)
    frame.to_csv(path, index=False)
    return frame


def _table(store: Path) -> pd.DataFrame:
    return LocalFeatureStore(store).get_feature_group("titanic", 1).read()


def test_a_file_in_parts_is_ingested_as_the_whole_file(stores: tuple[Path, Path], tmp_path: Path, data_dir: Path) -> None:
    whole, parts = stores
    path = tmp_path / "live.csv"
    frame = _live(data_dir, path)
    expected = ingest_rows(titanic.SPEC, LocalFeatureStore(whole), load_rows(str(path), "titanic"), DAY)
    location, report = ingest_file(titanic.SPEC, LocalFeatureStore(parts), str(path), DAY, chunk_rows=PART)
    assert location == str(path)
    assert report == expected
    assert (report.rows, report.inserted, report.unchanged, report.labelled, report.stored_labels) == (43, 40, 3, 26, 3)
    assert report.retimed == 3  # the stored passengers keep their backfill event time, not this file's day
    pd.testing.assert_frame_equal(_table(parts), _table(whole))
    # Again: nothing written (the table's version stays); the new rows' day is the stored one.
    _, again = ingest_file(titanic.SPEC, LocalFeatureStore(parts), str(path), DAY, chunk_rows=PART)
    assert (again.inserted, again.unchanged, again.data_version, again.retimed) == (0, 43, report.data_version, 3)
    # Another day: every stored row's event time differs from the one given, on both paths.
    later = dt.date(2024, 2, 9)
    _, moved = ingest_file(titanic.SPEC, LocalFeatureStore(parts), str(path), later, chunk_rows=PART)
    assert (moved.inserted, moved.retimed) == (0, 43)
    assert ingest_rows(titanic.SPEC, LocalFeatureStore(whole), load_rows(str(path), "titanic"), later).retimed == 43
    # No day: the event time is the ingest's own, which a re-run gives anew: not noted.
    _, unstated = ingest_file(titanic.SPEC, LocalFeatureStore(parts), str(path), None, chunk_rows=PART)
    assert (unstated.inserted, unstated.retimed) == (0, 0)
    assert ingest_rows(titanic.SPEC, LocalFeatureStore(whole), load_rows(str(path), "titanic"), None).retimed == 0
    # The same rows as Parquet, over the whole file's table: nothing new either.
    parquet = tmp_path / "live.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), parquet, row_group_size=5)
    _, from_parquet = ingest_file(titanic.SPEC, LocalFeatureStore(whole), str(parquet), DAY, chunk_rows=PART)
    assert (from_parquet.rows, from_parquet.inserted, from_parquet.data_version) == (43, 0, expected.data_version)


def test_negative_zero_is_the_stored_zero(stores: tuple[Path, Path], tmp_path: Path, data_dir: Path) -> None:
    """Found by a user trial: a stored 0.0 written as -0.0 crashed ingest in parts (its hash
    differed, its value did not) and counted as changed in the whole file's path."""
    whole, parts = stores
    raw = read_csv_file(data_dir / "titanic.csv")
    free = raw[raw["Fare"].astype(float) == 0.0].head(2).assign(Fare="-0.0")
    assert len(free) == 2
    path = tmp_path / "free.csv"
    free.to_csv(path, index=False)
    _, streamed = ingest_file(titanic.SPEC, LocalFeatureStore(parts), str(path), None, chunk_rows=PART)
    whole_report = ingest_rows(titanic.SPEC, LocalFeatureStore(whole), load_rows(str(path), "titanic"), None)
    for report in (streamed, whole_report):
        assert (report.inserted, report.unchanged, report.data_version) == (0, 2, 0)
    # And through a backfill: unchanged, no new table version.
    again = backfill(titanic.SPEC, LocalFeatureStore(whole), load_source(titanic.SPEC, str(path), data_dir))
    assert (again.updated, again.unchanged) == (0, 2)


def _refusal(call) -> str:  # noqa: ANN001
    with pytest.raises(DataValidationError) as info:
        call()
    return str(info.value)


def test_refusals_in_parts_are_those_of_the_whole_file_and_write_nothing(
    stores: tuple[Path, Path], tmp_path: Path, data_dir: Path, tree_digest,  # noqa: ANN001
) -> None:
    whole, parts = stores
    before = tree_digest(parts)
    frame = _live(data_dir, tmp_path / "live.csv")
    # A stored passenger (in the fourth part) with another fare, and a second one changed too.
    changed = frame.copy()
    changed.loc[26, "Fare"] = "99.5"
    changed.loc[42, "Age"] = "3"
    changed.to_csv(tmp_path / "changed.csv", index=False)
    # A new passenger's id again, three parts later.
    duplicate = frame.copy()
    duplicate.loc[30, "PassengerId"] = duplicate.loc[4, "PassengerId"]
    duplicate.to_csv(tmp_path / "duplicate.csv", index=False)
    for name, kind, expected in [
        ("changed.csv", StoredFeaturesChanged,
         "row 27 (line 28): passenger_id 2 is stored with 'Fare' (feature 'fare') 71.2833, this file has 99.5"),
        ("duplicate.csv", DataValidationError,
         "column 'PassengerId', row 31 (line 32): duplicate primary key 2005 (first seen in row 5 (line 6))"),
    ]:
        path = str(tmp_path / name)
        one_shot = _refusal(lambda path=path: ingest_rows(titanic.SPEC, LocalFeatureStore(whole), load_rows(path, "titanic"), DAY))
        in_parts = _refusal(lambda path=path: ingest_file(titanic.SPEC, LocalFeatureStore(parts), path, DAY, chunk_rows=PART))
        assert in_parts == one_shot
        assert expected in in_parts, in_parts
        with pytest.raises(kind):
            ingest_file(titanic.SPEC, LocalFeatureStore(parts), path, DAY, chunk_rows=PART)
    assert "(2 row(s) of the file differ so)" in _refusal(
        lambda: ingest_file(titanic.SPEC, LocalFeatureStore(parts), str(tmp_path / "changed.csv"), DAY, chunk_rows=PART))
    assert tree_digest(parts) == before


def test_the_append_writes_files_of_its_own_and_clears_a_killed_ones(
    stores: tuple[Path, Path], tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    whole, parts = stores
    path = tmp_path / "live.csv"
    _live(data_dir, path)
    folder = parts / "titanic_1"
    stale = folder / f"{local._APPEND_PREFIX}0000-00000.parquet"  # as a killed append leaves one: in no commit
    stale.write_bytes(b"PAR1 half written")
    monkeypatch.setattr(local, "_APPEND_FILE_ROWS", 10)  # 40 new rows, 7 a batch: files of 14, 14 and 12 rows
    ingest_rows(titanic.SPEC, LocalFeatureStore(whole), load_rows(str(path), "titanic"), DAY)
    _, report = ingest_file(titanic.SPEC, LocalFeatureStore(parts), str(path), DAY, chunk_rows=PART)
    assert (report.inserted, report.data_version) == (40, 1)
    assert not stale.exists()
    assert len(list(folder.glob(f"{local._APPEND_PREFIX}*.parquet"))) == 3
    pd.testing.assert_frame_equal(_table(parts), _table(whole))


def test_keys_another_writer_stores_meanwhile_are_compared_again(
    stores: tuple[Path, Path], tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Between ingest's comparison and its locked append, another writer stores two of the
    file's new passengers (the same rows): the append sees them under the lock, writes
    nothing, and the next round counts them as unchanged."""
    whole, parts = stores
    path = tmp_path / "live.csv"
    _live(data_dir, path)
    expected = ingest_rows(titanic.SPEC, LocalFeatureStore(whole), load_rows(str(path), "titanic"), DAY)
    meanwhile = _table(whole).query("passenger_id in (2003, 2030)")
    original = local.LocalFeatureGroup.append_if
    calls = []

    def other_writer_first(self, batches, still_new):  # noqa: ANN001, ANN202
        if not calls:
            LocalFeatureStore(parts).get_feature_group("titanic", 1).insert(meanwhile)
        calls.append(self)
        return original(self, batches, still_new)

    monkeypatch.setattr(local.LocalFeatureGroup, "append_if", other_writer_first)
    _, report = ingest_file(titanic.SPEC, LocalFeatureStore(parts), str(path), DAY, chunk_rows=PART)
    assert len(calls) == 2
    assert (report.inserted, report.unchanged, report.labelled) == (38, 5, expected.labelled - int(meanwhile["survived"].notna().sum()))
    assert report.data_version == 2  # the other writer's commit, then ingest's one
    pd.testing.assert_frame_equal(_table(parts), _table(whole))


def test_a_killed_ingests_spool_is_removed_by_the_next_and_a_live_ones_kept(
    stores: tuple[Path, Path], tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    spools = tmp_path / "tmp"
    spools.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spools))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])  # a process that has ended
    gone.wait()
    dead = spools / f"{SPOOL_PREFIX}{gone.pid}-abc"
    live = spools / f"{SPOOL_PREFIX}{os.getppid()}-def"
    for folder in (dead, live):
        folder.mkdir()
        (folder / "rows.parquet").write_bytes(b"spooled rows")
    path = tmp_path / "live.csv"
    _live(data_dir, path)
    ingest_file(titanic.SPEC, LocalFeatureStore(stores[1]), str(path), DAY, chunk_rows=PART)
    assert not dead.exists() and live.exists()
    assert sorted(p.name for p in spools.iterdir()) == [live.name]  # its own spool is gone too
