"""The reference drift detector: Evidently's ``DataDriftPreset()`` with its defaults, run in
its own environment on the same (reference, current) windows as ours.

Why its own environment: evidently 0.7.23 (the release pinned in
``bench/reference-requirements.txt``) requires ``plotly>=5.10,<6`` and the project's
environment has plotly 7.1.0; ``pip install --dry-run`` of evidently with the project's
``pip freeze`` as requirements fails on plotly alone. So :func:`ensure_reference_env`
builds ``bench/.venv-reference`` (gitignored) once, and :func:`run_reference` runs this same
file there as a script, one process for all windows (importing Evidently costs ~4 s).

The job contract (the benchmark writes it, :func:`write_jobs` does it in one place)::

    jobs_dir/
      jobs.json            [{"id": ..., "reference": "reference.parquet",
                             "current": "windows/<id>.parquet",
                             "columns": {"<name>": "numeric" | "categorical", ...}}, ...]
      reference.parquet    one per dataset/simulation (read once, shared by its windows)
      windows/<id>.parquet one per current window
      results.json         written here: {id: {"dataset_drift": bool,
                                               "drifted_features": [names],
                                               "share": float, "seconds": float}}
                           (or {"error": "..."} for a window Evidently refused)
      reference_run.json   written here: evidently version, start-up and total seconds

Paths in jobs.json are relative to ``jobs_dir`` (absolute ones work too). Only the listed
columns are compared, declared to Evidently as numerical or categorical in a
``DataDefinition`` that lists every column kind, so it infers nothing.

Evidently's defaults, read in its source (0.7.21 on GitHub, identical files in the
installed 0.7.23: ``presets/drift.py``, ``legacy/calculations/stattests/registry.py``
``_get_default_stattest``, ``legacy/calculations/data_drift.py``, and the stattest modules):

- The test per column depends on the reference's size *after* dropping missing values
  (n) and on the number of distinct values in reference and current together (k):

  ====================  ===============================  ===============================
  column                n <= 1000                        n > 1000
  ====================  ===============================  ===============================
  numerical, k > 5      Kolmogorov-Smirnov, p <= 0.05    Wasserstein distance / std of
                                                         the reference >= 0.1
  numerical, k <= 5     chi-squared p < 0.05 (k > 2),    Jensen-Shannon distance >= 0.1
                        two-proportion Z p < 0.05 (k<=2)
  categorical           chi-squared p < 0.05 (k > 2),    Jensen-Shannon distance >= 0.1
                        two-proportion Z p < 0.05 (k<=2)
  ====================  ===============================  ===============================

  A drift is flagged at ``p <= 0.05`` (K-S) or ``p < 0.05`` (chi-squared, Z) or at a
  distance ``>= 0.1``; there is no correction for testing many columns. Jensen-Shannon bins
  numerical columns with more than 20 distinct values into Sturges bins over both samples
  (otherwise per value). Missing and infinite values are dropped before testing.
- Dataset drift: ``share of drifted columns >= drift_share``, ``drift_share = 0.5``.

Speed (measured on the 2-core machine, busy: load ~3; reference half of each bundled dataset,
windows of up to 100 rows): start-up 2.5-4 s (importing Evidently), then per window, median,
0.07 s (mixed_synthetic, 9 columns), 0.08 s (digits_features, 10), 0.09 s (wine, 13) and
0.21 s (breast_cancer, 30) with the report's widgets skipped (:func:`_skip_widgets`, the
default: same verdicts); 0.36, 0.74, 1.0 and 2.5 s with Evidently drawing them
(``widgets=True``). Each run writes its own figures to ``reference_run.json``.

    from bench.reference_drift import ensure_reference_env, run_reference
    python = ensure_reference_env()          # builds bench/.venv-reference once (~40 s)
    results = run_reference(jobs_dir)        # {id: {"dataset_drift": ..., ...}}

Only the standard library is imported at the top: this file runs under both environments.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REFERENCE_VENV = BENCH_DIR / ".venv-reference"
"""The reference environment (gitignored)."""
REQUIREMENTS_PATH = BENCH_DIR / "reference-requirements.txt"
"""Pinned versions installed into :data:`REFERENCE_VENV`."""
STAMP_NAME = "reference-requirements.sha256"
"""Written inside the venv after a complete install: the requirements' digest and Python."""

