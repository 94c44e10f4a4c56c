"""The catalogue of bad input: every ``sml`` command (features, daily, train, infer,
simulate, schedule, dashboard, main, tracking-server, spec draft) run in a subprocess with bad files,
options, URIs or settings.

Each case has its own workspace: a store that already holds a good Titanic backfill (and
one day of synthetic rows) and a tracking database without runs, or a copy of the trained
world (``tests/worlds.py``: the same store and a tracking database with a champion).
Each must exit non-zero with exactly one ``error:`` line on stderr that names the file,
column, row, option or value at fault, no traceback, nothing on stdout, and leave the
workspace as it was: every byte of the store (lock files aside: they hold no data), every
row of every table of the tracking database (compared by content: SQLite may rewrite a
header on a mere read), and no new or changed file anywhere else in the workspace (no
``optuna.db``, ``mlruns/``, artifact folder or database file created on the way to the
error).

The subprocesses (1.5 to 4 s each, mostly imports) run two at a time; the module fixture
runs only the cases that were selected.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import http.server
import io
import os
import shutil
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from serverless_ml.datasets import titanic
from serverless_ml.datasets.sources import load_source
from serverless_ml.feature_store.local import LocalFeatureStore
from serverless_ml.pipelines.features import add_daily_rows, backfill
from worlds import copy_database, trained_template  # noqa: F401 - trained_template is a fixture

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

TEST_NAME = "test_bad_input_is_refused"


PASSWORD = "pw-bad-input-3141"
"""A password in the URIs of some cases: it must appear in no output."""


def sqlite_content_digest(path: Path) -> dict[str, str]:
    """Every table of an SQLite database mapped to a hash of its rows, sorted: equal
    digests mean equal content whatever SQLite did to the file's bytes (a header touched
    on read, a write-ahead log checkpointed). A missing file is ``{}``."""
    if not path.is_file():
        return {}
    db = sqlite3.connect(path)
    try:
        tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        digest = {}
        for table in tables:
            rows = sorted(repr(row) for row in db.execute(f'SELECT * FROM "{table}"'))
            digest[table] = hashlib.sha256("\n".join(rows).encode()).hexdigest()
        return digest
    finally:
        db.close()


def _is_lock(key: str) -> bool:
    return key.endswith(".lock") or Path(key).parts[:1] == ("_locks",)


class Workspace:
    """A case's working directory: writes input files, knows the real Titanic CSV, the
    tracking database, a closed port and a busy one; ``env`` goes to the subprocess."""

    def __init__(self, root: Path, data_dir: Path, closed_port: int, busy_port: int) -> None:
        self.root = root
        self.titanic_text = (data_dir / "titanic.csv").read_text(encoding="utf-8")
        self.tracking_db = root / "mlflow.db"
        self.closed_port = closed_port
        self.busy_port = busy_port
        self.env: dict[str, str] = {"MLFLOW_TRACKING_URI": f"sqlite:///{self.tracking_db}"}

    def path(self, name: str) -> str:
        return str(self.root / name)

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
    # "below-file" (a path under a file), "trained" (the trained world's store and
    # tracking database, with a champion).
    store: str = "good"
    # Strings that must appear in no output (passwords).
    absent: tuple[str, ...] = ()
    # Seconds the command may take at most (cases that used to hang or retry for minutes).
    seconds: float | None = None


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

# The metrics of two classes are about the positive class: it must be one of them.
POSITIVE_NOT_A_CLASS = BAD_SPEC.replace("classes: [class_0, class_1]", "classes: [malignant, benign]\npositive_class: Benign").replace(
    "min: 20", "min: 10"
)
POSITIVE_OF_THREE = BAD_SPEC.replace("[class_0, class_1]", "[class_0, class_1, class_2]\npositive_class: class_1").replace(
    "min: 20", "min: 10"
)

# A good spec of the real Titanic CSV; each "spec: ..." case below changes one thing of it
# into a way the data would have been silently changed (issue 16).
PASSENGERS_SPEC = """\
name: passengers
source: {path: titanic.csv}
label: Survived
classes: [0, 1]
primary_key: {column: PassengerId, type: string}
features:
  sex: {type: string, source_column: Sex, categories: [male, female]}
  fare: {type: double, source_column: Fare, min: 0}
"""


def _spec_with(command: str, old: str, new: str) -> Callable[[Workspace], list[str]]:
    """``sml <command> --dataset passengers.yaml`` with ``old`` replaced by ``new`` in the spec."""
    assert old in PASSENGERS_SPEC

    def prepare(ws: Workspace) -> list[str]:
        ws.write("titanic.csv", ws.titanic_text)
        spec = ws.write("passengers.yaml", PASSENGERS_SPEC.replace(old, new))
        extra = ["--date", "2024-02-01"] if command == "daily" else []
        return [command, "--dataset", spec, *extra]

    return prepare


def _env(**values: str) -> Callable[[Workspace], None]:
    """Set environment variables of the case, ``{closed}`` and ``{root}`` filled in."""

    def apply(ws: Workspace) -> None:
        for name, value in values.items():
            ws.env[name] = value.format(closed=ws.closed_port, root=ws.root)

    return apply


def _with(setup: Callable[[Workspace], None], args: list[str]) -> Callable[[Workspace], list[str]]:
    def prepare(ws: Workspace) -> list[str]:
        setup(ws)
        return [a.format(closed=ws.closed_port, busy=ws.busy_port, root=ws.root) for a in args]

    return prepare


def _args(*args: str) -> Callable[[Workspace], list[str]]:
    return _with(lambda ws: None, list(args))


SERVER_DOWN = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:{closed}"}


def _labels(ws: Workspace, text: str) -> list[str]:
    """``sml labels --dataset titanic --source labels.csv`` with ``text`` as the file."""
    return ["labels", "--dataset", "titanic", "--source", ws.write("labels.csv", text)]


def _live(name: str, row: int = 0, column: str = "", value: str = "", new_ids: bool = True) -> Callable[[Workspace], list[str]]:
    """``sml ingest`` of the first three Titanic passengers (under new ids 5001-5003 unless
    ``new_ids`` is off: then they are stored already), one field of row ``row`` replaced."""

    def prepare(ws: Workspace) -> list[str]:
        lines = ws.lines()
        header = next(csv.reader([lines[0]]))
        records = [next(csv.reader([line])) for line in lines[1:4]]
        for i, record in enumerate(records):
            record[header.index("PassengerId")] = str(5001 + i) if new_ids else record[header.index("PassengerId")]
        if column:
            records[row - 1][header.index(column)] = value
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows([header, *records])
        return ["ingest", "--dataset", "titanic", "--source", ws.write(name, out.getvalue())]

    return prepare


def _live_passengers(seen: str, *extra: str) -> Callable[[Workspace], list[str]]:
    """``sml ingest`` of two new passengers of the passengers spec with an
    ``event_time_column: seen`` (its backfill in the store), the second seen at ``seen``."""

    def prepare(ws: Workspace) -> list[str]:
        from serverless_ml.datasets import load_spec_file

        ws.write("titanic.csv", ws.titanic_text)
        spec_file = ws.write("passengers.yaml", PASSENGERS_SPEC + "event_time_column: seen\n")
        spec = load_spec_file(ws.root / spec_file)
        backfill(spec, LocalFeatureStore(ws.root / "store"), load_source(spec))
        ws.write("seen.csv", f"PassengerId,Sex,Fare,Survived,seen\n9001,male,7.25,,2024-02-01\n9002,female,8.5,1,{seen}\n")
        return ["ingest", "--dataset", spec_file, "--source", "seen.csv", *extra]

    return prepare


def _nul_byte(ws: Workspace) -> list[str]:
    return _source(ws, ws.write("nul.csv", ws.titanic_text.replace("Braund", "Bra\x00und")))


def _duplicate_header(ws: Workspace) -> list[str]:
    lines = [line for line in ws.lines() if line]
    return _source(ws, ws.write("twice.csv", "\n".join([lines[0] + ",Age", *(line + ",30" for line in lines[1:])]) + "\n"))


def _champion_files_gone(ws: Workspace) -> None:
    """The registry still names champion version 1, but its model files are not where
    the tracking database says."""
    db = sqlite3.connect(ws.tracking_db)
    try:
        with db:
            gone = str(ws.root / "gone" / "artifacts")
            db.execute("UPDATE model_versions SET storage_location = ?", (gone,))
            db.execute("UPDATE logged_models SET artifact_location = ?", (gone,))
    finally:
        db.close()


def _daily_rows(day: str, rows: int) -> Callable[[Workspace], None]:
    """A day of synthetic rows (seed 0) in the case's store."""

    def setup(ws: Workspace) -> None:
        add_daily_rows(titanic.SPEC, LocalFeatureStore(ws.root / "store"), dt.date.fromisoformat(day), rows, seed=0)

    return setup


