"""MLflow set-up, job runs and logging helpers (trials: trial_logging; experiment, model,
tag and artifact names: registry).

Nothing happens on import: :func:`configure_tracking` sets the tracking URI for the
process (``MLFLOW_TRACKING_URI`` wins over the default SQLite database) and returns a
:class:`Tracking`, the client the jobs are given. It is called once per process, by the
entry (a CLI command, the demo, the site, ``sml schedule``); a job called directly without
one configures it through :func:`tracking_for`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any


from serverless_ml import sqlite_exit
from serverless_ml.errors import SmlError
# redact_uri is also tracking's API (`tracking.redact_uri(uri)`), hence the explicit re-export.
from serverless_ml.redaction import redact_uri as redact_uri
from serverless_ml.redaction import remember, scrub
from serverless_ml.settings import Settings
from serverless_ml.system_faults import remember_place

if TYPE_CHECKING:
    from mlflow import MlflowClient

PARENT_RUN_TAG = "mlflow.parentRunId"
NOTE_TAG = "mlflow.note.content"
RUN_NAME_TAG = "mlflow.runName"
MAX_PARAM_LENGTH = 6000


@dataclass(frozen=True)
class Tracking:
    """The configured tracking store of this process: what the jobs read and write through.

    Build it with :func:`configure_tracking`, which also points MLflow's process-global URI
    (read by the fluent API the jobs use beside this client) at the same store; a
    ``Tracking`` on another URI than the global one would split a job's writes.

    Attributes:
        uri: The tracking URI (as the settings give it; secrets included, never printed:
            :func:`redact_uri`, also in its ``repr``).
    """

    uri: str

    def __repr__(self) -> str:
        return f"Tracking(uri={redact_uri(self.uri)!r})"

    @functools.cached_property
    def client(self) -> MlflowClient:
        """An ``MlflowClient`` bound to :attr:`uri` (not to MLflow's process-global URI),
        made at its first use: making one opens the store, which creates a new SQLite
        database (here with its artifact root next to it, :func:`init_sqlite_database`),
        and a command refused on bad input before that leaves none behind."""
        import mlflow

        init_sqlite_database(self.uri)
        return mlflow.MlflowClient(tracking_uri=self.uri)


def configure_tracking(settings: Settings) -> Tracking:
    """Point MLflow at the settings' tracking URI; create the SQLite folder if needed.

    Call it once per process, at the entry, and pass the result down. It also sets
    MLflow's process-global URI, which MLflow's fluent API (``mlflow.start_run``,
    ``log_model``, ``search_runs``) reads.
    """
    import mlflow

    # Download progress bars would interleave with the commands' own output.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # Against a tracking server MLflow prints a "View run ... at: URL" line per run ended
    # (one per trial) to stdout, between the commands' own lines.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # A tracking server that fails mid-job: MLflow retries each request 7 times with
    # doubling waits, about 4 minutes, before the error (found by a user trial); these
    # 5 retries wait about 31 s, enough for a server restart. The user's settings win.
    for name, value in HTTP_RETRIES.items():
        os.environ.setdefault(name, value)
    uri = settings.tracking_uri
    remember(uri)
    bound_database_retries(uri)
    check_tracking_uri(uri)
    root = artifact_root(uri)
    if root is not None:
        # Named when a fault does not say its file (a model file past `ulimit -f`, found
        # by a user trial: the line named the store and the databases, not these).
        remember_place("MLflow artifacts", root)
    if uri.startswith("sqlite:///"):
        remember_place("MLflow tracking database", uri.removeprefix("sqlite:///").split("?", 1)[0])
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        use_sqlite_wal()
    check_tracking_reachable(uri)
    mlflow.set_tracking_uri(uri)
    return Tracking(uri)


HTTP_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "5", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
"""MLflow's retries of a tracking server's request in this project's processes (unless set)."""


def tracking_for(settings: Settings, given: Tracking | None) -> Tracking:
    """``given``, the tracking an entry configured; else :func:`configure_tracking`
    (a job called directly: a test, a benchmark, a notebook). A job that calls another
    passes its own on, so one process configures tracking once."""
    return given if given is not None else configure_tracking(settings)


def _client(client: MlflowClient | None) -> MlflowClient:
    """``client``, else one on MLflow's process-global URI (the helpers below are also
    called from inside a job's run, whose callers do not all pass theirs yet)."""
    if client is not None:
        return client
    import mlflow

    return mlflow.MlflowClient()


ARTIFACTS_DIRNAME = "mlruns"
"""The folder next to a SQLite tracking database that holds its experiments' artifacts
(MLflow's own default name: ``mlflow.db`` and ``mlruns/`` side by side, as MLflow lays
them out when both are in the working directory)."""


def sqlite_database_path(uri: str) -> Path | None:
    """The file of a ``sqlite:///`` tracking URI, absolute (``None`` for another store or
    an in-memory database)."""
    if not uri.startswith("sqlite:///"):
        return None
    raw = uri.removeprefix("sqlite:///").split("?", 1)[0]
    if not raw or raw == ":memory:":
        return None
    return Path(raw).expanduser().resolve()


CALLER_DIR_ENV = "SML_CALLER_DIR"
"""Set by the MLproject entry points (``entrypoints.run``) to the folder ``mlflow run`` or
``sml main`` was started from: the working directory the user meant, where the entry
point's own process runs in the project's folder."""

DATABASE_SCHEMES = ("postgresql", "mysql", "mssql")
"""Tracking URIs of a database used directly (``postgresql://``, ``mysql+pymysql://``, ...)."""


def is_database_uri(uri: str) -> bool:
    """Whether ``uri`` is a database other than SQLite, used directly (not a server)."""
    return uri.split("://", 1)[0].split("+", 1)[0].lower() in DATABASE_SCHEMES and "://" in uri


def artifact_root(uri: str) -> Path | None:
    """Where this project puts the artifacts of the experiments it creates in the tracking
    store ``uri``: :data:`ARTIFACTS_DIRNAME` next to a SQLite database, whatever the
    working directory; for a database used directly (``postgresql://``), ``./mlruns`` of
    the folder the user ran the command from (:data:`CALLER_DIR_ENV` under ``mlflow run``
    and ``sml main``, else the working directory). ``None`` leaves the choice to MLflow:
    a tracking server (``http(s)://``) stores them in its own (proxied) artifact store.

    Why: MLflow's default is ``./mlruns`` of the process that creates an experiment;
    under ``mlflow run`` that is the code checkout, which a re-clone or ``git clean -X``
    empties while the database still points at the files. (With a database used
    directly, the artifacts are on the machine that created the experiment: use a
    tracking server to share them.)
    """
    database = sqlite_database_path(uri)
    if database is not None:
        return database.parent / ARTIFACTS_DIRNAME
    if is_database_uri(uri):
        return Path(os.environ.get(CALLER_DIR_ENV) or os.getcwd()).resolve() / ARTIFACTS_DIRNAME
    return None


def experiment_artifact_location(name: str, uri: str) -> str | None:
    """The artifact location of a new experiment ``name`` (``<root>/<name>``, see
    :func:`artifact_root`), or ``None`` for the store's own default."""
    root = artifact_root(uri)
    if root is None:
        return None
    folder = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name).strip(".") or "experiment"
    return str(root / folder)


