"""What only the Hopsworks backend has: logging in, keeping the key out of sight, sending
only changed rows, and the stand-in's own strictness (so the contract suite's Hopsworks
half means something). The whole loop (features, daily rows, training, batch inference,
simulation) also runs on it and on the local store, with the same results.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import inspect
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import hopsworks
import mlflow
import pandas as pd
import pytest
from hopsworks_common.client.exceptions import FeatureStoreException, RestAPIError

from serverless_ml.datasets import get_dataset
from serverless_ml.datasets.sources import load_source
from serverless_ml.errors import SchemaMismatchError, SmlError
from serverless_ml.feature_store import Feature, open_feature_store
from serverless_ml.feature_store import hopsworks as backend_module
from serverless_ml.feature_store.hopsworks import HopsworksFeatureStore, open_hopsworks_feature_store
from serverless_ml.feature_store.local import LocalFeatureStore
from serverless_ml.pipelines.features import add_daily_rows, backfill
from serverless_ml.pipelines.history import HistoryConflict
from serverless_ml.pipelines.infer import InferOptions, infer
from serverless_ml.pipelines.simulate import SimulateOptions, simulate
from serverless_ml.pipelines.train import TrainOptions, load_training_rows, train
from serverless_ml.settings import resolve_settings

from served import record_served
from hopsworks_standin import STAND_INS, StandInService, StandInSignatureError
from test_feature_store_contract import SCHEMA, frame, open_group

pytestmark = pytest.mark.contract

SECRET = "sk-contract-7f3a9c1e5b2d4f60"
REPO_ROOT = Path(__file__).resolve().parents[2]


def credentials(**extra: str) -> dict[str, str]:
    return {"HOPSWORKS_API_KEY": SECRET, "HOPSWORKS_PROJECT": "sml_contract", **extra}


# --- the stand-in checks its callers --------------------------------------------------


def _bad_calls(service: StandInService):  # noqa: ANN202
    store = HopsworksFeatureStore(service.feature_store)
    group = open_group(store)
    group.insert(frame([1, 2]))
    view = store.get_or_create_feature_view("v", 1, group.select_all(), labels=["label"])
    sdk_fs, sdk_fg, sdk_fv = service.feature_store, group._handle, view.handle
    sdk_query = sdk_fg.select_all()
    return {
        "login with a misspelled key argument": lambda: service.login(project="p", api_key="k"),
        "feature store with an unknown argument": lambda: service.project.get_feature_store(fs_name="x"),
        "group with primary_keys": lambda: sdk_fs.get_or_create_feature_group(name="g", version=1, primary_keys=["id"]),
        "insert with wiat": lambda: sdk_fg.insert(frame([3]), wiat=True),
        "insert with too many positional arguments": lambda: sdk_fg.insert(frame([3]), False, "upsert", None, {}, {}, True, {}, True, 1, 2),
        "commit details with limits": lambda: sdk_fg.commit_details(limits=1),
        "query read with dataframe": lambda: sdk_query.read(dataframe="pandas"),
        "training data with extra_filters": lambda: sdk_fv.training_data(extra_filters=None),
        "batch data with prediction_times": lambda: sdk_fv.get_batch_data(prediction_times=[]),
        "view without a query": lambda: sdk_fs.get_or_create_feature_view(name="w", version=1),
    }


@pytest.mark.parametrize(
    "case",
    [
        "login with a misspelled key argument",
        "feature store with an unknown argument",
        "group with primary_keys",
        "insert with wiat",
        "insert with too many positional arguments",
        "commit details with limits",
        "query read with dataframe",
        "training data with extra_filters",
        "batch data with prediction_times",
        "view without a query",
    ],
)
def test_the_standin_refuses_arguments_the_real_sdk_refuses(standin: StandInService, case: str) -> None:
    call = _bad_calls(standin)[case]
    calls_before = len(standin.calls)
    with pytest.raises(StandInSignatureError, match=r"hopsworks|hsfs"):
        call()
    assert len(standin.calls) == calls_before, "a refused call does nothing"


def test_the_real_sdk_refuses_those_calls_too() -> None:
    """The stand-in is not stricter than the SDK: a keyword outside a signature fails to
    bind, and one that lands in a view method's ``**kwargs`` is rejected when called."""
    from hsfs.feature_group import FeatureGroup
    from hsfs.feature_view import FeatureView

    with pytest.raises(TypeError, match="wiat"):
        inspect.signature(FeatureGroup.insert).bind(object(), frame([1]), wiat=True)
    with pytest.raises(TypeError, match="extra_filters"):
        FeatureView._reject_unknown_kwargs({"extra_filters": None}, "training_data")
    assert "extra_filter" in inspect.signature(FeatureView.training_data).parameters