def _text_file(name: str, uri: str) -> Callable[[Workspace], None]:
    def setup(ws: Workspace) -> None:
        ws.write(name, "not a database\n")
        _env(MLFLOW_TRACKING_URI=uri)(ws)

    return setup


# --- leaks and hangs (issue 16) -----------------------------------------------------

HEAD, TAIL = "pw-head-1618", "pw-tail-1618"
"""The two halves of a password written with an unencoded '@' (``sml:HEAD@TAIL@host``):
libpq takes HEAD as the password and ``TAIL@host`` as the host, and quotes that host."""
QUERY_PASSWORD = "pw-query-1414"
"""A password in a URI's query (``?password=...``)."""
HANG_S = 30.0
"""These cases used to take minutes (or forever); now a few seconds, 30 on a busy machine."""


class _SourceHandler(http.server.BaseHTTPRequestHandler):
    """``/endless`` (no length, never ends), ``/huge`` (a length of 1 TB), ``/trickle``
    (a byte every 0.2 s), ``/to-file`` (a redirect to file:///etc/passwd)."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path == "/to-file":
            self.send_response(302)
            self.send_header("Location", "file:///etc/passwd")
            self.end_headers()
            return
        self.send_response(200)
        if self.path == "/huge":
            self.send_header("Content-Length", str(10**12))
        self.end_headers()
        try:
            for _ in range(200 if self.path == "/trickle" else 100_000):
                self.wfile.write(b"x" if self.path == "/trickle" else b"\0" * 65536)
                self.wfile.flush()
                if self.path == "/trickle":
                    time.sleep(0.2)
        except OSError:
            pass  # the command gave up, as it should

    def log_message(self, *args: object) -> None:
        pass


_SOURCE_SERVER: list[str] = []
_SOURCE_SERVER_LOCK = threading.Lock()


def _served(path: str) -> str:
    """The URL of ``path`` on a local HTTP server of bad downloads (started once, in a
    daemon thread of the test process, on a free port of 127.0.0.1)."""
    with _SOURCE_SERVER_LOCK:
        if not _SOURCE_SERVER:
            server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SourceHandler)
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, daemon=True).start()
            _SOURCE_SERVER.append(f"http://127.0.0.1:{server.server_address[1]}")
    return _SOURCE_SERVER[0] + path


def _download(path: str, **env: str) -> Callable[[Workspace], list[str]]:
    """``sml features --source`` a URL of the bad-download server, with ``env`` set."""

    def prepare(ws: Workspace) -> list[str]:
        _env(**env)(ws)
        return ["features", "--source", _served(path)]

    return prepare


def _fifo(ws: Workspace, name: str) -> str:
    """A named pipe outside the workspace (whose files the test reads, and a pipe would
    block that read as it blocked the commands)."""
    folder = ws.root.parent / f"{ws.root.name}-fifo"
    folder.mkdir(exist_ok=True)
    os.mkfifo(folder / name)
    return str(folder / name)


def _truncated_copy(ws: Workspace) -> None:
    """``damaged.db``: the tracking database cut after its first 4 pages, as the tracking URI."""
    ws.write("damaged.db", ws.tracking_db.read_bytes()[: 4 * 4096])
    _env(MLFLOW_TRACKING_URI="sqlite:///{root}/damaged.db")(ws)


URL_SPEC = BAD_SPEC.replace("source: {path: wine.csv}", "source: {url: 'file:///etc/passwd'}").replace("min: 20", "min: 10")
ALIAS_BOMB = BAD_SPEC.replace("min: 20", "min: 10") + "description:\n  - &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"  - &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True)
)


CASES: dict[str, Case] = {
    "missing column": Case(
        lambda ws: _source(ws, ws.titanic_columns("no-age.csv", drop="Age")), ("no-age.csv", "missing column(s) 'Age'")
    ),
    "misspelled column": Case(
        lambda ws: _source(ws, ws.titanic_columns("typo.csv", rename={"Pclass": "Pclas"})),
        ("missing column(s) 'Pclass' (did you mean 'Pclas'?)",),
    ),
    "semicolon delimiter": Case(
        lambda ws: _source(ws, ws.titanic_columns("semi.csv", sep=";")), ("semi.csv", "semicolon-separated; sml reads comma-separated files only: convert it, e.g. `python -c")
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
    # Text columns keep every field as written: NA used to be read as missing and stored
    # as a null port (the feature is nullable).
    "NA in a text column is a value": Case(
        _edit(7, "Embarked", "NA"), ("column 'Embarked' (feature 'embarked'), row 7", "'NA' is not one of S, C, Q")
    ),
    # --- spec files that would have changed the data silently (issue 16) -----------
    # YAML reads 01 as the number 1: the category "01" could never match the file's text.
    "spec: categories written as numbers": Case(
        _spec_with("features", "categories: [male, female]", "categories: [01, 02]"),
        ("passengers.yaml", "feature 'sex': categories: 1 is not text", 'quote every item, e.g. ["01", "02"]'),
    ),
    # YAML reads yes/no as booleans: the classes used to become "True"/"False".
    "spec: text classes written unquoted as booleans": Case(
        _spec_with("features", "classes: [0, 1]", "classes: [yes, no]"),
        ("passengers.yaml", "'classes' of a text label: True is not text", "quote every item"),
    ),
    "spec: missing_values that are not text": Case(
        _spec_with("features", "features:", "missing_values: [NA, null]\nfeatures:"),
        ("passengers.yaml", "missing_values: null is not text", "quote every item"),
    ),
    "spec: missing_values not a list": Case(
        _spec_with("features", "features:", "missing_values: NA\nfeatures:"),
        ("passengers.yaml", "missing_values must be a list of quoted texts"),
    ),
    # A NaN jitter used to pass `jitter >= 0` and write non-nullable features as null.
    "spec: jitter nan": Case(
        _spec_with("daily", "features:", "synthetic: {jitter: .nan}\nfeatures:"),
        ("passengers.yaml", "synthetic jitter must be a finite number >= 0, got nan"),
    ),
    "spec: jitter inf": Case(
        _spec_with("daily", "features:", "synthetic: {jitter: .inf}\nfeatures:"),
        ("passengers.yaml", "synthetic jitter must be a finite number >= 0, got inf"),
    ),
    # Would have upserted its rows into Titanic's predictions table.
    "spec: name of another dataset's predictions": Case(
        _spec_with("features", "name: passengers", "name: titanic_predictions"),
        ("passengers.yaml", "name 'titanic_predictions' ends in '_predictions'", "predictions of dataset 'titanic'"),
    ),
    # Every re-run used to give every row a new event time, and the table a new version.
    "spec: relative backfill time": Case(
        _spec_with("features", "features:", "backfill_event_time: now\nfeatures:"),
        ("passengers.yaml", "backfill_event_time 'now' is not a date", "fixed ISO date such as 2024-01-01"),
    ),
    # The name was pasted into the Delta merge predicate: every later upsert failed.
    "spec: key column name with a quote": Case(
        _spec_with("features", "{column: PassengerId, type: string}", """{column: 'Passenger"Id', type: string}"""),
        ("passengers.yaml", "primary key 'Passenger\"Id' must start with a letter or underscore", "source_column"),
    ),
    "spec: label name with a space": Case(
        _spec_with("features", "label: Survived", "label: Survived today"),
        ("passengers.yaml", "label 'Survived today' must start with a letter or underscore"),
    ),
    "spec: feature name with a backtick": Case(
        _spec_with("features", "  fare:", "  fa`re:"),
        ("passengers.yaml", "feature 'fa`re' must start with a letter or underscore"),
    ),
    "null in a non-nullable feature": Case(_edit(8, "Sex", ""), ("column 'Sex' (feature 'sex'), row 8", "value is missing and the feature is not nullable")),
    "duplicate primary key": Case(_edit(9, "PassengerId", "3"), ("column 'PassengerId', row 9 (line 10)", "duplicate primary key 3 (first seen in row 3 (line 4))")),
    "enormous primary key": Case(_edit(9, "PassengerId", "9" * 25), ("column 'PassengerId', row 9", "too large for a 64-bit integer")),
    "infinite value": Case(_edit(10, "Fare", "inf"), ("column 'Fare' (feature 'fare'), row 10", "inf is not a finite number")),
    "source that does not exist": Case(lambda ws: _source(ws, "nothere.csv"), ("nothere.csv", "does not exist")),
    "unknown dataset": Case(lambda ws: ["features", "--dataset", "wine"], ("unknown dataset 'wine'", "iris, titanic")),
    "spec file with errors": Case(
        lambda ws: ["features", "--dataset", ws.write("wine.yaml", BAD_SPEC)], ("wine.yaml", "feature 'alcohol' has min 20 greater than max 16")
    ),
    "spec file with a positive class that is not a class": Case(
        lambda ws: ["features", "--dataset", ws.write("tumours.yaml", POSITIVE_NOT_A_CLASS)],
        ("tumours.yaml", "positive_class 'Benign' must be a label listed in classes (malignant, benign)"),
    ),
    "train: positive class of three classes": Case(
        lambda ws: ["train", "--trials", "1", "--dataset", ws.write("wine.yaml", POSITIVE_OF_THREE)],
        ("wine.yaml", "positive_class applies to two classes only; this spec has 3"),
    ),
    # Far dates (issue 16): accepted, then OverflowError half-way through a job (simulate
    # after writing two days). One range for every date, checked before anything is written.
    "far --date": Case(_args("daily", "--date", "9999-12-31"), ("--date 9999-12-31 is outside the supported dates (1970-01-01 to 2261-12-31)",)),
    "ancient --date": Case(_args("daily", "--date", "0001-01-01"), ("--date 0001-01-01 is outside the supported dates",)),
    # Future dates (issue 17): a day of synthetic rows, a batch or a simulated day dated
    # 2200 was written, and became the latest batch.
    "daily: --date in the future": Case(_args("daily", "--date", "2200-01-01"),
                                        ("--date 2200-01-01 is in the future", "the rows' event time cannot be later than")),
    "spec: far backfill time": Case(
        _spec_with("features", "features:", "backfill_event_time: '9999-12-31'\nfeatures:"),
        ("passengers.yaml", "backfill_event_time 9999-12-31 is outside the supported dates (1970-01-01 to 2261-12-31)"),
    ),
    # A name of 245-300 characters: "File name too long" and an empty lock file left behind.
    "spec: name too long": Case(
        _spec_with("features", "name: passengers", "name: " + "p" * 260),
        ("passengers.yaml", "is 260 characters long, longer than 64"),
    ),
    "bad --date": Case(lambda ws: ["daily", "--date", "2024-02-30"], ("--date '2024-02-30' is not a date", "YYYY-MM-DD")),
    # Found by a user trial: Python's ISO reader took these, and 2024-W05 wrote rows for 2024-01-29.
    "--date as an ISO week": Case(lambda ws: ["daily", "--date", "2024-W05"], ("--date '2024-W05' is not a date", "YYYY-MM-DD")),
    "--date without dashes": Case(lambda ws: ["daily", "--date", "20240201"], ("--date '20240201' is not a date", "YYYY-MM-DD")),
    "negative --rows": Case(lambda ws: ["daily", "--date", "2024-02-01", "--rows", "-5"], ("--rows must be between 1 and 10000, got -5",)),
    # A seed above 9999 used to reuse seed % 10000's keys and overwrite those rows.
    "--seed too large": Case(lambda ws: ["daily", "--date", "2024-02-01", "--seed", "10000"], ("--seed must be between 0 and 9999, got 10000",)),
    "daily before features": Case(lambda ws: ["daily", "--dataset", "iris", "--date", "2024-02-01"], ("feature group 'iris' version 1 is empty", "sml features --dataset iris")),
    "store dir is a file": Case(lambda ws: ["features", "--dataset", "titanic"], ("is a file, expected a directory",), store="file"),
    "store dir below a file": Case(lambda ws: ["daily", "--date", "2024-02-01"], ("which is a file",), store="below-file"),
    # Permissions do not stop root (the tests may run as root); /sys refuses new folders to everyone.
    "unwritable store dir": Case(
        lambda ws: ["features", "--store-dir", "/sys/sml-store"], ("cannot create feature store directory /sys/sml-store",)
    ),
    # pandas cut the field at a NUL byte ("Bra") and stored the damaged row.
    "NUL byte": Case(_nul_byte, ("nul.csv", "NUL byte on line 2")),
    # pandas renamed the second Age to Age.1 and the first one was read silently.
    "column named twice": Case(_duplicate_header, ("twice.csv", "names column 'Age' twice")),
    "enormous value": Case(_edit(3, "Fare", "1e400"), ("column 'Fare' (feature 'fare'), row 3", "'1e400' is not a finite number")),
    "bad --drift": Case(_args("daily", "--date", "2024-02-01", "--drift", "age*abc"), ("--drift 'age*abc'", "'abc' is not a number")),
    "--drift of an unknown feature": Case(
        _args("daily", "--date", "2024-02-01", "--drift", "height+1"), ("dataset 'titanic' has no feature 'height'",)
    ),
    # The good store has 20 rows of seed 0 on 2024-01-15: other arguments for that day used
    # to overwrite them ("20 updated") while its predictions and runs stayed as they were.
    "daily: other --rows for an existing day": Case(
        _args("daily", "--date", "2024-01-15", "--rows", "10"),
        ("titanic: 2024-01-15 already has rows for --seed 0 that these arguments would change", "nothing was written",
         "another --date or --seed, or --replace"),
    ),
    "daily: other --drift for an existing day": Case(
        _args("daily", "--date", "2024-01-15", "--rows", "20", "--drift", "fare*2"),
        ("titanic: 2024-01-15 already has rows for --seed 0 that these arguments would change", "--replace"),
    ),
    # --- train ---------------------------------------------------------------------
    # The feature view used to be written before the storage URL was tried.
    "train: bad storage URL": Case(
        _args("train", "--trials", "1", "--storage", "bogus://x"), ("cannot open Optuna storage bogus://x", "bogus")
    ),
    "train: storage database down": Case(
        _args("train", "--trials", "1", "--storage", f"postgresql://sml:{PASSWORD}@127.0.0.1:{{closed}}/optuna"),
        ("cannot open Optuna storage postgresql://sml:***@127.0.0.1:", "Connection refused"), absent=(PASSWORD,),
    ),
    "train: --trials -1": Case(_args("train", "--trials", "-1"), ("--trials must be >= 1", "got -1")),
    "train: tracking server down": Case(
        _with(_env(**SERVER_DOWN), ["train", "--trials", "1"]), ("MLflow tracking server http://127.0.0.1:", "cannot be reached")
    ),
    # --- infer ---------------------------------------------------------------------
    "infer: no champion": Case(_args("infer"), ("model 'titanic' has no champion", "sml train --dataset titanic")),
    "infer: no champion, no tracking database yet": Case(
        _with(_env(MLFLOW_TRACKING_URI="sqlite:///{root}/new/mlflow.db"), ["infer"]),
        ("model 'titanic' has no champion", "sml train --dataset titanic", "/new/mlflow.db does not exist"),
    ),
    "infer: bad --as-of": Case(_args("infer", "--as-of", "2024-13-01"), ("--as-of '2024-13-01' is not a date",), store="trained"),
    "infer: far --as-of": Case(
        _args("infer", "--as-of", "9999-12-31"), ("--as-of 9999-12-31 is outside the supported dates (1970-01-01 to 2261-12-31)",),
        store="trained",
    ),
    "infer: --as-of in the future": Case(
        _args("infer", "--as-of", "2200-01-01"), ("--as-of 2200-01-01 is in the future", "a batch's date cannot be later than"),
        store="trained",
    ),
    "simulate: --end-date in the future": Case(
        _args("simulate", "--days", "2", "--end-date", "2200-01-01"), ("--end-date 2200-01-01 is in the future",),
        store="trained",
    ),
    "simulate: far --end-date": Case(
        _args("simulate", "--days", "2", "--end-date", "9999-12-31"), ("--end-date 9999-12-31 is outside the supported dates",),
        store="trained",
    ),
    "simulate: first day before the supported dates": Case(
        _args("simulate", "--days", "2", "--end-date", "1970-01-01"),
        ("the first simulated day", "1969-12-31 is outside the supported dates (1970-01-01 to 2261-12-31)"),
        store="trained",
    ),
    "infer: champion's files gone": Case(
        _with(_champion_files_gone, ["infer"]), ("champion version 1 of model 'titanic' cannot be loaded",), store="trained"
    ),
    "infer: tracking server down": Case(
        _with(_env(**SERVER_DOWN), ["infer"]), ("MLflow tracking server http://127.0.0.1:", "cannot be reached"), store="trained"
    ),
    # MLflow used to print a traceback (unknown scheme), or retry for minutes (a database
    # that is a folder or not SQLite, one that is down).
    "infer: unknown tracking URI scheme": Case(
        _with(_env(MLFLOW_TRACKING_URI="bogus://x"), ["infer"]), ("MLflow tracking URI bogus://x", "unsupported scheme 'bogus'"),
        store="trained",
    ),
    "infer: tracking database is not SQLite": Case(
        _with(_text_file("notes.txt", "sqlite:///{root}/notes.txt"), ["infer"]), ("notes.txt is not a SQLite database",),
        store="trained",
    ),
    "infer: tracking database is a folder": Case(
        _with(_env(MLFLOW_TRACKING_URI="sqlite:///{root}/store"), ["infer"]), ("store is a folder, expected a SQLite database file",),
        store="trained",
    ),
    # --- simulate ------------------------------------------------------------------
    "infer: --drift-min-effect negative": Case(
        _args("infer", "--drift-min-effect", "-0.1"), ("--drift-min-effect must be between 0 and 100, got -0.1",), store="trained"
    ),
    "infer: --drift-min-effect nan": Case(
        _args("infer", "--drift-min-effect", "nan"), ("--drift-min-effect must be between 0 and 100, got nan",), store="trained"
    ),
    "infer: --drift-share 1": Case(_args("infer", "--drift-share", "1"), ("--drift-share must be in [0, 1), got 1.0",), store="trained"),
    "infer: --drift-p-value 0": Case(_args("infer", "--drift-p-value", "0"), ("--drift-p-value must be in (0, 1), 0 and 1 excluded, got 0.0",), store="trained"),
    "simulate: --replace with --keep-existing": Case(
        _args("simulate", "--days", "2", "--replace", "--keep-existing"), ("--replace and --keep-existing exclude each other",),
        store="trained",
    ),
    "simulate: --days 0": Case(_args("simulate", "--days", "0"), ("--days must be between 1 and 3660, got 0",), store="trained"),
    "simulate: bad --drift": Case(
        _args("simulate", "--days", "3", "--drift", "embarked=Z", "--drift-from", "1"), ("--drift 'embarked=Z'", "'Z' is not one of S, C, Q"),
        store="trained",
    ),
    # The first day's rows used to be written before the model was found missing.
    "simulate: champion's files gone": Case(
        _with(_champion_files_gone, ["simulate", "--days", "2"]), ("champion version 1 of model 'titanic' cannot be loaded",),
        store="trained",
    ),
    # Checked for every day before the first one is written: here the second day exists.
    "simulate: other --rows over existing days": Case(
        _with(_daily_rows("2024-03-02", 10), ["simulate", "--days", "2", "--end-date", "2024-03-02", "--rows", "5"]),
        ("titanic: 2024-03-02 already has rows for --seed 0 that these arguments would change",
         "other days (--end-date, --days) or another --seed, or --replace"),
        store="trained",
    ),
    # --- schedule (each case must fail at once: a good schedule runs forever) -------
    "schedule: cron field out of range": Case(
        _args("schedule", "--daily-cron", "61 * * * *"), ("--daily-cron", "minute field '61' must lie within 0-59")
    ),
    "schedule: cron that is not cron": Case(_args("schedule", "--infer-cron", "every day"), ("--infer-cron", "must have 5 fields")),
    # Used to print "scheduling ..." and fail only when the scheduler looked for the next slot.
    "schedule: cron that never fires": Case(
        _args("schedule", "--retrain-cron", "0 0 31 2 *"), ("--retrain-cron", "cron expression '0 0 31 2 *' never fires")
    ),
    "schedule: unknown dataset": Case(_args("schedule", "--dataset", "wine"), ("unknown dataset 'wine'",)),
    "schedule: --retrain-trials 0": Case(_args("schedule", "--retrain-trials", "0"), ("--retrain-trials must be >= 1, got 0",)),
    "schedule: --retrain-cooldown -1": Case(_args("schedule", "--retrain-on-alert", "--retrain-cooldown", "-1"),
                                            ("--retrain-cooldown must be 0..8784 hours, got -1.0",)),
    "schedule: tracking database below a file": Case(
        _with(_text_file("notes.txt", "sqlite:///{root}/notes.txt/mlflow.db"), ["schedule"]),
        ("MLflow tracking database", "notes.txt is a file, not a folder"),
    ),
    "schedule: tracking database down": Case(
        _with(_env(MLFLOW_TRACKING_URI=f"postgresql://sml:{PASSWORD}@127.0.0.1:{{closed}}/mlflow"), ["schedule"]),
        ("MLflow tracking database postgresql://sml:***@127.0.0.1:", "cannot be reached", "Connection refused"), absent=(PASSWORD,),
    ),
    # --- dashboard (each case must fail at once: a good site serves forever) --------
    # The site used to start and then answer every page with a 500.
    **{
        f"dashboard: --refresh {value}": Case(
            _args("dashboard", "--refresh", value), (f"--refresh must be a number of seconds between 1 and 86400, got {shown}",)
        )
        for value, shown in (("nan", "nan"), ("1e308", "1e+308"), ("-5", "-5"), ("0", "0"))
    },
    "dashboard: spec file missing": Case(_args("dashboard", "--dataset", "wine.yaml"), ("dataset spec file wine.yaml does not exist",)),
    "dashboard: spec file with errors": Case(
        lambda ws: ["dashboard", "--dataset", ws.write("wine.yaml", BAD_SPEC)], ("wine.yaml", "feature 'alcohol' has min 20 greater than max 16")
    ),
    # Dash's own check used to end in an AssertionError traceback.
    "dashboard: --port 70000": Case(_args("dashboard", "--port", "70000"), ("--port must be between 1 and 65535, got 70000",)),
    # Flask used to print five lines (and the site's address on stdout) and exit 1.
    "dashboard: port in use": Case(
        _args("dashboard", "--port", "{busy}"), ("cannot serve the site on 127.0.0.1:", "another program listens there")
    ),
    "dashboard: address of another machine": Case(
        _args("dashboard", "--host", "192.0.2.1", "--port", "{closed}"), ("cannot serve the site on 192.0.2.1:", "Cannot assign requested address")
    ),
    "dashboard: store dir is a file": Case(_args("dashboard", "--port", "{closed}"), ("is a file, expected a directory",), store="file"),
    # --- serve (each case must fail at once: a good server serves forever) ------------
    "serve: no champion": Case(_args("serve", "--port", "{closed}"), ("model 'titanic' has no champion", "sml train --dataset titanic")),
    "simulate: no champion, no tracking database yet": Case(
        _with(_env(MLFLOW_TRACKING_URI="sqlite:///{root}/new/mlflow.db"), ["simulate", "--days", "2"]),
        ("model 'titanic' has no champion", "sml train --dataset titanic", "/new/mlflow.db does not exist"),
    ),
    "serve: no champion, no tracking database yet": Case(
        _with(_env(MLFLOW_TRACKING_URI="sqlite:///{root}/new/mlflow.db"), ["serve", "--port", "{closed}"]),
        ("model 'titanic' has no champion", "sml train --dataset titanic", "/new/mlflow.db does not exist"),
    ),
    "serve: --port 70000": Case(_args("serve", "--port", "70000"), ("--port must be between 1 and 65535, got 70000",)),
    "serve: port in use": Case(_args("serve", "--port", "{busy}"), ("cannot serve the model on 127.0.0.1:", "another program listens there")),
    "serve: --flush-seconds nan": Case(_args("serve", "--flush-seconds", "nan"), ("--flush-seconds must be 0.01..86400, got nan",)),
    "serve: --flush-rows 0": Case(_args("serve", "--flush-rows", "0"), ("--flush-rows must be >= 1, got 0",)),
    # --- main (used to start MLflow project runs, and run features and train, before
    # finding the bad dataset or drift of a later step) -----------------------------
    "main: unknown dataset": Case(_args("main", "--dataset", "wine"), ("unknown dataset 'wine'",)),
    "main: store folder that cannot be made": Case(
        _args("main", "--store-dir", "/proc/sml-nope"), ("feature store folder /proc/sml-nope cannot be created",)),
    "main: bad --drift": Case(_args("main", "--drift", "age+x", "--drift-from", "1"), ("--drift 'age+x'", "'x' is not a number")),
    "main: tracking server down": Case(
        _with(_env(**SERVER_DOWN), ["main"]), ("MLflow tracking server http://127.0.0.1:", "cannot be reached")
    ),
    # --- tracking-server (each case must fail at once: a good server runs forever) ---
    "tracking-server: no backend store": Case(_args("tracking-server", "--port", "{closed}"), ("no backend store",)),
    "tracking-server: not a database URI": Case(
        _args("tracking-server", "--backend-store-uri", "bogus://x", "--port", "{closed}"), ("backend store bogus://x is not a database URI",)
    ),
    # Used to create the SQLite file and ./sml_data/mlartifacts before refusing the port.
    "tracking-server: --port 0": Case(
        _args("tracking-server", "--backend-store-uri", "sqlite:///{root}/server.db", "--port", "0"), ("--port must be between 1 and 65535, got 0",)
    ),
    "tracking-server: database down": Case(
        _args("tracking-server", "--backend-store-uri", f"postgresql://sml:{PASSWORD}@127.0.0.1:{{closed}}/mlflow", "--port", "{closed}"),
        ("cannot connect to the backend store postgresql://sml:***@127.0.0.1:", "Connection refused"), absent=(PASSWORD,),
    ),
    "tracking-server: database below a file": Case(
        lambda ws: ["tracking-server", "--backend-store-uri", f"sqlite:///{ws.root / ws.write('notes.txt', 'x')}/server.db",
                    "--port", str(ws.closed_port)],
        ("notes.txt is a file, not a folder",),
    ),
    # --- leaks (issue 16): no piece of a password, wherever the URI puts it ----------
    "infer: tracking database down, password in the query": Case(
        _with(_env(MLFLOW_TRACKING_URI=f"postgresql://127.0.0.1:{{closed}}/mlflow?user=sml&password={QUERY_PASSWORD}"), ["infer"]),
        ("MLflow tracking database postgresql://127.0.0.1:", "?user=sml&password=*** cannot be reached", "Connection refused"),
        absent=(QUERY_PASSWORD,), seconds=HANG_S,
    ),
    # libpq's message used to quote the password's tail: host name "pw-tail-1618@127.0.0.1".
    "infer: tracking password with an unencoded @": Case(
        _with(_env(MLFLOW_TRACKING_URI=f"postgresql://sml:{HEAD}@{TAIL}@127.0.0.1:{{closed}}/mlflow"), ["infer"]),
        ("MLflow tracking database postgresql://sml:***@127.0.0.1:", "cannot be reached"), absent=(HEAD, TAIL), seconds=HANG_S,
    ),
    "train: storage password in the query": Case(
        _args("train", "--trials", "1", "--storage", f"postgresql://127.0.0.1:{{closed}}/optuna?user=sml&PassWord={QUERY_PASSWORD}"),
        ("cannot open Optuna storage postgresql://127.0.0.1:", "PassWord=***", 'invalid connection option "PassWord"'),
        absent=(QUERY_PASSWORD,),
    ),
    "train: storage password with an unencoded @": Case(
        _args("train", "--trials", "1", "--storage", f"postgresql://sml:{HEAD}@{TAIL}@127.0.0.1:{{closed}}/optuna"),
        ("cannot open Optuna storage postgresql://sml:***@127.0.0.1:",), absent=(HEAD, TAIL),
    ),
    "tracking-server: backend store password in the query": Case(
        _args("tracking-server", "--backend-store-uri", f"postgresql://127.0.0.1:{{closed}}/mlflow?user=sml&sslpassword=x&password={QUERY_PASSWORD}",
              "--port", "{closed}"),
        ("cannot connect to the backend store postgresql://127.0.0.1:", "sslpassword=***&password=***"), absent=(QUERY_PASSWORD,),
    ),
    "features: download URL with a password, server down": Case(
        _args("features", "--source", f"http://sml:{HEAD}@{TAIL}@127.0.0.1:{{closed}}/titanic.csv?token={QUERY_PASSWORD}"),
        ("could not download http://sml:***@127.0.0.1:", "token=***", "Connection refused"), absent=(HEAD, TAIL, QUERY_PASSWORD),
    ),
    # Used to copy /etc/passwd into the download cache (only --source was limited to http).
    "features: spec source.url file://": Case(
        lambda ws: ["features", "--dataset", ws.write("wine.yaml", URL_SPEC)],
        ("wine.yaml", "source.url file:///etc/passwd must be an http:// or https:// URL"),
    ),
    "features: --source file:// URL": Case(
        _args("features", "--source", "file:///etc/passwd"), ("--source file:///etc/passwd: only http:// and https:// URLs are downloaded",)
    ),
    # --- hangs (issue 16): what used to run for minutes, or forever ------------------
    "features: --source a named pipe": Case(
        lambda ws: _source(ws, _fifo(ws, "pipe.csv")), ("pipe.csv is a named pipe (FIFO), expected a regular CSV file",), seconds=HANG_S,
    ),
    "features: --source /dev/zero": Case(
        _args("features", "--source", "/dev/zero"), ("source /dev/zero is a device, expected a regular CSV file",), seconds=HANG_S,
    ),
    "features: download that never ends": Case(
        _download("/endless", SML_MAX_DOWNLOAD_BYTES="3000000"),
        ("could not download", "it has more than 3000000 bytes", "SML_MAX_DOWNLOAD_BYTES"), seconds=HANG_S,
    ),
    "features: download over the size limit": Case(
        _download("/huge"),
        ("it is 1000000000000 bytes, over the limit of 2147483648 bytes that SML_MAX_DOWNLOAD_BYTES sets",), seconds=HANG_S,
    ),
    "features: download slower than its deadline": Case(
        _download("/trickle", SML_DOWNLOAD_DEADLINE_S="1"),
        ("not complete after 1 s, the limit SML_DOWNLOAD_DEADLINE_S sets",), seconds=HANG_S,
    ),
    "features: download redirected to a local file": Case(
        _download("/to-file"), ("Redirection to url 'file:///etc/passwd' is not allowed",),
    ),
    # A few hundred bytes of nested aliases under description: minutes and gigabytes.
    "features: spec file with a YAML alias bomb": Case(
        lambda ws: ["features", "--dataset", ws.write("wine.yaml", ALIAS_BOMB)],
        ("wine.yaml, line 9: YAML alias *a - aliases are not allowed in a spec",), seconds=HANG_S,
    ),
    "features: spec file over 1 MiB": Case(
        lambda ws: ["features", "--dataset", ws.write("wine.yaml", BAD_SPEC + "#" * 1024 * 1024)],
        ("wine.yaml is larger than 1024 KiB",), seconds=HANG_S,
    ),
    "dashboard: spec file nested too deeply": Case(
        lambda ws: ["dashboard", "--dataset", ws.write("wine.toml", "a = " + "[" * 50_000 + "]" * 50_000)],
        ("wine.toml cannot be parsed: values are nested too deeply",),
    ),
    "features: spec file that is a named pipe": Case(
        lambda ws: ["features", "--dataset", _fifo(ws, "wine.yaml")], ("wine.yaml is not a regular file",), seconds=HANG_S,
    ),
    # MLflow used to retry the damaged file for 107 s, then print a traceback.
    "infer: tracking database truncated": Case(
        _with(_truncated_copy, ["infer"]), ("damaged.db is truncated (16384 bytes; its header says", "restore it from a backup"),
        seconds=HANG_S,
    ),
    "train: tracking database truncated": Case(
        _with(_truncated_copy, ["train", "--trials", "1"]), ("damaged.db is truncated",), seconds=HANG_S,
    ),
    # --- ingest (issue 17): live rows, into the good store's titanic group --------------
    "ingest: no --source": Case(_args("ingest", "--dataset", "titanic"), ("--source is required",)),
    "ingest: unknown category": Case(
        _live("cat.csv", 2, "Embarked", "X"), ("cat.csv: column 'Embarked' (feature 'embarked'), row 2 (line 3)", "'X' is not one of S, C, Q"),
    ),
    "ingest: label outside the classes": Case(
        _live("label.csv", 3, "Survived", "2"), ("label.csv: column 'Survived', row 3 (line 4)", "label 2 is not one of 0, 1"),
    ),
    "ingest: a stored key with other features": Case(
        _live("changed.csv", 2, "Fare", "80.0", new_ids=False),
        ("changed.csv: row 2 (line 3): passenger_id 2 is stored with 'Fare' (feature 'fare') 71.2833, this file has 80.0",
         "features of a stored row are history", "nothing written"),
    ),
    "ingest: bad event time": Case(
        _live_passengers("2024-02-30"), ("seen.csv: column 'seen', row 2 (line 3)", "event time '2024-02-30' is not an ISO date"),
    ),
    "ingest: missing event time": Case(_live_passengers(""), ("seen.csv: column 'seen', row 2 (line 3)", "event time is missing")),
    "ingest: event time in the future": Case(
        _live_passengers("2099-01-01T00:00:00"),
        ("seen.csv: column 'seen', row 2 (line 3)", "event time '2099-01-01T00:00:00' is in the future", "after now"),
    ),
    "ingest: --date in the future": Case(
        lambda ws: [*_live("ok.csv")(ws), "--date", "2200-01-01"], ("--date 2200-01-01 is in the future",),
    ),
    "ingest: --date with an event_time_column": Case(
        _live_passengers("2024-02-01", "--date", "2024-02-01"),
        ("--date 2024-02-01: dataset 'passengers' takes each row's event time from its column 'seen'", "leave --date out"),
    ),
    "ingest: bad --date": Case(
        lambda ws: [*_live("ok.csv")(ws), "--date", "2024-02-30"], ("--date '2024-02-30' is not a date",),
    ),
    "ingest: empty file": Case(lambda ws: ["ingest", "--source", ws.write("empty.csv", "")], ("empty.csv", "is empty")),
    "ingest: not a Parquet file": Case(
        lambda ws: ["ingest", "--source", ws.write("rows.parquet", ws.titanic_text)], ("rows.parquet is not a readable Parquet file",),
    ),
    "ingest: missing feature column": Case(
        lambda ws: ["ingest", "--source", ws.titanic_columns("nofare.csv", drop="Fare")], ("nofare.csv: missing column(s) 'Fare'",),
    ),
    "ingest: before features": Case(
        lambda ws: ["ingest", "--dataset", "iris", "--source", ws.write("iris.csv", "iris_id,sepal_length\n1,5\n")],
        ("feature group 'iris' version 1 is empty", "sml features --dataset iris"),
    ),
    # --- spec draft ----------------------------------------------------------------
    "spec draft: label not in the CSV": Case(
        lambda ws: ["spec", "draft", ws.write("t.csv", ws.titanic_text), "--label", "survived"],
        ("--label 'survived': t.csv has no such column (did you mean 'Survived'?)",),
    ),
    "spec draft: label of one class": Case(
        lambda ws: ["spec", "draft", ws.write("one.csv", "x,y\n1,a\n2,a\n3,a\n"), "--label", "y"],
        ("--label 'y': one.csv has 1 class ('a') in that column; a classifier needs at least two",),
    ),
    "spec draft: --output exists": Case(
        lambda ws: ["spec", "draft", ws.write("t.csv", ws.titanic_text), "--label", "Survived", "--output",
                    ws.write("t.yaml", "kept: true\n")],
        ("--output t.yaml exists; remove it or choose another file",),
    ),
    # sml labels (issue 17): the good store's rows are all labelled (passenger 1 did not survive).
    "labels: no --source": Case(_args("labels", "--dataset", "titanic"), ("--source is required",)),
    "labels: missing label column": Case(
        lambda ws: _labels(ws, "PassengerId\n1\n"), ("labels.csv: missing column(s) 'Survived'",)
    ),
    "labels: unknown key": Case(
        lambda ws: _labels(ws, "PassengerId,Survived\n1,0\n99999,1\n"),
        ("column 'PassengerId', row 2 (line 3)", "key 99999 is not in feature group 'titanic'"),
    ),
    "labels: key not a whole number": Case(
        lambda ws: _labels(ws, "PassengerId,Survived\n1.5,0\n"), ("column 'PassengerId', row 1", "key 1.5 is not a whole number"),
    ),
    "labels: label not in classes": Case(
        lambda ws: _labels(ws, "PassengerId,Survived\n1,0\n2,2\n"), ("column 'Survived', row 2 (line 3)", "label 2 is not one of 0, 1"),
    ),
    "labels: empty label": Case(
        lambda ws: _labels(ws, "PassengerId,Survived\n1,0\n2,\n"), ("column 'Survived', row 2 (line 3)", "label is missing"),
    ),
    "labels: duplicate key": Case(
        lambda ws: _labels(ws, "PassengerId,Survived\n3,1\n4,1\n3,1\n"),
        ("column 'PassengerId', row 3 (line 4)", "key 3 appears twice (first in row 1 (line 2))"),
    ),
    "labels: a known label changed": Case(
        lambda ws: _labels(ws, "PassengerId,Survived\n2,1\n1,1\n"),
        ("column 'Survived', row 2 (line 3)", "key 1 already has label 0, not 1", "--overwrite replaces them"),
    ),
    "labels: labelled_at not a date": Case(
        lambda ws: _labels(ws, "PassengerId,Survived,labelled_at\n1,0,yesterday\n"),
        ("column 'labelled_at', row 1 (line 2)", "'yesterday' is not an ISO date or date-time"),
    ),
    "labels: labelled_at before the row": Case(
        lambda ws: _labels(ws, "PassengerId,Survived,labelled_at\n1,0,2023-12-31\n"),
        ("column 'labelled_at', row 1 (line 2)", "is before the row's event time 2024-01-01"),
    ),
    "labels: labelled_at in the future": Case(
        lambda ws: _labels(ws, "PassengerId,Survived,labelled_at\n1,0,2024-02-01\n2,1,2200-01-01\n"),
        ("column 'labelled_at', row 2 (line 3)", "2200-01-01 is in the future", "after now"),
    ),
    "labels: semicolon-separated": Case(
        lambda ws: _labels(ws, "PassengerId;Survived\n1;0\n"),
        ("labels.csv: missing column(s) 'PassengerId', 'Survived'", "semicolon-separated"),
    ),
    "labels: a Parquet file that is not one": Case(
        lambda ws: ["labels", "--dataset", "titanic", "--source", ws.write("labels.parquet", "PassengerId,Survived\n1,0\n")],
        ("labels.parquet", "Parquet"),
    ),
}

SLOW_COMMANDS = ("train", "infer", "simulate", "main")
"""Cases named "<command>: ..." of these commands import scikit-learn and MLflow (4-9 s of CPU)."""

COMMANDS = ("features", "daily", "train", "infer", "simulate", "schedule", "dashboard", "main", "tracking-server", "spec",
            "labels", "ingest", "serve")


@dataclass
class Outcome:
    returncode: int
    stdout: str
    stderr: str
    before: dict[str, dict[str, str]] = field(default_factory=dict)
    after: dict[str, dict[str, str]] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    seconds: float = 0.0


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


def _text(value: str | bytes | None) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else (value or "")


@pytest.fixture(scope="module")
def busy_port(free_port) -> Iterator[int]:  # noqa: ANN001
    """A port of 127.0.0.1 that something listens on for the whole module."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def _fresh_tracking_db(template: Path, root: Path) -> None:
    """A tracking database without runs, its default artifact root inside ``root``."""
    copy_database(template, root / "mlflow.db")
    db = sqlite3.connect(root / "mlflow.db")
    try:
        with db:
            db.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0", (str(root / "mlruns" / "0"),))
    finally:
        db.close()


