"""MLproject, the CLI and serverless_ml.defaults state the same defaults; conda.yaml
installs what pyproject.toml declares; the README's table of entry-point parameters is
MLproject's and `make help` lists every target."""

from __future__ import annotations

import re
import shutil
import subprocess
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
        # get_default: an on/off flag left out is False (its `default` may be click's UNSET).
        assert option.get_default(click.Context(command)) == option.type.convert(default, option, None), (name, param)


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
    bounds = [int(m) for m in re.findall(r"3\.(\d+)", pyproject["project"]["requires-python"])]
    minor = int(re.search(r"3\.(\d+)", python[0]).group(1))
    assert bounds[0] <= minor, "conda.yaml's Python satisfies requires-python"
    assert len(bounds) == 1 or minor < bounds[1], "conda.yaml's Python satisfies requires-python"


def test_python_floor_is_311_everywhere() -> None:
    """The code uses tomllib and contextlib.chdir (3.11); pyproject, conda.yaml and the
    README say so."""
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["requires-python"] == ">=3.11"
    assert "  - python=3.11\n" in (REPO_ROOT / "conda.yaml").read_text()
    readme = (REPO_ROOT / "README.md").read_text()
    assert "Python 3.11 or newer" in readme
    assert not re.search(r"Python 3\.10\b", readme), "the README names a Python below the floor"


def test_license_is_an_spdx_expression_with_a_setuptools_that_reads_it() -> None:
    """A TOML table (`{text = ...}`) makes setuptools print a deprecation warning at each
    build step; the SPDX string needs setuptools 77."""
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["license"] == "Apache-2.0"
    setuptools = [r for r in pyproject["build-system"]["requires"] if r.startswith("setuptools")]
    assert len(setuptools) == 1
    floor = re.fullmatch(r"setuptools>=(\d+)(\.\d+)*", setuptools[0])
    assert floor and int(floor.group(1)) >= 77, setuptools


README_TABLE_START = "<!-- MLproject parameters: tests/unit/test_project_files.py checks this table against MLproject -->"
README_TABLE_END = "<!-- end of MLproject parameters -->"


def _readme_parameter_rows() -> list[tuple[str, str, str, str]]:
    """(entry point, parameter, type, default) of each row of the README's table."""
    readme = (REPO_ROOT / "README.md").read_text()
    assert readme.count(README_TABLE_START) == 1 and readme.count(README_TABLE_END) == 1
    block = readme.split(README_TABLE_START, 1)[1].split(README_TABLE_END, 1)[0]
    rows = []
    for line in block.strip().splitlines()[2:]:  # after the header and the |---| line
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        assert len(cells) == 5 and all(cells), f"README row without 5 cells: {line}"
        entry_point, parameter, kind, default = (c.strip("`") if c.startswith("`") else c for c in cells[:4])
        rows.append((entry_point, parameter, kind, default))
    return rows


def test_readme_lists_every_entry_point_parameter_as_mlproject_states_it(entry_points: dict[str, Any]) -> None:
    expected = [
        (name, parameter, spec["type"], '""' if spec["default"] == "" else str(spec["default"]))
        for name, entry_point in entry_points.items() for parameter, spec in entry_point["parameters"].items()
    ]
    rows = _readme_parameter_rows()
    missing, extra = [r for r in expected if r not in rows], [r for r in rows if r not in expected]
    assert not missing and not extra, f"README table differs from MLproject: missing {missing}, not in MLproject {extra}"
    assert rows == expected, "README table is in another order than MLproject"


def _phony_targets() -> list[str]:
    makefile = (REPO_ROOT / "Makefile").read_text()
    targets = [t for line in re.findall(r"^\.PHONY:(.*)$", makefile, re.M) for t in line.split()]
    assert targets, "the Makefile declares its targets .PHONY"
    return targets


def test_make_help_lists_every_phony_target() -> None:
    make = shutil.which("make")
    assert make, "make is on PATH"
    proc = subprocess.run([make, "-s", "-C", str(REPO_ROOT), "help"], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    listed = {m.group(1): m.group(2).strip() for m in re.finditer(r"^make (\S+)\s+(.*)$", proc.stdout, re.M)}
    for target in _phony_targets():
        assert listed.get(target), f"`make help` does not describe `make {target}`:\n{proc.stdout}"
    assert set(listed) <= set(_phony_targets()), f"`make help` lists targets that are not .PHONY: {set(listed) - set(_phony_targets())}"


def test_readme_layout_names_every_module_and_folder() -> None:
    """README's layout section matches the tree: every package folder, every module of the
    library's top level and of the site, and every top-level folder is named in it."""
    readme = (REPO_ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout\n"):]
    layout = layout[: layout.index("```\n", layout.index("```\n") + 4)]
    expected = {f"{p.name}/" for p in (REPO_ROOT / "serverless_ml").iterdir() if (p / "__init__.py").exists()}
    expected |= {p.name for p in (REPO_ROOT / "serverless_ml").glob("*.py") if p.name != "__init__.py"}
    expected |= {p.name for p in (REPO_ROOT / "monitoring_app").glob("*.py") if p.name != "__init__.py"}
    expected |= {"pages/", "entrypoints/", "tests/", "bench/", "scripts/", "docs/", "monitoring_app/", "serverless_ml/"}
    missing = sorted(name for name in expected if not re.search(rf"(?<![\w/]){re.escape(name)}", layout))
    assert not missing, f"README's layout section does not name: {', '.join(missing)}"
    assert len(expected) > 30  # the globs found the tree
