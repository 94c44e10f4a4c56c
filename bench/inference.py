"""Batch inference end to end on ten million new rows, against the bare ``pipeline.predict``.

Set-up (not timed, not in the measured process): Titanic backfilled and a champion trained
(default trials) in temporary folders, then ``--rows`` new Titanic-shaped rows
(``bench.backfill.make_frame`` in chunks of a million, keys moved past the real ones, event
times over 2024) appended to the feature group chunk by chunk, so the set-up never holds
them all.

* ``end_to_end``: ``sml infer --as-of 2024-12-31 --no-figures`` (its entry point,
  ``serverless_ml.cli.main``) in its own process (read, select, predict in chunks, the
  monitoring statistics with drift on the last 30 days, log the run, write the
  predictions), timed from the process's start to its exit (imports, the model's loading
  and the process's end as the ``sml`` command ends it included: ``exit_process``, the
  Python side of an exit then ``os._exit``; the time until the entry point returned is
  printed too); its peak RSS is that process's own (``VmHWM``, see :func:`_infer_process`);
* ``bare_predict``: the reference, the champion pipeline's ``predict`` on the same rows,
  regenerated chunk by chunk in this process and converted to the model's input
  untimed: only the ``predict`` calls (100,000 rows each, the chunk ``sml infer``
  scores) are timed, once before and once after ``sml infer`` (the mean is the reference:
  the machine's load changes in between).

Goal (issue 17): end to end at >= 80 % of bare-predict throughput, and the ``sml infer``
process's peak RSS <= 1 GiB. Prints rows per second for both, the ratio, the peak RSS,
the CPU seconds of both (the job's every thread: on a shared machine the work done, whatever
the waiting) and the load average; writes ``bench/results/inference.json``.

``--history-rows N`` first appends N labelled rows of 2023 and scores them (``sml infer
--as-of 2023-12-31``, untimed): the measured run then reads them as its history and
recalibrates its estimate on the latest 200,000 of them, as a loop with labels coming back
does (the labels are random: only the cost is measured).

    python -m bench inference [--rows 10000000] [--history-rows 0]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import REPO_ROOT, resolve_data_dir, write_results

GOAL_RATIO = 0.8
GOAL_RSS_MIB = 1024
KEY_OFFSET = 10_000_000
SETUP_CHUNK = 1_000_000
AS_OF = "2024-12-31"
HISTORY_AS_OF = "2023-12-31"
HISTORY_KEY_OFFSET = 1_000_000_000
HISTORY_SEED = 1000


def _chunks(rows: int, history: bool = False) -> Iterator[tuple[int, Any]]:
    """The new rows, a million at a time (the same rows on every call); ``history``: the
    rows of the year before (2023, other seeds, keys after the new rows')."""
    import pandas as pd

    from bench.backfill import make_frame
    from serverless_ml.datasets import get_dataset
    from serverless_ml.datasets.spec import EVENT_TIME_COLUMN

    spec = get_dataset("titanic")
    for index, start in enumerate(range(0, rows, SETUP_CHUNK)):
        frame = make_frame(min(SETUP_CHUNK, rows - start), seed=index + (HISTORY_SEED if history else 0))
        frame[spec.primary_key] += (HISTORY_KEY_OFFSET if history else KEY_OFFSET) + start
        if history:
            frame[EVENT_TIME_COLUMN] -= pd.Timedelta(days=365)
        frame["origin"] = "live"
        yield index, frame


def _append_rows(group: Any, rows: int, history: bool = False) -> None:
    """Append the new rows (or the ``history`` rows) in one commit, streamed chunk by chunk."""
    import pyarrow as pa

    from serverless_ml.feature_store.base import arrow_schema, conform

    schema = arrow_schema(group.features)

    def batches() -> Iterator[pa.RecordBatch]:
        for _, frame in _chunks(rows, history):
            yield from conform(frame, group.features, group.primary_key, group.label).to_batches()

    group.append_new(pa.RecordBatchReader.from_batches(schema, batches()))


def _bare_predict(model: Any, rows: int, chunk_rows: int) -> tuple[float, float]:
    """Seconds in ``model.predict`` over the rows, ``chunk_rows`` at a time: wall and CPU."""
    from serverless_ml.datasets import get_dataset
    from serverless_ml.training.model import as_model_input

    spec = get_dataset("titanic")
    spent = cpu = 0.0
    for _, frame in _chunks(rows):
        for start in range(0, len(frame), chunk_rows):
            x = as_model_input(frame.iloc[start : start + chunk_rows], spec)
            started, started_cpu = time.perf_counter(), time.process_time()
            model.predict(x)
            spent += time.perf_counter() - started
            cpu += time.process_time() - started_cpu
    return spent, cpu


JOB_MARK = "bench: sml infer returned after"
# `sml infer`'s own entry point, timed from before its imports until it returns (the
# interpreter's start and its end are in the process's wall time only), then ended as the
# `sml` command ends (``console_main``: ``exit_process``, the Python side of an exit, then
# ``os._exit``; not the interpreter's teardown of every module and object).
CHILD = f"""
import sys, time
started = time.perf_counter()
from serverless_ml.cli import exit_process, main
sys.argv = ["sml", "infer", "--dataset", "titanic", "--as-of", "{AS_OF}", "--no-figures"]
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code
finally:
    seconds = time.perf_counter() - started
    with open("/proc/self/status") as status:
        peak = [line.split()[1] for line in status if line.startswith("VmHWM:")][0]
    print("{JOB_MARK}", seconds, peak, flush=True)
exit_process(code)  # as the `sml` command ends (console_main)
"""


def _infer_process(folder: Path, settings: Any) -> tuple[float, float, float, str, float]:
    """``sml infer`` in a child process: its wall seconds, the seconds until its entry
    point returned, its peak RSS in MiB, its output, its CPU seconds (user and system,
    every thread: on a machine shared with other jobs, the work done whatever the wait).

    The peak is the child's own ``VmHWM`` (``/proc/self/status``, read as its entry point
    returns: the teardown only frees memory). Not ``ru_maxrss``: a child forked from this
    process starts with this process's pages, and Linux keeps that high-water mark
    across ``exec``, so ``wait4`` would report the set-up's memory."""
    env = {**os.environ, "SML_STORE_DIR": str(settings.store_dir), "MLFLOW_TRACKING_URI": settings.tracking_uri,
           "SML_STATE_DIR": str(folder / "state")}
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", CHILD], env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    output = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    marks = [line.split()[-2:] for line in output.splitlines() if line.startswith(JOB_MARK)]
    if code != 0 or not marks:
        raise SystemExit(f"sml infer failed ({code}):\n{output}")
    return wall, float(marks[0][0]), int(marks[0][1]) / 1024, output, usage.ru_utime + usage.ru_stime


def _score_history(store: Any, settings: Any, history_rows: int) -> None:
    """``history_rows`` labelled rows of 2023 appended and scored (``sml infer --as-of
    2023-12-31``, in this process, untimed): the champion's labelled predictions that the
    measured run reads as its history and recalibrates its estimate on."""
    import datetime as dt

    import mlflow

    from serverless_ml.datasets import get_dataset
    from serverless_ml.pipelines.infer import InferOptions, infer

    _append_rows(store.get_feature_group("titanic", 1), history_rows, history=True)
    day = dt.date.fromisoformat(HISTORY_AS_OF)
    report = infer(get_dataset("titanic"), store, settings, InferOptions(as_of=day, figures=False),
                   dt.datetime(2024, 1, 1, 12, tzinfo=dt.timezone.utc))
    mlflow.set_tracking_uri(None)
    if report.rows_scored != history_rows:
        raise SystemExit(f"the history run scored {report.rows_scored} rows, not {history_rows}")


def run(rows: int, data_dir: Path, history_rows: int = 0) -> dict[str, Any]:
    from bench.simulate import _world
    from serverless_ml import defaults
    from serverless_ml.inference.scoring import CHUNK_ROWS
    from serverless_ml.registry import load_version_model

    with tempfile.TemporaryDirectory() as tmp:
        # The champion `sml train` makes by default: its forests set the cost of predict.
        store, settings = _world(Path(tmp), data_dir, trials=defaults.TRAIN_TRIALS)
        _append_rows(store.get_feature_group("titanic", 1), rows)
        if history_rows:
            _score_history(store, settings, history_rows)
        model = load_version_model("titanic", 1, settings.tracking_uri)
        load = os.getloadavg()
        # Bare predict before and after sml infer (the machine's load changes in between):
        # their mean is the reference.
        bare_before, bare_cpu_before = _bare_predict(model, rows, CHUNK_ROWS)
        end_to_end, job, peak_rss, output, end_to_end_cpu = _infer_process(Path(tmp), settings)
        bare_after, bare_cpu_after = _bare_predict(model, rows, CHUNK_ROWS)
        bare = (bare_before + bare_after) / 2
        bare_cpu = (bare_cpu_before + bare_cpu_after) / 2
        scored = f"scored {rows} rows"
        if scored not in str(output):
            raise SystemExit(f"sml infer did not score {rows} rows:\n{output}")
        recalibrated = re.search(r"recalibrated on ([\d,]+) labels", str(output))
        if history_rows and recalibrated is None:
            raise SystemExit(f"sml infer's estimate was not recalibrated on the history:\n{output}")
    return {
        "rows": rows,
        "history_rows": history_rows,
        "recalibration_rows": int(recalibrated.group(1).replace(",", "")) if recalibrated else 0,
        "bare_predict_s": bare,
        "bare_predict_before_after_s": [bare_before, bare_after],
        "end_to_end_s": end_to_end,
        "job_s": job,
        "bare_rows_per_s": rows / bare,
        "end_to_end_rows_per_s": rows / end_to_end,
        "ratio": bare / end_to_end,
        "job_ratio": bare / job,
        "bare_predict_cpu_s": bare_cpu,
        "end_to_end_cpu_s": end_to_end_cpu,
        "cpu_ratio": bare_cpu / end_to_end_cpu,
        "goal_ratio": GOAL_RATIO,
        "peak_rss_mib": peak_rss,
        "goal_rss_mib": GOAL_RSS_MIB,
        "pass": bare / end_to_end >= GOAL_RATIO and peak_rss <= GOAL_RSS_MIB,
        "load_average_1min": load[0],
        "cpus": os.cpu_count(),
        "infer_output": str(output)[-2000:],
    }


def report(results: dict[str, Any]) -> str:
    history = (f" after {results['history_rows']:,} labelled rows of history (estimate recalibrated on "
               f"{results['recalibration_rows']:,})" if results.get("history_rows") else "")
    return "\n".join([
        f"{results['rows']:,} rows{history}: bare predict {results['bare_rows_per_s']:,.0f} rows/s ({results['bare_predict_s']:.1f} s, "
        f"the mean of {' and '.join(f'{s:.1f}' for s in results['bare_predict_before_after_s'])} s before and after), "
        f"end to end {results['end_to_end_rows_per_s']:,.0f} rows/s ({results['end_to_end_s']:.1f} s)",
        f"  (the process's wall time; until sml infer's entry point returned: {results['job_s']:.1f} s, "
        f"{results['job_ratio']:.0%} of bare predict; the rest is the interpreter's start and the process's end)",
        f"  CPU seconds (user and system, every thread): bare predict {results['bare_predict_cpu_s']:.1f} s, "
        f"sml infer {results['end_to_end_cpu_s']:.1f} s ({results['cpu_ratio']:.0%}: the share of the job's work that is "
        f"predict; the wall-time ratio can exceed it only by running the rest beside predict on a free core)",
        f"end-to-end throughput = {results['ratio']:.0%} of bare predict (goal >= {results['goal_ratio']:.0%}); "
        f"sml infer's peak RSS {results['peak_rss_mib']:.0f} MiB (goal <= {results['goal_rss_mib']} MiB): "
        f"{'PASS' if results['pass'] else 'MISS'}; load average {results['load_average_1min']:.1f} on {results['cpus']} CPUs",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench inference", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--history-rows", type=int, default=0,
                        help="labelled rows scored the year before (the run's history: its estimate is recalibrated on them)")
    args = parser.parse_args(argv)
    if args.rows < 1 or args.history_rows < 0:
        print("error: --rows must be at least 1 and --history-rows at least 0", file=sys.stderr)
        return 2
    results = run(args.rows, resolve_data_dir(), args.history_rows)
    print(report(results))
    write_results("inference", results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