def workspace_state(root: Path, store: Path, tree_digest) -> dict[str, dict[str, str]]:  # noqa: ANN001
    """What a failed command must leave as it was: the store's files (lock files aside),
    the tracking database's rows, and every other file of the workspace."""
    others = {
        key: value for key, value in tree_digest(root).items()
        if Path(key).parts[0] != "store" and not Path(key).parts[0].startswith("mlflow.db")
    }
    return {
        "store": {key: value for key, value in tree_digest(store).items() if not _is_lock(key)},
        "tracking database": sqlite_content_digest(root / "mlflow.db"),
        "other files": others,
    }


@pytest.fixture(scope="module")
def outcomes(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    good_store: Path,
    mlflow_template_db: Path,
    busy_port: int,
    free_port,  # noqa: ANN001
    data_dir: Path,
    tree_digest,  # noqa: ANN001
    cli_process,  # noqa: ANN001
) -> Outcomes:
    """Runs the selected cases two (or more, on bigger machines) at a time."""
    selected = [
        item.callspec.params["case"]
        for item in request.session.items
        if getattr(item, "originalname", None) == TEST_NAME and hasattr(item, "callspec")
    ]
    closed_port = free_port()
    trained: list[Path] = []

    def trained_world() -> Path:
        # Built (once, a training run) only when a selected case needs it, and in the
        # main thread: fixtures are not thread-safe.
        if not trained:
            trained.append(request.getfixturevalue("trained_template"))
        return trained[0]

    def run(name: str) -> Outcome:
        case = CASES[name]
        root = tmp_path_factory.mktemp("case")
        ws = Workspace(root, data_dir, closed_port, busy_port)
        if case.store == "trained":
            shutil.copytree(trained_world() / "store", root / "store")
            copy_database(trained_world() / "mlflow.db", ws.tracking_db)
        else:
            _fresh_tracking_db(mlflow_template_db, root)
        if case.store == "good":
            shutil.copytree(good_store, root / "store")
        watched = store = root / "store"
        if case.store in ("file", "below-file"):
            watched = root / "plain-file"
            watched.write_text("I am not a directory\n")
            store = watched if case.store == "file" else watched / "store"
        args = case.prepare(ws)
        before = workspace_state(root, watched, tree_digest)
        started = time.monotonic()
        try:
            result = tuple(cli_process(args, cwd=root, store_dir=store, data_dir=data_dir, env=ws.env))
        except subprocess.TimeoutExpired as exc:  # e.g. a server that started: this case fails, not all
            result = (-1, _text(exc.stdout), f"{_text(exc.stderr)}\n(killed after {exc.timeout:.0f} s)")
        seconds = time.monotonic() - started
        return Outcome(*result, before=before, after=workspace_state(root, watched, tree_digest), args=args, seconds=seconds)

    results = Outcomes(run)
    # The slow cases (commands that import scikit-learn and MLflow) first, so that the
    # quick ones fill the end; the trained world is built while the first cases run.
    order = sorted(selected, key=lambda name: name.split(":")[0] not in SLOW_COMMANDS)
    later = [name for name in order if CASES[name].store == "trained"]
    with ThreadPoolExecutor(max_workers=max(2, min(4, os.cpu_count() or 2))) as pool:
        futures = {name: pool.submit(run, name) for name in order if name not in later}
        if later:
            trained_world()
            futures.update({name: pool.submit(run, name) for name in later})
        results.update({name: future.result() for name, future in futures.items()})
    return results


