"""What a hopsworks 5.2.1 cluster does that a plain in-memory store would not, and what
the backend does about it: each finding of the audit of issue 22, shown against the
stand-in that models it (``hopsworks_standin.py``).

Select them with ``-k qualified``, ``-k merge_key``, ``-k half_created``, ``-k sdk_errors``,
``-k sdk_stdout``; ``-k statistics`` and ``-k read_dtypes`` for the rest. Each test first
shows the stand-in behaving like the SDK (so the backend's answer is needed), then the
backend's answer.
"""

from __future__ import annotations

import logging
import warnings

import pandas as pd
import pytest
from deltalake.exceptions import CommitFailedError
from hopsworks_common.client.exceptions import FeatureStoreException, RestAPIError
from hopsworks_common.util import VersionWarning

from serverless_ml.errors import NotFoundError, SmlError
from serverless_ml.feature_store.hopsworks import HopsworksFeatureStore

from hopsworks_standin import StandInService
from test_feature_store_contract import SCHEMA, frame, open_group

pytestmark = pytest.mark.contract

def sdk_features():  # noqa: ANN201
    from hsfs.feature import Feature as SdkFeature

    return [SdkFeature(name=f.name, type=f.type) for f in SCHEMA]


def raw_group(service: StandInService, **kwargs: object):  # noqa: ANN201
    """The group ``things`` v1 through the SDK itself, as another client would make it."""
    return service.feature_store.get_or_create_feature_group(
        name="things", version=1, primary_key=["id"], event_time="event_time", features=sdk_features(),
        time_travel_format="DELTA", **kwargs,
    )


# --- finding 1: fully qualified key and event-time names ------------------------------


def test_qualified_names_come_back_for_keys_and_event_times_the_query_does_not_select(standin: StandInService) -> None:
    store = HopsworksFeatureStore(standin.feature_store)
    group = open_group(store)
    group.insert(frame([1, 2, 3]))
    view = store.get_or_create_feature_view("things_train", 1, group.select(["x", "label"]), labels=["label"])
    # The SDK: unselected key and event time under <project>_<group>_<version>_<column>.
    with pytest.warns(VersionWarning, match="Incremented version"):
        x, _ = view.handle.training_data(primary_key=True, event_time=True, dataframe_type="pandas")
    assert sorted(x.columns) == ["sml_contract_things_1_event_time", "sml_contract_things_1_id", "x"]
    batch = view.handle.get_batch_data(primary_key=True, event_time=True, dataframe_type="pandas")
    assert "sml_contract_things_1_id" in batch.columns
    # The backend maps them back.
    x, y = view.training_data(primary_key=True, event_time=True)
    assert list(x.columns) == ["id", "event_time", "x"] and x["id"].tolist() == [1, 2, 3]
    assert x["event_time"].tolist() == [pd.Timestamp("2024-01-01", tz="UTC")] * 3 and y["label"].tolist() == [1, 0, 1]
    x, _ = view.training_data()
    assert list(x.columns) == ["x"]
    batch = view.get_batch_data(primary_key=True, event_time=True, start_time="2024-01-01")
    assert list(batch.columns) == ["id", "event_time", "x"] and batch["id"].tolist() == [1, 2, 3]


def test_qualified_names_the_training_view_of_the_pipeline_reads(standin: StandInService, data_dir) -> None:  # noqa: ANN001
    """``sml train``'s first call: the training view selects the key but not the event
    time, and ``training_data`` asks for the event time to order rows."""
    from serverless_ml.datasets import get_dataset
    from serverless_ml.datasets.sources import load_source
    from serverless_ml.pipelines.features import backfill
    from serverless_ml.pipelines.train import load_training_rows

    spec = get_dataset("titanic")
    store = HopsworksFeatureStore(standin.feature_store)
    backfill(spec, store, load_source(spec, None, data_dir))
    x, y, keys, version = load_training_rows(spec, store, include_synthetic=False)
    assert len(x) == len(y) == len(keys) > 800 and keys.is_monotonic_increasing and version is not None
    assert "event_time" not in x.columns


