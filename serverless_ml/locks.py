"""Process locks for jobs: one instance of a job per state directory (``Settings.state_dir``,
by default the feature store's folder) at a time.

``flock`` locks are released by the kernel when their holder dies, so a crashed job never
leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

from serverless_ml.errors import SmlError

LOCKS_DIRNAME = "_locks"


class LockBusy(SmlError):
    """The job is already running elsewhere."""


@contextlib.contextmanager
def job_lock(state_dir: Path, name: str, wait: bool = True) -> Iterator[None]:
    """Hold the lock ``name`` in ``state_dir``'s :data:`LOCKS_DIRNAME` folder; with
    ``wait=False`` raise :class:`LockBusy` at once when another process holds it."""
    folder = state_dir / LOCKS_DIRNAME
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{name}.lock", "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise LockBusy(f"job '{name}' is already running (lock {folder / name}.lock)") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