def init_sqlite_database(uri: str) -> None:
    """Create a new SQLite tracking database with its artifact root next to it, so that
    MLflow's ``Default`` experiment (made with the database) keeps its artifacts there too
    rather than in the working directory. Nothing to do for an existing database (its
    experiments keep the locations they were created with) or another store.

    Called just before a job's first MLflow call (which would create the database with
    MLflow's defaults), not by :func:`configure_tracking`: a command refused on bad input
    after configuring tracking must not leave a new database behind."""
    database = sqlite_database_path(uri)
    if database is None or (database.exists() and database.stat().st_size > 0):
        return
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    # The engine is MLflow's cached one for this URI: the client that follows reuses it.
    SqlAlchemyStore(uri, str(artifact_root(uri)))


DATABASE_CONNECT_ATTEMPTS = 4
"""How many times MLflow tries to open a database tracking store in this project's
processes (MLflow's own 10 attempts wait 0.1 * (2**n - 1) s between them: 102 s, plus the
connection attempts, before the error; these 4 wait 1.1 s)."""
DATABASE_CONNECT_TIMEOUT_S = 5


def bound_database_retries(uri: str | None = None) -> None:
    """Make a database tracking store that cannot be opened an error within seconds.

    MLflow retries creating its SQLAlchemy engine (``create_sqlalchemy_engine_with_retry``,
    ``MAX_RETRY_COUNT`` in ``mlflow.store.db.utils``: no environment variable sets it)
    for about 100 s, whatever the cause: a PostgreSQL server that is down, or a truncated
    SQLite file. This process (a command, the site, a helper) tries
    :data:`DATABASE_CONNECT_ATTEMPTS` times; and a PostgreSQL connection attempt gives up
    after :data:`DATABASE_CONNECT_TIMEOUT_S` (libpq's ``PGCONNECT_TIMEOUT``, unless set)
    instead of waiting for TCP's own timeout on a host that does not answer. Nothing to
    do for a ``uri`` that is a tracking server (``http(s)://``): it has its own timeouts.
    """
    if uri is not None and uri.startswith(("http://", "https://")):
        return
    os.environ.setdefault("PGCONNECT_TIMEOUT", str(DATABASE_CONNECT_TIMEOUT_S))
    try:
        from mlflow.store.db import utils
    except ImportError:  # pragma: no cover - MLflow is a dependency
        return
    if isinstance(getattr(utils, "MAX_RETRY_COUNT", None), int):
        utils.MAX_RETRY_COUNT = min(utils.MAX_RETRY_COUNT, DATABASE_CONNECT_ATTEMPTS)