JOBS_FILE = "jobs.json"
RESULTS_FILE = "results.json"
RUN_FILE = "reference_run.json"
NUMERIC = "numeric"
CATEGORICAL = "categorical"
COLUMN_KINDS = (NUMERIC, CATEGORICAL)

INSTALL_TIMEOUT_S = 1200


@dataclass(frozen=True)
class ReferenceJob:
    """One (reference, current) window to compare.

    Attributes:
        id: Key of the window in ``results.json``.
        reference: Parquet file of the reference rows, relative to the jobs folder.
        current: Parquet file of the window's rows, relative to the jobs folder.
        columns: Column name -> ``numeric`` or ``categorical``; only these are compared.
    """

    id: str
    reference: str
    current: str
    columns: Mapping[str, str]

    def __post_init__(self) -> None:
        unknown = {name: kind for name, kind in self.columns.items() if kind not in COLUMN_KINDS}
        if unknown:
            name, kind = next(iter(unknown.items()))
            raise ValueError(f"job '{self.id}': column '{name}' has kind {kind!r}, expected one of {', '.join(COLUMN_KINDS)}")
        if not self.columns:
            raise ValueError(f"job '{self.id}': no columns to compare")


def write_jobs(jobs_dir: Path, jobs: Sequence[ReferenceJob]) -> Path:
    """Write ``jobs_dir/jobs.json`` (the parquet files are the caller's); return its path."""
    ids = [job.id for job in jobs]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{jobs_dir / JOBS_FILE}: job ids must be unique")
    path = Path(jobs_dir) / JOBS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([{**asdict(job), "columns": dict(job.columns)} for job in jobs], indent=1) + "\n")
    return path


def read_jobs(jobs_dir: Path) -> list[ReferenceJob]:
    """The jobs of ``jobs_dir/jobs.json``, checked."""
    path = Path(jobs_dir) / JOBS_FILE
    try:
        raw = json.loads(path.read_text())
        return [ReferenceJob(str(j["id"]), str(j["reference"]), str(j["current"]), dict(j["columns"])) for j in raw]
    except FileNotFoundError:
        raise SystemExit(f"error: {path} does not exist") from None
    except (json.JSONDecodeError, TypeError, KeyError) as exc:
        raise SystemExit(f"error: {path}: expected a list of {{id, reference, current, columns}} ({exc!r})") from None
    except ValueError as exc:
        raise SystemExit(f"error: {path}: {exc}") from None


# --- the environment (project side) -------------------------------------------------------


def _venv_python(venv_dir: Path) -> Path:
    return venv_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _stamp(requirements: Path) -> str:
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()
    return f"{digest} python{sys.version_info.major}.{sys.version_info.minor}\n"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock, so two benchmarks starting together build the venv once."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_reference_env(venv_dir: Path = REFERENCE_VENV, requirements: Path = REQUIREMENTS_PATH) -> Path:
    """Create the reference venv with the pinned requirements, unless it is there already.

    Idempotent: a stamp written after a complete install records the requirements' digest
    and the Python version; a venv without it (an install that was cut short) or with another
    one (the requirements changed) is removed and built again. The venv is made with
    ``python -m venv`` by the interpreter running this code, then ``pip install -r``.

    Returns:
        The reference venv's Python interpreter.

    Raises:
        RuntimeError: the venv could not be created or pip failed (one line naming the log).
    """
    venv_dir, requirements = Path(venv_dir), Path(requirements)
    python = _venv_python(venv_dir)
    stamp_path = venv_dir / STAMP_NAME
    wanted = _stamp(requirements)
    if stamp_path.is_file() and stamp_path.read_text() == wanted and python.exists():
        return python
    with _locked(venv_dir.with_name(venv_dir.name + ".lock")):
        if stamp_path.is_file() and stamp_path.read_text() == wanted and python.exists():
            return python  # built by another process while this one waited
        if venv_dir.exists():
            shutil.rmtree(venv_dir)
        log_path = venv_dir.with_name(venv_dir.name + ".log")
        print(f"  building the reference environment {venv_dir} (log: {log_path}) ...", flush=True)
        started = time.perf_counter()
        with open(log_path, "w") as log:
            for command in (
                [sys.executable, "-m", "venv", str(venv_dir)],
                [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
                 "-r", str(requirements)],
            ):
                log.write(f"$ {' '.join(command)}\n")
                log.flush()
                done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, timeout=INSTALL_TIMEOUT_S, check=False)
                if done.returncode != 0:
                    raise RuntimeError(
                        f"building {venv_dir} failed: `{' '.join(command[:4])} ...` exited {done.returncode} (see {log_path})"
                    )
        stamp_path.write_text(wanted)
        print(f"  reference environment ready in {time.perf_counter() - started:.0f} s", flush=True)
    return python


