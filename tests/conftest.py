"""Fixtures shared by every test: the course's data directory, a temporary feature store,
the ``sml`` CLI in a subprocess, temporary MLflow tracking databases, MLflow's
process-wide state reset between tests, free ports and a private PostgreSQL cluster.

The trained Titanic world (store + tracking database with a champion) is in
``tests/worlds.py``: ``from worlds import trained_template, world``.

Nothing here touches the network: CLI subprocesses get a proxy that refuses connections
(localhost excepted), so a source that would be downloaded fails fast instead; and the
developer's MLflow or store settings are cleared for the session.
"""

from __future__ import annotations

import glob
import hashlib
import os
import secrets
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pytest

from serverless_ml.testing import create_tracking_database

# The reliability suite's record: hooks that must run in every pytest process, the
# pytest-xdist controller included (which loads this conftest, not tests/*/conftest.py).
pytest_plugins = ["reliability_report"]

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data"
LOCAL_POSTGRES = REPO_ROOT / "scripts" / "local-postgres.sh"
CLI_TIMEOUT_S = 180
# Port 9 (discard) on localhost: nothing listens, so any download fails at once.
_NO_NETWORK_PROXY = "http://127.0.0.1:9"


class CliResult(NamedTuple):
    """What a CLI run returned; unpacks as ``(returncode, stdout, stderr)``."""

    returncode: int
    stdout: str
    stderr: str


def resolve_data_dir() -> Path:
    """``$SML_DATA_DIR``, else ``<repo>/../shared/data``; must hold iris.csv and titanic.csv."""
    raw = os.environ.get("SML_DATA_DIR") or str(DEFAULT_DATA_DIR)
    path = Path(raw).expanduser().resolve()
    missing = [name for name in ("iris.csv", "titanic.csv") if not (path / name).is_file()]
    if missing:
        pytest.fail(
            f"the tests read the course's CSVs from SML_DATA_DIR (default {DEFAULT_DATA_DIR}); "
            f"{path} lacks {', '.join(missing)}. Set SML_DATA_DIR to the folder holding them.",
            pytrace=False,
        )
    return path


def tree_digest(root: Path) -> dict[str, str]:
    """Every file and directory under ``root`` (or ``root`` itself, when it is a file)
    mapped to a hash of its bytes: compare two digests to prove nothing was written."""
    if not root.exists():
        return {}
    if root.is_file():
        return {".": hashlib.sha256(root.read_bytes()).hexdigest()}
    digest = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        digest[key] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return digest


# --- pytest-xdist ------------------------------------------------------------------------

# `make test` runs on every CPU (pyproject's addopts: `-n auto --dist loadfile`). Each test
# file is one unit of work, so a module's fixtures are set up once per run, and so is a
# session fixture that only one unit uses. The expensive session fixtures below are used
# by several files: those files form one unit together (the paths name them), so that the
# fixture is built once per run, not once per worker. A test that uses one from elsewhere
# still passes (its worker builds its own copy), at the cost of a warning at collection.
# (xdist's own `--dist loadgroup` cannot do this with pytest 9.2: it renames test ids
# through an attribute that pytest no longer reads.)
XDIST_UNITS: dict[str, tuple[str, ...]] = {
    # Trains three models and scores ten batches (tests/app/conftest.py).
    "site_world": ("tests/app/",),
    # A PostgreSQL server.
    "postgres_cluster": ("tests/integration/test_tracking_server.py", "tests/integration/test_shared_study.py",
                         "tests/integration/test_database_tracking.py",
                         "tests/reliability/test_secrets.py::test_no_secret_shows_anywhere"),
}