_SQLITE_WAL_REGISTERED = False
SQLITE_BUSY_TIMEOUT_S = 5.0
"""How long a statement waits for another process's write transaction on a SQLite
database (tracking, Optuna) before it fails: writers here hold one for milliseconds, so
waiting longer only delays the message that another process holds the database."""


def use_sqlite_wal() -> None:
    """Open every SQLite database this process uses through SQLAlchemy (the tracking
    database, an Optuna study) in write-ahead-log mode with ``synchronous=NORMAL``.

    Why: in the default rollback-journal mode every commit waits for fsync (about 8 ms
    here), and a reader and a writer block each other, so the daily job, inference and the
    site sharing one tracking database meet "database is locked". In WAL mode readers do
    not block the writer and a commit does not fsync; a crash of the process loses
    nothing, a power cut may lose the last commits but never corrupts the file. WAL mode
    is recorded in the database file, so other processes (``mlflow ui``) follow it.
    Registered once per process; nothing happens on import.
    """
    global _SQLITE_WAL_REGISTERED
    if _SQLITE_WAL_REGISTERED:
        return
    import sqlite3

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    @event.listens_for(Engine, "before_cursor_execute", retval=True)
    def _bounded_busy_timeout(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any,
                              _executemany: bool) -> tuple[str, Any]:
        # MLflow sets a 20 s busy timeout per session: a database held by another
        # process's write transaction cost a job 25-30 s and five logged tracebacks. This
        # process waits SQLITE_BUSY_TIMEOUT_S, then the CLI says in one line which
        # database is locked (serverless_ml/system_faults.py).
        if statement.lstrip().upper().startswith("PRAGMA BUSY_TIMEOUT"):
            return f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)};", parameters
        return statement, parameters

    @event.listens_for(Engine, "connect")
    def _wal(dbapi_connection: Any, _record: Any) -> None:
        if not isinstance(dbapi_connection, sqlite3.Connection):
            return
        file = dbapi_connection.execute("PRAGMA database_list").fetchone()[2]
        if file == "":
            return  # in-memory: WAL does not apply
        sqlite_exit.checkpoint_at_exit(file)  # its -wal file is emptied when this process exits
        dbapi_connection.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        try:
            dbapi_connection.execute("PRAGMA journal_mode=WAL")
            dbapi_connection.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.OperationalError:
            pass  # a read-only connection (the site's) keeps the file's mode

    _SQLITE_WAL_REGISTERED = True


SQLITE_HEADER = b"SQLite format 3\x00"


