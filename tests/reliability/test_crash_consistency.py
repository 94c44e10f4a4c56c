"""Crash consistency (issue 8, section 2): ``sml features`` (a first backfill, and a
backfill of changed and new rows over a backfilled group: a Delta MERGE), ``sml daily``,
``sml ingest`` (live rows, some without a label, beside stored ones) and ``sml infer``
killed with SIGKILL in the middle of their work, then run again.

**Kill points.** Two kinds, both landing inside the part of a job that writes, never in
its imports:

- *named*: ``SML_CRASH_AT=<point>`` makes :func:`serverless_ml.faults.crash_point` kill
  the process (SIGKILL, from inside) at that point: the store's ``store.locked``,
  ``store.json.before_replace`` (the group's metadata half written),
  ``store.create.after_sidecar`` (metadata written, Delta table not yet),
  ``store.upsert.before_commit``, ``store.after_commit`` (Delta commit done, lock still
  held); inference's ``infer.after_run_created``, ``infer.after_run_logged`` (run complete,
  predictions not yet written) and ``infer.after_upsert`` (predictions written, run still
  RUNNING); ingest's ``ingest.before_insert`` (compared, nothing written) and
  ``ingest.after_insert``; late labels' ``labels.after_features`` (labels stored, predictions
  and runs not yet) and ``labels.after_predictions`` (runs marked pending, not updated; under
  soak also after the marks and inside a run's update), after which the monitoring run must
  show a crash-free run's figures and the direct computation's; and a double crash (the
  re-run killed too);
- *seeded random*: the test follows the job through ``SML_CRASH_TRACE`` and, once the job
  passes its marker (``store.locked`` for the feature jobs, ``infer.after_run_created`` for
  inference), sends SIGKILL after a delay drawn from ``random.Random(seed)`` over the
  window that a crash-free reference run of the same job took from the marker to its last
  write (times 1.25). These land inside Delta's own write, inside MLflow's SQLite
  transactions and the artifact upload, where no named point can go.

``make test`` runs 3 kill points per job (2 named, 1 random); ``make soak``
(``SML_SOAK=1``) 21 per job (every named point, double crashes, the rest random).

A third kind rewrites history: ``sml simulate --replace`` over three simulated days with
fewer rows per day, killed at its own points (``replace.after_runs_deleted``,
``replace.after_predictions_deleted``, ``replace.after_rows_written``; under soak also
inside the predictions' delete and after the new runs are logged) and run again: the
re-run must end exactly where a crash-free replace ends (the same rows and predictions,
one FINISHED run per day with the same metrics), and right after the kill no live
finished run may lack its predictions (what the site shows stays true).

**After each kill**: every lock the job could hold is free (``flock`` with ``LOCK_NB``);
every table reads cleanly through the store API and through ``deltalake`` directly (the
two agree) and holds either the rows it held before the job or exactly the rows of the
crash-free reference run, never a part of a batch. **After the re-run** (the same CLI
entry point, ``serverless_ml.cli.main``, called in the test's process to spare the
inference re-runs 10-20 s of imports each; the kills and a double crash's second run are
real subprocesses): every table holds exactly the reference run's rows (all columns but the
prediction's ``scored_at`` and ``run_id``) at the reference's Delta version, the group's
metadata is the reference's, no temporary file is left in the store, and no MLflow run is
RUNNING; for inference exactly one monitoring run is FINISHED and it carries the
reference run's metrics, params and tags, every other one is FAILED and tagged
``recovered``, the re-run says which stale run it closed, every prediction points at the
FINISHED run, and nothing outside the monitoring experiment changed.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from serverless_ml import registry
from serverless_ml.datasets import get_dataset
from serverless_ml.datasets.sources import load_source
from serverless_ml.errors import NotFoundError
from serverless_ml.faults import CRASH_AT_ENV, CRASH_TRACE_ENV
from serverless_ml.feature_store.local import LocalFeatureStore
from serverless_ml.pipelines.features import add_daily_rows, backfill
from serverless_ml.tracking import HOST_TAG, PID_TAG
from lock_checks import assert_locks_free
from snapshots import Run, read_runs
from worlds import copy_database
from worlds import trained_template  # noqa: F401 - fixture

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

# The switch behind the `soak` fixture, read here because the kill points are chosen when
# the tests are collected.
SOAK = os.environ.get("SML_SOAK", "") == "1"
SPEC = get_dataset("titanic")
DAY = dt.date(2024, 2, 1)
DAILY_ROWS = 40
JOB_TIMEOUT_S = 150
LABELS_LATE = 15
"""Rows of the day whose label is missing when the batch is scored (``sml labels`` brings them)."""
WINDOW_FACTOR = 1.25
MONITORING = "titanic-monitoring"
NO_NETWORK_PROXY = "http://127.0.0.1:9"


@dataclass(frozen=True)
class Job:
    name: str
    args: tuple[str, ...]  # "{root}" stands for the lab's folder
    tables: tuple[str, ...]
    start: str  # the world it starts from: "empty", "backfilled" or "trained"
    marker: str  # where seeded random kills start counting
    last_write: str  # end of the reference window
    named_quick: tuple[str, ...]
    named_soak: tuple[str, ...]
    double_soak: tuple[tuple[str, str], ...] = ()
    expect: str = ""  # in the crash-free run's output: it did the work the kills interrupt


JOBS = {
    "features": Job(
        "features", ("features", "--dataset", "titanic"), ("titanic",), "empty",
        marker="store.locked", last_write="store.after_commit",
        named_quick=("store.create.after_sidecar", "store.after_commit"),
        named_soak=("store.locked", "store.json.before_replace", "store.create.after_sidecar", "store.after_commit"),
        double_soak=(("store.json.before_replace", "store.create.after_sidecar"),),
        expect="891 rows in, 891 inserted",
    ),
    "daily": Job(
        "daily", ("daily", "--dataset", "titanic", "--date", DAY.isoformat(), "--rows", str(DAILY_ROWS), "--seed", "3"),
        ("titanic",), "backfilled",
        marker="store.locked", last_write="store.after_commit",
        named_quick=("store.upsert.before_commit", "store.after_commit"),
        named_soak=("store.locked", "store.upsert.before_commit", "store.after_commit"),
        double_soak=(("store.upsert.before_commit", "store.after_commit"),),
        expect=f"{DAILY_ROWS} inserted, 0 updated",
    ),
    # A backfill over a backfilled group from a source with changed and new rows: the
    # upsert is a Delta MERGE (updates and inserts in one commit), not an append.
    "features-update": Job(
        "features-update", ("features", "--dataset", "titanic", "--source", "{root}/titanic_changed.csv"), ("titanic",),
        "backfilled",
        marker="store.locked", last_write="store.after_commit",
        named_quick=("store.upsert.before_commit", "store.after_commit"),
        named_soak=("store.locked", "store.upsert.before_commit", "store.after_commit"),
        double_soak=(("store.upsert.before_commit", "store.after_commit"),),
        expect="900 rows in, 9 inserted, 128 updated, 763 unchanged",
    ),
    # Live rows over a backfilled group: 10 new passengers (4 without a label) and 3 stored
    # ones left as they are; the re-run after a kill must not add a row twice.
    "ingest": Job(
        "ingest", ("ingest", "--dataset", "titanic", "--source", "{root}/titanic_live.csv", "--date", DAY.isoformat()),
        ("titanic",), "backfilled",
        marker="store.locked", last_write="store.after_commit",
        named_quick=("ingest.before_insert", "store.after_commit"),
        named_soak=("ingest.before_insert", "store.locked", "store.upsert.before_commit", "store.after_commit",
                    "ingest.after_insert"),
        double_soak=(("store.upsert.before_commit", "store.after_commit"),),
        expect="13 rows in, 10 inserted (6 labelled, 4 awaiting a label), 3 unchanged",
    ),
    # Late labels over a batch scored while 15 of its 40 labels were missing: the feature
    # rows, the predictions' actual labels and the batch's monitoring run all follow.
    "labels": Job(
        "labels", ("labels", "--dataset", "titanic", "--source", "{root}/titanic_labels.csv"),
        ("titanic", "titanic_predictions"), "scored",
        marker="store.locked", last_write="labels.after_run_metrics",
        named_quick=("labels.after_features", "labels.after_predictions"),
        named_soak=("store.upsert.before_commit", "labels.after_features", "labels.after_runs_marked",
                    "labels.after_predictions", "labels.after_run_artifacts", "labels.after_run_metrics"),
        double_soak=(("labels.after_features", "labels.after_run_artifacts"),
                     ("labels.after_predictions", "labels.after_run_metrics")),
        expect=f"{LABELS_LATE} labels in, {LABELS_LATE} set, 0 changed",
    ),
    "infer": Job(
        "infer", ("infer", "--dataset", "titanic", "--as-of", DAY.isoformat()), ("titanic", "titanic_predictions"),
        "trained", marker="infer.after_run_created", last_write="infer.after_upsert",
        named_quick=("infer.after_run_logged", "infer.after_upsert"),
        named_soak=("infer.after_run_created", "infer.after_run_logged", "store.locked", "store.json.before_replace",
                    "store.create.after_sidecar", "store.after_commit", "infer.after_upsert"),
        double_soak=(("infer.after_run_logged", "infer.after_upsert"), ("infer.after_run_created", "infer.after_upsert"),
                     ("infer.after_run_created", "store.create.after_sidecar")),
        expect=f"scored {DAILY_ROWS} rows",
    ),
}
KILL_POINTS_QUICK = 3
KILL_POINTS_SOAK = 21


@dataclass(frozen=True)
class KillPoint:
    """Where to kill a job: a named crash point, or a seeded delay after its marker; with
    ``then``, the first re-run is killed too, at that named point."""

    job: str
    at: str = ""
    seed: int | None = None
    then: str = ""

    @property
    def id(self) -> str:
        first = self.at or f"random{self.seed}"
        return f"{self.job}-{first}" + (f"-then-{self.then}" if self.then else "")


def kill_points(soak: bool) -> list[KillPoint]:
    points = []
    for job in JOBS.values():
        named = [KillPoint(job.name, at=name) for name in (job.named_soak if soak else job.named_quick)]
        doubles = [KillPoint(job.name, at=a, then=b) for a, b in job.double_soak] if soak else []
        wanted = KILL_POINTS_SOAK if soak else KILL_POINTS_QUICK
        randoms = [KillPoint(job.name, seed=seed) for seed in range(max(1, wanted - len(named) - 2 * len(doubles)))]
        points += named + doubles + randoms
    return points


# --- what a store and a tracking database hold ----------------------------------------------


def key_of(table: str) -> list[str]:
    return [SPEC.primary_key, "model_version"] if table.endswith("_predictions") else [SPEC.primary_key]


@dataclass
class TableState:
    version: int
    frame: pd.DataFrame  # sorted by key; the comparable columns only
    metadata: dict[str, Any]


VOLATILE_COLUMNS = ("scored_at", "run_id")


def read_table(store_dir: Path, table: str) -> TableState | None:
    """The table through the store API and through deltalake directly (which must agree),
    or None when it does not exist for either."""
    try:
        group = LocalFeatureStore(store_dir).get_feature_group(table, 1)
        via_api: pd.DataFrame | None = group.read()
    except NotFoundError:
        via_api = None
    delta: DeltaTable | None = None
    if (store_dir / f"{table}_1").is_dir():  # (deltalake would not create it, but be sure)
        try:
            delta = DeltaTable(str(store_dir / f"{table}_1"))
        except TableNotFoundError:
            delta = None
    assert (via_api is None) == (delta is None), (
        f"{table}: the store API {'cannot' if via_api is None else 'can'} read the table, deltalake "
        f"{'cannot' if delta is None else 'can'}"
    )
    if via_api is None or delta is None:
        return None
    for uri in delta.file_uris():
        assert Path(uri.removeprefix("file://")).is_file(), f"{table}: the Delta log names a missing file {uri}"
    key = key_of(table)
    direct = delta.to_pandas().sort_values(key, kind="stable").reset_index(drop=True)
    assert direct[key].to_numpy().tolist() == via_api[key].to_numpy().tolist(), (
        f"{table}: deltalake reads {len(direct)} rows, the store API {len(via_api)}"
    )
    frame = via_api.drop(columns=[c for c in VOLATILE_COLUMNS if c in via_api.columns])
    metadata = json.loads((store_dir / f"{table}_1.json").read_text())
    return TableState(delta.version(), frame.sort_values(key, kind="stable").reset_index(drop=True), metadata)


def same_rows(a: TableState | None, b: TableState | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.frame.shape == b.frame.shape and a.frame.equals(b.frame)


def describe(state: TableState | None) -> str:
    return "absent" if state is None else f"{len(state.frame)} rows at version {state.version}"


def comparable_tags(run: Run) -> dict[str, str]:
    """A monitoring run's own tags (MLflow's system tags, the recovery mark, the owning
    process's host and pid and when it scored aside: a clock time, as the predictions'
    ``scored_at``)."""
    return {k: v for k, v in run.tags.items()
            if (not k.startswith("mlflow.") or k == "mlflow.note.content")
            and k not in ("recovered", HOST_TAG, PID_TAG, registry.SCORED_AT_TAG)}


@dataclass
class Snapshot:
    tables: dict[str, TableState | None]
    runs: list[Run]


def snapshot(folder: Path, job: Job) -> Snapshot:
    return Snapshot({t: read_table(folder / "store", t) for t in job.tables}, read_runs(folder / "mlflow.db"))


def parse_trace(path: Path) -> list[tuple[float, str]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        stamp, name = line.split(" ", 1)
        out.append((float(stamp), name))
    return out


# --- the lab: job worlds, crash-free references, running and killing jobs ---------------------


@dataclass
class Reference:
    window_s: float
    final: Snapshot
    stdout: str


@dataclass
class Lab:
    root: Path
    data_dir: Path
    get_fixture: Callable[[str], Any]
    templates: dict[str, Path] = field(default_factory=dict)
    references: dict[str, Reference] = field(default_factory=dict)

    def env(self, folder: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in (CRASH_AT_ENV, CRASH_TRACE_ENV)}
        env.update({
            "SML_STORE_DIR": str(folder / "store"), "SML_DATA_DIR": str(self.data_dir),
            "SML_CACHE_DIR": str(self.root / "cache"), "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}",
        })
        for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
            env[name] = NO_NETWORK_PROXY
        env["no_proxy"] = env["NO_PROXY"] = "localhost,127.0.0.1"
        env.update(extra or {})
        return env

    def args(self, job: Job) -> list[str]:
        return [arg.replace("{root}", str(self.root)) for arg in job.args]

    def template(self, start: str) -> Path:
        """The state a job starts from: nothing, a backfilled store (and a changed copy of
        the source, for the update), or the trained world with a day of new rows."""
        if start in self.templates:
            return self.templates[start]
        folder = self.root / f"template-{start}"
        folder.mkdir()
        if start == "backfilled":
            backfill(SPEC, LocalFeatureStore(folder / "store"), load_source(SPEC, None, self.data_dir))
            write_changed_source(self.data_dir / "titanic.csv", self.root / "titanic_changed.csv")
            write_live_source(self.data_dir / "titanic.csv", self.root / "titanic_live.csv")
        elif start == "trained":
            trained = self.get_fixture("trained_template")
            shutil.copytree(trained / "store", folder / "store")
            copy_database(trained / "mlflow.db", folder / "mlflow.db")
            add_daily_rows(SPEC, LocalFeatureStore(folder / "store"), DAY, n=DAILY_ROWS, seed=3)
        elif start == "simulated":
            simulate_history(self.get_fixture("trained_template"), folder)
        elif start == "scored":
            score_without_labels(self.template("trained"), folder, self.root / "titanic_labels.csv")
        self.templates[start] = folder
        return folder

    def world(self, job: str, folder: Path) -> Path:
        template = self.template(JOBS[job].start)
        folder.mkdir(parents=True)
        if (template / "store").exists():
            shutil.copytree(template / "store", folder / "store")
        if (template / "mlflow.db").exists():
            copy_database(template / "mlflow.db", folder / "mlflow.db")
        return folder

    def start(self, job: Job, folder: Path, extra: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with open(folder / "stdout.txt", "ab") as out, open(folder / "stderr.txt", "ab") as err:
            return subprocess.Popen(
                [sys.executable, "-m", "serverless_ml.cli", *self.args(job)], cwd=folder, env=self.env(folder, extra),
                stdout=out, stderr=err,
            )

    def run(self, job: Job, folder: Path, extra: dict[str, str] | None = None) -> tuple[int, str, str]:
        """Run the job to its end (SIGKILL from a crash point included); return code and output."""
        for name in ("stdout.txt", "stderr.txt"):
            (folder / name).write_bytes(b"")
        proc = self.start(job, folder, extra)
        try:
            code = proc.wait(timeout=JOB_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail(f"sml {' '.join(self.args(job))} did not finish in {JOB_TIMEOUT_S} s (a lock left by the killed job?)")
        return code, (folder / "stdout.txt").read_text(), (folder / "stderr.txt").read_text()

    def rerun(self, job: Job, folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
        """Run the job again, through the same CLI entry point, in this process (a fresh
        interpreter would add 10-20 s of imports to each inference re-run)."""
        import mlflow

        from serverless_ml import cli

        env = self.env(folder)
        with monkeypatch.context() as patch:
            for name in ("SML_STORE_DIR", "SML_DATA_DIR", "SML_CACHE_DIR", "MLFLOW_TRACKING_URI"):
                patch.setenv(name, env[name])
            patch.delenv(CRASH_AT_ENV, raising=False)
            patch.delenv(CRASH_TRACE_ENV, raising=False)
            patch.chdir(folder)
            mlflow.set_tracking_uri(None)
            capsys.readouterr()
            try:
                cli.main(self.args(job))
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            finally:
                mlflow.set_tracking_uri(None)
            out, err = capsys.readouterr()
        return code, out, err

    def reference(self, job_name: str) -> Reference:
        """A crash-free run of the job from its template: its final state and the time from
        its marker to its last write."""
        if job_name in self.references:
            return self.references[job_name]
        job = JOBS[job_name]
        folder = self.world(job_name, self.root / f"reference-{job_name}")
        trace = folder / "trace.txt"
        code, out, err = self.run(job, folder, {CRASH_TRACE_ENV: str(trace)})
        assert code == 0 and job.expect in out, f"the crash-free reference run of sml {job_name}:\n{out}{err}"
        points = dict((name, stamp) for stamp, name in reversed(parse_trace(trace)))  # first occurrence of each
        assert job.marker in points and job.last_write in points, f"reference trace lacks the window: {parse_trace(trace)}"
        window = (points[job.last_write] - points[job.marker]) * WINDOW_FACTOR
        self.references[job_name] = Reference(window, snapshot(folder, job), out)
        return self.references[job_name]

    def kill_after_marker(self, job: Job, folder: Path, delay_s: float) -> tuple[bool, str]:
        """Start the job, wait until it passes its marker, sleep ``delay_s`` and SIGKILL it.
        Returns whether the kill landed (False: it had finished) and the last point passed."""
        trace = folder / "trace.txt"
        proc = self.start(job, folder, {CRASH_TRACE_ENV: str(trace)})
        deadline = time.monotonic() + JOB_TIMEOUT_S
        try:
            while not any(name == job.marker for _, name in parse_trace(trace)):
                if proc.poll() is not None:
                    pytest.fail(f"sml {job.name} ended (exit {proc.returncode}) before reaching {job.marker}:\n"
                                f"{(folder / 'stderr.txt').read_text()}")
                if time.monotonic() > deadline:
                    pytest.fail(f"sml {job.name} did not reach {job.marker} in {JOB_TIMEOUT_S} s")
                time.sleep(0.001)
            time.sleep(delay_s)
            landed = proc.poll() is None
            if landed:
                proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait(timeout=JOB_TIMEOUT_S)
        passed = parse_trace(trace)
        return landed and proc.returncode == -signal.SIGKILL, passed[-1][1] if passed else "(none)"


def write_changed_source(source: Path, target: Path) -> None:
    """The Titanic CSV with every 7th passenger's fare raised by 1 and 9 new passengers
    (copies of the first 9 under new ids)."""
    lines = source.read_text(encoding="utf-8").splitlines()
    header = next(csv.reader([lines[0]]))
    fare, pid = header.index("Fare"), header.index("PassengerId")
    records = [next(csv.reader([line])) for line in lines[1:] if line]
    for record in records[::7]:
        record[fare] = repr(float(record[fare]) + 1.0)
    last = max(int(r[pid]) for r in records)
    extra = [[str(last + 1 + i) if j == pid else v for j, v in enumerate(record)] for i, record in enumerate(records[:9])]
    with open(target, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh, lineterminator="\n").writerows([header, *records, *extra])


def write_live_source(source: Path, target: Path) -> None:
    """Live rows: the first 3 passengers as stored, and 10 new ones (copies of passengers
    11-20 under new ids), the first 4 of them without a label."""
    lines = source.read_text(encoding="utf-8").splitlines()
    header = next(csv.reader([lines[0]]))
    survived, pid = header.index("Survived"), header.index("PassengerId")
    records = [next(csv.reader([line])) for line in lines[1:] if line]
    last = max(int(r[pid]) for r in records)
    new = [[str(last + 1 + i) if j == pid else ("" if j == survived and i < 4 else v) for j, v in enumerate(record)]
           for i, record in enumerate(records[10:20])]
    with open(target, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh, lineterminator="\n").writerows([header, *records[:3], *new])


def score_without_labels(trained: Path, folder: Path, labels_file: Path) -> None:
    """The trained world with its day of 40 rows scored while :data:`LABELS_LATE` of their
    labels were missing (set null through the store API, as ``sml ingest`` stores them),
    and ``labels_file``: those rows' keys and labels, as the raw file names them."""
    import mlflow

    from serverless_ml.pipelines.infer import InferOptions, infer
    from serverless_ml.settings import resolve_settings

    shutil.copytree(trained / "store", folder / "store")
    copy_database(trained / "mlflow.db", folder / "mlflow.db")
    group = LocalFeatureStore(folder / "store").get_feature_group("titanic", 1)
    rows = group.read()
    late = rows[rows["event_time"].dt.date == DAY].sort_values(SPEC.primary_key).head(LABELS_LATE)
    late[[SPEC.primary_key, SPEC.label]].rename(columns={SPEC.primary_key: SPEC.primary_key_source, SPEC.label: SPEC.raw_label}
                                                 ).to_csv(labels_file, index=False)
    group.insert(late.assign(**{SPEC.label: None}))
    settings = resolve_settings(store_dir=folder / "store", tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setenv("MLFLOW_TRACKING_URI", settings.tracking_uri)
        try:
            report = infer(SPEC, LocalFeatureStore(folder / "store"), settings, InferOptions(as_of=DAY),
                           dt.datetime(2024, 2, 2, tzinfo=dt.timezone.utc))
        finally:
            mlflow.set_tracking_uri(None)
    assert report.rows_scored == DAILY_ROWS and report.metrics["rows_labelled"] == DAILY_ROWS - LABELS_LATE


def assert_labels_followed(folder: Path, final: Snapshot, reference: Reference, where: str) -> None:
    """After a killed ``sml labels`` and its re-run: the monitoring run shows what a
    crash-free run left, and that is the direct computation on the predictions, whose
    actual labels are the store's."""
    store = LocalFeatureStore(folder / "store")
    labels = store.get_feature_group("titanic", 1).read().set_index(SPEC.primary_key)[SPEC.label]
    predictions = store.get_feature_group("titanic_predictions", 1).read()
    assert predictions[SPEC.primary_key].map(labels).astype(float).equals(predictions["actual"].astype(float)), where
    (run,) = [r for r in final.runs if r.experiment == MONITORING]
    (expected,) = [r for r in reference.final.runs if r.experiment == MONITORING]
    assert run.metrics == pytest.approx(expected.metrics, rel=1e-12), f"killed at {where}: the run's figures differ"
    volatile = ("labels_updated_at",)
    assert {k: v for k, v in run.tags.items() if k not in volatile} == {k: v for k, v in expected.tags.items() if k not in volatile}
    batch = predictions[predictions["run_id"] == run.run_id]
    assert run.metrics["rows_labelled"] == len(batch) == DAILY_ROWS and run.metrics["labelled_share"] == 1.0
    assert run.metrics["batch_accuracy"] == pytest.approx(float((batch["actual"] == batch["prediction"]).mean()), rel=1e-12)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, data_dir: Path, request: pytest.FixtureRequest) -> Lab:
    return Lab(tmp_path_factory.mktemp("crash"), data_dir, request.getfixturevalue)


