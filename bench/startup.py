"""Start-up: how long ``sml`` takes before it does any work, against Python's own start-up.

Set-up (not timed): Titanic backfilled into a temporary store, a champion trained (3
trials) in a temporary tracking database, one day of rows added and scored, so that a
further ``sml infer`` for that day has nothing new to score.

Timed, each a fresh process, ``--repeat`` times in rotating order (median wall-clock and
CPU time of the child, user + system):

* ``python -c pass``: the interpreter alone;
* ``python -c "import mlflow, pandas"``: the reference, the imports no MLflow command of
  this project can avoid;
* ``sml --help`` and ``sml --version``: the CLI alone (no command's imports);
* ``sml infer`` with nothing new to score: reads the registry's champion, the feature
  group and the predictions, finds nothing to do and says so.

Goal (from the issue): the no-op ``sml infer`` in <= 3 s. Prints each command's medians,
the ratio of the no-op infer to the reference, and writes ``bench/results/startup.json``.
``--code DIR`` times the ``serverless_ml`` package of another checkout (for instance
``git archive HEAD | tar -x -C DIR``: the code before a change) with the same virtualenv.

    python -m bench startup [--repeat 7] [--code DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import REPO_ROOT, resolve_data_dir, timed_run, write_results

GOAL_S = 3.0
DAY = dt.date(2024, 2, 1)
REFERENCE = "import mlflow, pandas"


def _world(folder: Path, data_dir: Path) -> dict[str, str]:
    """A trained Titanic world whose rows up to :data:`DAY` are all scored; the
    environment that points ``sml`` at it."""
    from bench.simulate import _world as trained_world
    from serverless_ml.datasets import get_dataset
    from serverless_ml.pipelines.features import add_daily_rows
    from serverless_ml.pipelines.infer import InferOptions, infer

    spec = get_dataset("titanic")
    store, settings = trained_world(folder, data_dir)
    add_daily_rows(spec, store, DAY, 10, 0)
    report = infer(spec, store, settings, InferOptions(as_of=DAY, figures=False),
                   dt.datetime.combine(DAY + dt.timedelta(days=1), dt.time(0, 15), tzinfo=dt.timezone.utc))
    assert report.rows_scored == 10, report
    return {"SML_STORE_DIR": str(store.root), "MLFLOW_TRACKING_URI": settings.tracking_uri}


def _commands(code: Path | None) -> dict[str, list[str]]:
    python = sys.executable
    # The console script when the virtualenv has one (what a user runs), else the module.
    script = Path(python).parent / "sml"
    sml = [str(script)] if script.exists() else [python, "-m", "serverless_ml.cli"]
    if code is not None:  # another checkout: its package first on the path
        sml = [python, "-c", "import sys; from serverless_ml.cli import main; sys.argv[0] = 'sml'; main()"]
    return {
        "python -c pass": [python, "-c", "pass"],
        f'python -c "{REFERENCE}"': [python, "-c", REFERENCE],
        "sml --help": [*sml, "--help"],
        "sml --version": [*sml, "--version"],
        "sml infer (nothing new to score)": [*sml, "infer", "--dataset", "titanic", "--as-of", DAY.isoformat()],
    }


def _time(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, str, int]:
    """Wall-clock and CPU seconds of one run of ``command``, its output and its exit code."""
    wall, cpu, proc = timed_run(command, env, cwd)
    return wall, cpu, proc.stdout + proc.stderr, proc.returncode


def run(repeat: int, data_dir: Path, code: Path | None) -> dict[str, Any]:
    commands = _commands(code)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        env = {**os.environ, **_world(folder, data_dir), "PYTHONWARNINGS": "ignore"}
        env.pop("MLFLOW_RUN_ID", None)
        if code is not None:
            env["PYTHONPATH"] = os.pathsep.join([str(code), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        outputs: dict[str, str] = {}
        failed: dict[str, int] = {}
        names = list(commands)
        for round_ in range(repeat):
            # Rotate the order, so that no command always runs right after another.
            for name in names[round_ % len(names):] + names[:round_ % len(names)]:
                wall, cpu, out, exit_code = _time(commands[name], env, folder)
                samples[name].append((wall, cpu))
                outputs[name] = out
                if exit_code != 0:  # `sml --version` of a checkout that had none
                    failed[name] = exit_code
    noop = outputs["sml infer (nothing new to score)"]
    if "nothing new to score" not in noop:
        raise SystemExit(f"error: the no-op sml infer scored rows or failed: {noop.strip()[-500:]}")
    medians = {
        name: {"wall_s": statistics.median(w for w, _ in runs), "cpu_s": statistics.median(c for _, c in runs),
               "wall_samples_s": [round(w, 3) for w, _ in runs], "exit_code": failed.get(name, 0)}
        for name, runs in samples.items()
    }
    reference = medians[f'python -c "{REFERENCE}"']
    infer_noop = medians["sml infer (nothing new to score)"]
    return {
        "repeat": repeat,
        "code": str(code or REPO_ROOT),
        "commands": medians,
        "ratio_noop_infer_to_reference_wall": infer_noop["wall_s"] / reference["wall_s"],
        "ratio_noop_infer_to_reference_cpu": infer_noop["cpu_s"] / reference["cpu_s"],
        "goal_s": GOAL_S,
        "pass": infer_noop["wall_s"] <= GOAL_S,
        "load_average": os.getloadavg(),
        "cpus": os.cpu_count(),
    }


def report(results: dict[str, Any]) -> str:
    width = max(map(len, results["commands"]))
    lines = [f"start-up, median of {results['repeat']} runs ({results['code']}; load average "
             f"{results['load_average'][0]:.1f} on {results['cpus']} CPUs):",
             f"  {'command'.ljust(width)}  {'wall':>7}  {'CPU':>7}"]
    for name, figures in results["commands"].items():
        failed = f"  (failed: exit {figures['exit_code']})" if figures["exit_code"] else ""
        lines.append(f"  {name.ljust(width)}  {figures['wall_s']:6.2f}s  {figures['cpu_s']:6.2f}s{failed}")
    noop = results["commands"]["sml infer (nothing new to score)"]["wall_s"]
    lines.append(
        f"no-op sml infer / python -c \"{REFERENCE}\": x{results['ratio_noop_infer_to_reference_wall']:.2f} wall, "
        f"x{results['ratio_noop_infer_to_reference_cpu']:.2f} CPU; goal <= {results['goal_s']:.0f} s: "
        f"{'PASS' if results['pass'] else 'MISS'} ({noop:.2f} s)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench startup", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7, help="Runs of each command (median).")
    parser.add_argument("--code", type=Path, default=None,
                        help="Time the serverless_ml package of this checkout instead (same virtualenv).")
    args = parser.parse_args(argv)
    if args.code is not None and not (args.code / "serverless_ml" / "cli.py").is_file():
        print(f"error: --code {args.code} holds no serverless_ml/cli.py", file=sys.stderr)
        return 2
    results = run(args.repeat, resolve_data_dir(), args.code.resolve() if args.code else None)
    print(report(results))
    write_results("startup", results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