def run_reference(jobs_dir: Path, widgets: bool = False, timeout_s: float | None = None) -> dict[str, dict[str, Any]]:
    """Run Evidently on every job of ``jobs_dir/jobs.json`` in one reference-venv process.

    Args:
        jobs_dir: Folder with ``jobs.json`` and the parquet files it names (see the module
            docstring); ``results.json`` and ``reference_run.json`` are written there.
        widgets: Let Evidently draw its report widgets as it does by default (~4x slower;
            the verdicts are the same, see :func:`_skip_widgets`).
        timeout_s: Give up after this long (``None``: no limit).

    Returns:
        Window id -> ``{"dataset_drift": bool, "drifted_features": [...], "share": float,
        "seconds": float}``, or ``{"error": "..."}`` for a window Evidently refused.

    Raises:
        RuntimeError: the reference process failed (one line with the end of its stderr).
    """
    jobs_dir = Path(jobs_dir).resolve()
    python = ensure_reference_env()
    results_path = jobs_dir / RESULTS_FILE
    results_path.unlink(missing_ok=True)
    # -I: the script's folder (bench/, whose site.py and datasets.py would shadow modules
    # of those names) is not put on sys.path, and PYTHON* variables are ignored.
    env = {**os.environ, "DO_NOT_TRACK": "1"}
    done = subprocess.run(
        [str(python), "-I", str(Path(__file__).resolve()), "--jobs", str(jobs_dir), *(["--widgets"] if widgets else [])],
        capture_output=True, text=True, timeout=timeout_s, env=env, check=False,
    )
    if done.returncode != 0 or not results_path.is_file():
        tail = " | ".join(done.stderr.strip().splitlines()[-3:]) or "no output"
        raise RuntimeError(f"the reference drift run on {jobs_dir} exited {done.returncode}: {tail}")
    return json.loads(results_path.read_text())


# --- the script (reference side: runs in the reference venv) -------------------------------


def _read_frame(path: Path, columns: Mapping[str, str]) -> Any:
    import pandas as pd

    frame = pd.read_parquet(path, columns=list(columns))
    out = pd.DataFrame(index=frame.index)
    for name, kind in columns.items():
        if kind == NUMERIC:
            # Nullable Int64 and the like become float64 with NaN: Evidently's histograms
            # use np.isfinite, which refuses pandas' NA.
            out[name] = pd.to_numeric(frame[name]).astype("float64")
        else:
            values = frame[name].astype("object")
            out[name] = values.where(values.notna(), None)
    return out


def _summarise(snapshot: Any, columns: Sequence[str]) -> dict[str, Any]:
    """Dataset drift, drifted columns and their share from a DataDriftPreset snapshot.

    The per-column verdicts are the ``ValueDrift`` tests (FAIL = drift detected); the share
    and the dataset verdict are ``DriftedColumnsCount`` and its default test
    (``share < drift_share``); the two are computed separately by Evidently and must agree.
    """
    result = snapshot.dict()
    share = count = None
    for metric in result["metrics"]:
        if metric["config"]["type"].endswith(":DriftedColumnsCount"):
            count, share = metric["value"]["count"], float(metric["value"]["share"])
    drifted, dataset_drift = [], None
    for test in result["tests"]:
        params = test["metric_config"]["params"]
        if test["status"] not in ("SUCCESS", "FAIL"):
            raise RuntimeError(f"test '{test['name']}' ended {test['status']}: {test['description']}")
        if params["type"].endswith(":ValueDrift") and test["status"] == "FAIL":
            drifted.append(params["column"])
        elif params["type"].endswith(":DriftedColumnsCount"):
            dataset_drift = test["status"] == "FAIL"
    if share is None or dataset_drift is None or int(count) != len(drifted):
        raise RuntimeError(f"unexpected DataDriftPreset result: count {count}, share {share}, drifted {drifted}")
    return {
        "dataset_drift": dataset_drift,
        "drifted_features": [c for c in columns if c in drifted],
        "share": share,
    }


