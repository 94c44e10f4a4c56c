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


PATH_OPTIONS = ("--dataset", "--source")
"""Options whose value may be a file path the user typed relative to where they ran
``mlflow run`` (a spec file, a source CSV)."""


def caller_dir() -> Path | None:
    """The working directory of the process that started this entry point's MLflow run
    (``mlflow run``, or ``sml main``): MLflow runs the command through ``bash -c`` in the
    project directory, and bash resets ``PWD`` to it, so only that process knows where the
    user was. It is the nearest ancestor whose environment (as it started) lacks this
    run's ``MLFLOW_RUN_ID``, which MLflow sets for the command only. ``None`` outside an
    MLflow run or where ``/proc`` does not show it (then paths stay relative to the
    project directory)."""
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id:
        return None
    marker = f"MLFLOW_RUN_ID={run_id}".encode()
    pid = os.getppid()
    for _ in range(6):  # python <- bash (<- an activation shell) <- mlflow
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
            with open(f"/proc/{pid}/stat", encoding="utf-8") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return None
        if marker not in environ:
            return cwd
        if parent <= 1:
            return None
        pid = parent
    return None


def resolve_typed_paths(args: list[str], caller: Path | None) -> list[str]:
    """``args`` with each relative path value of :data:`PATH_OPTIONS` that names a file in
    ``caller`` (the directory ``mlflow run`` ran from) made absolute; other values (a
    built-in dataset's name, a path found only in the project directory) unchanged."""
    if caller is None:
        return args
    out = list(args)
    for index, arg in enumerate(out[:-1]):
        value = out[index + 1]
        if arg in PATH_OPTIONS and value and not Path(value).is_absolute() and (caller / value).is_file():
            out[index + 1] = str(caller / value)
    return out


def run(command: str) -> None:
    """Run ``sml COMMAND ARGS...`` with this process's arguments.

    MLproject parameters stay typed values (``replace: {type: string, default: "false"}``,
    passed as ``--replace {replace}``): the on/off switches, flags in ``sml``
    (``--replace``, ``--no-fail-on-alert``), are translated from true/false, and an empty
    value leaves the default. A relative spec or source path is read from the directory
    ``mlflow run`` was started in when the file is there (:func:`resolve_typed_paths`),
    else from the project directory.
    """
    caller = caller_dir()
    args = [command, *resolve_typed_paths(sys.argv[1:], caller)]
    if caller is not None and not os.environ.get("SML_CALLER_DIR"):
        # Where a database tracking URI's artifacts go (serverless_ml.tracking.artifact_root):
        # the folder the user ran from, not the project's folder this process runs in. Set
        # once: the steps of `mlflow run -e main` inherit the user's folder from main's.
        os.environ["SML_CALLER_DIR"] = str(caller)
    try:
        from serverless_ml.cli import console_main

        console_main(args, strict_switches=True)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if not missing or missing in {"serverless_ml", "entrypoints"} or "--verbose" in args or "-v" in args:
            raise
        print(f"error: {_missing_module_hint(missing)}", file=sys.stderr)
        sys.exit(1)
