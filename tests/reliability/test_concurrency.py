"""Concurrency: the daily job, batch inference, training and the site's reads at the same
time, against one local feature store and one SQLite tracking database.

Each round starts four ``sml`` processes together - two ``daily`` jobs for a new date
(two seeds: the same group, distinct keys), ``infer`` up to that date (two under soak)
and ``train`` (a couple of trials, always promoted, so the champion moves while
inference runs) - while one more process reads everything the site reads through
``monitoring_app.data_access`` in a loop, its cache off, for the whole test. ``make
test`` runs 2 rounds, ``make soak`` 10.

Then: every process exited 0 and nothing anywhere said "database is locked"; the reader
saw no error, and in every snapshot each finished monitoring run already had exactly its
predictions (a run is marked FINISHED only after its predictions land); the feature
table holds exactly the backfill keys and each day's generated keys; the predictions
table holds exactly one row per (key, model version), every synthetic row scored exactly
once, as many rows per monitoring run as the run says it scored; every monitoring run is
FINISHED with its metrics, tags and artifacts; no training run is left RUNNING, and the
registry has one version per training, the last one the champion.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from worlds import TITANIC, copy_database, trained_template, world_settings  # noqa: F401 - trained_template is a fixture

from serverless_ml.datasets.synthetic import synthetic_keys
from serverless_ml.feature_store.local import LocalFeatureStore
from serverless_ml.feature_store.base import ORIGIN_COLUMN
from serverless_ml.pipelines.features import add_daily_rows
from serverless_ml.pipelines.infer import InferOptions, infer
from serverless_ml.settings import Settings
from serverless_ml.registry import monitoring_experiment, training_experiment

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

REPO_ROOT = Path(__file__).resolve().parents[2]
FIRST_DAY = dt.date(2024, 3, 1)
SETUP_ROWS = 30
ROUND_ROWS = 25
# Promoted always: the champion moves every round while inference runs.
TRAIN_ARGS = ("--trials", "2", "--folds", "2", "--seed", "1", "--promote", "always", "--quiet")
PROCESS_TIMEOUT_S = 600
LOCKED = "database is locked"

# What every finished monitoring run must carry.
RUN_METRICS = ("rows_scored", "rows_labelled", "batch_accuracy", "rolling_accuracy", "cumulative_accuracy",
               "latest_probability", "alert_accuracy", "alert_drift")
RUN_TAGS = ("dataset", "model_version", "as_of", "data_version", "alert", "latest_key")
RUN_ARTIFACTS = ("drift.json", "latest.json", "confusion/batch.json", "confusion/batch.png")

# The site's reads in a loop, cache off (ttl 0: every call re-checks its signature), until
# the file STOP exists; then one JSON line with what it read and every error it met.
READER = r"""
import json, sys, time, traceback
from pathlib import Path
from monitoring_app.data_access import SiteData
from serverless_ml.datasets import get_dataset
from serverless_ml.settings import resolve_settings

store, uri, stop, out = sys.argv[1:5]
spec = get_dataset("titanic")
data = SiteData(resolve_settings(store_dir=store, tracking_uri=uri), ttl_s=0.0)
errors, loops, reads, checked_runs = [], 0, 0, 0
max_runs = max_features = 0

def read(name, call):
    global reads
    try:
        value = call()
        reads += 1
        return value
    except Exception as exc:
        errors.append({"read": name, "loop": loops, "error": f"{type(exc).__name__}: {exc}",
                       "traceback": traceback.format_exc()[-3000:]})
        return None