def test_qualified_name_missing_altogether_is_one_line(standin: StandInService, monkeypatch: pytest.MonkeyPatch) -> None:
    store = HopsworksFeatureStore(standin.feature_store)
    group = open_group(store)
    group.insert(frame([1, 2]))
    view = store.get_or_create_feature_view("things_train", 1, group.select(["x", "label"]), labels=["label"])
    real = view.handle.get_batch_data
    monkeypatch.setattr(view.handle, "get_batch_data", lambda **kw: real(**kw).drop(columns=["sml_contract_things_1_id"]))
    with pytest.raises(SmlError, match="Hopsworks returned no column for 'id'"):
        view.get_batch_data(primary_key=True)


# --- finding 2: the offline upsert merges on primary key and event time ---------------


def test_merge_key_is_primary_key_and_event_time_in_the_sdk(standin: StandInService) -> None:
    fg = raw_group(standin)
    fg.insert(frame([1, 2]).assign(event_time=lambda d: d["event_time"]), operation="upsert")
    fg.insert(frame([1], day="2024-02-01"), operation="upsert")
    rows = fg.select_all().read(dataframe_type="pandas")
    assert sorted(rows["id"]) == [1, 1, 2], "the same key with another event time is a second row"


def test_merge_key_a_moved_event_time_replaces_the_stored_row(standin: StandInService) -> None:
    group = open_group(HopsworksFeatureStore(standin.feature_store))
    group.insert(frame([1, 2, 3]))
    result = group.insert(frame([1, 2], day="2024-02-01").assign(x=[2.0, 99.0]))  # 1: only its time moved
    assert (result.inserted, result.updated, result.unchanged) == (0, 2, 0)
    table = group.read()
    assert table["id"].tolist() == [1, 2, 3] and table["x"].tolist() == [2.0, 99.0, 4.0]
    assert table["event_time"].dt.strftime("%m-%d").tolist() == ["02-01", "02-01", "01-01"]
    removed = [args[0] for name, args, _ in standin.calls if name == "FeatureGroup.remove_rows"]
    assert len(removed) == 1 and removed[0]["id"].tolist() == [1, 2], "the stored rows deleted first"
    assert removed[0]["event_time"].dt.strftime("%m-%d").tolist() == ["01-01", "01-01"]
    # A value change at the same event time is a plain upsert: nothing deleted.
    assert group.insert(frame([3]).assign(x=50.0)).updated == 1
    assert sum(name == "FeatureGroup.remove_rows" for name, _, _ in standin.calls) == 1


def test_merge_key_repeated_stored_keys_are_refused_in_one_line(standin: StandInService) -> None:
    """Rows another client (or an older backend) stored twice under one key."""
    fg = raw_group(standin)
    fg.insert(frame([1, 2]))
    fg.insert(frame([1], day="2024-02-01"))
    group = open_group(HopsworksFeatureStore(standin.feature_store))
    before = standin.snapshot()
    with pytest.raises(SmlError) as info:
        group.insert(frame([1, 3]))
    assert "holds 2 rows for 1 key(s), the first id 1" in str(info.value) and "\n" not in str(info.value)
    assert standin.snapshot() == before
    assert group.delete(pd.DataFrame({"id": [1]})).deleted == 2, "the way out the message names"
    assert group.insert(frame([1, 3])).inserted == 2


# --- finding 3: the write path from outside the cluster; half-created groups ----------


def test_half_created_group_is_left_by_a_failed_first_write(standin: StandInService, capsys: pytest.CaptureFixture[str]) -> None:
    standin.direct_writes_fail = True
    fg = raw_group(standin)
    with pytest.raises(FeatureStoreException, match="Failed to write to delta table in external cluster"):
        fg.insert(frame([1, 2]))  # the empty table of the declared schema, at registration
    assert "Feature Group created successfully" not in capsys.readouterr().out, "printed after the empty table"
    assert fg.id is not None and fg.commit_details() == {}, "registered, no data"
    with pytest.raises(FeatureStoreException, match="no table"):
        fg.select_all().read(dataframe_type="pandas")
    # Without a declared schema nothing is written at registration, but the rows are.
    other = standin.feature_store.get_or_create_feature_group(
        name="others", version=1, primary_key=["id"], event_time="event_time", time_travel_format="DELTA"
    )
    with pytest.raises(FeatureStoreException, match="Failed to write to delta table"):
        other.insert(frame([1, 2]))
    assert "Feature Group created successfully" in capsys.readouterr().out
    assert other.id is not None and other.commit_details() == {}
    # ... and a stream group without a declared schema is written by its job.
    streamed = standin.feature_store.get_or_create_feature_group(
        name="streamed", version=1, primary_key=["id"], event_time="event_time", time_travel_format="DELTA", stream=True
    )
    streamed.insert(frame([1, 2]), wait=True)
    assert len(streamed.commit_details()) == 1
    with pytest.raises(FeatureStoreException, match="dtype 'null' not supported"):
        standin.feature_store.get_or_create_feature_group(
            name="nulls", version=1, primary_key=["id"], time_travel_format="DELTA", stream=True
        ).insert(frame([1]).assign(kind=None), wait=True)