def xdist_unit(nodeid: str) -> str:
    """The unit of work of a test under pytest-xdist: its :data:`XDIST_UNITS` entry, else its file."""
    for fixture, paths in XDIST_UNITS.items():
        if nodeid.startswith(paths):
            return fixture
    return nodeid.split("::", 1)[0]


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """(xdist controller) ``--dist loadfile``, with the files of :data:`XDIST_UNITS` merged."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SharedFixtureScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_unit(nodeid)

    return SharedFixtureScheduling(config, log)  # type: ignore[arg-type]


# The units that take longest, longest first (measured with --durations on 2 cores). Under
# pytest-xdist they are handed out first (addopts: --no-loadscope-reorder keeps this order
# instead of xdist's most-tests-first), so no worker starts a four-minute file while the
# other has nothing left; the many short files fill in at the end. Order only: a unit
# missing here still runs, after these.
SLOW_FIRST: tuple[str, ...] = (
    "tests/reliability/test_bad_input_catalogue.py",
    "tests/integration/test_main.py",
    "tests/integration/test_mlproject.py",
    "site_world",
    "tests/reliability/test_secrets.py",
    "postgres_cluster",
    "tests/reliability/test_idempotency.py",
    "tests/reliability/test_concurrency.py",
    "tests/reliability/test_crash_consistency.py",
    "tests/integration/test_train_rare_class.py",
    "tests/integration/test_simulate.py",
    "tests/reliability/test_site_hardening.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Put the :data:`SLOW_FIRST` units first (a stable sort: each file keeps its order), and
    warn about a test that uses a fixture of :data:`XDIST_UNITS` from outside its unit. (A
    test using two is in one of them; its worker builds the other again.)"""
    rank = {unit: position for position, unit in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(xdist_unit(item.nodeid), len(SLOW_FIRST)))
    for item in items:
        used = [fixture for fixture in XDIST_UNITS if fixture in getattr(item, "fixturenames", ())]
        if used and xdist_unit(item.nodeid) not in used:
            config.issue_config_time_warning(pytest.PytestWarning(
                f"{item.nodeid} uses {' and '.join(used)} but is in no such XDIST_UNITS entry (tests/conftest.py): "
                "under pytest-xdist its worker builds another copy"), stacklevel=2)


@pytest.fixture(name="tree_digest", scope="session")
def tree_digest_fixture() -> Callable[[Path], dict[str, str]]:
    """:func:`tree_digest`, for tests (test modules do not import conftest)."""
    return tree_digest


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The folder with the course's ``iris.csv`` and ``titanic.csv`` (never copied)."""
    return resolve_data_dir()


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    """A feature store directory that does not exist yet."""
    return tmp_path / "store"


@pytest.fixture(scope="session", autouse=True)
def _isolated_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Settings from the developer's shell must not reach the tests: no tracking server,
    no store or cache in the home directory. (``tracking_uri`` sets a test's own URI.)"""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "SML_STORE_DIR", "SML_STATE_DIR", "SML_FEATURE_STORE",
                     "SML_OPTUNA_STORAGE", "SML_TRACKING_DB_URI"):
            patch.delenv(name, raising=False)
        patch.setenv("SML_CACHE_DIR", str(tmp_path_factory.mktemp("sml_cache")))
        yield


@pytest.fixture(autouse=True)
def _forget_remembered_secrets() -> Iterator[None]:
    """The secrets a test's commands remembered (``redaction.remember``: pieces of a URL's
    password, some as short as ``x``) are forgotten after it: another test's message that
    happens to contain such a piece would otherwise come out masked."""
    from serverless_ml import redaction

    saved = list(redaction._KNOWN)
    yield
    redaction._KNOWN[:] = saved


