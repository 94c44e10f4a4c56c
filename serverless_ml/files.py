"""Replacing a small file whole: a reader, or a process killed at any point, sees the old
content or the new one, never a part."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from serverless_ml.faults import crash_point


def atomic_write_text(path: Path, text: str, before_replace: str | None = None) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder (written,
    flushed, fsynced), renamed over ``path``, then the folder fsynced so the rename
    survives a power cut. The folder is created if needed; a failure removes the
    temporary file. ``before_replace``: the :func:`crash_point` passed just before the rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        if before_replace is not None:
            crash_point(before_replace)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