def test_half_created_group_is_created_again_by_the_next_run(
    standin: StandInService, caplog: pytest.LogCaptureFixture
) -> None:
    standin.direct_writes_fail = True
    with pytest.raises(FeatureStoreException):
        raw_group(standin).insert(frame([1, 2]))  # an earlier run, cut short
    standin.direct_writes_fail = False
    with pytest.raises(NotFoundError, match=r"registered but never written .a first insert failed."):
        HopsworksFeatureStore(standin.feature_store).get_feature_group("things", 1)
    caplog.set_level(logging.WARNING)
    group = open_group(HopsworksFeatureStore(standin.feature_store))
    assert not group.exists() and "holds no data; deleting it" in caplog.text
    result = group.insert(frame([1, 2, 3]))
    assert (result.inserted, result.updated, result.unchanged) == (3, 0, 0)
    assert HopsworksFeatureStore(standin.feature_store).get_feature_group("things", 1).read()["id"].tolist() == [1, 2, 3]


def test_half_created_by_a_failed_direct_write_the_group_moves_to_the_materialization_job(
    standin: StandInService, caplog: pytest.LogCaptureFixture
) -> None:
    standin.direct_writes_fail = True
    caplog.set_level(logging.WARNING)
    store = HopsworksFeatureStore(standin.feature_store)
    group = open_group(store)
    result = group.insert(frame([1, 2, 3]))
    assert (result.inserted, result.updated, result.unchanged) == (3, 0, 0) and result.version == group.data_version()
    assert group._handle.stream and standin.jobs_run == 1
    assert "writing through Kafka and the group's materialization job instead" in caplog.text
    deletes = [name for name, _, _ in standin.calls if name == "FeatureGroupBase.delete" or name.endswith(".delete")]
    assert len(deletes) == 1, "the empty registration was removed once"
    inserts = [kwargs for name, _, kwargs in standin.calls if name == "FeatureGroup.insert"]
    assert inserts[-1]["wait"] is True
    # Upserts keep working; a later group of the same store goes to the job at once.
    assert group.insert(frame([3, 4]).assign(x=[7.0, 8.0])).written == 2
    assert group.read()["x"].tolist() == [2.0, 3.0, 7.0, 8.0]
    other = store.get_or_create_feature_group("others", 1, ["id"], "event_time", features=SCHEMA)
    other.insert(frame([1]))
    assert other._handle.stream and len([n for n, _, _ in standin.calls if n.endswith(".delete")]) == 1
    # The SDK deletes rows with delta-rs whatever the group: one line saying why.
    with pytest.raises(SmlError) as info:
        group.delete(pd.DataFrame({"id": [1]}))
    assert "deletes rows with a direct Delta write" in str(info.value) and "\n" not in str(info.value)


def test_half_created_path_the_streaming_insert_waits_for_the_job(standin: StandInService) -> None:
    """Why the backend always waits on the streaming path: without it the rows land
    later, and the counts and version it returns would be wrong."""
    fg = raw_group(standin, stream=True)
    fg.insert(frame([1, 2]), wait=False)
    assert fg.commit_details() == {} and len(standin.pending_jobs) == 1
    standin.run_materialization_jobs()
    assert len(fg.commit_details()) == 1
    group = open_group(HopsworksFeatureStore(standin.feature_store))
    assert group.insert(frame([3]), wait=False).inserted == 1 and standin.pending_jobs == []
    assert group.read()["id"].tolist() == [1, 2, 3]