def check_tracking_uri(uri: str) -> None:
    """Refuse, in one line and before anything is written, a tracking URI that MLflow
    cannot use: an unknown scheme, the retired file store, or a SQLite path whose folder
    is a file or which is a folder or not a SQLite database (MLflow would retry such a
    database for minutes, or stop with a traceback)."""
    try:
        scheme = urllib.parse.urlsplit(uri).scheme.lower()
    except ValueError:
        raise SmlError(f"MLflow tracking URI {redact_uri(uri)} cannot be parsed") from None
    supported = _tracking_schemes()
    if supported and scheme not in supported and scheme.split("+", 1)[0] not in supported:
        raise SmlError(
            f"MLflow tracking URI {redact_uri(uri)} has an unsupported scheme '{scheme}' "
            f"(supported: {', '.join(sorted(s for s in supported if s))}); e.g. sqlite:///mlflow.db or http://host:5000"
        )
    if scheme in ("", "file"):
        from mlflow.environment_variables import MLFLOW_ALLOW_FILE_STORE

        if not MLFLOW_ALLOW_FILE_STORE.get():
            raise SmlError(
                f"MLflow tracking URI {redact_uri(uri)} is a file store, which MLflow no longer supports; "
                "use a database, e.g. sqlite:///mlflow.db (or set MLFLOW_ALLOW_FILE_STORE=true)"
            )
    if scheme.split("+", 1)[0] in DATABASE_SCHEMES:
        _check_database_reachable(uri, scheme.split("+", 1)[0])
    if scheme == "sqlite" and uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///").split("?", 1)[0])
        if not str(path) or str(path) == ":memory:":
            return
        for parent in path.parents:
            if parent.exists():
                if not parent.is_dir():
                    raise SmlError(f"MLflow tracking database {path}: {parent} is a file, not a folder")
                break
        if path.is_dir():
            raise SmlError(f"MLflow tracking database {path} is a folder, expected a SQLite database file")
        if path.is_file():
            check_sqlite_database(path, "MLflow tracking database")


def check_sqlite_database(path: Path, what: str) -> None:
    """Refuse, in one line, an existing SQLite file that is not a database or whose schema
    cannot be read: damaged, or truncated (then the message says so: the file is shorter
    than its header says). Reads only, through a read-only SQLite connection; a database
    that is merely busy (another process writes) passes.

    The file itself is opened outside SQLite only once SQLite has found it unreadable:
    closing any descriptor of a file drops every POSIX lock the process holds on it, the
    SQLite connections' too, and another process closing its last connection then takes
    itself for the last one and deletes the write-ahead log under this process's feet
    (found by a user trial: the site checks the database every 30 s, then read a deleted
    WAL, showed stale runs and finally called a sound database damaged). SQLite's own
    connections in one process share their locks and keep them across a close.
    """
    import sqlite3

    if not os.access(path, os.R_OK):
        raise SmlError(f"{what} {path} cannot be read (Permission denied)")
    try:
        db = sqlite3.connect(f"file:{urllib.parse.quote(str(path.resolve()))}?mode=ro", uri=True, timeout=2)
    except sqlite3.Error:
        return  # cannot even open it read-only: MLflow says why
    try:
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return
    except sqlite3.OperationalError:
        return  # busy or locked by a writer, or read-only trouble: not damage
    except sqlite3.DatabaseError as exc:
        error = exc
    finally:
        db.close()
    try:
        with path.open("rb") as fh:
            header = fh.read(100)
    except OSError as exc:
        raise SmlError(f"{what} {path} cannot be read ({exc.strerror})") from None
    if header[: len(SQLITE_HEADER)] != SQLITE_HEADER:
        raise SmlError(f"{what} {path} is not a SQLite database")
    expected = _sqlite_header_size(header)
    size = path.stat().st_size
    state = (f"truncated ({size} bytes; its header says {expected})" if expected and size < expected
             else f"damaged ({error})")
    raise SmlError(f"{what} {path} is {state}: restore it from a backup") from None


def check_sqlite_writable(uri: str) -> None:
    """Refuse, in one line, a SQLite tracking database another process holds a write
    transaction on (after waiting :data:`SQLITE_BUSY_TIMEOUT_S`, as a write would): for a
    job that writes elsewhere first and the tracking store after, so that it stops before
    its first write (found by a user trial: `sml labels` stored the labels, then failed on
    the locked database; reads pass under another's write, in WAL mode). Takes the write
    lock and gives it back at once: nothing is written. Nothing to do for another store."""
    import sqlite3

    from serverless_ml.system_faults import describe

    path = sqlite_database_path(uri)
    if path is None or not path.is_file():
        return
    try:
        db = sqlite3.connect(f"file:{urllib.parse.quote(str(path))}?mode=rw", uri=True, timeout=SQLITE_BUSY_TIMEOUT_S,
                             isolation_level=None)
    except sqlite3.Error:
        return  # what cannot be opened, the job's own first call names
    try:
        db.execute("BEGIN IMMEDIATE")
        db.execute("ROLLBACK")
    except sqlite3.OperationalError as exc:
        fault = describe(exc)  # the line any command gives for it (system_faults)
        if fault is not None:
            raise fault from None
    finally:
        db.close()


