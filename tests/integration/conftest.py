"""Integration fixtures: isolate MLflow's process-wide state between tests; a private
PostgreSQL cluster for the tracking-server and shared-study tests."""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCAL_POSTGRES = REPO_ROOT / "scripts" / "local-postgres.sh"


@pytest.fixture(autouse=True)
def _fresh_mlflow_state() -> Iterator[None]:
    """Commands call ``mlflow.set_tracking_uri``; forget it so each test's
    ``MLFLOW_TRACKING_URI`` applies, and leave no active run behind."""
    mlflow.set_tracking_uri(None)
    yield
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
