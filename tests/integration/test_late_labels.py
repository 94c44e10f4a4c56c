"""Late labels (issue 17): batches scored while their labels are missing, then labels
arriving in three parts over later days through ``sml labels``. Each part must move
exactly the runs whose figures depend on the labels it brings (the batch's own run for
its batch figures, the later runs for their rolling and since-promotion figures), and
every run's figures must equal a direct computation with pandas/numpy/scikit-learn on the
predictions and the store's labels.

The world: Iris trained with its 3 labelled daily batches (``tests/worlds.py``), then
:data:`LIVE_DAYS` more days of 12 rows whose labels are missing when they are scored.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
from sklearn.metrics import precision_recall_fscore_support

from serverless_ml.feature_store.local import LocalFeatureStore
from serverless_ml.pipelines.features import add_daily_rows
from serverless_ml.settings import Settings
from worlds import IRIS, IRIS_DAYS, IRIS_ROWS, copy_world, iris_day, iris_monitored_template  # noqa: F401 - fixture

pytestmark = pytest.mark.integration

LIVE_DAYS = 4
LIVE = list(range(IRIS_DAYS, IRIS_DAYS + LIVE_DAYS))
"""The days (indexes of :func:`iris_day`) scored without labels."""
KEY, LABEL = IRIS.primary_key, IRIS.label
MONITORING = "iris-monitoring"
REALIZED = ["rows_labelled", "labelled_share", "batch_accuracy", "batch_accuracy_ci_low", "batch_accuracy_ci_high",
            "rolling_rows", "rolling_accuracy", "cumulative_rows", "cumulative_accuracy"]


def wilson(correct: int, total: int, z: float = 1.96) -> tuple[float, float]:
    p = correct / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return max(0.0, centre - half), min(1.0, centre + half)


def day_keys(features: pd.DataFrame, i: int) -> pd.Series:
    return features.loc[features["event_time"].dt.date == iris_day(i), KEY].sort_values().reset_index(drop=True)


@pytest.fixture
def live_world(iris_monitored_template: Path, tmp_path: Path,
               monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[LocalFeatureStore, Settings, pd.Series]]:
    """The Iris world plus :data:`LIVE_DAYS` days scored while their labels were missing
    (rows written with a null label through the store API, as ``sml ingest`` writes them),
    and the labels those rows were generated with, by key (what arrives later)."""
    monkeypatch.chdir(tmp_path)
    store, settings = copy_world(iris_monitored_template, tmp_path, monkeypatch)
    monkeypatch.setenv("SML_STORE_DIR", str(store.root))
    group = store.get_feature_group("iris", 1)
    truth = []
    for i in LIVE:
        add_daily_rows(IRIS, store, iris_day(i), n=IRIS_ROWS, seed=0)
        rows = group.read()
        rows = rows[rows["event_time"].dt.date == iris_day(i)].copy()
        truth.append(rows.set_index(KEY)[LABEL])
        rows[LABEL] = None
        group.insert(rows)
        score_day(store, settings, i)
    yield store, settings, pd.concat(truth)
    mlflow.set_tracking_uri(None)


def score_day(store: LocalFeatureStore, settings: Settings, i: int) -> None:
    """Score day ``i``'s rows (already in the store) as of noon, figures on for the last day."""
    from serverless_ml.pipelines.infer import InferOptions, infer

    noon = dt.datetime.combine(iris_day(i), dt.time(12), tzinfo=dt.timezone.utc)
    report = infer(IRIS, store, settings, InferOptions(as_of=iris_day(i), figures=i == LIVE[-1]), noon)
    mlflow.set_tracking_uri(None)
    assert report.rows_scored == IRIS_ROWS


def runs_by_day(settings: Settings) -> dict[int, Any]:
    client = mlflow.MlflowClient(settings.tracking_uri)
    experiment = client.get_experiment_by_name(MONITORING)
    runs = client.search_runs([experiment.experiment_id])
    by_day = {}
    for run in runs:
        day = (dt.date.fromisoformat(run.data.tags["as_of"]) - iris_day(0)).days
        assert day not in by_day
        by_day[day] = run
    assert sorted(by_day) == list(range(IRIS_DAYS + LIVE_DAYS))
    return by_day


