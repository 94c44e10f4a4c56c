"""A tracking database that is down or damaged is an error within seconds (issue 16,
hangs): MLflow's own retries (about 100 s) are bounded in this project's processes, and a
truncated or damaged SQLite file is named before MLflow opens it."""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

from serverless_ml import tracking
from serverless_ml.errors import SmlError

pytestmark = pytest.mark.unit


def _database(path: Path, rows: int = 2000) -> Path:
    db = sqlite3.connect(path)
    with db:
        db.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, name TEXT)")
        db.executemany("INSERT INTO runs (name) VALUES (?)", [(f"run {i} " + "x" * 200,) for i in range(rows)])
    db.close()
    return path


def _truncate(path: Path, size: int) -> Path:
    with path.open("r+b") as fh:
        fh.truncate(size)
    return path


def test_a_truncated_database_is_named_with_its_sizes(tmp_path: Path) -> None:
    path = _database(tmp_path / "mlflow.db")
    full = path.stat().st_size
    _truncate(path, full // 2)
    with pytest.raises(SmlError) as info:
        tracking.check_tracking_uri(f"sqlite:///{path}")
    assert str(info.value) == (
        f"MLflow tracking database {path} is truncated ({full // 2} bytes; its header says {full}): restore it from a backup"
    )


def test_a_damaged_database_is_named(tmp_path: Path) -> None:
    path = _database(tmp_path / "mlflow.db")
    with path.open("r+b") as fh:  # the schema's page, after the file header
        fh.seek(100)
        fh.write(b"\xff" * 400)
    with pytest.raises(SmlError, match=r"mlflow.db is damaged \(.*\): restore it from a backup"):
        tracking.check_tracking_uri(f"sqlite:///{path}")


def test_a_good_empty_or_busy_database_passes(tmp_path: Path) -> None:
    tracking.check_tracking_uri(f"sqlite:///{_database(tmp_path / 'good.db')}")
    (tmp_path / "empty.db").write_bytes(b"")
    tracking.check_tracking_uri(f"sqlite:///{tmp_path / 'empty.db'}")
    busy = _database(tmp_path / "busy.db")
    writer = sqlite3.connect(busy, isolation_level=None)
    writer.execute("BEGIN EXCLUSIVE")  # another process's write transaction
    try:
        started = time.monotonic()
        tracking.check_tracking_uri(f"sqlite:///{busy}")  # busy is not damaged
        assert time.monotonic() - started < 5
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_mlflow_gives_up_on_a_damaged_database_within_seconds(tmp_path: Path, mlflow_template_db: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the bound, ``create_sqlalchemy_engine_with_retry`` sleeps 102 s before it
    raises (10 attempts)."""
    from mlflow.store.db import utils

    monkeypatch.setattr(utils, "MAX_RETRY_COUNT", utils.MAX_RETRY_COUNT)  # restored afterwards
    monkeypatch.setenv("PGCONNECT_TIMEOUT", "7")
    tracking.bound_database_retries()
    assert utils.MAX_RETRY_COUNT == tracking.DATABASE_CONNECT_ATTEMPTS
    assert os.environ["PGCONNECT_TIMEOUT"] == "7"  # a value of the user's is kept
    path = tmp_path / "mlflow.db"
    shutil.copy(mlflow_template_db, path)
    _truncate(path, 4096)
    tracking.use_sqlite_wal()  # as every process of the project: connecting reads the file
    started = time.monotonic()
    with pytest.raises(Exception, match=r"malformed|not a database"):
        utils.create_sqlalchemy_engine_with_retry(f"sqlite:///{path}")
    assert time.monotonic() - started < 10


def test_checking_a_database_this_process_has_open_keeps_its_locks_and_the_wal(tmp_path: Path) -> None:
    """Found by a user trial: the site checks its database every 30 s. Reading the file's
    header with a plain open() and close() dropped the process's SQLite locks on it, so
    another process closing its last connection deleted the write-ahead log under the
    site's open connection (stale runs, then a sound database called damaged)."""
    import subprocess
    import sys

    path = tmp_path / "mlflow.db"
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        with db:
            db.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY)")
            db.execute("INSERT INTO runs VALUES (1)")
        db.execute("SELECT count(*) FROM runs").fetchone()
        tracking.check_sqlite_database(path, "MLflow tracking database")
        # Another process writes and closes its only connection: it must see this one.
        subprocess.run([sys.executable, "-c", "import sqlite3, sys; d = sqlite3.connect(sys.argv[1]); "
                        "d.execute('INSERT INTO runs VALUES (2)'); d.commit(); d.close()", str(path)], check=True)
        assert (tmp_path / "mlflow.db-wal").exists(), "the other process took itself for the last and removed the WAL"
        assert db.execute("SELECT count(*) FROM runs").fetchone() == (2,)
    finally:
        db.close()


def test_a_file_that_is_not_a_database_and_an_empty_one(tmp_path: Path) -> None:
    text = tmp_path / "notes.db"
    text.write_text("these are notes, not a database\n" * 10)
    with pytest.raises(SmlError, match=r"is not a SQLite database$"):
        tracking.check_sqlite_database(text, "MLflow tracking database")
    empty = tmp_path / "empty.db"
    empty.touch()
    tracking.check_sqlite_database(empty, "MLflow tracking database")  # SQLite makes it a new database