def _sqlite_header_size(header: bytes) -> int | None:
    """The database size a SQLite header records (``None`` when it does not: old
    writers leave it stale, which the two change counters reveal)."""
    if len(header) < 100 or header[24:28] != header[92:96]:
        return None
    page_size = int.from_bytes(header[16:18], "big")
    return (65536 if page_size == 1 else page_size) * int.from_bytes(header[28:32], "big") or None


def _check_database_reachable(uri: str, dialect: str, timeout_s: int = 5) -> None:
    """Connect once to a database tracking store (MLflow itself retries for minutes)."""
    connect_args = {"connect_timeout": timeout_s} if dialect in ("postgresql", "mysql") else {}
    probe_database(
        uri, connect_args,
        invalid=f"MLflow tracking URI {redact_uri(uri)} is not usable",
        unreachable=f"MLflow tracking database {redact_uri(uri)} cannot be reached",
    )


def probe_database(
    uri: str, connect_args: Mapping[str, Any], invalid: str, unreachable: str, missing_module: str | None = None
) -> None:
    """Open and close one SQLAlchemy connection to ``uri``; a failure is one SmlError line:
    ``invalid`` (the URL cannot make an engine), ``missing_module`` (its driver is not
    installed; ``{module}`` names it; default: as ``invalid``) or ``unreachable``, each
    followed by the driver's first line with the password masked."""
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(uri, connect_args=dict(connect_args))
    except ModuleNotFoundError as exc:
        if missing_module is None:
            raise SmlError(f"{invalid}: {first_line(exc, uri)}") from None
        raise SmlError(missing_module.format(module=exc.name)) from None
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy raises several kinds for a bad URL
        raise SmlError(f"{invalid}: {first_line(exc, uri)}") from None
    try:
        with engine.connect():
            pass
    except Exception as exc:  # noqa: BLE001 - drivers raise their own kinds
        raise SmlError(f"{unreachable}: {first_line(exc, uri)}") from None
    finally:
        engine.dispose()


def first_line(exc: BaseException, uri: str) -> str:
    """A driver's message, first line, without any piece of the URI's secrets (a driver
    quotes the URL it could not parse, or the "host" it could not resolve, which holds
    the password's tail when the password has an unencoded ``@``)."""
    text = scrub(str(getattr(exc, "orig", None) or exc).strip(), uri)
    line = text.splitlines()[0] if text else type(exc).__name__
    return line[:300]


def _tracking_schemes() -> set[str]:
    """The URI schemes MLflow's tracking store registry knows (plugins included); empty
    when this MLflow does not expose its registry (then nothing is refused here)."""
    try:
        from mlflow.tracking._tracking_service import utils

        return set(utils._tracking_store_registry._registry)
    except Exception:  # noqa: BLE001 - a private registry: absent in another MLflow version
        return set()


class TrackingServerUnreachable(SmlError):
    """An HTTP tracking server did not answer; :attr:`reason` says how (``HTTP 503``,
    ``[Errno 111] Connection refused``), so a caller can word its own message."""

    def __init__(self, uri: str, reason: object) -> None:
        self.reason = str(reason)
        super().__init__(f"MLflow tracking server {redact_uri(uri)} cannot be reached ({self.reason})")


