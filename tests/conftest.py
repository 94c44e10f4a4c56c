"""Fixtures shared by every test: the course's data directory, a temporary feature store,
the ``sml`` CLI in a subprocess, and temporary MLflow tracking databases.

Nothing here touches the network: CLI subprocesses get a proxy that refuses connections
(localhost excepted), so a source that would be downloaded fails fast instead; and the
developer's MLflow or store settings are cleared for the session.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import NamedTuple

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data"
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
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "SML_STORE_DIR", "SML_FEATURE_STORE",
                     "SML_OPTUNA_STORAGE", "SML_TRACKING_DB_URI"):
            patch.delenv(name, raising=False)
        patch.setenv("SML_CACHE_DIR", str(tmp_path_factory.mktemp("sml_cache")))
        yield


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
    import mlflow

    folder = tmp_path_factory.mktemp("mlflow_template")
    path = folder / "mlflow.db"
    # The default experiment records the artifact root relative to the working directory:
    # keep it inside the template folder rather than the checkout.
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{path}")
        client.search_experiments()
    # Release the SQLAlchemy engine's file handles before tests copy the file.
    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    engine = getattr(store, "engine", None)
    if engine is not None:
        engine.dispose()
    return path


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
