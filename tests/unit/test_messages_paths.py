"""Hints name the spec path the user typed; schema-change errors name the columns that
differ; the MLproject entry points read relative paths from the caller's directory
(issue 19, item 5)."""

from __future__ import annotations

from pathlib import Path

import pytest

from entrypoints import resolve_typed_paths
from serverless_ml.datasets import get_dataset
from serverless_ml.feature_store.base import schema_differences

pytestmark = pytest.mark.unit

SPEC = "name: tiny\nsource: {path: tiny.csv}\nlabel: kind\nclasses: [a, b]\nfeatures:\n  x: {type: double}\n"


def test_a_spec_file_remembers_the_path_as_typed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my specs").mkdir()
    (tmp_path / "my specs" / "tiny.yaml").write_text(SPEC)
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "tiny.yaml").write_text(SPEC)
    monkeypatch.chdir(tmp_path)
    spec = get_dataset("./specs/tiny.yaml")
    assert spec.typed_path == "./specs/tiny.yaml" and spec.dataset_arg == "./specs/tiny.yaml"
    assert spec.spec_path == tmp_path / "specs" / "tiny.yaml"
    assert get_dataset("my specs/tiny.yaml").dataset_arg == "'my specs/tiny.yaml'"  # pasted into a shell
    assert get_dataset("titanic").dataset_arg == "titanic" and get_dataset("titanic").typed_path is None


def test_schema_differences_name_the_columns_and_how_they_changed() -> None:
    stored = [("id", "bigint"), ("x", "double"), ("z", "double"), ("kind", "string")]
    wanted = [("id", "bigint"), ("x", "string"), ("kind", "string"), ("w", "double")]
    assert schema_differences(stored, wanted) == "added w (double); removed z (double); type changed x: double -> string"
    assert schema_differences(stored, [*stored, ("v", "bigint")]) == "added v (bigint)"
    assert schema_differences(stored, list(reversed(stored))) == (
        "column order ['id', 'x', 'z', 'kind'] stored, ['kind', 'z', 'x', 'id'] asked for")


def test_relative_paths_found_in_the_caller_s_directory_are_made_absolute(tmp_path: Path) -> None:
    caller = tmp_path / "caller"
    (caller / "specs").mkdir(parents=True)
    (caller / "specs" / "my.yaml").write_text(SPEC)
    (caller / "rows.csv").write_text("x\n1\n")
    args = ["--dataset", "specs/my.yaml", "--source", "rows.csv", "--store-dir", "specs/my.yaml", "--trials", "2"]
    assert resolve_typed_paths(args, caller) == [
        "--dataset", str(caller / "specs" / "my.yaml"), "--source", str(caller / "rows.csv"),
        "--store-dir", "specs/my.yaml", "--trials", "2",
    ]
    # A built-in's name, a path not in the caller's directory, an absolute path, no caller: as given.
    for args in (["--dataset", "titanic"], ["--dataset", "elsewhere.yaml"], ["--dataset", str(caller / "specs" / "my.yaml")],
                 ["--source", ""]):
        assert resolve_typed_paths(args, caller) == args
    assert resolve_typed_paths(["--dataset", "specs/my.yaml"], None) == ["--dataset", "specs/my.yaml"]