def check_tracking_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, in one line, when an HTTP tracking server does not answer.

    MLflow's own client retries for minutes before it gives up.

    Raises:
        TrackingServerUnreachable: the server refused, timed out or answered 5xx.
    """
    if not uri.startswith(("http://", "https://")):
        return
    parts = urllib.parse.urlsplit(uri)
    # Credentials in the URI are not part of the host name: send them as basic auth.
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    url = urllib.parse.urlunsplit(parts._replace(netloc=netloc)).rstrip("/") + "/health"
    request = urllib.request.Request(url)
    if parts.username is not None:
        import base64

        token = base64.b64encode(f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}".encode()).decode()
        request.add_unredirected_header("Authorization", f"Basic {token}")  # not to a host a redirect names
    try:
        with urllib.request.urlopen(request, timeout=timeout_s):  # noqa: S310 (http(s) only)
            return
    except urllib.error.HTTPError as exc:
        if exc.code < 500:
            return
        reason: Any = f"HTTP {exc.code}"
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
    raise TrackingServerUnreachable(uri, reason)


@contextlib.contextmanager
def job_run(experiment_id: str, run_name: str, client: MlflowClient | None = None) -> Iterator[Any]:
    """Start a job's own run in ``experiment_id``, ended FAILED if the job raises.

    Under ``mlflow run`` the project run's id is in ``MLFLOW_RUN_ID`` and MLflow's fluent
    API would log into that run (whose entry-point params clash with the job's). The job
    keeps its own run in its own experiment instead, and the two are linked by tags.
    """
    import mlflow

    project_run_id = os.environ.pop("MLFLOW_RUN_ID", None)
    try:
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=owner_tags()) as run:
            if project_run_id:
                mlflow.set_tag(PROJECT_RUN_TAG, project_run_id)
                _client(client).set_tag(project_run_id, "sml.job_run_id", run.info.run_id)
            yield run
    finally:
        if project_run_id is not None:
            os.environ["MLFLOW_RUN_ID"] = project_run_id


PROJECT_RUN_TAG = "sml.project_run_id"
"""Tag of a run a job logs under ``mlflow run``: the project run it belongs to."""


def project_run_tags() -> dict[str, str]:
    """:data:`PROJECT_RUN_TAG` for a run created with the client (not :func:`job_run`) under
    ``mlflow run`` (whose run id MLflow gives the command in ``MLFLOW_RUN_ID``); none outside."""
    project_run_id = os.environ.get("MLFLOW_RUN_ID")
    return {PROJECT_RUN_TAG: project_run_id} if project_run_id else {}


ERROR_TAG = "sml.error"
"""Tag of an MLflow project run (``mlflow run``, a step of ``sml main``) whose command
failed, and of the ``main`` run a step failed in: the ``error:`` line the user saw (MLflow
itself records only the FAILED status)."""
ERROR_TAG_TIMEOUT_S = 10.0


def record_project_run_error(message: str, run_id: str | None = None, timeout_s: float = ERROR_TAG_TIMEOUT_S) -> bool:
    """Tag the project run this process runs in (``MLFLOW_RUN_ID``; or ``run_id``) with
    ``message`` as :data:`ERROR_TAG`, on the tracking URI MLflow gave the command. Best
    effort and bounded: the failure may be the tracking store itself (down, locked), so
    a server is asked once without retries and the write gets ``timeout_s``; a tag that
    cannot be written is left out (the ``error:`` line has been printed), and a reason the
    run already has is kept. Whether it was written."""
    import threading

    run_id = run_id or os.environ.get("MLFLOW_RUN_ID")
    if not run_id:
        return False
    import mlflow

    uri = mlflow.get_tracking_uri()
    # Read by MLflow at each request: this process is ending, the job's calls are over.
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(int(timeout_s))
    written: list[bool] = []

    def write() -> None:
        try:
            client = mlflow.MlflowClient(tracking_uri=uri)
            # A reason already there stays (`sml main` tags its run with the failed step's).
            if ERROR_TAG not in client.get_run(run_id).data.tags:
                client.set_tag(run_id, ERROR_TAG, message[:MAX_PARAM_LENGTH])
                written.append(True)
        except Exception:  # noqa: BLE001 - the store may be what failed: the message was printed
            pass

    thread = threading.Thread(target=write, name="sml-error-tag", daemon=True)
    thread.start()
    thread.join(timeout_s)
    return bool(written)


HOST_TAG = "sml.host"
PID_TAG = "sml.pid"
RECOVERED_TAG = "recovered"
"""Tag of a run (and user attribute of an Optuna trial) that a later job ended because its
process had died: who ended it, and how."""


def owner_tags() -> dict[str, str]:
    """Tags naming the process that owns a run while it is RUNNING (host and pid), so a
    later job can tell a run whose process was killed from one still at work."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}


def process_alive(pid: int, run_start_ms: int) -> bool:
    """Whether ``pid`` is a live process that started before the run did (a pid reused by a
    younger process does not count, nor a zombie: a killed process nobody reaped yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # Linux: the process's start time, in clock ticks after boot
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        if fields[0] == "Z":
            return False
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime"))
        started_s = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
        return started_s <= run_start_ms / 1000 + 1
    except (OSError, ValueError, IndexError, StopIteration):
        return True


_process_alive = process_alive  # the name the unit tests know


def close_orphaned_runs(experiment_id: str, client: MlflowClient | None = None) -> list[str]:
    """End as FAILED the runs of ``experiment_id`` left RUNNING by a killed process of this
    host (``sml.host`` is this machine and ``sml.pid`` is no longer alive). Runs of other
    machines (shared studies) and of live processes are left alone. Returns their ids."""
    client = _client(client)
    host = socket.gethostname()
    closed = []
    running = client.search_runs(
        [experiment_id], filter_string=f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{host}'", max_results=1000,
    )
    for run in running:
        pid = run.data.tags.get(PID_TAG, "")
        if not pid.isdigit() or process_alive(int(pid), run.info.start_time):
            continue
        client.set_tag(run.info.run_id, RECOVERED_TAG, f"closed as FAILED by process {os.getpid()}: its process {pid} had died")
        client.set_terminated(run.info.run_id, status="FAILED")
        closed.append(run.info.run_id)
    return closed


def get_or_create_experiment(name: str) -> str:
    """The id of experiment ``name``, created if needed with its artifacts next to a SQLite
    tracking database (:func:`experiment_artifact_location`), whatever the working
    directory. An existing experiment keeps the location it was created with."""
    import mlflow

    init_sqlite_database(mlflow.get_tracking_uri())
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            raise SmlError(f"MLflow experiment '{name}' is deleted; restore it or delete it permanently")
        return experiment.experiment_id
    from mlflow.exceptions import MlflowException

    try:
        return mlflow.create_experiment(name, artifact_location=experiment_artifact_location(name, mlflow.get_tracking_uri()))
    except MlflowException:
        # Workers started together (on several machines) race to create it: one wins.
        experiment = mlflow.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:MAX_PARAM_LENGTH]


def log_params_batch(run_id: str, params: Mapping[str, Any], client: MlflowClient | None = None) -> None:
    """Log many params in one call."""
    from mlflow.entities import Param

    _client(client).log_batch(run_id, params=[Param(k, param_value(v)) for k, v in params.items()])


def log_metrics_batch(run_id: str, metrics: Mapping[str, float], step: int = 0,
                      client: MlflowClient | None = None) -> None:
    """Log many metrics in one call."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    _client(client).log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])


def upload_artifacts(run_info: Any, local_dir: str | Path, artifact_path: str | None = None) -> None:
    """Upload a folder to a run's artifact location (``run_info``: an
    ``mlflow.entities.RunInfo``), without the extra ``get_run`` that
    ``MlflowClient.log_artifacts`` makes to find that location."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    get_artifact_repository(run_info.artifact_uri).log_artifacts(str(local_dir), artifact_path)


def log_figure(figure: Any, artifact_file: str, run_id: str | None = None, client: MlflowClient | None = None) -> None:
    """Log a matplotlib figure to ``run_id`` (default: the active run) and free it."""
    import matplotlib.pyplot as plt
    import mlflow

    try:
        if run_id is None:
            mlflow.log_figure(figure, artifact_file)
        else:
            _client(client).log_figure(run_id, figure, artifact_file)
    finally:
        plt.close(figure)


# --- lineage: dataset inputs ---------------------------------------------------------------

DATASET_CONTEXT_TAG = "mlflow.data.context"
"""MLflow's input tag for what a run did with a dataset (``training``, ``testing``, ...)."""
FEATURE_GROUP_SOURCE_TYPE = "feature_group"
"""The ``source_type`` of the datasets this project logs: a feature group (the source JSON
names the store, the group and version, and the data version read)."""
DIGEST_LENGTH = 16
"""Hex digits of a logged dataset digest (MLflow keeps at most 36)."""
_MLFLOW_TYPES = {"bigint": "long", "double": "double", "string": "string", "boolean": "boolean", "timestamp": "datetime"}


def rows_digest(frame: Any) -> str:
    """A digest of a frame's rows, values and column names (the same rows in the same
    order give the same digest in any process; pandas' row hashing, not CSV text)."""
    import hashlib

    import pandas as pd

    hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    digest = hashlib.sha256("\x1f".join(map(str, frame.columns)).encode())
    digest.update(hashed.tobytes())
    return digest.hexdigest()[:DIGEST_LENGTH]


def feature_group_source(
    store: Any, group: Any, data_version: int | None, *, view_name: str | None = None, view_version: int | None = None
) -> dict[str, Any]:
    """Where a logged dataset comes from: the store's backend, the feature group and its
    version, the data version read (a Delta table version for the local store, the
    latest commit's time in ms on Hopsworks) and, for the local store, the table's path
    (``deltalake.DeltaTable(path, version=...)`` reads the same rows again)."""
    backend = type(store).__name__.removesuffix("FeatureStore").lower() or type(store).__name__
    source: dict[str, Any] = {"feature_store": backend, "feature_group": group.name, "feature_group_version": group.version}
    if view_name is not None:
        source.update(feature_view=view_name, feature_view_version=view_version)
    source["data_version"] = data_version
    if data_version is not None:
        sequential = getattr(getattr(store, "capabilities", None), "sequential_versions", True)
        source["data_version_is"] = "Delta table version" if sequential else "time of the latest commit (ms since 1970)"
    path = getattr(group, "table_path", None)
    if path is not None:
        source["path"] = str(path)
    return source


def dataset_input(
    name: str,
    source: Mapping[str, Any],
    rows: int,
    columns: list[tuple[str, str, bool]],
    digest: str,
    context: str,
    tags: Mapping[str, str] | None = None,
) -> Any:
    """An ``mlflow.entities.DatasetInput`` of ``rows`` rows with ``columns`` (name,
    feature-store type, required) from ``source`` (:func:`feature_group_source`), used as
    ``context``. Built from the spec's types, not inferred from the data, so a batch of a
    million rows costs nothing to describe."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    colspec = [{"type": _MLFLOW_TYPES.get(kind, "string"), "name": column, "required": required}
               for column, kind, required in columns]
    dataset = Dataset(
        name=name, digest=digest, source_type=FEATURE_GROUP_SOURCE_TYPE,
        source=json.dumps(dict(source), default=str),
        schema=json.dumps({"mlflow_colspec": colspec}),
        profile=json.dumps({"num_rows": rows, "num_elements": rows * len(columns)}),
    )
    input_tags = [InputTag(DATASET_CONTEXT_TAG, context), *(InputTag(k, str(v)) for k, v in (tags or {}).items())]
    return DatasetInput(dataset, tags=input_tags)


def spec_columns(spec: Any, columns: list[str]) -> list[tuple[str, str, bool]]:
    """``columns`` of a dataset spec's feature group as (name, type, required) triples."""
    types = {feature.name: feature.type for feature in spec.store_schema()}
    nullable = {feature.name for feature in spec.features if feature.nullable}
    return [(column, types.get(column, "string"), column not in nullable) for column in columns]


def logged_model_id(version: Any) -> str | None:
    """The logged model behind a registered model version (``mlflow.entities.model_registry.
    ModelVersion``): its ``model_id``, or the id its ``models:/m-...`` source names (the SQL
    registry of MLflow 3.17 leaves ``model_id`` empty); ``None`` for a version registered
    from a run's artifact path (``runs:/...``, as MLflow 2 did)."""
    if getattr(version, "model_id", None):
        return str(version.model_id)
    source = str(getattr(version, "source", "") or "")
    candidate = source.removeprefix("models:/")
    if source.startswith("models:/") and candidate.startswith("m-") and "/" not in candidate and "@" not in candidate:
        return candidate
    return None


def log_inputs(run_id: str, datasets: list[Any], model_ids: list[str] | None = None,
               client: MlflowClient | None = None) -> None:
    """Log dataset inputs (:func:`dataset_input`) and the logged models a run used, in one call."""
    from mlflow.entities import LoggedModelInput
    from mlflow.exceptions import MlflowException

    models = [LoggedModelInput(model_id) for model_id in (model_ids or []) if model_id]
    client = _client(client)
    for attempt in range(_LOG_INPUTS_ATTEMPTS):
        try:
            client.log_inputs(run_id, datasets=datasets or None, models=models or None)
            return
        except MlflowException as exc:
            # Two runs logging the same new dataset at once (the workers of a shared study
            # log the same rows): both insert it and one loses the race on the store's
            # unique key. The call is one transaction, so nothing of it was written; on
            # the next attempt the dataset exists and is only linked to this run.
            text = str(exc).lower()
            if attempt + 1 == _LOG_INPUTS_ATTEMPTS or not ("unique constraint" in text or "duplicate key" in text):
                raise
            time.sleep(0.2 * (attempt + 1))


_LOG_INPUTS_ATTEMPTS = 3
