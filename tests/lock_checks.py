"""A check of the reliability tests: after a holder was killed, its locks are free."""

from __future__ import annotations

import fcntl
from pathlib import Path

import pytest


def assert_locks_free(store: Path) -> None:
    """Every lock file in the store can be taken at once: the kernel released the killed
    holder's flock."""
    for path in sorted(store.glob(".*.lock")) + sorted((store / "_locks").glob("*.lock")):
        with open(path, "a") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pytest.fail(f"lock {path.name} is still held after its holder was killed")
            fcntl.flock(fh, fcntl.LOCK_UN)
