"""The reliability suite's record (``test-output/reliability.json``), as a pytest plugin
that ``tests/conftest.py`` loads, so that it runs in every pytest process: alone, in each
pytest-xdist worker and in the xdist controller (which loads only the top conftest).

Tests add figures through the ``reliability`` fixture (tests/reliability/conftest.py);
each section's passed/failed counts come from the test reports. Under xdist the workers
send their figures to the controller when they finish (``workeroutput``), the controller
receives every test's report, and only the controller writes the file.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
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
    "test_serve_faults": "serve faults",
}

SOAK = os.environ.get("SML_SOAK", "") == "1"
_WORKER_OUTPUT_KEY = "reliability_figures"


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


RECORD = ReliabilityRecord()


def _section_of(nodeid: str) -> str | None:
    module = Path(nodeid.split("::", 1)[0]).stem
    return SECTIONS.get(module)


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    section = _section_of(report.nodeid)
    if section is None:
        return
    if report.when == "call" or (report.when == "setup" and not report.passed):
        outcome = "xfailed" if hasattr(report, "wasxfail") else report.outcome
        RECORD.outcomes[section][outcome] += 1


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: object, error: object) -> None:
    """(xdist controller) A worker finished: add the figures its tests recorded."""
    figures = getattr(node, "workeroutput", {}).get(_WORKER_OUTPUT_KEY, {})
    for section, counts in figures.items():
        RECORD.figures[section].update(counts)


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _is_xdist_worker(session.config):
        session.config.workeroutput[_WORKER_OUTPUT_KEY] = {  # type: ignore[attr-defined]
            section: dict(counts) for section, counts in RECORD.figures.items() if counts
        }
        return
    data = RECORD.to_json()
    if not data["sections"]:
        return
    REPORT_PATH.parent.mkdir(parents=True, exist_ok=True)
    REPORT_PATH.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
