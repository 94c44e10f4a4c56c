"""The catalogue of bad input: every case runs ``sml`` in a subprocess against a store
that already holds a good Titanic backfill (and one day of synthetic rows).

Each must exit non-zero with exactly one ``error:`` line on stderr that names the file,
column, row or value at fault, no traceback, nothing on stdout, and leave every byte of
the store as it was.

The subprocesses (about 1.5 s each, mostly imports) run two at a time; the module fixture
runs only the cases that were selected.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from serverless_ml.datasets import titanic
from serverless_ml.datasets.sources import load_source
from serverless_ml.feature_store.local import LocalFeatureStore
from serverless_ml.pipelines.features import add_daily_rows, backfill

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

TEST_NAME = "test_bad_input_is_refused"


class Workspace:
    """A case's working directory: writes input files, knows the real Titanic CSV."""

    def __init__(self, root: Path, data_dir: Path) -> None:
        self.root = root
        self.titanic_text = (data_dir / "titanic.csv").read_text(encoding="utf-8")

    def lines(self) -> list[str]:
        return self.titanic_text.split("\n")

    def write(self, name: str, text: str | bytes) -> str:
        path = self.root / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
        return name

    def titanic_with(self, name: str, row: int, column: str, value: str) -> str:
        """The real CSV with one field of data row ``row`` (1-based) replaced."""
        lines = self.lines()
        header = next(csv.reader([lines[0]]))
        record = next(csv.reader([lines[row]]))
        record[header.index(column)] = value
        out = io.StringIO()
        csv.writer(out, lineterminator="").writerow(record)
        lines[row] = out.getvalue()
        return self.write(name, "\n".join(lines))

    def titanic_columns(self, name: str, rename: dict[str, str] | None = None, drop: str | None = None, sep: str = ",") -> str:
        rows = list(csv.reader(io.StringIO(self.titanic_text)))
        header = [(rename or {}).get(c, c) for c in rows[0]]
        keep = [i for i, c in enumerate(rows[0]) if c != drop]
        out = io.StringIO()
        writer = csv.writer(out, delimiter=sep, lineterminator="\n")
        writer.writerow([header[i] for i in keep])
        writer.writerows([[r[i] for i in keep] for r in rows[1:]])
        return self.write(name, out.getvalue())


@dataclass(frozen=True)
class Case:
    """``prepare`` writes the case's files and returns the ``sml`` arguments."""

    prepare: Callable[[Workspace], list[str]]
    expected: tuple[str, ...]
    # Where the store is: "good" (a copy of the good store), "file" (a file),
    # "below-file" (a path under a file).
    store: str = "good"


def _source(ws: Workspace, name: str) -> list[str]:
    return ["features", "--dataset", "titanic", "--source", name]


def _edit(row: int, column: str, value: str) -> Callable[[Workspace], list[str]]:
    return lambda ws: _source(ws, ws.titanic_with(f"{column}-{row}.csv", row, column, value))


def _ragged(extra: bool) -> Callable[[Workspace], list[str]]:
    def prepare(ws: Workspace) -> list[str]:
        lines = ws.lines()
        lines[5] = lines[5] + ",x,y" if extra else lines[5].rsplit(",", 1)[0]
        return _source(ws, ws.write("ragged.csv", "\n".join(lines)))

    return prepare


BAD_SPEC = """\
name: wine
source: {path: wine.csv}
label: cultivar
classes: [class_0, class_1]
features:
  alcohol: {type: double, min: 20, max: 16}
"""