# --- checks ----------------------------------------------------------------------------------


def assert_all_or_nothing(job: Job, folder: Path, before: Snapshot, reference: Reference, where: str) -> Snapshot:
    """Right after a kill: each table is as before the job or as after a crash-free run."""
    assert_locks_free(folder / "store")
    now = snapshot(folder, job)
    for table in job.tables:
        state, old, new = now.tables[table], before.tables[table], reference.final.tables[table]
        assert same_rows(state, old) or same_rows(state, new), (
            f"killed at {where}: {table} holds a partial batch: {describe(state)}, "
            f"expected as before ({describe(old)}) or as after a crash-free run ({describe(new)})"
        )
    monitoring_before = {r.run_id for r in before.runs if r.experiment == MONITORING}
    new_runs = [r for r in now.runs if r.experiment == MONITORING and r.run_id not in monitoring_before]
    running = [r.run_id for r in new_runs if r.status == "RUNNING"]
    assert len(running) <= 1, f"killed at {where}: {len(running)} runs RUNNING from one job"
    for run in new_runs:  # a run the killed job closed (a double crash's first run)
        assert run.status != "FAILED" or "recovered" in run.tags, (run.run_id, run.status, run.tags)
    return now


def assert_like_reference(job: Job, folder: Path, before: Snapshot, reference: Reference, rerun_out: str,
                          stale: list[str], where: str) -> None:
    """After the re-run: exactly the crash-free run's state."""
    final = snapshot(folder, job)
    for table in job.tables:
        state, expected = final.tables[table], reference.final.tables[table]
        assert same_rows(state, expected), (
            f"killed at {where}, then re-run: {table} has {describe(state)}, a crash-free run {describe(expected)}"
        )
        if state is not None and expected is not None:
            assert state.version == expected.version, f"{table}: Delta version {state.version}, crash-free {expected.version}"
            assert state.metadata == expected.metadata, f"{table}: its metadata differs from a crash-free run's"
    leftovers = [str(p.relative_to(folder)) for p in (folder / "store").rglob("*.tmp")]
    assert not leftovers, f"temporary files left in the store: {leftovers}"
    running = [r.run_id for r in final.runs if r.status == "RUNNING"]
    assert not running, f"killed at {where}: runs still RUNNING after the re-run: {running}"
    others = [(r.run_id, r.status) for r in final.runs if r.experiment != MONITORING]
    assert others == [(r.run_id, r.status) for r in before.runs if r.experiment != MONITORING]
    if job.name == "labels":
        assert_labels_followed(folder, final, reference, where)
    if job.name != "infer":
        return
    for run_id in stale:
        assert f"closed stale run {run_id}" in rerun_out, f"the re-run did not say it closed {run_id}:\n{rerun_out}"
    monitoring = [r for r in final.runs if r.experiment == MONITORING]
    finished = [r for r in monitoring if r.status == "FINISHED"]
    assert len(finished) == 1, f"killed at {where}: {[(r.run_id, r.status) for r in monitoring]}"
    for run in monitoring:
        if run.status != "FINISHED":
            assert run.status == "FAILED" and "recovered" in run.tags, (run.run_id, run.status, run.tags)
    (expected,) = [r for r in reference.final.runs if r.experiment == MONITORING]
    (got,) = finished
    assert got.metrics == pytest.approx(expected.metrics, rel=1e-12), "the FINISHED run's metrics differ from a crash-free run's"
    assert got.params == expected.params
    assert comparable_tags(got) == comparable_tags(expected)
    predictions = LocalFeatureStore(folder / "store").get_feature_group("titanic_predictions", 1).read()
    assert set(predictions["run_id"]) == {got.run_id}, "predictions point at a run other than the FINISHED one"