def test_standin_classes_have_only_attributes_of_the_real_classes() -> None:
    for stand_in, real in STAND_INS.items():
        public = [name for name in vars(stand_in) if not name.startswith("_")]
        assert public, stand_in
        missing = [name for name in public if not hasattr(real, name)]
        assert missing == [], f"{stand_in.__name__} has {missing}, which {real.__qualname__} lacks"
        for name in public:
            member = vars(stand_in)[name]
            if inspect.isfunction(member):
                assert getattr(member, "real_class", None) is real, f"{stand_in.__name__}.{name} is not checked"


# --- logging in -----------------------------------------------------------------------


@pytest.fixture
def no_real_login(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any use of the real ``hopsworks.login`` a test failure."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the real hopsworks.login was called")

    monkeypatch.setattr(hopsworks, "login", refuse)


def test_without_a_key_it_fails_at_once_naming_the_variable(no_real_login: None) -> None:
    settings = resolve_settings(feature_store="hopsworks")
    started = time.monotonic()
    with pytest.raises(SmlError) as info:
        open_feature_store(settings)
    assert time.monotonic() - started < 1
    message = str(info.value)
    assert "set HOPSWORKS_API_KEY" in message and "\n" not in message
    with pytest.raises(SmlError, match="set HOPSWORKS_API_KEY"):
        open_hopsworks_feature_store({"HOPSWORKS_API_KEY": "  ", "HOPSWORKS_PROJECT": "p"})


def test_without_a_project_it_names_that_variable(no_real_login: None) -> None:
    with pytest.raises(SmlError, match="set HOPSWORKS_PROJECT to the project's name"):
        open_hopsworks_feature_store({"HOPSWORKS_API_KEY": SECRET})


