"""The feature-store contract: one set of behaviours, every backend.

Each test runs twice: against the local Delta store, for real, and against the Hopsworks
backend over the in-memory stand-in of the SDK (whose methods refuse any argument the
real hopsworks 5.2.1 classes would refuse). Where the backends differ, the difference is
a declared capability (``store.capabilities``) and the test asserts what each backend
does; nothing is skipped.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from serverless_ml.errors import NotFoundError, SchemaMismatchError, SmlError
from serverless_ml.feature_store import Feature, FeatureGroup, FeatureStore
from serverless_ml.feature_store.base import RowsChangedError

pytestmark = pytest.mark.contract

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


def open_group(store: FeatureStore, features: list[Feature] | None = SCHEMA) -> FeatureGroup:
    return store.get_or_create_feature_group(
        "things", 1, primary_key=["id"], event_time="event_time", description="test rows", features=features
    )


# --- feature groups -------------------------------------------------------------------


def test_a_new_group_is_empty_and_asking_about_it_writes_nothing(backend) -> None:  # noqa: ANN001
    before = backend.snapshot()
    group = open_group(backend.open_store())
    assert not group.exists() and group.data_version() is None
    with pytest.raises(NotFoundError, match="does not exist"):
        group.read()
    with pytest.raises(NotFoundError, match="'things' version 1 does not exist"):
        backend.open_store().get_feature_group("things", 1)
    assert backend.snapshot() == before


def test_the_first_insert_creates_the_group_with_its_schema(backend) -> None:  # noqa: ANN001
    group = open_group(backend.open_store())
    result = group.insert(frame([1, 2, 3]))
    assert (result.inserted, result.updated, result.unchanged) == (3, 0, 0)
    assert group.exists() and result.version == group.data_version() is not None
    if backend.capabilities.sequential_versions:
        assert result.version == 0
    again = backend.open_store().get_feature_group("things", 1)
    assert [(f.name, f.type) for f in again.features] == [(f.name, f.type) for f in SCHEMA]
    assert (again.primary_key, again.event_time) == (["id"], "event_time")
    # Same values and the same dtypes on every backend.
    pd.testing.assert_frame_equal(again.read(), frame([1, 2, 3]))


def test_reinserting_identical_rows_leaves_content_and_version_unchanged(backend) -> None:  # noqa: ANN001
    group = open_group(backend.open_store())
    group.insert(frame([1, 2, 3]))
    version = group.insert(frame([4, 5])).version
    before = backend.snapshot()
    result = group.insert(frame([5, 3, 4, 1, 2]))  # the same rows in another order
    assert (result.inserted, result.updated, result.unchanged, result.version) == (0, 0, 5, version)
    assert backend.snapshot() == before, "nothing was written"
    assert group.data_version() == version
    pd.testing.assert_frame_equal(group.read(), frame([1, 2, 3, 4, 5]))


def test_changed_rows_are_updated_and_new_ones_inserted(backend) -> None:  # noqa: ANN001
    group = open_group(backend.open_store())
    first = group.insert(frame([1, 2, 3])).version
    changed = frame([2, 3, 4], x=100.0)
    changed.loc[changed["id"] == 3, "x"] = 4.0  # id 3 as stored (1.0 + 3)
    result = group.insert(changed)
    assert (result.inserted, result.updated, result.unchanged) == (1, 1, 1)
    assert result.version > first
    table = group.read()
    assert table["id"].tolist() == [1, 2, 3, 4] and table["id"].is_unique
    assert table["x"].tolist() == [2.0, 102.0, 4.0, 104.0]


def test_an_insert_that_may_not_change_rows_refuses_before_writing_anything(backend) -> None:  # noqa: ANN001
    group = open_group(backend.open_store())
    group.insert(frame([1, 2, 3]))
    version = group.insert(frame([4], day="2024-01-02")).version
    before = backend.snapshot()
    changed = frame([2, 3, 5], x=100.0)  # 2 and 3 stored with other values, 5 new
    with pytest.raises(RowsChangedError) as info:
        group.insert(changed, on_change="refuse")
    message = str(info.value)
    assert "feature group 'things_1': 2 stored row(s) would change, the first id 2 (event time 2024-01-01" in message
    assert "nothing was written" in message and "\n" not in message
    assert info.value.changed["id"].tolist() == [2, 3]
    assert info.value.changed["x"].tolist() == [3.0, 4.0], "the rows as stored"
    assert backend.snapshot() == before and group.data_version() == version
    # Identical rows and new rows are what it is for.
    result = group.insert(frame([5, 1, 2]), on_change="refuse")
    assert (result.inserted, result.updated, result.unchanged) == (1, 0, 2)
    with pytest.raises(ValueError, match="on_change"):
        group.insert(frame([6]), on_change="ignore")


def test_compare_says_what_an_insert_would_do_and_writes_nothing(backend) -> None:  # noqa: ANN001
    empty = backend.snapshot()
    group = open_group(backend.open_store())
    assert group.compare(frame([1, 2])).inserted == 2, "a group not created yet"
    assert not group.exists() and backend.snapshot() == empty
    group.insert(frame([1, 2, 3]))
    before = backend.snapshot()
    comparison = group.compare(frame([3, 1, 7]).assign(x=[4.0, 1.0, 0.0]))  # 3 as stored, 1 changed, 7 new
    assert (comparison.inserted, comparison.updated, comparison.unchanged) == (1, 1, 1)
    assert comparison.is_new.tolist() == [False, False, True] and comparison.is_changed.tolist() == [False, True, False]
    assert comparison.changed["id"].tolist() == [1] and comparison.changed["x"].tolist() == [2.0]
    assert backend.snapshot() == before
    with pytest.raises(SchemaMismatchError, match="missing column"):
        group.compare(frame([1]).drop(columns=["x"]))


def test_rows_are_deleted_by_key(backend) -> None:  # noqa: ANN001
    group = open_group(backend.open_store())
    group.insert(frame([1, 2, 3]))
    version = group.insert(frame([4, 5], day="2024-01-02")).version
    result = group.delete(pd.DataFrame({"id": [4, 2, 99, 2], "x": [0.0] * 4}))  # 99 is not stored; other columns ignored
    assert result.deleted == 2 and result.version == group.data_version() and result.version > version
    again = backend.open_store().get_feature_group("things", 1)
    pd.testing.assert_frame_equal(again.read(), pd.concat([frame([1, 3]), frame([5], day="2024-01-02")], ignore_index=True))
    before = backend.snapshot()
    nothing = group.delete(pd.DataFrame({"id": [2, 4, 99]}))
    assert (nothing.deleted, nothing.version) == (0, result.version) and backend.snapshot() == before
    assert group.delete(pd.DataFrame({"id": pd.Series([], dtype="int64")})).deleted == 0
    # A key deleted can be inserted again, as new.
    assert group.insert(frame([2])).inserted == 1
    for bad, expected in ((pd.DataFrame({"x": [1.0]}), r"lack column\(s\) 'id'"),
                          (pd.DataFrame({"id": [1.0, None]}), "has no 'id'"),
                          (pd.DataFrame({"id": ["one"]}), "not bigint")):
        with pytest.raises(SchemaMismatchError, match=expected):
            group.delete(bad)
    assert group.read()["id"].tolist() == [1, 2, 3, 5]


def test_deleting_from_a_group_not_created_yet_writes_nothing(backend) -> None:  # noqa: ANN001
    before = backend.snapshot()
    group = open_group(backend.open_store())
    assert group.delete(pd.DataFrame({"id": [1]})).deleted == 0
    assert not group.exists() and backend.snapshot() == before


def test_versions_increase_with_every_write(backend) -> None:  # noqa: ANN001
    group = open_group(backend.open_store())
    versions = [group.insert(frame([i])).version for i in (1, 2, 3)]
    assert versions == sorted(set(versions)), "strictly increasing"
    if backend.capabilities.sequential_versions:
        assert versions == [0, 1, 2]
    else:
        assert all(isinstance(v, int) and v > 2 for v in versions), "commit times, not counts"


def test_reading_a_version(backend) -> None:  # noqa: ANN001
    group = open_group(backend.open_store())
    old = group.insert(frame([1, 2])).version
    latest = group.insert(frame([3])).version
    assert group.read(version=latest)["id"].tolist() == [1, 2, 3] == group.read()["id"].tolist()
    if backend.capabilities.time_travel:
        assert group.read(version=old)["id"].tolist() == [1, 2]
    else:
        with pytest.raises(SmlError, match=f"cannot read data version {old}.*latest version .{latest}.*time travel"):
            group.read(version=old)
    missing = latest + 12345
    with pytest.raises(NotFoundError, match=f"no data version {missing} .latest is {latest}."):
        group.read(version=missing)


def _wrong_frames() -> dict[str, tuple[pd.DataFrame, str]]:
    good = frame([7, 8])
    return {
        "missing column": (good.drop(columns=["x"]), "missing column(s) 'x'"),
        "extra column": (good.assign(y=1.0), "unexpected column(s) 'y'"),
        "text in a number": (good.assign(x=["1.5", "2"]), "column 'x'"),
        "number in a string": (good.assign(kind=[1, 2]), "column 'kind'"),
        "float label": (good.assign(label=[0.5, 1.0]), "column 'label'"),
        "timestamps as text": (good.assign(event_time=["2024-01-01", "2024-01-02"]), "column 'event_time'"),
        "bool as number": (good.assign(x=[True, False]), "column 'x'"),
        "null primary key": (good.assign(id=[7.0, np.nan]), "primary key is missing in row 2"),
        "duplicate primary key": (good.assign(id=[7, 7]), "duplicate primary key 7 (row 2)"),
    }


@pytest.mark.parametrize("case", sorted(_wrong_frames()))
def test_a_frame_that_breaks_the_schema_is_refused_and_nothing_is_written(backend, case: str) -> None:  # noqa: ANN001
    df, expected = _wrong_frames()[case]
    group = open_group(backend.open_store())
    version = group.insert(frame([1, 2, 3])).version
    before = backend.snapshot()
    with pytest.raises(SchemaMismatchError) as info:
        group.insert(df)
    message = str(info.value)
    assert expected in message and "things_1" in message and "\n" not in message
    assert backend.snapshot() == before
    assert group.data_version() == version
    assert group.read()["id"].tolist() == [1, 2, 3]


def test_a_refused_first_insert_creates_nothing(backend) -> None:  # noqa: ANN001
    before = backend.snapshot()
    group = open_group(backend.open_store())
    with pytest.raises(SchemaMismatchError, match="duplicate primary key"):
        group.insert(frame([1, 1]))
    assert not group.exists() and backend.snapshot() == before
    with pytest.raises(NotFoundError):
        backend.open_store().get_feature_group("things", 1)


def test_missing_values_round_trip_and_compare_equal_to_themselves(backend) -> None:  # noqa: ANN001
    df = frame([1, 2, 3])
    df["x"] = [np.nan, 2.0, 3.0]
    df["kind"] = [None, "a", "b"]
    group = open_group(backend.open_store())
    group.insert(df)
    assert group.insert(df).written == 0
    table = group.read()
    assert np.isnan(table["x"].iloc[0]) and table["kind"].iloc[0] is None


def test_a_group_created_without_a_schema_takes_the_first_frame_s(backend) -> None:  # noqa: ANN001
    open_group(backend.open_store(), features=None).insert(frame([1]))
    stored = backend.open_store().get_feature_group("things", 1)
    assert [(f.name, f.type) for f in stored.features] == [(f.name, f.type) for f in SCHEMA]


def test_reopening_with_another_schema_or_key_is_refused(backend) -> None:  # noqa: ANN001
    open_group(backend.open_store()).insert(frame([1]))
    store = backend.open_store()
    with pytest.raises(SchemaMismatchError, match=r"\(removed origin \(string\)\); a new version \(2\) is needed$"):
        store.get_or_create_feature_group("things", 1, ["id"], "event_time", features=SCHEMA[:-1])
    with pytest.raises(SchemaMismatchError, match=r"\(primary key \['id'\] stored, \['kind'\] asked for\)"):
        store.get_or_create_feature_group("things", 1, ["kind"], "event_time", features=SCHEMA)
    with pytest.raises(NotFoundError):
        store.get_feature_group("things", 2)
    with pytest.raises(NotFoundError):
        store.get_feature_group("nothing", 1)
    assert not store.get_or_create_feature_group("things", 2, ["id"], "event_time", features=SCHEMA).exists()


# --- feature views --------------------------------------------------------------------


@pytest.fixture
def view_group(backend) -> FeatureGroup:  # noqa: ANN001
    group = open_group(backend.open_store())
    group.insert(frame([1, 2, 3], day="2024-01-01"))
    group.insert(frame([10, 11], day="2024-02-01", origin="synthetic"))
    group.insert(frame([20, 21, 22], day="2024-02-02", origin="synthetic"))
    group.insert(frame([30], day="2024-02-03", origin="live"))
    return group


def test_training_data_splits_features_and_labels_with_filters_and_time_windows(backend, view_group) -> None:  # noqa: ANN001
    store = backend.open_store()
    view = store.get_or_create_feature_view("things_training", 1, view_group.select_except(["origin"]), labels=["label"])
    x, y = view.training_data()
    assert list(x.columns) == ["id", "event_time", "x", "kind"] and list(y.columns) == ["label"]
    assert x["id"].tolist() == [1, 2, 3, 10, 11, 20, 21, 22, 30]
    assert y["label"].tolist() == [i % 2 for i in x["id"]], "labels stay on their rows"
    x, y = view.training_data(extra_filter=view_group.get_feature("origin") == "backfill")
    assert x["id"].tolist() == [1, 2, 3] and y["label"].tolist() == [1, 0, 1]
    x, _ = view.training_data(start_time=dt.datetime(2024, 2, 1), end_time=dt.datetime(2024, 2, 3))
    assert x["id"].tolist() == [10, 11, 20, 21, 22], "start inclusive, end exclusive"
    x, _ = view.training_data(
        extra_filter=view_group.get_feature("origin").isin(["backfill", "live"]), start_time="2024-01-01"
    )
    assert x["id"].tolist() == [1, 2, 3, 30]
    x, _ = view.training_data(extra_filter=(view_group["origin"] == "live") | (view_group["id"] < 2))
    assert x["id"].tolist() == [1, 30]


def test_training_data_of_the_training_view_as_the_pipeline_reads_it(backend, view_group) -> None:  # noqa: ANN001
    """``load_training_rows``: key, features, label and origin selected; only real rows;
    pinned to the version read just before."""
    store = backend.open_store()
    query = view_group.select(["id", "x", "kind", "label", "origin"])
    view = store.get_or_create_feature_view("things_train", 1, query, labels=["label"])
    version = view_group.data_version()
    x, y = view.training_data(extra_filter=view_group.get_feature("origin") == "backfill", version=version)
    assert list(x.columns) == ["id", "x", "kind", "origin"] and x["id"].tolist() == [1, 2, 3]
    assert y["label"].tolist() == [1, 0, 1]
    x, _ = view.training_data(primary_key=True, event_time=True, extra_filter=view_group["id"] == 30)
    assert list(x.columns) == ["id", "event_time", "x", "kind", "origin"] and x["id"].tolist() == [30]
    view_group.insert(frame([40], day="2024-02-04", origin="live"))
    if backend.capabilities.time_travel:
        assert view.training_data(version=version)[0]["id"].tolist() == [1, 2, 3, 10, 11, 20, 21, 22, 30]
    else:
        with pytest.raises(SmlError, match="time travel"):
            view.training_data(version=version)


def test_batch_data_is_the_event_time_window_without_labels(backend, view_group) -> None:  # noqa: ANN001
    store = backend.open_store()
    synthetic_only = view_group.select(["x", "kind", "label"]).filter(view_group["origin"] == "synthetic")
    view = store.get_or_create_feature_view("things_batch", 1, synthetic_only, labels=["label"])
    batch = view.get_batch_data(start_time="2024-02-02", end_time="2024-02-03", primary_key=True, event_time=True)
    assert list(batch.columns) == ["id", "event_time", "x", "kind"]
    assert batch["id"].tolist() == [20, 21, 22]
    assert set(batch["event_time"]) == {pd.Timestamp("2024-02-02", tz="UTC")}
    # Timezone-aware bounds are compared in UTC: 2024-02-02 01:00+01:00 is 2024-02-02 00:00Z.
    aware = view.get_batch_data(start_time=pd.Timestamp("2024-02-02 01:00", tz="Europe/Stockholm"))
    assert len(aware) == 3
    assert view.get_batch_data(end_time="2024-02-01").empty
    assert list(view.get_batch_data().columns) == ["x", "kind"]
    # extra_filter narrows the view's own filter (origin == synthetic) further.
    narrowed = view.get_batch_data(primary_key=True, extra_filter=view_group["id"].isin([11, 20, 30]))
    assert narrowed["id"].tolist() == [11, 20]
    everything = store.get_or_create_feature_view("things_all", 1, view_group.select_all(), labels=["label"])
    live = everything.get_batch_data(primary_key=True, extra_filter=view_group["origin"] == "live", start_time="2024-02-03")
    assert live["id"].tolist() == [30] and "label" not in live.columns


def test_a_view_asked_for_again_must_have_the_same_query(backend, view_group) -> None:  # noqa: ANN001
    store = backend.open_store()
    recent = (view_group["event_time"] >= pd.Timestamp("2024-02-02", tz="UTC")) & (view_group["id"] != np.int64(21))
    view = store.get_or_create_feature_view("recent", 1, view_group.select_all().filter(recent), labels=["label"])
    assert view.get_batch_data(primary_key=True)["id"].tolist() == [20, 22, 30]
    # The same query again (built anew, as another process would) is the same view.
    again = backend.open_store().get_or_create_feature_view(
        "recent", 1, view_group.select_all().filter(recent), labels=["label"]
    )
    assert again.get_batch_data(primary_key=True)["id"].tolist() == [20, 22, 30]
    with pytest.raises(SchemaMismatchError, match=r"^feature view 'recent' version 1 is stored with other filters than asked for; a new version \(2\) is needed$"):
        store.get_or_create_feature_view("recent", 1, view_group.select_all(), labels=["label"])
    with pytest.raises(SchemaMismatchError, match=r"stored with other labels than asked for"):
        store.get_or_create_feature_view("recent", 1, view_group.select_all().filter(recent), labels=[])


# --- predictions ----------------------------------------------------------------------

PREDICTIONS = [
    Feature("id", "bigint"),
    Feature("model_version", "bigint"),
    Feature("event_time", "timestamp"),
    Feature("prediction", "bigint"),
    Feature("probability", "double"),
    Feature("actual", "bigint"),
    Feature("correct", "boolean"),
    Feature("origin", "string"),
    Feature("scored_at", "timestamp"),
    Feature("run_id", "string"),
]


def predictions(ids: list[int], model_version: int, prediction: int = 1, actual: list[float | None] | None = None) -> pd.DataFrame:
    actual_values = pd.array(actual if actual is not None else [1] * len(ids), dtype="Int64")
    correct = pd.array([None if pd.isna(a) else bool(a == prediction) for a in actual_values], dtype="boolean")
    return pd.DataFrame(
        {
            "id": pd.Series(ids, dtype="int64"),
            "model_version": np.int64(model_version),
            "event_time": pd.Series(pd.Timestamp("2024-03-01", tz="UTC"), index=range(len(ids))).astype("datetime64[us, UTC]"),
            "prediction": np.int64(prediction),
            "probability": 0.75,
            "actual": actual_values,
            "correct": correct,
            "origin": "synthetic",
            "scored_at": pd.Series(pd.Timestamp("2024-03-01 12:00", tz="UTC"), index=range(len(ids))).astype("datetime64[us, UTC]"),
            "run_id": f"run-{model_version}",
        }
    )


def test_predictions_are_upserted_by_key_and_model_version(backend) -> None:  # noqa: ANN001
    store = backend.open_store()
    group = store.get_or_create_feature_group(
        "things_predictions", 1, primary_key=["id", "model_version"], event_time="event_time", features=PREDICTIONS
    )
    result = group.insert(predictions([1, 2, 3], model_version=1, actual=[1, 0, None]))
    assert (result.inserted, result.updated, result.unchanged) == (3, 0, 0)
    result = group.insert(predictions([2, 3], model_version=2))
    assert (result.inserted, result.updated, result.unchanged) == (2, 0, 0), "another model's predictions of the same rows"
    version = result.version
    result = group.insert(predictions([1, 2, 3], model_version=1, actual=[1, 0, None]))
    assert (result.inserted, result.updated, result.unchanged, result.version) == (0, 0, 3, version)
    result = group.insert(predictions([1], model_version=1, prediction=0, actual=[1]))
    assert (result.inserted, result.updated, result.unchanged) == (0, 1, 0)
    table = backend.open_store().get_feature_group("things_predictions", 1).read()
    assert list(zip(table["id"], table["model_version"], strict=True)) == [(1, 1), (2, 1), (2, 2), (3, 1), (3, 2)]
    assert table["prediction"].tolist() == [0, 1, 1, 1, 1]
    assert table.loc[2, "run_id"] == "run-2"
    unknown = table[(table["id"] == 3) & (table["model_version"] == 1)].iloc[0]
    assert pd.isna(unknown["actual"]) and pd.isna(unknown["correct"]), "a missing label stays missing"
    assert table["correct"].tolist()[:3] == [False, False, True]


def test_predictions_are_deleted_by_key_and_model_version(backend) -> None:  # noqa: ANN001
    store = backend.open_store()
    group = store.get_or_create_feature_group(
        "things_predictions", 1, primary_key=["id", "model_version"], event_time="event_time", features=PREDICTIONS
    )
    group.insert(predictions([1, 2, 3], model_version=1))
    group.insert(predictions([2, 3], model_version=2))
    result = group.delete(pd.DataFrame({"id": [2, 3], "model_version": [1, 2]}))
    assert result.deleted == 2
    table = backend.open_store().get_feature_group("things_predictions", 1).read()
    assert list(zip(table["id"], table["model_version"], strict=True)) == [(1, 1), (2, 2), (3, 1)]


# --- live rows and late labels (issue 17) ---------------------------------------------


def test_a_row_without_its_label_is_stored_and_read_back_without_it(backend) -> None:  # noqa: ANN001
    group = open_group(backend.open_store())
    df = frame([1, 2, 3], origin="live")
    df["label"] = pd.array([1, None, None], dtype="Int64")
    group.insert(df)
    table = backend.open_store().get_feature_group("things", 1).read()
    assert table["label"].isna().tolist() == [False, True, True]
    assert table["label"].iloc[0] == 1
    assert group.insert(df).written == 0, "a missing label compares equal to itself"


def test_a_label_that_arrives_later_updates_only_that_row(backend) -> None:  # noqa: ANN001
    group = open_group(backend.open_store())
    unlabelled = frame([1, 2, 3], origin="live")
    unlabelled["label"] = pd.array([None, None, 0], dtype="Int64")
    version = group.insert(unlabelled).version
    stored = group.read()
    labelled = stored[stored["id"] == 2].copy()  # the row as stored, its label set
    labelled["label"] = pd.array([0], dtype="Int64")
    result = group.insert(labelled)
    assert (result.inserted, result.updated, result.unchanged) == (0, 1, 0)
    assert result.version is not None and version is not None and result.version > version
    table = backend.open_store().get_feature_group("things", 1).read()
    assert table["id"].tolist() == [1, 2, 3]
    assert table["label"].isna().tolist() == [True, False, False] and table.loc[1, "label"] == 0
    others = ["event_time", "x", "kind", "origin"]
    pd.testing.assert_frame_equal(table[others], stored[others], obj="the other columns as stored")
    # A changed label is an update like any other (what `sml labels --overwrite` writes).
    relabelled = table[table["id"] == 3].copy()
    relabelled["label"] = pd.array([1], dtype="Int64")
    assert group.insert(relabelled).updated == 1
    assert backend.open_store().get_feature_group("things", 1).read()["label"].iloc[2] == 1
