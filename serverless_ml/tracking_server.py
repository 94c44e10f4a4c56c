"""``sml tracking-server``: an MLflow tracking server on a database backend store.

The server is MLflow's own ``mlflow server`` with proxied artifacts
(``--serve-artifacts --artifacts-destination``): clients send and fetch artifacts through
the server over HTTP, so they need neither the server's disk nor cloud credentials.

The backend store URI usually holds a password. It is handed to ``mlflow server`` in
the ``MLFLOW_BACKEND_STORE_URI`` environment variable, which MLflow reads, rather than
on the command line (where ``ps`` shows it to every user of the machine), and only its
redacted form is ever printed.
"""

from __future__ import annotations

import os
import sys
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from serverless_ml import defaults
from serverless_ml.errors import SmlError
from serverless_ml.settings import DEFAULT_HOME
from serverless_ml.redaction import remember
from serverless_ml.tracking import DATABASE_SCHEMES as DIRECT_DATABASE_SCHEMES
from serverless_ml.tracking import check_sqlite_database, probe_database, redact_uri

ENV_BACKEND_STORE_URI = "SML_TRACKING_DB_URI"
"""Where ``sml tracking-server`` reads the backend store URI when no option gives it."""

MLFLOW_BACKEND_STORE_ENV = "MLFLOW_BACKEND_STORE_URI"
"""The variable ``mlflow server`` reads its ``--backend-store-uri`` from."""

DEFAULT_ARTIFACTS_DIRNAME = "mlartifacts"

DATABASE_SCHEMES = (*DIRECT_DATABASE_SCHEMES, "sqlite")
CONNECT_TIMEOUT_S = 5


@dataclass(frozen=True)
class ServerCommand:
    """The ``mlflow server`` process to exec: its argv, its environment and a summary."""

    argv: list[str]
    env: dict[str, str]
    url: str
    summary: str


def default_artifacts_destination() -> Path:
    """``./sml_data/mlartifacts``, next to the default feature store."""
    return (DEFAULT_HOME / DEFAULT_ARTIFACTS_DIRNAME).resolve()


def _scheme(uri: str) -> str:
    return urllib.parse.urlsplit(uri).scheme.split("+", 1)[0].lower()


def resolve_artifacts_destination(destination: str | None) -> str:
    """A local folder becomes absolute and is created; a URI (``s3://...``) stays as it is."""
    if not destination:
        path = default_artifacts_destination()
    elif "://" in destination and not destination.startswith("file://"):
        return destination
    else:
        path = Path(destination.removeprefix("file://")).expanduser().resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SmlError(f"--artifacts-destination {path}: cannot create the folder ({exc.strerror})") from None
    return str(path)


@dataclass(frozen=True)
class ServerOptions:
    """Where ``sml tracking-server`` listens and with how many workers (defaults in
    :mod:`serverless_ml.defaults`); a bad --port or --workers fails at construction, in one
    line, before anything is checked or created."""

    host: str = defaults.TRACKING_SERVER_HOST
    port: int = defaults.TRACKING_SERVER_PORT
    workers: int = defaults.TRACKING_SERVER_WORKERS

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise SmlError(f"--port must be between 1 and 65535, got {self.port}")
        if self.workers < 1:
            raise SmlError(f"--workers must be >= 1, got {self.workers}")


def check_backend_store(uri: str) -> None:
    """Fail in one line, before the server starts, when the database cannot be opened.

    ``mlflow server`` would otherwise print a traceback per worker and keep restarting.
    """
    if not uri:
        raise SmlError(f"no backend store: pass --backend-store-uri or set {ENV_BACKEND_STORE_URI} "
                       "(e.g. postgresql://user:password@127.0.0.1:5432/mlflow)")
    remember(uri)  # no log line or error of this process shows its password
    scheme = _scheme(uri)
    if scheme not in DATABASE_SCHEMES:
        raise SmlError(f"backend store {redact_uri(uri)} is not a database URI "
                       f"(expected one of {', '.join(s + '://' for s in DATABASE_SCHEMES)})")
    if scheme == "sqlite":
        _check_sqlite_path(uri)
        if not _sqlite_path(uri).exists():
            return  # `mlflow server` creates it; connecting now would create it even if the command fails
        check_sqlite_database(_sqlite_path(uri), f"backend store {redact_uri(uri)}:")
    connect_args = {"connect_timeout": CONNECT_TIMEOUT_S} if scheme == "postgresql" else {}
    probe_database(
        uri, connect_args,
        invalid=f"backend store {redact_uri(uri)} is not a valid URI",
        unreachable=f"cannot connect to the backend store {redact_uri(uri)}",
        missing_module=f"backend store {redact_uri(uri)} needs the Python module '{{module}}' "
                       "(pip install 'serverless-ml[postgres]')",
    )


def _sqlite_path(uri: str) -> Path:
    return Path(uri.split("://", 1)[1].removeprefix("/").split("?", 1)[0]).expanduser()


def _check_sqlite_path(uri: str) -> None:
    """A SQLite backend store must be a file in an existing folder."""
    path = _sqlite_path(uri)
    if not str(path) or str(path) in (".", ":memory:"):
        raise SmlError(f"backend store {redact_uri(uri)} names no database file (e.g. sqlite:////srv/mlflow/mlflow.db)")
    if path.is_dir():
        raise SmlError(f"backend store {redact_uri(uri)}: {path} is a folder, expected a SQLite database file")
    for folder in path.resolve().parents:
        if folder.exists():
            if not folder.is_dir():
                raise SmlError(f"backend store {redact_uri(uri)}: {folder} is a file, not a folder")
            break
    if not path.resolve().parent.is_dir():
        raise SmlError(f"backend store {redact_uri(uri)}: folder {path.resolve().parent} does not exist")


def server_command(
    backend_store_uri: str,
    artifacts_destination: str,
    host: str = defaults.TRACKING_SERVER_HOST,
    port: int = defaults.TRACKING_SERVER_PORT,
    workers: int = defaults.TRACKING_SERVER_WORKERS,
    extra_args: list[str] | None = None,
    base_env: dict[str, str] | None = None,
) -> ServerCommand:
    """The ``mlflow server`` invocation: proxied artifacts, the backend URI in the environment."""
    if not 1 <= port <= 65535:
        raise SmlError(f"--port must be between 1 and 65535, got {port}")
    if workers < 1:
        raise SmlError(f"--workers must be >= 1, got {workers}")
    env = dict(os.environ if base_env is None else base_env)
    env[MLFLOW_BACKEND_STORE_ENV] = backend_store_uri
    env.pop(ENV_BACKEND_STORE_URI, None)  # one copy of the secret is enough
    # MLflow's job runner (GenAI scorers, trace archival) is not used here: no extra processes.
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    argv = [
        sys.executable, "-m", "mlflow", "server",
        "--serve-artifacts", "--artifacts-destination", artifacts_destination,
        "--host", host, "--port", str(port), "--workers", str(workers),
        *(extra_args or []),
    ]
    url = f"http://{host}:{port}"
    where = "served through the server: clients need no access to it"
    summary = "\n".join([
        f"MLflow tracking server on {url}",
        f"  backend store: {redact_uri(backend_store_uri)}",
        f"  artifacts: {artifacts_destination} ({where})",
        f"  clients: export MLFLOW_TRACKING_URI={url}",
    ])
    return ServerCommand(argv=argv, env=env, url=url, summary=summary)


def exec_server(command: ServerCommand) -> None:
    """Replace this process by ``mlflow server`` (signals then reach MLflow directly)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(command.argv[0], command.argv, command.env)