def expected_figures(store: LocalFeatureStore, run: Any) -> dict[str, Any]:
    """A run's label-dependent figures computed directly from the predictions (their
    ``actual`` must be the store's current labels) and its tags and params."""
    predictions = store.get_feature_group("iris_predictions", 1).read()
    features = store.get_feature_group("iris", 1).read()
    labels = features.set_index(KEY)[LABEL]
    assert predictions[KEY].map(labels).equals(predictions["actual"]), "the predictions' actual labels are the store's"
    batch = predictions[predictions["run_id"] == run.info.run_id]
    seen = predictions[predictions["scored_at"] <= batch["scored_at"].max()]
    end = pd.Timestamp(run.data.tags["as_of"], tz="UTC") + pd.Timedelta(days=1)
    rolling = seen[(seen["event_time"] >= end - pd.Timedelta(days=int(run.data.params["rolling_days"])))
                   & (seen["event_time"] < end)]
    since = seen[(seen["model_version"] == int(run.data.tags["model_version"])) & (seen["event_time"] < end)]
    out: dict[str, Any] = {"tables": {}}
    for name, rows in (("batch", batch), ("rolling", rolling), ("since_promotion", since)):
        known = rows[rows["actual"].notna()]
        out[name] = known
        if len(known):
            out["tables"][name] = pd.crosstab(pd.Categorical(known["actual"], IRIS.classes),
                                              pd.Categorical(known["prediction"], IRIS.classes), dropna=False).to_numpy().tolist()
    metrics: dict[str, float] = {"rows_labelled": float(len(out["batch"])),
                                 "labelled_share": len(out["batch"]) / len(batch),
                                 "rolling_rows": float(len(out["rolling"])), "cumulative_rows": float(len(out["since_promotion"]))}
    if len(out["batch"]):
        correct = int((out["batch"]["actual"] == out["batch"]["prediction"]).sum())
        metrics["batch_accuracy"] = correct / len(out["batch"])
        metrics["batch_accuracy_ci_low"], metrics["batch_accuracy_ci_high"] = wilson(correct, len(out["batch"]))
    for name, metric in (("rolling", "rolling_accuracy"), ("since_promotion", "cumulative_accuracy")):
        if len(out[name]):
            metrics[metric] = float((out[name]["actual"] == out[name]["prediction"]).mean())
    if len(out["rolling"]) >= 20:
        precision, recall, f1, _ = precision_recall_fscore_support(
            out["rolling"]["actual"], out["rolling"]["prediction"], labels=list(IRIS.classes), zero_division=0)
        for i, cls in enumerate(IRIS.classes):
            metrics[f"rolling_precision_{cls}"], metrics[f"rolling_recall_{cls}"] = precision[i], recall[i]
            metrics[f"rolling_f1_{cls}"] = f1[i]
    out["metrics"] = metrics
    return out


def assert_run_shows(store: LocalFeatureStore, settings: Settings, run: Any) -> None:
    expected = expected_figures(store, run)
    got = run.data.metrics
    for name in REALIZED:
        if name in expected["metrics"]:
            assert got.get(name) == pytest.approx(expected["metrics"][name], rel=1e-12), (run.data.tags["as_of"], name)
        else:
            assert name not in got or math.isnan(got[name]), f"{run.data.tags['as_of']}: {name} = {got[name]}, not computable"
    for name, value in expected["metrics"].items():
        assert got.get(name) == pytest.approx(value, rel=1e-12), (run.data.tags["as_of"], name)
    client = mlflow.MlflowClient(settings.tracking_uri)
    for window, matrix in expected["tables"].items():
        table = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/confusion/{window}.json")
        assert table["matrix"] == matrix, (run.data.tags["as_of"], window)
    # The latest row's label, on the tag and in latest.json, is the store's now (found by a
    # new user: both kept what was known when the batch was scored).
    features = store.get_feature_group("iris", 1).read()
    label = features.set_index(features[KEY].astype(str))[LABEL].get(run.data.tags["latest_key"])
    shown = "" if label is None or pd.isna(label) else str(label)
    assert run.data.tags["latest_actual"] == shown, run.data.tags["as_of"]
    latest = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/latest.json")
    assert latest["actual"] == (shown or None)
    assert latest["correct"] == (None if not shown else str(latest["prediction"] == shown)), run.data.tags["as_of"]
    # Every value MLflow shows is stamped at the batch's as-of time.
    for name in expected["metrics"]:
        history = client.get_metric_history(run.info.run_id, name)
        assert {m.timestamp for m in history} == {int(pd.Timestamp(run.data.tags["as_of"], tz="UTC").timestamp() * 1000) + 86_399_999}


