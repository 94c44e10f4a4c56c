"""MLproject, the CLI and serverless_ml.defaults state the same defaults; conda.yaml
installs what pyproject.toml declares."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from serverless_ml import defaults
from serverless_ml.cli import cli

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[2]
# MLproject parameter type -> the Python type its default must have.
PYTHON_TYPES: dict[str, tuple[type, ...]] = {"string": (str,), "int": (int,), "float": (float, int), "path": (str,), "uri": (str,)}


@pytest.fixture(scope="module")
def entry_points() -> dict[str, Any]:
    return yaml.safe_load((REPO_ROOT / "MLproject").read_text())["entry_points"]


def test_every_entry_point_is_in_defaults_and_back(entry_points: dict[str, Any]) -> None:
    assert set(entry_points) == set(defaults.ENTRY_POINT_DEFAULTS)


@pytest.mark.parametrize("name", sorted(defaults.ENTRY_POINT_DEFAULTS))
def test_mlproject_defaults_equal_defaults_py(entry_points: dict[str, Any], name: str) -> None:
    assert name in entry_points, f"MLproject has no entry point '{name}'"
    parameters = entry_points[name]["parameters"]
    stated = {param: spec["default"] for param, spec in parameters.items()}
    expected = defaults.ENTRY_POINT_DEFAULTS[name]
    assert stated == expected
    for param, spec in parameters.items():
        # Types matter too: MLproject's 10 and defaults.py's "10" would print alike.
        assert type(stated[param]) is type(expected[param]), (name, param)
        assert isinstance(spec["default"], PYTHON_TYPES[spec["type"]]), (name, param, spec)


@pytest.mark.parametrize("name", sorted(defaults.ENTRY_POINT_DEFAULTS))
def test_mlproject_command_passes_every_parameter(entry_points: dict[str, Any], name: str) -> None:
    command = entry_points[name]["command"]
    used = set(re.findall(r"\{(\w+)\}", command))
    assert used == set(entry_points[name]["parameters"]), f"entry point '{name}': {command}"
    for param in used:
        assert f"--{param.replace('_', '-')} {{{param}}}" in command, (name, param)


def _sml_command_of(entry_point: dict[str, Any]) -> str:
    """The ``sml`` sub-command an entry point runs: its script under entrypoints/ hands
    its arguments to ``run("<command>")`` (or ``main(["<command>", ...])``)."""
    module = re.search(r"python -m entrypoints\.(\w+)", entry_point["command"])
    assert module, f"entry point command does not run an entrypoints/ script: {entry_point['command']}"
    script = (REPO_ROOT / "entrypoints" / f"{module.group(1)}.py").read_text()
    called = re.search(r"""(?:run\(|main\(\[)\s*["']([\w-]+)["']""", script)
    assert called, f"entrypoints/{module.group(1)}.py does not name an sml command"
    return called.group(1)


@pytest.mark.parametrize("name", sorted(defaults.ENTRY_POINT_DEFAULTS))
def test_cli_defaults_agree(entry_points: dict[str, Any], name: str) -> None:
    """The ``sml`` command behind each entry point has the same defaults (an empty
    MLproject default means "unset" and is resolved by the command itself)."""
    command_name = _sml_command_of(entry_points[name])
    command = cli.commands.get(command_name)
    assert command is not None, f"entry point '{name}' runs 'sml {command_name}', which does not exist"
    options = {p.name: p for p in command.params if isinstance(p, click.Option)}
    for param, default in defaults.ENTRY_POINT_DEFAULTS[name].items():
        option = next((o for o in options.values() if f"--{param.replace('_', '-')}" in o.opts), None)
        assert option is not None, f"sml {name} has no option --{param.replace('_', '-')}"
        if default == "":
            continue
        assert option.default == option.type.convert(default, option, None), (name, param)


def _requirement_key(requirement: str) -> str:
    return re.sub(r"\s+", "", requirement).lower()


def test_conda_pip_list_equals_pyproject_dependencies() -> None:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    conda = yaml.safe_load((REPO_ROOT / "conda.yaml").read_text())
    pip_lists = [item["pip"] for item in conda["dependencies"] if isinstance(item, dict) and "pip" in item]
    assert len(pip_lists) == 1, "conda.yaml has one pip list"
    declared = sorted(map(_requirement_key, pyproject["project"]["dependencies"]))
    assert sorted(map(_requirement_key, pip_lists[0])) == declared
    assert "pip" in conda["dependencies"]
    python = [d for d in conda["dependencies"] if isinstance(d, str) and d.startswith("python")]
    assert python, "conda.yaml pins a Python version"
    low, high = re.findall(r"3\.(\d+)", pyproject["project"]["requires-python"])[:2]
    minor = int(re.search(r"3\.(\d+)", python[0]).group(1))
    assert int(low) <= minor < int(high), "conda.yaml's Python satisfies requires-python"
