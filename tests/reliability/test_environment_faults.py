"""Faults of the machine, not of the input (issue 16): the store on a full disk, the
tracking database on a full disk, a read-only store, ``mlflow.db`` held by another
process's write transaction, a truncated or damaged ``mlflow.db`` (one whose schema still
reads, so the damage shows only when a table is read), a damaged Delta log entry, a
deleted or truncated parquet file and a broken feature-view JSON.

Each case copies the trained world (``tests/worlds.py``: Titanic backfilled, a champion)
plus a day of synthetic rows, so that ``infer`` has rows to score and ``daily`` rows to
add, breaks one thing and runs one ``sml`` command in a subprocess. It must exit non-zero
within seconds with exactly one ``error:`` line (no traceback) that names the file at
fault and what to do, print nothing on stdout, and leave the store (lock files aside) and
the tracking database's rows as they were.

How the faults are made: a full disk is a small ``tmpfs`` filled up (where ``mount`` is
not allowed: ``RLIMIT_FSIZE`` in the subprocess, so writes fail with EFBIG); a read-only
store is a read-only bind mount (elsewhere: ``chmod -R a-w`` for a user that is not root;
root ignores permissions, then the case is skipped); a locked database is a second
process holding ``BEGIN EXCLUSIVE``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from serverless_ml.datasets import titanic
from serverless_ml.feature_store.local import LocalFeatureStore
from serverless_ml.pipelines.features import add_daily_rows
from test_bad_input_catalogue import sqlite_content_digest
from worlds import copy_database, trained_template  # noqa: F401 - trained_template is a fixture

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

DAY = "2024-02-01"
SECONDS = 30.0
"""A fault is reported within seconds (about 5-13 here: imports, and a 5 s busy timeout
for a locked database); 30 on a busy machine."""
NO_NETWORK_PROXY = "http://127.0.0.1:9"


@dataclass
class Lab:
    """A case's copy of the trained world: ``store/``, ``mlflow.db``; ``cleanups`` undo
    mounts and stop helper processes; ``preexec`` runs in the subprocess before ``sml``."""

    root: Path
    cleanups: list[Callable[[], None]]
    preexec: Callable[[], None] | None = None
    skip: str = ""

    @property
    def store(self) -> Path:
        return self.root / "store"

    @property
    def db(self) -> Path:
        return self.root / "mlflow.db"


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


def _full_folder(lab: Lab, folder: Path) -> None:
    """Make ``folder`` (with what it holds) a full disk: a small tmpfs filled to
    the last block; or, where mounting is not allowed, a file size limit of 1 KiB for the
    command (then every write that grows a file past it fails)."""
    staging = lab.root / f".{folder.name}.staging"
    folder.rename(staging) if folder.exists() else staging.mkdir()
    folder.mkdir()
    if _mount("-t", "tmpfs", "-o", "size=8m", "tmpfs", str(folder)):
        lab.cleanups.append(lambda: subprocess.run(["umount", "-l", str(folder)], check=False))
        for item in staging.iterdir():
            (shutil.copytree if item.is_dir() else shutil.copy2)(item, folder / item.name)
        with contextlib.suppress(OSError), open(folder / "filler", "wb") as fh:
            while True:
                fh.write(b"\0" * 65536)
        with contextlib.suppress(OSError), open(folder / "filler-tail", "wb") as fh:
            while True:
                fh.write(b"\0" * 512)
                fh.flush()
        return
    folder.rmdir()
    staging.rename(folder)
    lab.preexec = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))


def _store_full(lab: Lab) -> None:
    _full_folder(lab, lab.store)


def _database_full(lab: Lab) -> None:
    folder = lab.root / "db"
    folder.mkdir()
    shutil.move(lab.db, folder / "mlflow.db")
    _full_folder(lab, folder)
    lab.db.symlink_to(folder / "mlflow.db")


def _store_read_only(lab: Lab) -> None:
    store = str(lab.store)
    if _mount("--bind", store, store):
        lab.cleanups.append(lambda: subprocess.run(["umount", "-l", store], check=False))
        if _mount("-o", "remount,ro,bind", store):
            return
    if os.geteuid() == 0:
        lab.skip = "neither a read-only bind mount nor permissions (root ignores them) can make the store read-only here"
        return
    subprocess.run(["chmod", "-R", "a-w", store], check=True)
    lab.cleanups.append(lambda: subprocess.run(["chmod", "-R", "u+w", store], check=False))


HOLDER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
print("held", flush=True)
sys.stdin.read()
"""


def _database_locked(lab: Lab) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(lab.db)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)

    def stop() -> None:
        holder.kill()
        holder.wait(10)

    lab.cleanups.append(stop)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"