def test_the_good_store_is_readable(good_store: Path) -> None:
    table = LocalFeatureStore(good_store).get_feature_group("titanic", 1).read()
    assert len(table) == 891 + 20


def test_the_passengers_spec_is_good(tmp_path: Path, data_dir: Path) -> None:
    """Each "spec: ..." case is refused for its one change, not for a fault of the spec."""
    from serverless_ml.datasets import load_spec_file
    from serverless_ml.datasets.validation import build_feature_rows

    shutil.copy(data_dir / "titanic.csv", tmp_path / "titanic.csv")
    (tmp_path / "passengers.yaml").write_text(PASSENGERS_SPEC, encoding="utf-8")
    spec = load_spec_file(tmp_path / "passengers.yaml")
    rows = build_feature_rows(load_source(spec), spec, origin="backfill", event_time=spec.backfill_event_time)
    assert len(rows) == 891 and rows["PassengerId"].iloc[0] == "1"


def test_the_catalogue_covers_every_command(outcomes: Outcomes) -> None:
    from serverless_ml.cli import cli

    assert set(COMMANDS) == set(cli.commands), "a command was added or renamed: give it bad-input cases"
    # (Runs any case that was not selected.)
    covered = {outcomes[name].args[0] for name in CASES}
    assert covered == set(COMMANDS), f"commands without a case: {sorted(set(COMMANDS) - covered)}"
    assert len(CASES) >= 34


def test_the_figures_are_recorded(outcomes: Outcomes, reliability) -> None:  # noqa: ANN001
    ran = [name for name in CASES if name in outcomes]
    assert ran, "no case ran"
    reliability.add("bad input", cases=len(ran))


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
    for secret in CASES[case].absent:
        assert secret not in outcome.stdout + outcome.stderr, context
    if CASES[case].seconds is not None:
        assert outcome.seconds < CASES[case].seconds, f"took {outcome.seconds:.1f} s\n{context}"
    assert outcome.before["store"], "the watched store existed before the run"
    assert outcome.before["tracking database"], "the tracking database existed before the run"
    for part, before in outcome.before.items():
        after = outcome.after[part]
        changed = sorted(key for key in before.keys() | after.keys() if before.get(key) != after.get(key))
        assert not changed, f"the {part} changed: {changed}\n{context}"
