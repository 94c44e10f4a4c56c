"""``atomic_write_text``: the one way the project replaces a small file whole (the local
store's JSON, the scheduler's state, ``sml serve``'s key reservations)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from serverless_ml.files import atomic_write_text

pytestmark = pytest.mark.unit


def test_a_file_is_created_with_its_folder_and_replaced_whole(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "state.json"
    atomic_write_text(path, "first")
    assert path.read_text(encoding="utf-8") == "first"
    atomic_write_text(path, "second, longer than the first")
    assert path.read_text(encoding="utf-8") == "second, longer than the first"
    assert sorted(p.name for p in path.parent.iterdir()) == ["state.json"]


def test_a_failed_replace_keeps_the_old_content_and_leaves_no_temporary_file(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "state.json"
    atomic_write_text(path, "old")

    def refuse(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_text(path, "new")
    assert path.read_text(encoding="utf-8") == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_a_process_killed_before_the_rename_leaves_the_old_content(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "state.json"
    atomic_write_text(path, "old")
    code = ("from pathlib import Path; from serverless_ml.files import atomic_write_text; "
            f"atomic_write_text(Path({str(path)!r}), 'new', before_replace='files.test')")
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, "SML_CRASH_AT": "files.test"}, check=False)
    assert done.returncode == -9
    assert path.read_text(encoding="utf-8") == "old"