def _database_truncated(lab: Lab) -> None:
    os.truncate(lab.db, lab.db.stat().st_size // 3)


def _database_damaged(lab: Lab) -> None:
    """Garbage over the pages of the run, experiment and registry tables; the schema (page
    1) still reads, so only a query of those tables finds the damage."""
    db = sqlite3.connect(lab.db)
    try:
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        pages = [page for (page,) in db.execute(
            "SELECT rootpage FROM sqlite_master WHERE name IN ('runs', 'experiments', 'model_versions', "
            "'registered_models', 'registered_model_aliases', 'latest_metrics', 'tags', 'experiment_tags')")]
    finally:
        db.close()
    with open(lab.db, "r+b") as fh:
        for page in pages:
            fh.seek((page - 1) * page_size)
            fh.write(b"\xde\xad\xbe\xef" * (page_size // 4))


def _delta_log_damaged(lab: Lab) -> None:
    entry = sorted((lab.store / "titanic_1" / "_delta_log").glob("*.json"))[-1]
    entry.write_text('{"add": {"path": "part-0', encoding="utf-8")


def _delta_log_emptied(lab: Lab) -> None:
    """Found by a user trial: delta-rs took an empty entry for a commit of nothing, and the
    rows it added vanished without an error (the next infer scored a batch again)."""
    sorted((lab.store / "titanic_1" / "_delta_log").glob("*.json"))[-1].write_bytes(b"")


def _delta_log_not_actions(lab: Lab) -> None:
    sorted((lab.store / "titanic_1" / "_delta_log").glob("*.json"))[-1].write_text('{"foo": 1}\n', encoding="utf-8")


def _parquet_deleted(lab: Lab) -> None:
    for part in sorted((lab.store / "titanic_1").glob("*.parquet"))[:1]:
        part.unlink()


def _parquet_truncated(lab: Lab) -> None:
    for part in sorted((lab.store / "titanic_1").glob("*.parquet"))[:1]:
        os.truncate(part, part.stat().st_size // 2)


def _feature_view_broken(lab: Lab) -> None:
    (lab.store / "_feature_views" / "titanic_training_1.json").write_text('{"name": "titanic_tr', encoding="utf-8")


@dataclass(frozen=True)
class Case:
    make: Callable[[Lab], None]
    args: tuple[str, ...]
    # Every part must be in the line ("{root}" stands for the case's folder)...
    expected: tuple[str, ...]
    # ...and one of these (what to do).
    hints: tuple[str, ...]
    # The database's file bytes are compared instead of its rows (a damaged one cannot be read).
    damaged_db: bool = False


INFER = ("infer", "--dataset", "titanic", "--as-of", DAY)
DAILY = ("daily", "--dataset", "titanic", "--date", "2024-02-02", "--rows", "20", "--seed", "5")
TRAIN = ("train", "--dataset", "titanic", "--trials", "1", "--folds", "3", "--quiet")
FULL = ("disk is full", "file size limit")

CASES = {
    "store on a full disk: daily": Case(_store_full, DAILY, ("feature store {root}/store",), FULL),
    "tracking database on a full disk: infer": Case(_database_full, INFER, ("MLflow tracking database {root}/mlflow.db",),
                                                    FULL + ("input/output error",)),
    "read-only store: daily": Case(_store_read_only, DAILY, ("feature store {root}/store",), ("read-only", "permission denied")),
    "read-only store: infer": Case(_store_read_only, INFER, ("feature store {root}/store",), ("read-only", "permission denied")),
    "locked tracking database: infer": Case(_database_locked, INFER, ("MLflow tracking database {root}/mlflow.db",),
                                            ("another process holds a write transaction",)),
    "truncated tracking database: infer": Case(_database_truncated, INFER, ("{root}/mlflow.db", "truncated"),
                                               ("restore it from a backup",), damaged_db=True),
    "damaged tracking database: infer": Case(_database_damaged, INFER, ("MLflow tracking database {root}/mlflow.db",),
                                             ("restore it from a backup",), damaged_db=True),
    "damaged tracking database: train": Case(_database_damaged, TRAIN, ("MLflow tracking database {root}/mlflow.db",),
                                             ("restore it from a backup",), damaged_db=True),
    "damaged Delta log entry: daily": Case(_delta_log_damaged, DAILY, ("{root}/store/titanic_1/_delta_log/0",),
                                           ("restore the folder",)),
    "damaged Delta log entry: infer": Case(_delta_log_damaged, INFER, ("{root}/store/titanic_1/_delta_log/0",),
                                           ("restore the folder",)),
    "empty Delta log entry: infer": Case(_delta_log_emptied, INFER, ("{root}/store/titanic_1/_delta_log/0", "(empty)"),
                                         ("restore the folder",)),
    "empty Delta log entry: daily": Case(_delta_log_emptied, DAILY, ("{root}/store/titanic_1/_delta_log/0", "(empty)"),
                                         ("restore the folder",)),
    "Delta log entry of no action: train": Case(_delta_log_not_actions, TRAIN,
                                                ("{root}/store/titanic_1/_delta_log/0", "not a Delta action"),
                                                ("restore the folder",)),
    "deleted parquet file: train": Case(_parquet_deleted, TRAIN, ("{root}/store/titanic_1/part-", "is missing"),
                                        ("restore the folder",)),
    "deleted parquet file: daily": Case(_parquet_deleted, DAILY, ("{root}/store/titanic_1/part-", "is missing"),
                                        ("restore the folder",)),
    "truncated parquet file: train": Case(_parquet_truncated, TRAIN, ("{root}/store/titanic_1/part-", "is damaged"),
                                          ("restore the folder",)),
    "broken feature-view JSON: train": Case(_feature_view_broken, TRAIN,
                                            ("{root}/store/_feature_views/titanic_training_1.json", "damaged"),
                                            ("delete it",)),
}


@pytest.fixture(scope="module")
def world_with_rows(trained_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    """The trained world plus a day of synthetic rows (for ``infer`` to score)."""
    folder = tmp_path_factory.mktemp("faults_world")
    shutil.copytree(trained_template / "store", folder / "store")
    copy_database(trained_template / "mlflow.db", folder / "mlflow.db")
    add_daily_rows(titanic.SPEC, LocalFeatureStore(folder / "store"), dt.date.fromisoformat(DAY), 20, seed=0)
    return folder


@pytest.fixture
def lab(world_with_rows: Path, tmp_path: Path) -> Iterator[Lab]:
    root = tmp_path / "lab"
    root.mkdir()
    shutil.copytree(world_with_rows / "store", root / "store")
    copy_database(world_with_rows / "mlflow.db", root / "mlflow.db")
    made = Lab(root, [])
    try:
        yield made
    finally:
        for cleanup in reversed(made.cleanups):
            cleanup()


def _state(lab: Lab, tree_digest: Callable[[Path], dict[str, str]], damaged_db: bool) -> dict[str, dict[str, str]]:
    store = {key: value for key, value in tree_digest(lab.store).items() if not key.endswith(".lock")
             and not key.startswith("_locks")}
    database = tree_digest(lab.db.resolve()) if damaged_db else sqlite_content_digest(lab.db)
    return {"store": store, "tracking database": database}


def _run(lab: Lab, args: tuple[str, ...], data_dir: Path) -> tuple[int, str, str, float]:
    env = dict(os.environ)
    env.update({
        "SML_STORE_DIR": str(lab.store), "SML_DATA_DIR": str(data_dir), "SML_CACHE_DIR": str(lab.root / ".cache"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{lab.db}",
        "http_proxy": NO_NETWORK_PROXY, "https_proxy": NO_NETWORK_PROXY, "HTTP_PROXY": NO_NETWORK_PROXY,
        "HTTPS_PROXY": NO_NETWORK_PROXY, "no_proxy": "localhost,127.0.0.1", "NO_PROXY": "localhost,127.0.0.1",
    })
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "serverless_ml.cli", *args], cwd=lab.root, env=env,
                          capture_output=True, text=True, timeout=180, preexec_fn=lab.preexec)  # noqa: PLW1509
    return proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started


def test_the_world_is_good(world_with_rows: Path) -> None:
    """The cases fail for their fault, not for the world they start from."""
    table = LocalFeatureStore(world_with_rows / "store").get_feature_group("titanic", 1).read()
    assert len(table) == 891 + 20
    assert sqlite_content_digest(world_with_rows / "mlflow.db")


@pytest.mark.parametrize("case", list(CASES))
def test_environment_fault_is_one_line(case: str, lab: Lab, data_dir: Path, tree_digest, reliability) -> None:  # noqa: ANN001
    spec = CASES[case]
    # What the store and the database hold as the fault left them (a damaged database: its
    # bytes); on a full disk, before it was filled (SQLite cannot open a database there).
    full = spec.make in (_store_full, _database_full)
    before = _state(lab, tree_digest, spec.damaged_db) if full else {}
    spec.make(lab)
    if lab.skip:
        pytest.skip(lab.skip)
    before = before or _state(lab, tree_digest, spec.damaged_db)
    code, stdout, stderr, seconds = _run(lab, spec.args, data_dir)
    if full:  # the filler files are the test's
        for folder in (lab.store, lab.root / "db"):
            for name in ("filler", "filler-tail"):
                with contextlib.suppress(FileNotFoundError):
                    (folder / name).unlink()
    after = _state(lab, tree_digest, spec.damaged_db)
    context = f"sml {' '.join(spec.args)} -> {code} in {seconds:.1f} s\nstdout: {stdout!r}\nstderr: {stderr!r}"
    assert code != 0, context
    assert "Traceback" not in stderr, context
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), context
    for part in spec.expected:
        assert part.format(root=lab.root) in lines[0], f"{part!r} not in the message\n{context}"
    assert any(hint in lines[0] for hint in spec.hints), f"none of {spec.hints} in the message\n{context}"
    assert stdout == "", context
    assert seconds < SECONDS, context
    for part, was in before.items():
        changed = sorted(key for key in was.keys() | after[part].keys() if was.get(key) != after[part].get(key))
        assert not changed, f"the {part} changed: {changed}\n{context}"
    reliability.add("environment faults", cases=1)