print("ready", flush=True)
while True:
    last = Path(stop).exists()
    runs = read("monitoring_runs", lambda: data.monitoring_runs(spec, metrics=("rows_scored", "batch_accuracy", "rolling_accuracy", "drift_share"), tags=("alert", "model_version")))
    predictions = read("predictions", lambda: data.predictions(spec))
    features = read("feature_rows", lambda: data.feature_rows(spec))
    if runs is not None and predictions is not None:
        # Read after the runs: every run FINISHED then has all its predictions now.
        counts = predictions.groupby("run_id").size()
        for run_id, rows in runs["metrics.rows_scored"].items():
            checked_runs += 1
            if counts.get(run_id, 0) != rows:
                errors.append({"read": "invariant", "loop": loops,
                               "error": f"finished run {run_id} scored {rows} rows, predictions hold {counts.get(run_id, 0)}"})
        duplicated = int(predictions.duplicated([spec.primary_key, "model_version"]).sum())
        if duplicated:
            errors.append({"read": "invariant", "loop": loops, "error": f"{duplicated} duplicated (key, model version) rows"})
        max_runs = max(max_runs, len(runs))
        if len(runs) < max_runs:
            errors.append({"read": "invariant", "loop": loops, "error": f"finished runs went from {max_runs} to {len(runs)}"})
    if features is not None:
        if len(features) < max_features:
            errors.append({"read": "invariant", "loop": loops, "error": f"feature rows went from {max_features} to {len(features)}"})
        max_features = max(max_features, len(features))
    if runs is not None and len(runs):
        latest = runs.index[-1]
        read("run_values", lambda: data.run_values("titanic-monitoring", list(runs.index[-3:]), ("batch_accuracy",), ("alerts", "latest_prediction")))
        read("run_json", lambda: data.run_json(latest, "drift.json"))
        read("run_json confusion", lambda: data.run_json(latest, "confusion/batch.json"))
        read("run_details", lambda: data.run_details(latest))
    versions = read("model_versions", lambda: data.model_versions(spec)) or []
    champion = read("champion_model", lambda: data.champion_model(spec))
    if champion is not None and champion[0].run_id:
        read("trials", lambda: data.trials(spec, champion[0].run_id))
        read("training_keys", lambda: data.training_keys(spec, champion[0].run_id))
    read("training runs", lambda: data.runs("titanic-training", metrics=("test_accuracy",), tags=("sml.role",)))
    loops += 1
    if last:
        break
    time.sleep(1.0)
Path(out).write_text(json.dumps({"loops": loops, "reads": reads, "checked_runs": checked_runs,
                                 "max_runs": max_runs, "max_features": max_features, "errors": errors}))
"""


def round_seeds(number: int) -> tuple[int, int]:
    """The seeds of a round's two daily jobs (one date, distinct keys)."""
    return number, 100 + number


def copy_trained_world(template: Path, folder: Path) -> tuple[LocalFeatureStore, Settings]:
    """The template's store and tracking database in ``folder`` (the database through
    SQLite's backup API: a plain copy of a WAL-mode database can miss the last commits)."""
    shutil.copytree(template / "store", folder / "store")
    copy_database(template / "mlflow.db", folder / "mlflow.db")
    return world_settings(folder)


@dataclass
class Finished:
    """A process that ran to its end: what it was, its exit code and its output."""

    name: str
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def describe(self) -> str:
        return f"{self.name} exited {self.returncode}\n--- stdout\n{self.stdout[-3000:]}\n--- stderr\n{self.stderr[-5000:]}"


@dataclass
class Started:
    name: str
    proc: subprocess.Popen[str]
    at: float


