"""The reliability suite: bad input, crash consistency, concurrency, idempotency, secrets
and site hardening (issue 8).

``make test`` runs the short variants; ``make soak`` sets ``SML_SOAK=1`` for the long
ones (more kill points, more concurrency rounds) and writes ``docs/reliability.md`` from
what the tests recorded.

Tests record their figures through the ``reliability`` fixture::

    def test_kill_backfill(reliability, ...):
        ...
        reliability.add("crash", kill_points=1)

At the end of the session the figures and each section's passed/failed test counts go
to ``test-output/reliability.json`` (``scripts/reliability_table.py`` turns that into the
table). The record and its hooks are the plugin ``tests/reliability_report.py``, loaded by
``tests/conftest.py`` so that the pytest-xdist controller, which writes the file, has it.
"""

from __future__ import annotations

import pytest

from reliability_report import RECORD, SOAK, ReliabilityRecord


@pytest.fixture(scope="session")
def soak() -> bool:
    """True under ``make soak`` (``SML_SOAK=1``): run the long variants."""
    return SOAK


@pytest.fixture(scope="session")
def reliability() -> ReliabilityRecord:
    """Where tests record their figures for docs/reliability.md."""
    return RECORD