def write_labels(folder: Path, name: str, rows: pd.DataFrame, labelled_at: str | None = None, note: bool = False) -> Path:
    frame = rows[[KEY, LABEL]].copy()
    if labelled_at is not None:
        frame["labelled_at"] = labelled_at
    if note:  # a column of the team's own, which labels does not read
        frame["reviewer"] = "ana"
    path = folder / name
    frame.to_csv(path, index=False)
    return path


def run_labels(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    from serverless_ml import cli

    capsys.readouterr()
    try:
        cli.main(["labels", "--dataset", "iris", *args])
    except SystemExit as exc:
        out, err = capsys.readouterr()
        pytest.fail(f"sml labels exited {exc.code}:\n{out}{err}")
    finally:
        mlflow.set_tracking_uri(None)
    return capsys.readouterr().out


def snapshot(settings: Settings) -> dict[int, tuple[dict[str, float], dict[str, str]]]:
    return {day: (run.data.metrics, run.data.tags) for day, run in runs_by_day(settings).items()}


def test_labels_arriving_in_three_parts_update_exactly_the_runs_they_touch(
    live_world: tuple[LocalFeatureStore, Settings, pd.Series], tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    store, settings, generated = live_world
    group = store.get_feature_group("iris", 1)
    features = group.read()
    runs = runs_by_day(settings)
    for i in LIVE:
        metrics = runs[i].data.metrics
        assert metrics["rows_scored"] == IRIS_ROWS and metrics["rows_labelled"] == 0, i
        assert metrics["labelled_share"] == 0 and "batch_accuracy" not in metrics, "no labels: no accuracy, not a 0"
        assert "batch accuracy not computed: no labelled rows" in runs[i].data.tags["not_computed"]
        assert features.loc[features[KEY].isin(generated.index), LABEL].isna().all()
    for run in runs.values():
        assert_run_shows(store, settings, run)

    keys = {i: day_keys(features, i) for i in LIVE}
    parts = [
        # Part 1, on the first live day + 3: half of the first live day, all of the second.
        pd.concat([keys[LIVE[0]][:6], keys[LIVE[1]]]),
        # Part 2: the rest of the first live day and a third of the third.
        pd.concat([keys[LIVE[0]][6:], keys[LIVE[2]][:4]]),
        # Part 3: the rest of the third day and all of the last, with when they were known.
        pd.concat([keys[LIVE[2]][4:], keys[LIVE[3]]]),
    ]
    # The first day each part touches: its runs and every later one must move, none before.
    first_touched = [LIVE[0], LIVE[0], LIVE[2]]
    for n, (part, first) in enumerate(zip(parts, first_touched, strict=True), start=1):
        before = snapshot(settings)
        rows = pd.DataFrame({KEY: part.to_numpy(), LABEL: part.map(generated).to_numpy()})
        assert rows[LABEL].notna().all()
        path = write_labels(tmp_path, f"part{n}.csv", rows, labelled_at="2024-04-01T09:30:00" if n == 3 else None,
                            note=n == 2)
        out = run_labels(capsys, "--source", str(path))
        assert f"iris: {len(rows)} labels in, {len(rows)} set, 0 changed, 0 unchanged" in out
        assert f"predictions: {len(rows)} rows' actual label updated" in out
        after = runs_by_day(settings)
        moved = sorted(day for day, run in after.items()
                       if {k: v for k, v in run.data.metrics.items() if k in REALIZED} != {k: v for k, v in before[day][0].items() if k in REALIZED})
        assert moved == list(range(first, IRIS_DAYS + LIVE_DAYS)), f"part {n} moved the runs of days {moved}"
        assert f"monitoring runs: {len(moved)} of {IRIS_DAYS + LIVE_DAYS} updated" in out
        for day, run in after.items():
            assert_run_shows(store, settings, run)
            tags, old_tags = run.data.tags, before[day][1]
            for tag in ("alert", "alerts", "alert_accuracy", "alert_drift", "accuracy_basis"):
                assert tags.get(tag) == old_tags.get(tag), f"{tag} of {day} is decided when the batch is scored"
            if day in moved:
                assert tags["sml.realized_digest"] != old_tags.get("sml.realized_digest")
                assert "labels_updated_at" in tags
            else:
                assert tags == old_tags, f"part {n} touched the run of day {day}"
        if n == 3:
            assert "labelled_at: validated, not stored" in out
        reviewer = f"note: column(s) 'reviewer' not read: a labels file gives the key ('{KEY}'), the label"
        assert (reviewer in out) == (n == 2), out

    final = runs_by_day(settings)
    for i in LIVE:
        assert final[i].data.metrics["labelled_share"] == 1.0
        # Found by a new user: the run still said why its accuracy was not computed.
        assert "batch accuracy not computed" not in final[i].data.tags.get("not_computed", "")
    # The last live day was scored with figures: they follow the tables.
    client = mlflow.MlflowClient(settings.tracking_uri)
    assert {a.path for a in client.list_artifacts(final[LIVE[-1]].info.run_id, "confusion")} >= {
        "confusion/batch.json", "confusion/batch.png", "confusion/rolling.png"}

    # The same file again: nothing is written anywhere.
    versions = (group.data_version(), store.get_feature_group("iris_predictions", 1).data_version())
    before = snapshot(settings)
    out = run_labels(capsys, "--source", str(tmp_path / "part3.csv"))
    assert f"{len(parts[2])} unchanged" in out and "(no label written)" in out and "0 of 7 updated" in out
    assert (group.data_version(), store.get_feature_group("iris_predictions", 1).data_version()) == versions
    assert snapshot(settings) == before


def test_refresh_brings_runs_logged_with_older_labels_up_to_the_store(
    live_world: tuple[LocalFeatureStore, Settings, pd.Series],
) -> None:
    """What ``sml simulate --label-delay`` needs: runs logged with the labels known on their
    day, the store and the predictions already holding the later labels (written here
    through the store API, so no label changes on the way); every run is compared with
    its figures, and updated when they differ."""
    from serverless_ml.pipelines.labels import refresh_realized

    store, settings, generated = live_world
    group = store.get_feature_group("iris", 1)
    rows = group.read()
    rows = rows[rows[KEY].isin(generated.index[::2])].copy()
    rows[LABEL] = rows[KEY].map(generated)
    group.insert(rows)
    target = store.get_feature_group("iris_predictions", 1)
    predictions = target.read()
    mine = predictions[predictions[KEY].isin(rows[KEY])].copy()
    mine["actual"] = mine[KEY].map(generated)
    mine["correct"] = (mine["actual"] == mine["prediction"]).astype("boolean")
    target.insert(mine)
    before = snapshot(settings)

    assert refresh_realized(IRIS, store, settings) == LIVE_DAYS
    after = runs_by_day(settings)
    for day, run in after.items():
        assert_run_shows(store, settings, run)
        assert (run.data.tags == before[day][1]) == (day not in LIVE), day
    assert refresh_realized(IRIS, store, settings) == 0
    assert snapshot(settings) == {day: (run.data.metrics, run.data.tags) for day, run in after.items()}


def test_a_run_logged_with_figures_gets_them_when_its_labels_arrive_even_if_it_had_none(
    live_world: tuple[LocalFeatureStore, Settings, pd.Series], tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """Found by a new user: a batch scored with ``--figures`` before any window had a
    labelled row has its tables and no PNG; ``sml labels`` judged "logged with figures"
    by the PNGs it found, and never drew them. The run's ``figures`` param says it."""
    from urllib.parse import urlparse

    store, settings, generated = live_world
    runs = runs_by_day(settings)
    assert [runs[i].data.params["figures"] for i in LIVE] == ["False"] * (LIVE_DAYS - 1) + ["True"]
    last = runs[LIVE[-1]]
    folder = Path(urlparse(last.info.artifact_uri).path) / "confusion"
    for png in folder.glob("*.png"):  # as a batch scored before any label leaves it
        png.unlink()
    assert not list(folder.glob("*.png"))
    keys = day_keys(store.get_feature_group("iris", 1).read(), LIVE[-1])
    rows = pd.DataFrame({KEY: keys.to_numpy(), LABEL: keys.map(generated).to_numpy()})
    run_labels(capsys, "--source", str(write_labels(tmp_path, "last.csv", rows)))
    assert sorted(p.name for p in folder.glob("*.png")) == ["batch.png", "rolling.png"]
    # A run logged without figures gets none.
    first = Path(urlparse(runs[LIVE[0]].info.artifact_uri).path) / "confusion"
    assert not list(first.glob("*.png"))


def test_labels_refuse_a_tracking_store_without_the_runs_that_scored_the_predictions(
    live_world: tuple[LocalFeatureStore, Settings, pd.Series], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by a new user: ``sml labels`` with MLFLOW_TRACKING_URI naming a database
    that did not exist stored the labels, created the database and left every run stale."""
    from serverless_ml import cli

    store, _settings, generated = live_world
    features = store.get_feature_group("iris", 1).read()
    keys = day_keys(features, LIVE[0])
    rows = pd.DataFrame({KEY: keys.to_numpy(), LABEL: keys.map(generated).to_numpy()})
    path = write_labels(tmp_path, "labels.csv", rows)
    versions = (store.get_feature_group("iris", 1).data_version(), store.get_feature_group("iris_predictions", 1).data_version())
    # A database that does not exist, then one that exists and holds other runs.
    empty = tmp_path / "other" / "mlflow.db"
    mlflow.MlflowClient(f"sqlite:///{tmp_path / 'elsewhere.db'}").create_experiment("iris-monitoring")
    for database, expected in ((empty, f"the MLflow tracking database {empty} does not exist"),
                               (tmp_path / "elsewhere.db", "holds none of the")):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{database}")
        capsys.readouterr()
        with pytest.raises(SystemExit) as exited:
            cli.main(["labels", "--dataset", "iris", "--source", str(path)])
        mlflow.set_tracking_uri(None)
        err = capsys.readouterr().err
        assert exited.value.code != 0
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], err
        assert "set MLFLOW_TRACKING_URI to the one `sml infer` logged them in" in lines[0]
    assert not empty.exists() and not empty.parent.exists()
    assert (store.get_feature_group("iris", 1).data_version(),
            store.get_feature_group("iris_predictions", 1).data_version()) == versions
    assert store.get_feature_group("iris", 1).read()[LABEL].isna().sum() == features[LABEL].isna().sum()


def test_labels_that_show_the_model_failing_raise_the_accuracy_alert_on_the_runs_they_judge(
    live_world: tuple[LocalFeatureStore, Settings, pd.Series], tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """Found by a user trial: with late labels a batch is scored on its estimate, so a
    model that the labels later show failing (a concept shift: every label another class)
    raised no alert until a later batch's rolling window held enough of them. The labels
    now apply the alert rule to each run they update, with the run's own holdout accuracy
    and ``accuracy_drop``; the expectation is computed here from the predictions."""
    store, settings, _generated = live_world
    predictions = store.get_feature_group("iris_predictions", 1).read()
    keys = day_keys(store.get_feature_group("iris", 1).read(), LIVE[0])
    predicted = predictions.set_index(KEY).loc[keys, "prediction"]
    wrong = [next(c for c in IRIS.classes if c != p) for p in predicted]
    path = write_labels(tmp_path, "flipped.csv", pd.DataFrame({KEY: keys.to_numpy(), LABEL: wrong}))
    before = runs_by_day(settings)
    assert all(before[i].data.tags["alert_accuracy"] == "false" for i in LIVE)

    from receivers import hook_receiver

    with hook_receiver() as hook:
        out = run_labels(capsys, "--source", str(path), "--notify", hook.url)
        payloads = hook.payloads()
    after = runs_by_day(settings)
    raised = []
    for day, run in after.items():
        expected = expected_figures(store, run)
        floor = run.data.metrics["champion_holdout_accuracy"] - float(run.data.params["accuracy_drop"])
        fails = [wilson(int((rows["actual"] == rows["prediction"]).sum()), len(rows))[1] < floor
                 for rows in (expected["batch"], expected["rolling"]) if len(rows)]
        was = before[day].data.tags["alert_accuracy"] == "true"
        assert (run.data.tags["alert_accuracy"] == "true") == (was or any(fails)), day
        if any(fails) and not was:
            raised.append(day)
            assert run.data.tags["alert"] == "true"
            assert "accuracy alert (from labels that came after the batch was scored)" in run.data.tags["alerts"]
            assert run.data.metrics["alert_accuracy"] == 1.0
            assert f"ALERT iris {run.data.tags['as_of']}: accuracy alert (from labels" in out
        else:
            assert run.data.tags.get("alerts") == before[day].data.tags.get("alerts"), day
    assert LIVE[0] in raised, "12 rows, all wrong: the batch's own accuracy is 0"
    assert "batch accuracy 0.000 over 12 rows" in after[LIVE[0]].data.tags["alerts"]
    assert out.count("ALERT iris") == len(raised)
    # Each is sent as `sml infer` sends a batch's alert, once.
    assert sorted(p["batch_date"] for p in payloads) == sorted(after[day].data.tags["as_of"] for day in raised)
    assert {p["kind"] for p in payloads} == {"accuracy_alert"}
    assert all(p["message"].startswith("accuracy alert (from labels") for p in payloads)
    assert f"accuracy alert of {after[LIVE[0]].data.tags['as_of']} sent to" in out

    # The same file again: nothing new, no alert said twice.
    out = run_labels(capsys, "--source", str(path))
    assert "ALERT" not in out
    assert snapshot(settings) == {day: (run.data.metrics, run.data.tags) for day, run in after.items()}


def test_labels_stop_before_writing_when_another_process_holds_the_tracking_database(
    live_world: tuple[LocalFeatureStore, Settings, pd.Series], tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """Found by a user trial: with another process's write transaction on mlflow.db, reads
    pass (WAL), so the labels were stored, then the runs could not be written: "nothing
    written" was broken. The job now takes and returns the write lock first."""
    import sqlite3

    from serverless_ml import cli

    store, settings, generated = live_world
    keys = day_keys(store.get_feature_group("iris", 1).read(), LIVE[0])
    path = write_labels(tmp_path, "day.csv", pd.DataFrame({KEY: keys.to_numpy(), LABEL: keys.map(generated).to_numpy()}))
    versions = (store.get_feature_group("iris", 1).data_version(), store.get_feature_group("iris_predictions", 1).data_version())
    database = settings.tracking_uri.removeprefix("sqlite:///")
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exited:
            cli.main(["labels", "--dataset", "iris", "--source", str(path)])
        err = capsys.readouterr().err
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        mlflow.set_tracking_uri(None)
    assert exited.value.code != 0
    assert err.strip() == (f"error: MLflow tracking database {Path(database).resolve()}: another process holds a write "
                           "transaction on it: let it finish (or stop it) and run again"), err
    assert (store.get_feature_group("iris", 1).data_version(),
            store.get_feature_group("iris_predictions", 1).data_version()) == versions
    # Once it is free, the same file goes in.
    assert f"{len(keys)} set" in run_labels(capsys, "--source", str(path))