def test_half_created_a_direct_group_that_cannot_be_written_says_why(standin: StandInService) -> None:
    group = open_group(HopsworksFeatureStore(standin.feature_store))
    group.insert(frame([1]))
    standin.direct_writes_fail = True
    with pytest.raises(SmlError) as info:
        group.insert(frame([2]))
    message = str(info.value)
    assert message.startswith("Hopsworks: cannot insert into feature group 'things' version 1: FeatureStoreException: ")
    assert "created for direct Delta writes" in message and "load balancers" in message and "\n" not in message


# --- finding 4: what the SDK prints goes to the log -----------------------------------


def test_sdk_stdout_and_warnings_go_to_the_log(
    standin: StandInService, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="serverless_ml.feature_store.hopsworks")
    store = HopsworksFeatureStore(standin.feature_store)
    group = open_group(store)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        group.insert(frame([1, 2]))
        group.insert(frame([2, 3]))
        view = store.get_or_create_feature_view("things_all", 1, group.select_all(), labels=["label"])
        view.training_data()
        view.training_data()
    out, err = capsys.readouterr()
    assert out == "" and err == ""
    assert [str(w.message) for w in seen] == [], "the SDK's warnings do not reach the user either"
    assert "hopsworks: Feature Group created successfully, explore it at" in caplog.text
    assert "hopsworks: Finished: Reading data from Hopsworks" in caplog.text and "\r" not in caplog.text
    assert "hopsworks: VersionWarning: Incremented version to `2`." in caplog.text


def test_sdk_stdout_the_standin_prints_as_the_sdk_does(standin: StandInService, capsys: pytest.CaptureFixture[str]) -> None:
    fg = raw_group(standin)
    fg.insert(frame([1]))
    fg.select_all().read(dataframe_type="pandas")
    out = capsys.readouterr().out
    assert "Feature Group created successfully" in out and "Finished: Reading data from Hopsworks" in out


# --- finding 5: every SDK failure is one line -----------------------------------------


class _Forbidden:  # what requests hands RestAPIError
    status_code, reason, content = 403, "Forbidden", b"{}"

    def json(self) -> dict[str, object]:
        return {"errorCode": 160000, "errorMsg": "No permission", "usrMsg": "the API key lacks the featurestore scope"}


SDK_FAILURES = {
    "hive fallback": (ValueError("Reading data with Hive is not supported when using hopsworks client version >= 4.0"),
                      "ValueError: Reading data with Hive is not supported when using hopsworks client version >= 4.0"),
    "not implemented": (NotImplementedError("Hudi feature group deletes are not supported\nmore"),
                        "NotImplementedError: Hudi feature group deletes are not supported"),
    "empty commit list": (KeyError("commits"), "KeyError: 'commits'"),
    "conflicting merge": (CommitFailedError("Transaction failed: a concurrent transaction deleted data"),
                          "CommitFailedError: Transaction failed: a concurrent transaction deleted data "
                          "(another writer changed the feature group at the same time; run again)"),
    "rest": (RestAPIError("https://hopsworks.example.org/hopsworks-api/api/project/1", _Forbidden()),
             "HTTP 403: the API key lacks the featurestore scope"),
    "feature store": (FeatureStoreException("storage is full\nsecond line"), "FeatureStoreException: storage is full"),
    "network": (ConnectionResetError(104, "Connection reset by peer"), "ConnectionResetError: [Errno 104] Connection reset by peer"),
}

SDK_STEPS = {
    "FeatureGroup.insert": ("insert into feature group 'things' version 1", lambda g, v: g.insert(frame([9]))),
    "Query.read": ("read feature group 'things' version 1", lambda g, v: g.read()),
    "FeatureGroup.commit_details": ("read the commits of feature group 'things' version 1", lambda g, v: g.data_version()),
    "FeatureView.training_data": ("read training data of feature view 'things_all' version 1", lambda g, v: v.training_data()),
    "FeatureView.get_batch_data": ("read batch data of feature view 'things_all' version 1", lambda g, v: v.get_batch_data()),
    "FeatureGroup.remove_rows": ("delete rows of feature group 'things' version 1", lambda g, v: g.delete(pd.DataFrame({"id": [1]}))),
}