def cli_env(store_dir: Path | None, data_dir: Path, cache_dir: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a CLI subprocess: the test's store, data and tracking URI
    (when the test set one), no network."""
    env = dict(os.environ)
    if store_dir is not None:
        env["SML_STORE_DIR"] = str(store_dir)
    env["SML_DATA_DIR"] = str(data_dir)
    env["SML_CACHE_DIR"] = str(cache_dir)
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        env[name] = _NO_NETWORK_PROXY
    for name in ("no_proxy", "NO_PROXY"):
        env[name] = "localhost,127.0.0.1"
    env.update(extra or {})
    return env


def run_cli_process(
    args: list[str],
    *,
    cwd: Path,
    store_dir: Path | None,
    data_dir: Path,
    env: Mapping[str, str] | None = None,
) -> CliResult:
    """``python -m serverless_ml.cli ARGS`` in a subprocess."""
    proc = subprocess.run(
        [sys.executable, "-m", "serverless_ml.cli", *args],
        cwd=cwd,
        env=cli_env(store_dir, data_dir, cwd / ".cache", env),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


RunCli = Callable[..., CliResult]


@pytest.fixture(scope="session")
def cli_process() -> Callable[..., CliResult]:
    """:func:`run_cli_process` (any ``cwd`` and store), for module-scoped fixtures."""
    return run_cli_process


@pytest.fixture
def run_cli(tmp_path: Path, store_dir: Path, data_dir: Path) -> RunCli:
    """Run the ``sml`` CLI in a subprocess with ``cwd=tmp_path``, ``SML_STORE_DIR`` set to
    ``store_dir`` (or the ``store_dir=`` keyword) and ``SML_DATA_DIR`` to ``data_dir``.

    Returns ``(returncode, stdout, stderr)`` (a :class:`CliResult`). Extra environment
    variables go in ``env=``.
    """

    def run(*args: str, store_dir: Path | None = store_dir, env: Mapping[str, str] | None = None) -> CliResult:
        return run_cli_process(list(args), cwd=tmp_path, store_dir=store_dir, data_dir=data_dir, env=env)

    return run


@pytest.fixture(scope="session")
def mlflow_template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated MLflow SQLite tracking database per session (migrating costs seconds).

    Do not write to it: use :func:`tracking_uri`, which hands each test its own copy.
    """
    return create_tracking_database(tmp_path_factory.mktemp("mlflow_template") / "mlflow.db")


@pytest.fixture
def tracking_uri(mlflow_template_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh tracking database for this test: a copy of the session's template.

    Sets ``MLFLOW_TRACKING_URI`` to it and changes the working directory to ``tmp_path``,
    so MLflow's default artifact root (``./mlruns``) lands there too; the default
    experiment's artifact location is pointed at ``tmp_path/mlruns/0``.
    """
    path = tmp_path / "mlflow.db"
    shutil.copyfile(mlflow_template_db, path)
    db = sqlite3.connect(path)
    try:
        with db:
            db.execute(
                "UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
                (str(tmp_path / "mlruns" / "0"),),
            )
    finally:
        db.close()
    uri = f"sqlite:///{path}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    return uri


# --- MLflow process state ------------------------------------------------------------


@pytest.fixture(autouse=True)
def _fresh_mlflow_state() -> Iterator[None]:
    """Commands call ``mlflow.set_tracking_uri``; forget it so each test's
    ``MLFLOW_TRACKING_URI`` applies, and leave no active run behind. (Tests that never
    import MLflow do not pay for importing it here.)"""
    if "mlflow" in sys.modules:
        sys.modules["mlflow"].set_tracking_uri(None)
    yield
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None:
        while mlflow.active_run() is not None:
            mlflow.end_run(status="KILLED")
        mlflow.set_tracking_uri(None)


# --- PostgreSQL ------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(name="free_port", scope="session")
def free_port_fixture() -> Callable[[], int]:
    """:func:`free_port`, for tests (test modules do not import conftest)."""
    return free_port


@dataclass(frozen=True)
class PostgresCluster:
    """A running cluster started by ``scripts/local-postgres.sh``.

    Its login ``sml`` has the password :attr:`password`, a marker that tests look for in
    logs, outputs and run params, where it must never appear.
    """

    folder: Path
    port: int
    password: str

    def uri(self, database: str) -> str:
        return f"postgresql://sml:{self.password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, database: str) -> str:
        """Create ``database`` (if new) through the script; return its URI."""
        _local_postgres("start", str(self.folder), str(self.port), database, password=self.password)
        return self.uri(database)


def _local_postgres(*args: str, password: str) -> str:
    proc = subprocess.run(
        [str(LOCAL_POSTGRES), *args], env={**os.environ, "SML_PG_PASSWORD": password},
        capture_output=True, text=True, timeout=120,
    )
    if proc.returncode != 0:
        pytest.fail(f"scripts/local-postgres.sh {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}", pytrace=False)
    return proc.stdout


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """PostgreSQL on a temporary data directory and a free port of 127.0.0.1, for the
    session; stopped and deleted at the end.

    ``make test`` installs Debian's postgresql first when it is missing
    (scripts/install-system-deps.sh). The folder is made under the system's temporary
    directory, not pytest's: as root the cluster runs as the unprivileged ``postgres``
    user, who cannot enter pytest's private folders.
    """
    if not (shutil.which("pg_ctl") or glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")):
        pytest.fail("PostgreSQL is not installed: run `make system-deps` (`make test` does)", pytrace=False)
    folder = Path(tempfile.mkdtemp(prefix="sml-postgres-"))
    cluster = PostgresCluster(folder=folder, port=free_port(), password=f"pw-marker-{secrets.token_hex(8)}")
    try:
        _local_postgres("start", str(folder), str(cluster.port), "postgres", password=cluster.password)
        yield cluster
    finally:
        if (folder / "data" / "PG_VERSION").exists():
            _local_postgres("stop", str(folder), password=cluster.password)
        shutil.rmtree(folder, ignore_errors=True)


# --- Chromium --------------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    # Every host but this machine fails to resolve: nothing can leave it. (Playwright's
    # request routing would do the same but turns the HTTP cache off: every page would
    # fetch plotly.js again.)
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1 , EXCLUDE localhost",
]


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """Debian's headless Chromium through Playwright, one per session for every suite
    (Playwright's sync API cannot start a second instance while one runs in the thread)."""
    from playwright.sync_api import sync_playwright

    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run `make system-deps` (Debian's chromium package)", pytrace=False)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
