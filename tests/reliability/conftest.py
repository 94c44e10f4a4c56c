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
table).
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
REPORT_PATH = REPO_ROOT / "test-output" / "reliability.json"

# Module name -> section of the table in docs/reliability.md.
SECTIONS = {
    "test_bad_input_catalogue": "bad input",
    "test_crash_consistency": "crash consistency",
    "test_concurrency": "concurrency",
    "test_idempotency": "idempotency",
    "test_secrets": "secrets",
    "test_site_hardening": "site hardening",
    "test_environment_faults": "environment faults",
}

SOAK = os.environ.get("SML_SOAK", "") == "1"


class ReliabilityRecord:
    """Figures per section (cases, kill points, rounds, ...) and test outcomes."""

    def __init__(self) -> None:
        self.figures: dict[str, Counter[str]] = defaultdict(Counter)
        self.outcomes: dict[str, Counter[str]] = defaultdict(Counter)

    def add(self, section: str, **figures: int) -> None:
        """Add to a section's figures, e.g. ``add("crash consistency", kill_points=3)``."""
        if section not in SECTIONS.values():
            raise ValueError(f"unknown section {section!r}; expected one of {sorted(SECTIONS.values())}")
        self.figures[section].update(figures)

    def to_json(self) -> dict[str, object]:
        return {
            "soak": SOAK,
            "sections": {
                section: {"figures": dict(self.figures[section]), "tests": dict(self.outcomes[section])}
                for section in SECTIONS.values()
                if self.figures[section] or self.outcomes[section]
            },
        }


_RECORD = ReliabilityRecord()


@pytest.fixture(scope="session")
def soak() -> bool:
    """True under ``make soak`` (``SML_SOAK=1``): run the long variants."""
    return SOAK


@pytest.fixture(scope="session")
def reliability() -> ReliabilityRecord:
    """Where tests record their figures for docs/reliability.md."""
    return _RECORD


def _section_of(nodeid: str) -> str | None:
    module = Path(nodeid.split("::", 1)[0]).stem
    return SECTIONS.get(module)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    section = _section_of(report.nodeid)
    if section is None:
        return
    if report.when == "call" or (report.when == "setup" and not report.passed):
        outcome = "xfailed" if hasattr(report, "wasxfail") else report.outcome
        _RECORD.outcomes[section][outcome] += 1


def pytest_sessionfinish(session: pytest.Session) -> None:
    data = _RECORD.to_json()
    if not data["sections"]:
        return
    REPORT_PATH.parent.mkdir(parents=True, exist_ok=True)
    REPORT_PATH.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
