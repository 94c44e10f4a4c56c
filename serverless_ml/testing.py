"""Helpers for the tests and the benchmarks (``tests/``, ``bench/``), which both need them
and cannot import each other: creating and copying a tracking database and stopping a
server's process group. Nothing in the product calls them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
from pathlib import Path
from typing import Any


def create_tracking_database(path: Path) -> Path:
    """Create an MLflow SQLite tracking database at ``path`` with its schema migrated (the
    first client on a new database spends seconds migrating: do it once, copy the file).

    The default experiment records an artifact root relative to the working directory, so
    it is created from ``path``'s folder; the engine's file handles are released after.
    """
    import mlflow

    with contextlib.chdir(path.parent):
        client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{path.resolve()}")
        client.search_experiments()
    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    engine = getattr(store, "engine", None)
    if engine is not None:
        engine.dispose()
    return path


def copy_database(source: Path, target: Path) -> None:
    """Copy an SQLite database (a tracking database) through SQLite's backup API.

    The commands open SQLite databases in write-ahead-log mode (``tracking.use_sqlite_wal``);
    while a connection is open, the last commits may live only in ``<db>-wal``, which a
    plain file copy would miss.
    """
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


def stop_process_group(process: subprocess.Popen[Any], timeout_s: float = 30, kill_timeout_s: float = 10) -> None:
    """Stop ``process``, started with ``start_new_session=True``, and the rest of its process
    group (a server and its workers): SIGTERM, and SIGKILL if it has not exited within
    ``timeout_s``; then wait up to ``kill_timeout_s`` more.

    Does nothing when the process has already exited.
    """
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=kill_timeout_s)