# --- the test --------------------------------------------------------------------------------


@pytest.mark.parametrize("point", kill_points(SOAK), ids=lambda p: p.id)
def test_killed_job_leaves_all_or_nothing_and_rerun_matches_crash_free_run(
    point: KillPoint, lab: Lab, tmp_path: Path, reliability, soak: bool,  # noqa: ANN001
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    assert soak == SOAK
    job = JOBS[point.job]
    reference = lab.reference(job.name)
    kills = 0
    if point.at:
        folder = lab.world(job.name, tmp_path / "world")
        before = snapshot(folder, job)
        code, out, err = lab.run(job, folder, {CRASH_AT_ENV: point.at, CRASH_TRACE_ENV: str(folder / "trace.txt")})
        passed = [name for _, name in parse_trace(folder / "trace.txt")]
        assert code == -signal.SIGKILL and passed[-1:] == [point.at], (
            f"sml {job.name} was to be killed at {point.at}: exit {code}, points passed {passed}\n{out}{err}"
        )
        where = point.at
    else:
        rng = random.Random(f"{job.name}-{point.seed}")
        window = reference.window_s
        for attempt in range(4):
            folder = lab.world(job.name, tmp_path / f"world{attempt}")
            before = snapshot(folder, job)
            delay = rng.uniform(0, window)
            landed, last = lab.kill_after_marker(job, folder, delay)
            if landed:
                break
            window /= 2  # the job finished first (a fast moment): aim earlier
        else:
            pytest.fail(f"sml {job.name} finished before every one of 4 seeded kills")
        where = f"{delay * 1000:.1f} ms after {job.marker} (last point passed: {last})"
    kills += 1
    after_kill = assert_all_or_nothing(job, folder, before, reference, where)
    stale = [r.run_id for r in after_kill.runs if r.status == "RUNNING"]

    if point.then:
        code, out, err = lab.run(job, folder, {CRASH_AT_ENV: point.then})
        assert code == -signal.SIGKILL, f"the re-run was to be killed at {point.then}: exit {code}\n{out}{err}"
        kills += 1
        where += f", then the re-run at {point.then}"
        after_kill = assert_all_or_nothing(job, folder, before, reference, where)
        stale = [r.run_id for r in after_kill.runs if r.status == "RUNNING"]

    code, out, err = lab.rerun(job, folder, monkeypatch, capsys)
    assert code == 0, f"the re-run after a kill at {where} failed:\n{out}{err}"
    assert_like_reference(job, folder, before, reference, out, stale, where)
    reliability.add("crash consistency", kill_points=kills)


# --- --replace: history rewritten and scored again, killed half-way -------------------------

REPLACE_DAYS = ("2024-03-01", "2024-03-02", "2024-03-03")
REPLACE_SIMULATION = ("--dataset", "titanic", "--days", "3", "--end-date", REPLACE_DAYS[-1])
# 3 rows a day instead of 5: 3 rows change and 2 are left over (deleted) on each day.
REPLACE_JOB = Job(
    "simulate-replace", ("simulate", *REPLACE_SIMULATION, "--rows", "3", "--replace"), ("titanic", "titanic_predictions"),
    "simulated", marker="replace.after_runs_deleted", last_write="store.after_commit", named_quick=(), named_soak=(),
)
REPLACE_POINTS_QUICK = ("replace.after_runs_deleted", "replace.after_predictions_deleted", "replace.after_rows_written")
REPLACE_POINTS_SOAK = (*REPLACE_POINTS_QUICK, "store.delete.before_commit", "simulate.after_runs_logged")


def simulate_history(trained: Path, folder: Path) -> None:
    """The trained world with three simulated days of 5 rows each."""
    import mlflow

    from serverless_ml.pipelines.simulate import SimulateOptions, simulate
    from serverless_ml.settings import resolve_settings

    shutil.copytree(trained / "store", folder / "store")
    copy_database(trained / "mlflow.db", folder / "mlflow.db")
    settings = resolve_settings(store_dir=folder / "store", tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setenv("MLFLOW_TRACKING_URI", settings.tracking_uri)
        try:
            simulate(SPEC, LocalFeatureStore(folder / "store"), settings,
                     SimulateOptions(days=3, end_date=dt.date.fromisoformat(REPLACE_DAYS[-1]), rows=5))
        finally:
            mlflow.set_tracking_uri(None)


@dataclass
class History:
    """What the site and the store say about the simulated days."""

    features: pd.DataFrame
    predictions: pd.DataFrame  # without run_id
    metrics: dict[str, dict[str, float]]  # the FINISHED run's metrics, by day


def read_history(folder: Path) -> History:
    """The days' state, checked on the way: no run RUNNING; per day exactly one live
    FINISHED run (others FAILED and tagged ``recovered``); every prediction of a day points
    at its FINISHED run."""
    store = LocalFeatureStore(folder / "store")
    features = store.get_feature_group("titanic", 1).read()
    predictions = store.get_feature_group("titanic_predictions", 1).read()
    monitoring = [r for r in read_runs(folder / "mlflow.db") if r.experiment == MONITORING]
    assert not [r.run_id for r in monitoring if r.status == "RUNNING"]
    finished: dict[str, Run] = {}
    for run in monitoring:
        if run.status == "FINISHED":
            assert run.tags["as_of"] not in finished, f"two live FINISHED runs for {run.tags['as_of']}"
            finished[run.tags["as_of"]] = run
        else:
            assert run.status == "FAILED" and "recovered" in run.tags, (run.run_id, run.status, run.tags)
    assert sorted(finished) == list(REPLACE_DAYS)
    days = predictions["event_time"].dt.date.astype(str)
    for day, run in finished.items():
        assert set(predictions.loc[days == day, "run_id"]) == {run.run_id}, day
    return History(features, predictions.drop(columns=["run_id"]), {day: run.metrics for day, run in finished.items()})


def assert_finished_runs_have_their_predictions(folder: Path) -> None:
    """Right after a kill: a live FINISHED run (what the site shows) still has its
    predictions, each of them of a row that exists."""
    store = LocalFeatureStore(folder / "store")
    predictions = store.get_feature_group("titanic_predictions", 1).read()
    features = store.get_feature_group("titanic", 1).read()
    for run in read_runs(folder / "mlflow.db"):
        if run.experiment == MONITORING and run.status == "FINISHED":
            own = predictions[predictions["run_id"] == run.run_id]
            assert len(own) == run.metrics["rows_scored"], f"live run {run.run_id} ({run.tags['as_of']}) lost predictions"
            assert own[SPEC.primary_key].isin(features[SPEC.primary_key]).all()


@pytest.fixture(scope="module")
def replace_reference(lab: Lab) -> History:
    """A crash-free `sml simulate --replace` from the simulated world."""
    folder = lab.root / "reference-simulate-replace"
    template = lab.template(REPLACE_JOB.start)
    folder.mkdir()
    shutil.copytree(template / "store", folder / "store")
    copy_database(template / "mlflow.db", folder / "mlflow.db")
    code, out, err = lab.run(REPLACE_JOB, folder)
    assert code == 0 and "replaced 15 stored row(s) of 3 day(s)" in out, out + err
    history = read_history(folder)
    assert len(history.features[history.features["origin"] == "synthetic"]) == 9
    return history


@pytest.mark.parametrize("point", REPLACE_POINTS_SOAK if SOAK else REPLACE_POINTS_QUICK)
def test_a_killed_replace_is_completed_by_running_it_again(
    point: str, lab: Lab, replace_reference: History, tmp_path: Path, reliability,  # noqa: ANN001
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    template = lab.template(REPLACE_JOB.start)
    folder = tmp_path / "world"
    folder.mkdir()
    shutil.copytree(template / "store", folder / "store")
    copy_database(template / "mlflow.db", folder / "mlflow.db")
    code, out, err = lab.run(REPLACE_JOB, folder, {CRASH_AT_ENV: point, CRASH_TRACE_ENV: str(folder / "trace.txt")})
    passed = [name for _, name in parse_trace(folder / "trace.txt")]
    assert code == -signal.SIGKILL and passed[-1:] == [point], f"exit {code}, points passed {passed}\n{out}{err}"
    assert_locks_free(folder / "store")
    assert_finished_runs_have_their_predictions(folder)

    code, out, err = lab.rerun(REPLACE_JOB, folder, monkeypatch, capsys)
    assert code == 0, f"the re-run after a kill at {point} failed:\n{out}{err}"
    final = read_history(folder)
    pd.testing.assert_frame_equal(final.features, replace_reference.features)
    pd.testing.assert_frame_equal(final.predictions, replace_reference.predictions)
    assert sorted(final.metrics) == sorted(replace_reference.metrics)
    for day, metrics in final.metrics.items():
        assert metrics == pytest.approx(replace_reference.metrics[day], rel=1e-12), day
    reliability.add("crash consistency", kill_points=1)
