"""The README's runnable blocks, for tests that run what the README says."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def gunicorn_block(marker: str) -> tuple[dict[str, str], list[str]]:
    """The ```sh block after ``marker`` in the README: the variables it exports and its
    gunicorn command."""
    text = README.read_text(encoding="utf-8")
    assert marker in text, f"README.md lost the marker {marker!r}"
    block = re.search(r"```sh\n(.*?)```", text[text.index(marker):], re.S)
    assert block is not None, f"no ```sh block after {marker!r}"
    exported: dict[str, str] = {}
    command: list[str] = []
    for line in block.group(1).splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] == ["export"]:
            exported.update(word.split("=", 1) for word in words[1:])
        elif words[:1] == ["gunicorn"]:
            command = words
    assert command, f"the README block after {marker!r} has no gunicorn command"
    return exported, command
