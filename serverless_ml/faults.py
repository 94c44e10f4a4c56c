"""Named crash points for the crash-consistency tests (tests/reliability).

A job calls :func:`crash_point` at the moments where a crash matters (between a write and
the next one). Unless one of two environment variables is set it does nothing:

- ``SML_CRASH_AT=<name>``: the process kills itself with SIGKILL at that point (no
  ``finally``, no ``atexit``: as a power cut or the OOM killer would stop it);
- ``SML_CRASH_TRACE=<file>``: each point passed is appended to the file as
  ``<monotonic seconds> <name>``, so a test can see where a job is and time a kill.
"""

from __future__ import annotations

import os
import signal
import time

CRASH_AT_ENV = "SML_CRASH_AT"
CRASH_TRACE_ENV = "SML_CRASH_TRACE"


def crash_point(name: str) -> None:
    """Record passing ``name`` (``SML_CRASH_TRACE``); die here if ``SML_CRASH_AT`` names it."""
    trace = os.environ.get(CRASH_TRACE_ENV)
    if trace:
        with open(trace, "a", encoding="utf-8") as fh:
            fh.write(f"{time.monotonic():.6f} {name}\n")
    if os.environ.get(CRASH_AT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
