"""The embedded Delta Lake feature store: upserts, time travel, schema enforcement,
feature views. Real Delta tables in a temporary directory."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from deltalake import DeltaTable

from serverless_ml.errors import NotFoundError, SchemaMismatchError, SmlError
from serverless_ml.feature_store import Feature
from serverless_ml.feature_store.local import LocalFeatureGroup, LocalFeatureStore

pytestmark = pytest.mark.integration

SCHEMA = [
    Feature("id", "bigint"),
    Feature("event_time", "timestamp"),
    Feature("x", "double"),
    Feature("kind", "string"),
    Feature("label", "bigint"),
    Feature("origin", "string"),
]


def frame(ids: list[int], day: str = "2024-01-01", x: float = 1.0, origin: str = "backfill") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": pd.Series(ids, dtype="int64"),
            "event_time": pd.Series(pd.Timestamp(day, tz="UTC"), index=range(len(ids))).astype("datetime64[us, UTC]"),
            "x": [x + i for i in ids],
            "kind": ["a" if i % 2 else "b" for i in ids],
            "label": [i % 2 for i in ids],
            "origin": origin,
        }
    )


def open_group(root: Path, features: list[Feature] | None = SCHEMA) -> LocalFeatureGroup:
    return LocalFeatureStore(root).get_or_create_feature_group(
        "things", 1, primary_key=["id"], event_time="event_time", description="test rows", features=features
    )


def test_first_insert_creates_the_table_and_metadata(store_dir: Path) -> None:
    group = open_group(store_dir)
    assert not group.exists() and group.data_version() is None
    assert not store_dir.exists(), "asking about a group writes nothing"
    with pytest.raises(NotFoundError, match="does not exist"):
        group.read()
    result = group.insert(frame([1, 2, 3]))
    assert (result.inserted, result.updated, result.unchanged, result.version) == (3, 0, 0, 0)
    assert group.exists() and (store_dir / "things_1" / "_delta_log").is_dir()
    again = LocalFeatureStore(store_dir).get_feature_group("things", 1)
    assert [(f.name, f.type) for f in again.features] == [(f.name, f.type) for f in SCHEMA]
    pd.testing.assert_frame_equal(again.read(), frame([1, 2, 3]))


def test_same_rows_twice_leave_the_same_version_and_files(store_dir: Path, tree_digest) -> None:
    group = open_group(store_dir)
    group.insert(frame([1, 2, 3]))
    group.insert(frame([4, 5]))
    before = tree_digest(store_dir / "things_1")
    result = group.insert(frame([5, 3, 4, 1, 2]))  # same rows, other order
    assert (result.inserted, result.updated, result.unchanged, result.version) == (0, 0, 5, 1)
    assert tree_digest(store_dir / "things_1") == before
    assert group.data_version() == 1
    pd.testing.assert_frame_equal(group.read(), frame([1, 2, 3, 4, 5]))


def test_changed_rows_are_updated_and_new_ones_inserted(store_dir: Path) -> None:
    group = open_group(store_dir)
    group.insert(frame([1, 2, 3]))
    changed = frame([2, 3, 4], x=100.0)
    changed.loc[changed["id"] == 3, "x"] = 4.0  # id 3 unchanged (1.0 + 3)
    result = group.insert(changed)
    assert (result.inserted, result.updated, result.unchanged, result.version) == (1, 1, 1, 1)
    table = group.read()
    assert table["id"].tolist() == [1, 2, 3, 4]
    assert table["x"].tolist() == [2.0, 102.0, 4.0, 104.0]
    assert table["id"].is_unique


def test_time_travel_reads_old_versions(store_dir: Path) -> None:
    group = open_group(store_dir)
    group.insert(frame([1, 2]))
    group.insert(frame([3]))
    group.insert(frame([1], x=50.0))
    assert group.data_version() == 2
    pd.testing.assert_frame_equal(group.read(version=0), frame([1, 2]))
    assert group.read(version=1)["id"].tolist() == [1, 2, 3]
    assert group.read(version=2)["x"].tolist() == [51.0, 3.0, 4.0]
    assert group.read()["x"].tolist() == [51.0, 3.0, 4.0]
    with pytest.raises(NotFoundError, match=r"no data version 7 .latest is 2."):
        group.read(version=7)


def _wrong_frames() -> dict[str, tuple[pd.DataFrame, str]]:
    good = frame([7, 8])
    mistyped_string = good.assign(kind=[1, 2])
    return {
        "missing column": (good.drop(columns=["x"]), "missing column(s) 'x'"),
        "extra column": (good.assign(y=1.0), "unexpected column(s) 'y'"),
        "text in a number": (good.assign(x=["1.5", "2"]), "column 'x'"),
        "number in a string": (mistyped_string, "column 'kind'"),
        "float label": (good.assign(label=[0.5, 1.0]), "column 'label'"),
        "naive timestamps as text": (good.assign(event_time=["2024-01-01", "2024-01-02"]), "column 'event_time'"),
        "bool as number": (good.assign(x=[True, False]), "column 'x'"),
        "null primary key": (good.assign(id=[7.0, np.nan]), "primary key is missing in row 2"),
        "duplicate primary key": (good.assign(id=[7, 7]), "duplicate primary key 7 (row 2)"),
    }


@pytest.mark.parametrize("case", sorted(_wrong_frames()))
def test_schema_is_enforced_and_nothing_is_written(store_dir: Path, case: str, tree_digest) -> None:
    df, expected = _wrong_frames()[case]
    group = open_group(store_dir)
    group.insert(frame([1, 2, 3]))
    before = tree_digest(store_dir)
    with pytest.raises(SchemaMismatchError) as info:
        group.insert(df)
    assert expected in str(info.value)
    assert "things_1" in str(info.value) and "\n" not in str(info.value)
    assert tree_digest(store_dir) == before
    assert group.data_version() == 0
    assert group.read()["id"].tolist() == [1, 2, 3]


def test_a_refused_first_insert_creates_nothing(store_dir: Path) -> None:
    with pytest.raises(SchemaMismatchError, match="duplicate primary key"):
        open_group(store_dir).insert(frame([1, 1]))
    assert not (store_dir / "things_1").exists()
    assert not (store_dir / "things_1.json").exists()


def test_nullable_integer_and_missing_values_round_trip(store_dir: Path) -> None:
    df = frame([1, 2, 3])
    df["x"] = [np.nan, 2.0, 3.0]
    df["kind"] = [None, "a", "b"]
    group = open_group(store_dir)
    group.insert(df)
    assert group.insert(df).written == 0, "missing values compare equal to themselves"
    table = group.read()
    assert np.isnan(table["x"].iloc[0]) and table["kind"].iloc[0] is None


def test_group_without_a_schema_infers_one(store_dir: Path) -> None:
    group = open_group(store_dir, features=None)
    group.insert(frame([1]))
    assert [(f.name, f.type) for f in LocalFeatureStore(store_dir).get_feature_group("things", 1).features] == [
        (f.name, f.type) for f in SCHEMA
    ]


def test_reopening_with_another_schema_or_key_is_refused(store_dir: Path) -> None:
    open_group(store_dir).insert(frame([1]))
    store = LocalFeatureStore(store_dir)
    with pytest.raises(SchemaMismatchError, match=r"\(removed origin \(string\)\); a new version \(2\) is needed$"):
        store.get_or_create_feature_group("things", 1, ["id"], "event_time", features=SCHEMA[:-1])
    with pytest.raises(SchemaMismatchError, match=r"\(primary key \['id'\] stored, \['kind'\] asked for\)"):
        store.get_or_create_feature_group("things", 1, ["kind"], "event_time", features=SCHEMA)
    with pytest.raises(NotFoundError):
        store.get_feature_group("things", 2)


def test_store_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "store"
    path.write_text("not a directory")
    with pytest.raises(SmlError, match="is a file"):
        LocalFeatureStore(path)
    with pytest.raises(SmlError, match="which is a file"):
        LocalFeatureStore(path / "below")


@pytest.fixture
def view_group(store_dir: Path) -> LocalFeatureGroup:
    group = open_group(store_dir)
    group.insert(frame([1, 2, 3], day="2024-01-01"))
    group.insert(frame([10, 11], day="2024-02-01", origin="synthetic"))
    group.insert(frame([20, 21, 22], day="2024-02-02", origin="synthetic"))
    group.insert(frame([30], day="2024-02-03", origin="live"))
    return group


def test_training_data_with_time_window_and_origin_filter(view_group: LocalFeatureGroup, store_dir: Path) -> None:
    store = LocalFeatureStore(store_dir)
    query = view_group.select_except(["origin"])
    view = store.get_or_create_feature_view("things_training", 1, query, labels=["label"])
    x, y = view.training_data()
    assert list(x.columns) == ["id", "event_time", "x", "kind"] and list(y.columns) == ["label"]
    assert len(x) == len(y) == 9
    x, y = view.training_data(extra_filter=view_group.get_feature("origin") == "backfill")
    assert x["id"].tolist() == [1, 2, 3] and y["label"].tolist() == [1, 0, 1]
    x, _ = view.training_data(start_time=dt.datetime(2024, 2, 1), end_time=dt.datetime(2024, 2, 3))
    assert x["id"].tolist() == [10, 11, 20, 21, 22], "start inclusive, end exclusive"
    x, _ = view.training_data(
        extra_filter=view_group.get_feature("origin").isin(["backfill", "live"]), start_time="2024-01-01"
    )
    assert x["id"].tolist() == [1, 2, 3, 30]
    # Reopened by name, the view has the same query.
    reopened = store.get_feature_view("things_training", 1)
    assert reopened.training_data()[0].equals(view.training_data()[0])


def test_batch_data_is_the_window_without_labels(view_group: LocalFeatureGroup, store_dir: Path) -> None:
    store = LocalFeatureStore(store_dir)
    synthetic_only = view_group.select(["x", "kind", "label"]).filter(view_group["origin"] == "synthetic")
    view = store.get_or_create_feature_view("things_batch", 1, synthetic_only, labels=["label"])
    batch = view.get_batch_data(start_time="2024-02-02", end_time="2024-02-03", primary_key=True, event_time=True)
    assert list(batch.columns) == ["id", "event_time", "x", "kind"]
    assert batch["id"].tolist() == [20, 21, 22]
    assert set(batch["event_time"]) == {pd.Timestamp("2024-02-02", tz="UTC")}
    # Timezone-aware bounds are compared in UTC: 2024-02-02 01:00+02:00 is 2024-02-01 23:00Z.
    aware = view.get_batch_data(start_time=pd.Timestamp("2024-02-02 01:00", tz="Europe/Stockholm"))
    assert len(aware) == 3
    assert view.get_batch_data(end_time="2024-02-01").empty
    # extra_filter narrows the view's own filter (origin == synthetic) further.
    narrowed = view.get_batch_data(primary_key=True, extra_filter=view_group["id"].isin([11, 20, 30]))
    assert narrowed["id"].tolist() == [11, 20]
    everything = store.get_or_create_feature_view("things_all", 1, view_group.select_all(), labels=["label"])
    live = everything.get_batch_data(primary_key=True, extra_filter=view_group["origin"] == "live", start_time="2024-02-03")
    assert live["id"].tolist() == [30] and "label" not in live.columns
    assert list(view.get_batch_data().columns) == ["x", "kind"]
    with pytest.raises(SchemaMismatchError, match=r"is stored with other features, filters than asked for; "
                                                  r"a new version \(2\) is needed$"):
        store.get_or_create_feature_view("things_batch", 1, view_group.select_all(), labels=["label"])


def test_delta_table_is_readable_by_deltalake_directly(view_group: LocalFeatureGroup, store_dir: Path) -> None:
    table = DeltaTable(str(store_dir / "things_1"))
    assert table.version() == 3
    assert sorted(table.to_pyarrow_table().column("id").to_pylist()) == [1, 2, 3, 10, 11, 20, 21, 22, 30]


def test_views_with_timestamp_and_numpy_filters_are_stored_and_reopened(view_group: LocalFeatureGroup, store_dir: Path) -> None:
    store = LocalFeatureStore(store_dir)
    recent = (view_group["event_time"] >= pd.Timestamp("2024-02-02", tz="UTC")) & (view_group["id"] != np.int64(21))
    query = view_group.select_all().filter(recent)
    view = store.get_or_create_feature_view("recent", 1, query, labels=["label"])
    # Asking again with the same query (built anew) is the same view.
    store.get_or_create_feature_view("recent", 1, view_group.select_all().filter(recent), labels=["label"])
    reopened = store.get_feature_view("recent", 1)
    expected = [20, 22, 30]
    assert view.get_batch_data(primary_key=True)["id"].tolist() == expected
    assert reopened.get_batch_data(primary_key=True)["id"].tolist() == expected
    with pytest.raises(SchemaMismatchError, match="is stored with other filters than asked for"):
        store.get_or_create_feature_view("recent", 1, view_group.select_all(), labels=["label"])
    leftovers = [p.name for p in (store_dir / "_feature_views").iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_an_append_that_fails_before_its_commit_leaves_no_file(store_dir: Path) -> None:
    """Found by a user trial: an ingest on a full disk left a 0-byte appended file in the
    table's folder (named by no commit; the next append removed it). A failure before the
    commit now removes the append's files at once; the table is unchanged."""
    import errno

    import pyarrow as pa

    from serverless_ml.feature_store.base import arrow_schema

    group = open_group(store_dir)
    group.insert(frame([1, 2, 3]))
    before = sorted(p.name for p in (store_dir / "things_1").iterdir())
    schema = arrow_schema(group.features)
    first = pa.Table.from_pandas(frame([10, 11]), schema=schema, preserve_index=False).to_batches()[0]

    def batches():  # noqa: ANN202
        yield first
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(SmlError, match="the disk is full"):
        group.append_if(pa.RecordBatchReader.from_batches(schema, batches()), lambda: True)
    assert sorted(p.name for p in (store_dir / "things_1").iterdir()) == before
    assert group.data_version() == 0 and sorted(group.read()["id"]) == [1, 2, 3]