def test_the_store_is_opened_with_the_standard_variables(
    standin: StandInService, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in credentials(HOPSWORKS_HOST="hopsworks.example.org").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(hopsworks, "login", standin.login)  # the one SDK function, not the module
    store = open_feature_store(resolve_settings(feature_store="hopsworks"))
    assert isinstance(store, HopsworksFeatureStore)
    assert standin.logins == [{"host": "hopsworks.example.org", "project": "sml_contract", "api_key_value": SECRET}]
    monkeypatch.setenv("SML_FEATURE_STORE", "HOPSWORKS")
    assert isinstance(open_feature_store(resolve_settings()), HopsworksFeatureStore)


def test_inside_hopsworks_the_sdk_logs_in_by_itself(standin: StandInService) -> None:
    open_hopsworks_feature_store({"REST_ENDPOINT": "https://hopsworks.internal"}, login=standin.login)
    assert standin.logins == [{"host": None, "project": None, "api_key_value": None}]


def test_the_key_never_appears_in_reprs_logs_or_output(
    standin: StandInService, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    store = open_hopsworks_feature_store(credentials(), login=standin.login)
    group = open_group(store)
    group.insert(frame([1, 2, 3]))
    view = store.get_or_create_feature_view("v", 1, group.select_all(), labels=["label"])
    view.training_data()
    out, err = capsys.readouterr()
    seen = [repr(store), str(store), repr(group), str(group), repr(view), str(view), caplog.text, out, err]
    assert all(SECRET not in text for text in seen)
    assert "Logged in to project" in caplog.text and "Logged in" not in out, "the SDK's chatter goes to the log"
    assert all(SECRET not in repr(value) for value in vars(store).values())


def test_a_failed_login_is_one_line_without_the_key() -> None:
    def failing_login(**kwargs: object) -> None:
        raise ConnectionError(f"401 Unauthorized for key {kwargs['api_key_value']}\nTraceback follows")

    with pytest.raises(SmlError) as info:
        open_hopsworks_feature_store(credentials(), login=failing_login)
    message = str(info.value)
    assert message.startswith("cannot log in to Hopsworks project 'sml_contract' at the SDK default host")
    assert SECRET not in message and "***" in message and "\n" not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


# --- what the backend sends -----------------------------------------------------------


def test_an_insert_sends_only_new_and_changed_rows(standin: StandInService) -> None:
    group = open_group(HopsworksFeatureStore(standin.feature_store))
    group.insert(frame([1, 2, 3]))
    changed = frame([1, 2, 4])
    changed.loc[changed["id"] == 2, "x"] = 99.0
    result = group.insert(changed)
    assert (result.inserted, result.updated, result.unchanged) == (1, 1, 1)
    sent = standin.inserted_frames()
    assert [len(f) for f in sent] == [3, 2] and sorted(sent[-1]["id"]) == [2, 4]
    assert group.insert(changed).written == 0
    assert len(standin.inserted_frames()) == 2, "an unchanged batch is not sent at all"
    assert len(group._handle.commit_details()) == 2


def test_many_keys_are_compared_against_the_whole_group(standin: StandInService, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backend_module, "KEY_FILTER_MAX_KEYS", 2)
    group = open_group(HopsworksFeatureStore(standin.feature_store))
    group.insert(frame([1, 2, 3]))
    filters_before = sum(name == "Query.filter" for name, _, _ in standin.calls)
    result = group.insert(frame([2, 3, 4], x=1.0))
    assert (result.inserted, result.updated, result.unchanged) == (1, 0, 2)
    assert sum(name == "Query.filter" for name, _, _ in standin.calls) == filters_before, "no IN filter"
    assert group.insert(frame([5, 6])).inserted == 2


def test_names_hopsworks_would_change_are_refused_before_anything_is_sent(standin: StandInService) -> None:
    store = HopsworksFeatureStore(standin.feature_store)
    with pytest.raises(SchemaMismatchError, match="rename 'Kind' to 'kind'"):
        store.get_or_create_feature_group("things", 1, ["id"], "event_time", features=[*SCHEMA[:3], Feature("Kind", "string")])
    assert standin.calls == []
    group = open_group(store, features=None)
    with pytest.raises(SchemaMismatchError, match="rename 'my x' to 'my_x'"):
        group.insert(frame([1]).rename(columns={"x": "my x"}))
    assert standin.inserted_frames() == []


def test_sdk_failures_become_one_line_naming_the_step(standin: StandInService, monkeypatch: pytest.MonkeyPatch) -> None:
    group = open_group(HopsworksFeatureStore(standin.feature_store))
    group.insert(frame([1]))

    def broken(*args: object, **kwargs: object) -> None:
        raise FeatureStoreException("storage is full\nsecond line")

    monkeypatch.setattr(group._handle, "insert", broken)
    with pytest.raises(SmlError) as info:
        group.insert(frame([2]))
    assert str(info.value) == (
        "Hopsworks: cannot insert into feature group 'things' version 1: FeatureStoreException: storage is full"
    )

    class Response:  # what requests hands RestAPIError
        status_code, reason, content = 403, "Forbidden", b"{}"

        def json(self) -> dict[str, object]:
            return {"errorCode": 160000, "errorMsg": "No permission", "usrMsg": "the API key lacks the featurestore scope"}

    def forbidden(*args: object, **kwargs: object) -> None:
        raise RestAPIError("https://hopsworks.example.org/hopsworks-api/api/project/1/featurestores/1/featuregroups", Response())

    monkeypatch.setattr(group._handle, "commit_details", forbidden)
    with pytest.raises(SmlError) as info:
        group.data_version()
    assert str(info.value) == (
        "Hopsworks: cannot read the commits of feature group 'things' version 1: "
        "HTTP 403: the API key lacks the featurestore scope"
    )


def test_a_view_needs_written_data(standin: StandInService) -> None:
    group = open_group(HopsworksFeatureStore(standin.feature_store))
    with pytest.raises(SmlError, match="has no data yet; insert first"):
        HopsworksFeatureStore(standin.feature_store).get_or_create_feature_view("v", 1, group.select_all())


# --- the CLI --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "extra_env"),
    [
        (["features", "--dataset", "iris", "--feature-store", "hopsworks"], {}),
        (["daily", "--dataset", "iris", "--date", "2024-02-01"], {"SML_FEATURE_STORE": "hopsworks"}),
    ],
)
def test_the_cli_without_a_key_exits_2_with_one_line_and_no_prompt(
    tmp_path: Path, data_dir: Path, args: list[str], extra_env: dict[str, str]
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOPSWORKS_", "SML_", "REST_ENDPOINT"))}
    env.update(
        SML_DATA_DIR=str(data_dir), SML_STORE_DIR=str(tmp_path / "store"), SML_CACHE_DIR=str(tmp_path / "cache"),
        http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9",
        HTTPS_PROXY="http://127.0.0.1:9", **extra_env,
    )
    proc = subprocess.run(
        [sys.executable, "-m", "serverless_ml.cli", *args],
        cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --feature-store hopsworks needs an API key: set HOPSWORKS_API_KEY")
    assert not (tmp_path / "store").exists()


# --- the whole loop on the Hopsworks backend ------------------------------------------


@pytest.fixture
def fresh_mlflow() -> object:
    mlflow.set_tracking_uri(None)
    yield
    while mlflow.active_run() is not None:
        mlflow.end_run(status="KILLED")
    mlflow.set_tracking_uri(None)


def _tracking_copy(template: Path, folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, folder / "mlflow.db")
    return f"sqlite:///{folder / 'mlflow.db'}"


def _run_loop(spec, store, source, settings, noon_of) -> dict[str, object]:  # noqa: ANN001
    """features, daily, train, infer (two days) and simulate (two days) on ``store``;
    what they produced, without run ids and clock times."""
    features = backfill(spec, store, source)
    daily = add_daily_rows(spec, store, dt.date(2024, 2, 1), n=20, seed=3)
    report = train(spec, store, settings, TrainOptions(trials=2, seed=1, folds=3, quiet=True))
    scored = []
    for day in (dt.date(2024, 3, 1), dt.date(2024, 3, 2)):
        add_daily_rows(spec, store, day, n=5, seed=0)
        if scored:  # 2 of the second day's rows served before its batch takes them in
            rows = store.get_feature_group(spec.name, spec.version).read()
            record_served(spec, store, settings.state_dir, sorted(rows.loc[rows["event_time"].dt.date == day, spec.primary_key])[:2],
                          pd.Timestamp(noon_of(day)) - pd.Timedelta(hours=1), report.model_version, settings.tracking_uri)
        result = infer(spec, store, settings, InferOptions(figures=False, as_of=day), noon_of(day))
        scored.append((result.rows_scored, result.model_version, result.metrics))
    simulated = simulate(spec, store, settings, SimulateOptions(days=2, end_date=dt.date(2024, 3, 5), rows=4))
    predictions = store.get_feature_group(spec.predictions_group, 1).read()
    return {
        "written": [(r.inserted, r.updated, r.unchanged) for r in (features, daily)],
        "training": (report.best_params, report.holdout_metrics, report.cv_mean, report.model_version, report.decision.promote),
        "scored": scored,
        "simulated": (simulated.days, simulated.rows_added, simulated.runs, simulated.alert_days),
        "features": store.get_feature_group("titanic", spec.version).read(),
        "predictions": predictions.drop(columns=["run_id", "scored_at"]),
    }


@pytest.mark.integration
def test_the_loop_runs_on_hopsworks_with_the_local_store_s_results(
    standin: StandInService, tmp_path: Path, data_dir: Path, tracking_uri: str, mlflow_template_db: Path,
    monkeypatch: pytest.MonkeyPatch, fresh_mlflow: object,
) -> None:
    """Backfill, daily rows, training, two days of batch inference and two simulated
    days, on the stand-in and on the local store, each with its own tracking database:
    the same training rows, model, scores, predictions and stored rows; and the same again
    on a stand-in whose direct Delta writes fail (a client outside the cluster). Then, on the
    stand-in: replacing a scored day, and the key (in the environment all along) in no
    MLflow param or tag."""
    for name, value in credentials().items():
        monkeypatch.setenv(name, value)
    spec = get_dataset("titanic")
    source = load_source(spec, None, data_dir)
    hops = open_hopsworks_feature_store(login=standin.login)
    local = LocalFeatureStore(tmp_path / "local")
    def noon_of(day: dt.date) -> dt.datetime:
        return dt.datetime.combine(day, dt.time(12), tzinfo=dt.timezone.utc)

    local_settings = resolve_settings(
        store_dir=tmp_path / "local_state", tracking_uri=_tracking_copy(mlflow_template_db, tmp_path / "local_mlflow"),
        feature_store="local",
    )
    on_local = _run_loop(spec, local, source, local_settings, noon_of)
    settings = resolve_settings(store_dir=tmp_path / "hops_state", tracking_uri=tracking_uri, feature_store="hopsworks")
    on_hops = _run_loop(spec, hops, source, settings, noon_of)
    # From outside a cluster without load balancers to its storage: every group goes
    # through Kafka and its materialization job (the loop deletes nothing).
    outside = StandInService(project="sml_outside")
    outside.direct_writes_fail = True
    outside_settings = resolve_settings(
        store_dir=tmp_path / "outside_state",
        tracking_uri=_tracking_copy(mlflow_template_db, tmp_path / "outside_mlflow"), feature_store="hopsworks",
    )
    on_outside = _run_loop(spec, HopsworksFeatureStore(outside.feature_store), source, outside_settings, noon_of)
    assert all(group.stream for group in outside.feature_store._groups.values()) and outside.jobs_run > 5
    for run in (on_hops, on_outside):
        for key in ("written", "training", "simulated"):
            assert run[key] == on_local[key], key
        # The same figures; sums of probabilities may differ in the last bit with the
        # order the backends hand the rows out in.
        assert [(rows, version) for rows, version, _ in run["scored"]] == [(rows, version) for rows, version, _ in on_local["scored"]]
        for (_, _, metrics), (_, _, expected) in zip(run["scored"], on_local["scored"], strict=True):
            assert metrics == pytest.approx(expected, rel=1e-12, abs=1e-15)
        pd.testing.assert_frame_equal(run["features"], on_local["features"])
        pd.testing.assert_frame_equal(run["predictions"], on_local["predictions"])
    assert on_hops["training"][-1], "the first model is promoted"
    assert [metrics["served_rows"] for _, _, metrics in on_hops["scored"]] == [0, 2]
    assert on_hops["simulated"][0] == 2 and on_hops["simulated"][1] == 8
    for include_synthetic in (False, True):
        x_h, y_h, keys_h, _ = load_training_rows(spec, hops, include_synthetic)
        x_l, y_l, keys_l, _ = load_training_rows(spec, local, include_synthetic)
        pd.testing.assert_frame_equal(x_h, x_l)
        pd.testing.assert_series_equal(y_h, y_l)
        pd.testing.assert_series_equal(keys_h, keys_l)
    predictions = hops.get_feature_group(spec.predictions_group, 1).read()
    assert predictions[spec.primary_key].is_unique and len(predictions) >= 18
    noon = noon_of(dt.date(2024, 3, 2))
    rerun = infer(spec, hops, settings, dataclasses.replace(InferOptions(figures=False), as_of=dt.date(2024, 3, 2)), noon)
    assert rerun.rows_scored == 0, "a re-run scores nothing new"

    # A scored day is history: other rows for it are refused before anything is sent ...
    first_day = dt.date(2024, 3, 1)
    before = standin.snapshot()
    with pytest.raises(HistoryConflict, match="2024-03-01 already has rows for --seed 0"):
        add_daily_rows(spec, hops, first_day, n=3, seed=0)
    assert standin.snapshot() == before
    # ... and replaced on request: rows rewritten (2 left over deleted by remove_rows), the
    # run and predictions that scored them removed, the next batch scores the day again.
    replaced = add_daily_rows(spec, hops, first_day, n=3, seed=0, replace=True, settings=settings)
    assert replaced.replaced is not None and replaced.replaced.rows == 5 and len(replaced.replaced.runs) == 1
    rows = hops.get_feature_group("titanic", spec.version).read()
    day_keys = rows.loc[rows["event_time"].dt.date == first_day, spec.primary_key]
    assert len(day_keys) == 3
    assert not hops.get_feature_group(spec.predictions_group, 1).read()[spec.primary_key].isin(day_keys).any()
    again = infer(spec, hops, settings, InferOptions(figures=False, as_of=first_day), noon)
    assert again.rows_scored >= 3
    predictions = hops.get_feature_group(spec.predictions_group, 1).read()
    assert set(day_keys) <= set(predictions[spec.primary_key]) and predictions[spec.primary_key].is_unique
    monitoring = mlflow.search_runs(experiment_names=["titanic-monitoring"])
    assert sorted(monitoring["tags.as_of"]) == ["2024-03-01", "2024-03-02", "2024-03-04", "2024-03-05"], (
        "one run per day scored"
    )

    client = mlflow.MlflowClient()
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=1000)
    assert len(runs) >= 5
    for run in runs:
        for key, value in [*run.data.params.items(), *run.data.tags.items()]:
            assert SECRET not in key and SECRET not in value, f"run {run.info.run_id}: {key}"