def _skip_widgets() -> None:
    """Stop Evidently drawing the report's plotly widgets; its verdicts do not change.

    Profiled on 26 windows of 9 columns: ~80 % of a window's time was plotly figures (the
    preset's ``render``, which also recomputes every column for its ``DataDriftTable``, and
    each ``ValueDrift``'s ``_render``). Neither feeds a result: ``ValueDrift``'s score and
    test and ``DriftedColumnsCount`` (from the legacy ``DatasetDriftMetric``) are computed
    before and apart from them. Checked: identical results.json with and without
    (``--widgets``) on those windows. Written against evidently 0.7.23 (pinned).
    """
    from evidently.metrics.column_statistics import ValueDriftCalculation
    from evidently.presets import DataDriftPreset

    DataDriftPreset.render = lambda self, context, child_widgets=None: []
    ValueDriftCalculation._render = lambda self, result, options, color_options: []


def run_jobs(jobs_dir: Path, widgets: bool = False) -> dict[str, dict[str, Any]]:
    """Compare every window of ``jobs_dir`` with Evidently; write and return the results."""
    started = time.perf_counter()
    import evidently
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    if not widgets:
        _skip_widgets()
    startup_s = time.perf_counter() - started
    jobs = read_jobs(jobs_dir)
    references: dict[tuple[Path, tuple[tuple[str, str], ...]], Any] = {}
    results: dict[str, dict[str, Any]] = {}
    for job in jobs:
        t0 = time.perf_counter()
        try:
            key = ((jobs_dir / job.reference).resolve(), tuple(job.columns.items()))
            if key not in references:
                references[key] = _read_frame(key[0], job.columns)
            current = _read_frame(jobs_dir / job.current, job.columns)
            definition = DataDefinition(
                numerical_columns=[c for c, kind in job.columns.items() if kind == NUMERIC],
                categorical_columns=[c for c, kind in job.columns.items() if kind == CATEGORICAL],
                text_columns=[], datetime_columns=[], unknown_columns=[], list_columns=[],
            )
            # include_tests: the per-column verdicts are read from the preset's own tests.
            snapshot = Report([DataDriftPreset()], include_tests=True).run(
                Dataset.from_pandas(current, data_definition=definition),
                Dataset.from_pandas(references[key], data_definition=definition),
            )
            results[job.id] = {**_summarise(snapshot, list(job.columns)), "seconds": round(time.perf_counter() - t0, 4)}
        except Exception as exc:  # noqa: BLE001 (one refused window must not lose the others)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            results[job.id] = {"error": f"{type(exc).__name__}: {first}"}
            print(f"reference drift: window '{job.id}': {results[job.id]['error']}", file=sys.stderr)
    total_s = time.perf_counter() - started
    timed = sorted(r["seconds"] for r in results.values() if "seconds" in r)
    run = {
        "evidently_version": evidently.__version__,
        "widgets": widgets,
        "windows": len(jobs),
        "errors": len(jobs) - len(timed),
        "startup_s": round(startup_s, 3),
        "total_s": round(total_s, 3),
        "median_window_s": timed[len(timed) // 2] if timed else None,
    }
    tmp = jobs_dir / (RESULTS_FILE + ".part")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    (jobs_dir / RUN_FILE).write_text(json.dumps(run, indent=1) + "\n")
    os.replace(tmp, jobs_dir / RESULTS_FILE)
    print(
        f"reference drift: evidently {run['evidently_version']}, {run['windows']} windows in {total_s:.1f} s "
        f"(start-up {startup_s:.1f} s, median {run['median_window_s']} s per window, {run['errors']} refused)"
    )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run Evidently's DataDriftPreset() on the windows of a jobs folder.")
    parser.add_argument("--jobs", type=Path, required=True, help=f"folder with {JOBS_FILE} and its parquet files")
    parser.add_argument("--widgets", action="store_true", help="let Evidently draw its report widgets (slower)")
    args = parser.parse_args(argv)
    run_jobs(args.jobs.resolve(), widgets=args.widgets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