class Processes:
    """Starts ``sml`` commands (and the reader) in the world's folder; collects them."""

    def __init__(self, folder: Path, data_dir: Path) -> None:
        self.folder = folder
        self.env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}",
            "SML_STORE_DIR": str(folder / "store"),
            "SML_DATA_DIR": str(data_dir),
            "SML_CACHE_DIR": str(folder / ".cache"),
            "PYTHONPATH": str(REPO_ROOT),
            # No network: any download would fail at once rather than hang.
            "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
            "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
            "no_proxy": "localhost,127.0.0.1", "NO_PROXY": "localhost,127.0.0.1",
        }
        self.started = 0

    def start(self, name: str, args: list[str]) -> Started:
        self.started += 1
        proc = subprocess.Popen(
            [sys.executable, *args], cwd=self.folder, env=self.env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        return Started(name, proc, time.monotonic())

    def sml(self, name: str, *args: str) -> Started:
        return self.start(name, ["-m", "serverless_ml.cli", *args])

    @staticmethod
    def wait(started: list[Started]) -> list[Finished]:
        done = []
        for item in started:
            try:
                out, err = item.proc.communicate(timeout=PROCESS_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                item.proc.kill()
                out, err = item.proc.communicate()
                err += f"\n(killed after {PROCESS_TIMEOUT_S} s)"
            done.append(Finished(item.name, item.proc.returncode, out, err, time.monotonic() - item.at))
        return done


def test_daily_infer_train_and_site_reads_at_the_same_time(
    trained_template: Path, tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch, soak: bool, reliability,  # noqa: ANN001, F811
) -> None:
    rounds = 10 if soak else 2
    monkeypatch.chdir(tmp_path)
    store, settings = copy_trained_world(trained_template, tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", settings.tracking_uri)
    mlflow.set_tracking_uri(None)
    # Before the rounds: a first day scored, so the predictions table and the monitoring
    # experiment exist and the reader has something to read from the start.
    add_daily_rows(TITANIC, store, FIRST_DAY, SETUP_ROWS, 0)
    infer(TITANIC, store, settings, InferOptions(as_of=FIRST_DAY), dt.datetime.now(dt.timezone.utc))
    mlflow.set_tracking_uri(None)

    procs = Processes(tmp_path, data_dir)
    stop, reader_out = tmp_path / "STOP", tmp_path / "reader.json"
    reader = procs.start("site reader", ["-c", READER, str(store.root), settings.tracking_uri, str(stop), str(reader_out)])
    assert reader.proc.stdout is not None and reader.proc.stdout.readline().strip() == "ready", reader.proc.stderr.read() if reader.proc.stderr else ""

    finished: list[Finished] = []
    days = [FIRST_DAY + dt.timedelta(days=r) for r in range(1, rounds + 1)]
    started_at = time.monotonic()
    try:
        for number, day in enumerate(days, start=1):
            # Two daily jobs (two seeds) write the same group at once; under soak two
            # inference jobs also meet (one waits for the other's lock).
            finished += procs.wait([
                *[procs.sml(f"round {number} daily seed {seed}", "daily", "--dataset", "titanic", "--date", day.isoformat(),
                            "--rows", str(ROUND_ROWS), "--seed", str(seed)) for seed in round_seeds(number)],
                *[procs.sml(f"round {number} infer {k}", "infer", "--dataset", "titanic", "--as-of", day.isoformat())
                  for k in range(2 if soak else 1)],
                procs.sml(f"round {number} train", "train", "--dataset", "titanic", *TRAIN_ARGS),
            ])
        # Whatever a round's inference did not see (its daily rows landed after it read):
        # scored now, once, while the reader still reads.
        infer(TITANIC, store, settings, InferOptions(as_of=days[-1]), dt.datetime.now(dt.timezone.utc))
    finally:
        stop.touch()
        finished += procs.wait([reader])
        mlflow.set_tracking_uri(None)
    elapsed = time.monotonic() - started_at

    # Zero errors: every process exited 0, and nothing said "database is locked".
    failed = [f.describe() for f in finished if f.returncode != 0]
    assert not failed, "\n\n".join(failed)
    locked = [f.name for f in finished if LOCKED in (f.stdout + f.stderr).lower()]
    assert not locked, f"'{LOCKED}' in the output of {locked}"
    site = json.loads(reader_out.read_text())
    assert not site["errors"], json.dumps(site["errors"][:5], indent=1)
    assert site["loops"] >= rounds, f"the reader looped only {site['loops']} times in {elapsed:.0f} s"
    assert site["checked_runs"] > 0, "the reader never saw a finished monitoring run"

    # The feature table: exactly the backfill keys and each day's generated keys.
    features = store.get_feature_group(TITANIC.name, TITANIC.version).read()
    key = TITANIC.primary_key
    backfill = features[features[ORIGIN_COLUMN] == "backfill"]
    assert len(backfill) == 891 and backfill[key].is_unique
    synthetic = features[features[ORIGIN_COLUMN] == "synthetic"]
    expected = set(synthetic_keys(TITANIC, FIRST_DAY, 0, SETUP_ROWS))
    for number, day in enumerate(days, start=1):
        for seed in round_seeds(number):
            expected |= set(synthetic_keys(TITANIC, day, seed, ROUND_ROWS))
    assert synthetic[key].is_unique, "a synthetic key is stored twice"
    assert set(synthetic[key]) == expected, (
        f"missing {sorted(expected - set(synthetic[key]))[:5]}, unexpected {sorted(set(synthetic[key]) - expected)[:5]}"
    )

    # The predictions table: one row per (key, model version), every synthetic row scored
    # exactly once, only keys of the feature table.
    predictions = store.get_feature_group(TITANIC.predictions_group, 1).read()
    assert not predictions.duplicated([key, "model_version"]).any(), "a (key, model version) is stored twice"
    assert set(predictions[key]) <= set(features[key])
    scored_synthetic = predictions[predictions[key].isin(expected)]
    assert scored_synthetic[key].is_unique, "a synthetic row was scored twice"
    assert set(scored_synthetic[key]) == expected, f"never scored: {sorted(expected - set(scored_synthetic[key]))[:5]}"

    # Every monitoring run FINISHED, with its metrics, tags and artifacts, and exactly as
    # many predictions as it says it scored.
    client = MlflowClient(tracking_uri=settings.tracking_uri)
    monitoring = client.get_experiment_by_name(monitoring_experiment(TITANIC.name))
    runs = client.search_runs([monitoring.experiment_id], max_results=1000)
    assert runs, "no monitoring run"
    per_run = predictions.groupby("run_id").size()
    assert set(per_run.index) == {r.info.run_id for r in runs}, "predictions of a run that does not exist, or a run without predictions"
    for run in runs:
        name = f"monitoring run {run.info.run_name} ({run.info.run_id})"
        assert run.info.status == "FINISHED", f"{name} is {run.info.status}"
        missing = [m for m in RUN_METRICS if m not in run.data.metrics] + [t for t in RUN_TAGS if t not in run.data.tags]
        assert not missing, f"{name} lacks {missing}"
        assert per_run[run.info.run_id] == run.data.metrics["rows_scored"], f"{name}: rows_scored vs predictions"
        stored = {a.path for a in client.list_artifacts(run.info.run_id)} | {
            a.path for a in client.list_artifacts(run.info.run_id, "confusion")}
        assert not set(RUN_ARTIFACTS) - stored, f"{name} lacks artifacts {set(RUN_ARTIFACTS) - stored}"
        drift = json.loads(Path(client.download_artifacts(run.info.run_id, "drift.json", str(tmp_path / "dl" / run.info.run_id))).read_text())
        assert "features" in drift
    assert sum(r.data.metrics["rows_scored"] for r in runs) == len(predictions)

    # Training: every run ended (parents and trials), one registered version per training.
    training = client.get_experiment_by_name(training_experiment(TITANIC.name))
    open_runs = [r.info.run_name for r in client.search_runs([training.experiment_id, monitoring.experiment_id],
                                                              "attributes.status != 'FINISHED'", max_results=5000)]
    assert not open_runs, f"runs not FINISHED: {open_runs}"
    versions = client.search_model_versions(f"name='{TITANIC.name}'")
    assert len(versions) == 1 + rounds, [v.version for v in versions]
    champion = client.get_model_version_by_alias(TITANIC.name, "champion")
    assert int(champion.version) == max(int(v.version) for v in versions), "the last training is not the champion"

    reliability.add("concurrency", rounds=rounds, processes=procs.started)
    print("\n".join(f"{f.name}: {f.seconds:.0f} s" for f in finished))
    print(f"{rounds} rounds, {procs.started} processes, {elapsed:.0f} s; reader: {site['loops']} loops, "
          f"{site['reads']} reads, {site['checked_runs']} run checks")