@pytest.mark.parametrize("failure", sorted(SDK_FAILURES))
@pytest.mark.parametrize("step", sorted(SDK_STEPS))
def test_sdk_errors_become_one_line_naming_the_step(standin: StandInService, step: str, failure: str) -> None:
    exc, expected = SDK_FAILURES[failure]
    action, call = SDK_STEPS[step]
    store = HopsworksFeatureStore(standin.feature_store)
    group = open_group(store)
    group.insert(frame([1, 2]))
    view = store.get_or_create_feature_view("things_all", 1, group.select_all(), labels=["label"])
    standin.fail_next(step, exc)
    with pytest.raises(SmlError) as info:
        call(group, view)
    assert str(info.value) == f"Hopsworks: cannot {action}: {expected}"
    assert info.value.__cause__ is exc, "--verbose still shows the SDK's traceback"
    assert standin.faults == {}, "the failure came from that step"


def test_sdk_errors_opening_groups_and_views(standin: StandInService) -> None:
    store = HopsworksFeatureStore(standin.feature_store)
    standin.fail_next("FeatureStore.get_or_create_feature_group", ValueError("bad name"))
    with pytest.raises(SmlError, match=r"^Hopsworks: cannot get or create feature group 'things' version 1: ValueError: bad name$"):
        open_group(store)
    group = open_group(store)
    group.insert(frame([1]))
    standin.fail_next("FeatureGroup.select_all", KeyError("id"))
    with pytest.raises(SmlError, match=r"^Hopsworks: cannot select from feature group 'things' version 1: KeyError: 'id'$"):
        group.read()
    standin.fail_next("FeatureStore.get_or_create_feature_view", NotImplementedError("spine"))
    with pytest.raises(SmlError, match=r"feature view 'v' version 1: NotImplementedError: spine$"):
        store.get_or_create_feature_view("v", 1, group.select_all(), labels=["label"])


def test_sdk_errors_a_bug_in_the_backend_keeps_its_traceback(standin: StandInService) -> None:
    """Only what SDK calls raise is turned into a line: a TypeError is a bug."""
    group = open_group(HopsworksFeatureStore(standin.feature_store))
    group.insert(frame([1]))
    standin.fail_next("Query.read", TypeError("unexpected"))
    with pytest.raises(TypeError):
        group.read()


# --- finding 6: statistics ------------------------------------------------------------


def test_statistics_are_off_for_the_groups_the_backend_creates(standin: StandInService) -> None:
    assert raw_group(standin).statistics_config == {"enabled": True}, "the SDK's default"
    store = HopsworksFeatureStore(standin.feature_store)
    group = store.get_or_create_feature_group("mine", 1, ["id"], "event_time", features=SCHEMA)
    group.insert(frame([1]))
    assert group._handle.statistics_config == {"enabled": False}
    asked = [kwargs for name, _, kwargs in standin.calls if name == "FeatureStore.get_or_create_feature_group"]
    assert asked[-1]["statistics_config"] is False


# --- read dtypes ----------------------------------------------------------------------


def test_read_dtypes_are_those_of_an_arrow_flight_read_and_come_back_as_declared(standin: StandInService) -> None:
    df = frame([1, 2, 3])
    df["label"] = pd.array([1, None, 0], dtype="Int64")
    group = open_group(HopsworksFeatureStore(standin.feature_store))
    group.insert(df)
    raw = group._handle.select_all().read(dataframe_type="pandas")
    assert raw["label"].dtype == "float64" and raw["id"].dtype == "int64"
    assert raw["event_time"].dtype == "datetime64[us]", "naive microseconds"
    table = group.read()
    assert str(table["event_time"].dtype) == "datetime64[us, UTC]" and table["id"].dtype == "int64"
    assert table["label"].tolist()[0] == 1 and pd.isna(table["label"].tolist()[1])
    assert group.insert(df).written == 0, "a gap compares equal to itself"


def test_merge_key_a_moved_event_time_is_an_update_on_every_backend(backend) -> None:  # noqa: ANN001
    """The contract both backends keep: an upsert is by primary key, whatever the event time."""
    group = open_group(backend.open_store())
    group.insert(frame([1, 2]))
    result = group.insert(frame([1], day="2024-02-01"))
    assert (result.inserted, result.updated, result.unchanged) == (0, 1, 0)
    table = backend.open_store().get_feature_group("things", 1).read()
    assert table["id"].tolist() == [1, 2]
    assert table["event_time"].tolist() == [pd.Timestamp("2024-02-01", tz="UTC"), pd.Timestamp("2024-01-01", tz="UTC")]
    assert group.insert(frame([1], day="2024-02-01")).written == 0
