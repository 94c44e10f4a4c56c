"""Faults of the machine rather than of the input, as one line a person can act on.

A full disk or quota, a file size limit, a read-only or unwritable folder, a SQLite
database that another process holds in a write transaction, or that is damaged: each
reaches a command as some library's exception (``OSError``, ``sqlite3.Error`` wrapped by
SQLAlchemy and MLflow, delta-rs's errors quoting ``(os error 28)``). :func:`describe`
maps any of them, wherever it was raised, to one :class:`SmlError` line naming the file
(or, when the exception does not say which, the store and the database this process
uses) and what to do. The CLI applies it to whatever a command raised, so every command
gets it; the local feature store applies :func:`os_fault` itself, where it knows the
table's path.

Nothing happens on import: the places are remembered when a command opens them
(:func:`remember_place`), and :func:`ignore_file_size_signal` is called by the CLI.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import sqlite3
import traceback
from pathlib import Path

from serverless_ml.errors import SmlError

OS_FAULTS = {
    errno.ENOSPC: "the disk is full: free some space and run it again",
    errno.EDQUOT: "the disk quota is used up: free some space and run it again",
    errno.EFBIG: "the file size limit was reached (ulimit -f): raise it and run it again",
    errno.EROFS: "the file system is read-only: remount it writable or use another folder",
    errno.EACCES: "permission denied: make it writable (and readable) by this user",
    errno.EPERM: "permission denied: make it writable (and readable) by this user",
    errno.EIO: "an input/output error of the disk: check its free space and its health (dmesg)",
}
"""``errno`` -> what happened and what to do."""

SQLITE_FAULTS = (
    ("database is locked", "another process holds a write transaction on it: let it finish (or stop it) and run again"),
    ("database table is locked", "another process holds a write transaction on it: let it finish (or stop it) and run again"),
    ("database disk image is malformed", "it is damaged: restore it from a backup"),
    ("file is not a database", "it is damaged or not a SQLite database: restore it from a backup"),
    ("database or disk is full", OS_FAULTS[errno.ENOSPC]),
    ("attempt to write a readonly database", "it (or its folder) is read-only: make both writable by this user"),
    ("unable to open database file", "it cannot be opened: check that its folder exists and is writable by this user"),
    ("disk i/o error", OS_FAULTS[errno.EIO]),
)
"""A SQLite error message (lower case) -> what to do."""

_OS_ERROR_IN_TEXT = re.compile(r"\(os error (\d+)\)")
_PLACES: dict[str, str] = {}


def remember_place(kind: str, path: str | Path) -> None:
    """Remember where this process keeps ``kind`` ("feature store", "MLflow tracking
    database", "Optuna study database"), to name it when a fault does not say its file."""
    _PLACES[kind] = str(path)


def ignore_file_size_signal() -> None:
    """Writing past ``ulimit -f`` (RLIMIT_FSIZE) sends SIGXFSZ, which kills the process
    with a core dump; ignored, the write raises ``OSError(EFBIG)`` instead, which
    :func:`describe` turns into one line. Child processes inherit the setting."""
    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def os_fault(exc: BaseException) -> tuple[int, str | None] | None:
    """``(errno, filename)`` of an OS fault in :data:`OS_FAULTS` (an ``OSError``, or a
    library error quoting ``(os error N)`` as delta-rs does), else ``None``."""
    if isinstance(exc, OSError) and exc.errno in OS_FAULTS:
        return exc.errno, exc.filename
    found = _OS_ERROR_IN_TEXT.search(str(exc))
    if found and int(found.group(1)) in OS_FAULTS:
        return int(found.group(1)), None
    return None


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc``, its causes and contexts, and what SQLAlchemy wraps (``.orig``)."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        item = todo.pop(0)
        if item is None or any(item is s for s in seen) or len(seen) > 50:
            continue
        seen.append(item)
        orig = getattr(item, "orig", None)
        todo += [orig if isinstance(orig, BaseException) else None, item.__cause__, item.__context__]
    return seen


def _sqlite_fault(exc: BaseException) -> str | None:
    text = str(exc).lower()
    if not isinstance(exc, sqlite3.Error) and "sqlite" not in text and type(exc).__module__.split(".")[0] not in ("sqlalchemy", "mlflow", "optuna"):
        return None
    return next((hint for message, hint in SQLITE_FAULTS if message in text), None)


def _database_of(exc: BaseException) -> tuple[str, str | None]:
    """The SQLite database a fault is about (the Optuna study's when Optuna raised it),
    and its path."""
    frames = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ else []
    for kind in ("Optuna study database", "MLflow tracking database"):
        if kind in _PLACES and (kind != "Optuna study database" or any("/optuna/" in f.filename for f in frames)):
            return f"{kind} {_PLACES[kind]}", _PLACES[kind]
    return "the SQLite database", None


def _disk_full(path: str | None) -> bool:
    """Whether the file system of ``path`` has (almost) no space left for this user:
    SQLite reports a full disk as "disk I/O error" when it cannot grow its shared-memory
    file."""
    try:
        stats = os.statvfs(Path(path).resolve().parent if path else ".")
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize < 1 << 20


def _where(filename: object) -> str:
    """``filename`` with the remembered place it lies in, or the remembered places."""
    if filename:
        path = str(filename)
        for kind, place in _PLACES.items():
            if path == place or path.startswith(place.rstrip("/") + "/"):
                return f"{kind} {place} ({path})" if path != place else f"{kind} {place}"
        return path
    places = [f"{kind} {place}" for kind, place in _PLACES.items()]
    return " or ".join(places) if places else "a file of this command"


def _file_size_limited() -> bool:
    """Whether this process has a file size limit (``ulimit -f``): SQLite reports a write
    past it as "disk I/O error"."""
    try:
        import resource

        return resource.getrlimit(resource.RLIMIT_FSIZE)[0] != resource.RLIM_INFINITY
    except (ImportError, OSError, ValueError):
        return False


_MLFLOW_HTTP = re.compile(r"API request to (?:endpoint )?(\S+?)\.? failed with (?:exception|error code (\d+))")
_HTTP_STATUS_RETRIED = re.compile(r"too many (\d+) error responses")
_SERVER_GONE = re.compile(
    r"server closed the connection|the database system is (?:shutting down|starting up)|connection refused|"
    r"could not connect|terminating connection|connection to server|lost connection|can't connect|"
    r"connection reset|broken pipe|connection timed out|timeout expired", re.IGNORECASE)


def _server_fault(exc: BaseException, item: BaseException) -> SmlError | None:
    """One line for a tracking server or database server that stopped working mid-job (the
    checks before a job find one that is down from the start)."""
    module = type(item).__module__.split(".")[0]
    text = str(item)
    if module == "mlflow":
        found = _MLFLOW_HTTP.search(text)
        if found is None:
            return None
        import urllib.parse

        from serverless_ml.redaction import redact_uri

        parts = urllib.parse.urlsplit(found.group(1))
        if parts.netloc:
            server = redact_uri(f"{parts.scheme}://{parts.netloc}")
        else:  # an endpoint's path only: the server is the process's tracking URI
            import mlflow

            server = redact_uri(mlflow.get_tracking_uri())
        status = found.group(2) or next(iter(_HTTP_STATUS_RETRIED.findall(text)), None)
        if status is not None:
            return SmlError(f"MLflow tracking server {server} answered HTTP {status} to {parts.path or 'a request'}: "
                            "it is not working as an MLflow tracking server; check it (its log) and "
                            "MLFLOW_TRACKING_URI, then run again")
        return SmlError(f"MLflow tracking server {server} stopped answering: check that it is up, then run again")
    if module in ("psycopg2", "psycopg", "pymysql", "MySQLdb", "sqlalchemy") and _SERVER_GONE.search(text):
        frames = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ else []
        kind = "Optuna study database" if any("/optuna/" in f.filename for f in frames) else "MLflow tracking database"
        reason = next((line.strip() for line in text.splitlines() if line.strip()), type(item).__name__)
        reason = re.sub(r"^\(\S+\)\s*", "", reason)[:160]
        return SmlError(f"{kind} server stopped answering ({reason}): check that it is up, then run again")
    return None


def describe(exc: BaseException) -> SmlError | None:
    """One line for an environment fault anywhere in ``exc``'s chain, else ``None`` (a
    bug: the caller keeps the traceback)."""
    chain = _chain(exc)
    for item in chain:
        server = _server_fault(exc, item)
        if server is not None:
            return server
    for item in chain:
        hint = _sqlite_fault(item)
        if hint is not None:
            name, path = _database_of(exc)
            if hint == OS_FAULTS[errno.EIO] and _disk_full(path):
                hint = OS_FAULTS[errno.ENOSPC]
            elif hint == OS_FAULTS[errno.EIO] and _file_size_limited():
                hint = OS_FAULTS[errno.EFBIG]
            return SmlError(f"{name}: {hint}")
    for item in chain:
        fault = os_fault(item)
        if fault is not None:
            code, filename = fault
            return SmlError(f"{_where(filename)}: {OS_FAULTS[code]}")
    return None