CASES: dict[str, Case] = {
    "missing column": Case(
        lambda ws: _source(ws, ws.titanic_columns("no-age.csv", drop="Age")), ("no-age.csv", "missing column(s) 'Age'")
    ),
    "misspelled column": Case(
        lambda ws: _source(ws, ws.titanic_columns("typo.csv", rename={"Pclass": "Pclas"})),
        ("missing column(s) 'Pclass'", "'Pclas' looks like a misspelling of 'Pclass'"),
    ),
    "semicolon delimiter": Case(
        lambda ws: _source(ws, ws.titanic_columns("semi.csv", sep=";")), ("semi.csv", "another delimiter than ','")
    ),
    "empty file": Case(lambda ws: _source(ws, ws.write("empty.csv", "")), ("empty.csv", "is empty")),
    "header only": Case(
        lambda ws: _source(ws, ws.write("header.csv", ws.lines()[0] + "\n")), ("header.csv", "header but no data rows")
    ),
    "line with extra fields": Case(_ragged(extra=True), ("ragged.csv", "not well-formed CSV", "line 6", "14")),
    "line with missing fields": Case(_ragged(extra=False), ("ragged.csv", "line 6 has 11 fields, expected 12")),
    "not UTF-8": Case(
        lambda ws: _source(ws, ws.write("latin1.csv", ws.titanic_text.replace("Braund", "Br\xe4und").encode("latin-1"))),
        ("latin1.csv", "not UTF-8", "0xe4", "line 2"),
    ),
    "label not in classes": Case(_edit(4, "Survived", "2"), ("Survived-4.csv", "column 'Survived', row 4 (line 5)", "label 2 is not one of 0, 1")),
    "missing label": Case(_edit(4, "Survived", ""), ("column 'Survived', row 4 (line 5)", "label is missing")),
    "text in a numeric column": Case(_edit(5, "Age", "abc"), ("column 'Age' (feature 'age'), row 5 (line 6)", "'abc' is not a number")),
    "out of range": Case(_edit(5, "Age", "150"), ("column 'Age' (feature 'age'), row 5", "150.0 is outside the allowed range [0.0, 100.0]")),
    "unknown category": Case(_edit(7, "Embarked", "X"), ("column 'Embarked' (feature 'embarked'), row 7", "'X' is not one of S, C, Q")),
    "null in a non-nullable feature": Case(_edit(8, "Sex", ""), ("column 'Sex' (feature 'sex'), row 8", "value is missing and the feature is not nullable")),
    "duplicate primary key": Case(_edit(9, "PassengerId", "3"), ("column 'PassengerId', row 9 (line 10)", "duplicate primary key 3 (first seen in row 3 (line 4))")),
    "enormous primary key": Case(_edit(9, "PassengerId", "9" * 25), ("column 'PassengerId', row 9", "too large for a 64-bit integer")),
    "infinite value": Case(_edit(10, "Fare", "inf"), ("column 'Fare' (feature 'fare'), row 10", "inf is not a finite number")),
    "source that does not exist": Case(lambda ws: _source(ws, "nothere.csv"), ("nothere.csv", "does not exist")),
    "unknown dataset": Case(lambda ws: ["features", "--dataset", "wine"], ("unknown dataset 'wine'", "iris, titanic")),
    "spec file with errors": Case(
        lambda ws: ["features", "--dataset", ws.write("wine.yaml", BAD_SPEC)], ("wine.yaml", "feature 'alcohol' has min 20 greater than max 16")
    ),
    "bad --date": Case(lambda ws: ["daily", "--date", "2024-02-30"], ("--date '2024-02-30' is not a date", "YYYY-MM-DD")),
    "negative --rows": Case(lambda ws: ["daily", "--date", "2024-02-01", "--rows", "-5"], ("--rows must be between 1 and 10000, got -5",)),
    # A seed above 9999 used to reuse seed % 10000's keys and overwrite those rows.
    "--seed too large": Case(lambda ws: ["daily", "--date", "2024-02-01", "--seed", "10000"], ("--seed must be between 0 and 9999, got 10000",)),
    "daily before features": Case(lambda ws: ["daily", "--dataset", "iris", "--date", "2024-02-01"], ("feature group 'iris' version 1 is empty", "sml features --dataset iris")),
    "store dir is a file": Case(lambda ws: ["features", "--dataset", "titanic"], ("is a file, expected a directory",), store="file"),
    "store dir below a file": Case(lambda ws: ["daily", "--date", "2024-02-01"], ("which is a file",), store="below-file"),
}


@dataclass
class Outcome:
    returncode: int
    stdout: str
    stderr: str
    before: dict[str, str] = field(default_factory=dict)
    after: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)


class Outcomes(dict[str, Outcome]):
    """Outcomes by case; a case that was not run ahead (e.g. under another scheduler) runs
    when asked for."""

    def __init__(self, run: Callable[[str], Outcome]) -> None:
        super().__init__()
        self.run = run

    def __missing__(self, name: str) -> Outcome:
        self[name] = self.run(name)
        return self[name]


@pytest.fixture(scope="module")
def good_store(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """A store with the real Titanic backfill and one day of synthetic rows."""
    root = tmp_path_factory.mktemp("good") / "store"
    store = LocalFeatureStore(root)
    backfill(titanic.SPEC, store, load_source(titanic.SPEC, data_dir=data_dir))
    add_daily_rows(titanic.SPEC, store, dt.date(2024, 1, 15), 20, seed=0)
    return root


@pytest.fixture(scope="module")
def outcomes(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    good_store: Path,
    data_dir: Path,
    tree_digest,
    cli_process,
) -> Outcomes:
    """Runs the selected cases two (or more, on bigger machines) at a time."""
    selected = [
        item.callspec.params["case"]
        for item in request.session.items
        if getattr(item, "originalname", None) == TEST_NAME and hasattr(item, "callspec")
    ]

    def run(name: str) -> Outcome:
        case = CASES[name]
        root = tmp_path_factory.mktemp("case")
        ws = Workspace(root, data_dir)
        if case.store == "good":
            store = root / "store"
            shutil.copytree(good_store, store)
            watched = store
        else:
            watched = root / "plain-file"
            watched.write_text("I am not a directory\n")
            store = watched if case.store == "file" else watched / "store"
        args = case.prepare(ws)
        before = tree_digest(watched)
        result = cli_process(args, cwd=root, store_dir=store, data_dir=data_dir)
        return Outcome(*result, before=before, after=tree_digest(watched), args=args)

    results = Outcomes(run)
    with ThreadPoolExecutor(max_workers=max(2, min(4, os.cpu_count() or 2))) as pool:
        results.update(zip(selected, pool.map(run, selected)))
    return results


def test_the_good_store_is_readable(good_store: Path) -> None:
    table = LocalFeatureStore(good_store).get_feature_group("titanic", 1).read()
    assert len(table) == 891 + 20


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_refused(case: str, outcomes: Outcomes) -> None:
    outcome = outcomes[case]
    context = f"sml {' '.join(outcome.args)} -> {outcome.returncode}\nstdout: {outcome.stdout!r}\nstderr: {outcome.stderr!r}"
    assert outcome.returncode != 0, context
    assert "Traceback" not in outcome.stderr, context
    lines = outcome.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), context
    for part in CASES[case].expected:
        assert part in lines[0], f"{part!r} not in the message\n{context}"
    assert outcome.stdout == "", context
    assert outcome.before, "the watched store existed before the run"
    assert outcome.after == outcome.before, f"the store changed\n{context}"
