"""Write docs/reliability.md from test-output/reliability.json (``make soak`` runs it).

Usage: python scripts/reliability_table.py [REPORT_JSON ...] [OUTPUT_MD]

Several reports merge section by section, a later one replacing an earlier one's
sections (a section re-run on its own after a fix); the table says which runs it shows.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["bad input", "environment faults", "crash consistency", "concurrency", "idempotency", "secrets", "site hardening"]


def render(data: dict, when: str) -> str:
    lines = [
        "# Reliability",
        "",
        "The standing fault, concurrency, bad-input and secret suite (`tests/reliability/`).",
        "`make test` runs its short variants; `make soak` runs the long ones and rewrites this",
        "table from what the tests recorded (`test-output/reliability.json`). Do not edit by hand.",
        "",
        f"Last run: {when}, {'soak' if data.get('soak') else 'short'} variant.",
        "",
        "| Section | Measured | Tests passed | Tests failed | Result |",
        "|---|---|---:|---:|---|",
    ]
    sections = data.get("sections", {})
    for name in ORDER + sorted(set(sections) - set(ORDER)):
        entry = sections.get(name)
        if entry is None:
            lines.append(f"| {name} | not run | 0 | 0 | NOT RUN |")
            continue
        figures = ", ".join(f"{key.replace('_', ' ')}: {value}" for key, value in sorted(entry["figures"].items())) or "-"
        tests = entry["tests"]
        passed = tests.get("passed", 0)
        failed = tests.get("failed", 0) + tests.get("error", 0)
        known = tests.get("xfailed", 0)
        result = "PASS" if failed == 0 and passed > 0 else ("FAIL" if failed else "NOT RUN")
        if known:
            result += f" ({known} known failure{'s' if known != 1 else ''}, see the closing notes)"
        lines.append(f"| {name} | {figures} | {passed} | {failed} | {result} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    reports = [Path(a) for a in argv if a.endswith(".json")] or [ROOT / "test-output" / "reliability.json"]
    outputs = [Path(a) for a in argv if a.endswith(".md")]
    output = outputs[0] if outputs else ROOT / "docs" / "reliability.md"
    data: dict = {"soak": True, "sections": {}}
    for report in reports:
        if not report.is_file():
            print(f"error: {report} does not exist; run the reliability tests first", file=sys.stderr)
            return 2
        part = json.loads(report.read_text(encoding="utf-8"))
        data["soak"] = data["soak"] and bool(part.get("soak"))
        data["sections"].update(part.get("sections", {}))
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    if len(reports) > 1:
        when += f", merged from {len(reports)} runs (later runs replace the sections they ran)"
    output.write_text(render(data, when), encoding="utf-8")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
