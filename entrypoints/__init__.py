"""Thin scripts behind the MLproject entry points: each hands its arguments to ``sml``.

They run as ``python -m entrypoints.<name>`` from the project directory, so the
``serverless_ml`` package is importable without installing it (as in an environment that
``mlflow run`` builds from conda.yaml).

``python`` is whatever the run's environment puts first on ``PATH``: with
``--env-manager local`` that is the caller's own (so mlflow must run from the project's
activated virtualenv), with ``--env-manager uv`` the environment MLflow built. When that
Python lacks a dependency, :func:`run` says so in one ``error:`` line instead of a
traceback, with what to do about it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def _missing_module_hint(module: str) -> str:
    prefix = Path(sys.prefix).resolve()
    env_root = Path(os.environ.get("MLFLOW_ENV_ROOT") or Path.home() / ".mlflow" / "envs").resolve()
    if env_root in prefix.parents:
        # An environment `mlflow run --env-manager uv|virtualenv` built. MLflow reuses an
        # existing environment directory as it is, so one whose build was interrupted
        # (Ctrl-C) stays broken until it is deleted.
        return (
            f"the environment {prefix} that mlflow built lacks the module '{module}' "
            f"(an interrupted build leaves it half-installed): delete {prefix} and run again"
        )
    return (
        f"{sys.executable} lacks the module '{module}': with --env-manager local, run mlflow "
        "from the project's virtualenv (. .venv/bin/activate) or use --env-manager uv"
    )


def run(command: str) -> None:
    """Run ``sml COMMAND ARGS...`` with this process's arguments.

    MLproject parameters stay typed values (``replace: {type: string, default: "false"}``,
    passed as ``--replace {replace}``): the on/off switches, flags in ``sml``
    (``--replace``, ``--no-fail-on-alert``), are translated from true/false, and an empty
    value leaves the default.
    """
    args = [command, *sys.argv[1:]]
    try:
        from serverless_ml.cli import main

        main(args, strict_switches=True)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if not missing or missing in {"serverless_ml", "entrypoints"} or "--verbose" in args or "-v" in args:
            raise
        print(f"error: {_missing_module_hint(missing)}", file=sys.stderr)
        sys.exit(1)
