"""SQLite databases left whole in their one file when a process stops.

The commands open SQLite databases (the tracking database, an Optuna study) in
write-ahead-log mode (``tracking.use_sqlite_wal``): the last commits live in
``<db>-wal`` until a checkpoint copies them into the database file. SQLite checkpoints
when the last connection closes, but a process that stops on Ctrl-C or SIGTERM (the
site, above all, which holds its connections while it serves) closes none: the
``-wal``/``-shm`` files stay, and a plain copy of ``mlflow.db`` alone held none of the
recent runs. Every process that opens one of these databases checkpoints it
(``PRAGMA wal_checkpoint(TRUNCATE)``) when it exits, normally or on SIGINT/SIGTERM
(:func:`exit_on_sigterm` turns SIGTERM into a normal exit for long-running commands).
A process killed with SIGKILL runs nothing; its commits are safe in the ``-wal`` file
and the next process to open the database takes them up.
"""

from __future__ import annotations

import atexit
import signal
import sqlite3
import sys
import threading
from pathlib import Path
from typing import Any

CHECKPOINT_TIMEOUT_S = 1.0
"""How long an exiting process waits for another process's reader before it gives up the
checkpoint (nothing is lost then: the commits stay in the ``-wal`` file)."""

_paths: set[Path] = set()
_lock = threading.Lock()
_registered = False


def checkpoint_at_exit(path: str | Path) -> None:
    """Checkpoint the SQLite database ``path`` when this process exits."""
    global _registered
    with _lock:
        _paths.add(Path(path).resolve())
        if not _registered:
            atexit.register(checkpoint_all)
            _registered = True


def checkpoint_all() -> None:
    """Checkpoint every database :func:`checkpoint_at_exit` was given (at exit)."""
    with _lock:
        paths = sorted(_paths)
    for path in paths:
        checkpoint(path)


def checkpoint(path: Path) -> bool:
    """Copy the commits of ``path``'s write-ahead log into the database file and empty the
    log; ``True`` when done (or when there was no log). Never raises: a database that is
    busy, read-only or gone keeps its log, which loses nothing."""
    if not Path(f"{path}-wal").exists():
        return True
    try:
        db = sqlite3.connect(path, timeout=CHECKPOINT_TIMEOUT_S)
        try:
            busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            return busy == 0
        finally:
            db.close()
    except sqlite3.Error:
        return False


def exit_on_sigterm() -> None:
    """Make SIGTERM end this process as Ctrl-C does (exit handlers run), unless something
    else already handles it. For the long-running commands (the site)."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _exit_on_signal)


def _exit_on_signal(signum: int, _frame: Any) -> None:
    sys.exit(128 + signum)
