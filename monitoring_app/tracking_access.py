"""The site's way into the tracking store: a quick reachability probe, MLflow's client,
the run reader that suits the store, and failures turned into one line.

MLflow's own client retries for minutes before it gives up; the site probes first (an
HTTP server's ``/health``, a database's connection) so that a page says within seconds
that the store is down, and every read goes through :meth:`TrackingAccess.errors`, which
turns a connection failure into :class:`TrackingUnavailable` naming the redacted URI.
"""

from __future__ import annotations

import contextlib
import logging
import os
import urllib.parse
from collections.abc import Iterator
from typing import Any

from monitoring_app.cache import SiteCache
from monitoring_app.run_readers import RestRunReader, RunReader, SqlRunReader, is_sql_uri, sqlite_path
from serverless_ml import tracking
from serverless_ml.errors import NotFoundError, SmlError

log = logging.getLogger(__name__)

DATABASE_PROBE_TIMEOUT_S = 2
DATABASE_PROBE_TTL_S = 30.0
"""A database tracking store that answered is not probed again for this long (a failed
read in between says so anyway)."""
_REACHABLE = ("reachable",)


class TrackingUnavailable(SmlError):
    """The tracking store cannot be read (server down, database unreachable)."""


class TrackingAccess:
    """One tracking store, opened lazily: its client, its run reader, its probe.

    Args:
        uri: The tracking URI (may hold a password: only :attr:`label` is shown).
        cache: Where the probe's answer is kept for a short while.
    """

    def __init__(self, uri: str, cache: SiteCache) -> None:
        self.uri = uri
        self.cache = cache
        self._client: Any = None
        self._reader: RunReader | None = None

    @property
    def label(self) -> str:
        """The tracking URI, safe to show (no password)."""
        return tracking.redact_uri(self.uri)

    @contextlib.contextmanager
    def errors(self) -> Iterator[None]:
        """Connection failures become one line naming the (redacted) tracking URI."""
        try:
            yield
        except SmlError:
            raise
        except Exception as exc:
            if is_connection_error(exc):
                reason = tracking.first_line(exc, self.uri)[:200]
                raise TrackingUnavailable(f"the MLflow tracking store {self.label} cannot be read ({reason})") from None
            raise

    def check(self) -> None:
        """Fail in one line, within seconds, when the tracking store cannot be reached: an
        HTTP server that does not answer, a database server that refuses or does not
        answer, a SQLite file that is damaged (an answer is cached briefly). MLflow's own
        client would retry for minutes, and a page would time out."""
        if is_sql_uri(self.uri):
            self._check_database()
            return
        if not self.uri.startswith(("http://", "https://")):
            return

        def probe() -> bool:
            # Without the user and password: the server's /health needs no login.
            parts = urllib.parse.urlsplit(self.uri)
            netloc = parts.hostname or ""
            if parts.port:
                netloc += f":{parts.port}"
            tracking.check_tracking_reachable(urllib.parse.urlunsplit(parts._replace(netloc=netloc)), timeout_s=2.0)
            return True

        try:
            self.cache.cached(_REACHABLE, probe)
        except tracking.TrackingServerUnreachable as exc:
            # The probe's URI has no user and password; the message names the site's own.
            raise TrackingUnavailable(f"MLflow tracking server {self.label} cannot be reached ({exc.reason})") from None

    def _check_database(self) -> None:
        uri = self.uri

        def probe() -> bool:
            path = sqlite_path(uri)
            if path is not None:
                if path.is_file():
                    tracking.check_sqlite_database(path, "MLflow tracking database")
                return True
            dialect = urllib.parse.urlsplit(uri).scheme.split("+")[0]
            tracking.probe_database(
                uri, {"connect_timeout": DATABASE_PROBE_TIMEOUT_S} if dialect in ("postgresql", "mysql") else {},
                invalid=f"MLflow tracking URI {self.label} is not usable",
                unreachable=f"MLflow tracking database {self.label} is unreachable",
            )
            return True

        try:
            self.cache.cached(_REACHABLE, probe, ttl_s=max(self.cache.ttl_s, DATABASE_PROBE_TTL_S))
        except SmlError as exc:
            if isinstance(exc, TrackingUnavailable) or sqlite_path(uri) is not None:
                raise  # a damaged SQLite file: its own message says what to do
            raise TrackingUnavailable(str(exc)) from None

    @property
    def client(self) -> Any:
        """MLflow's client of the store (created on first use, after the probe)."""
        if self._client is None:
            from mlflow import MlflowClient

            path = sqlite_path(self.uri)
            if path is not None and not path.is_file():
                # MlflowClient would create (and migrate) an empty database here.
                raise NotFoundError(f"no MLflow tracking database at {path} yet: run `sml train` first")
            self.check()
            with self.errors():
                self._client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        return self._client

    @property
    def reader(self) -> RunReader:
        """The store's run reader: SQL for a database-backed store, REST for a server."""
        if self._reader is None:
            self.check()
            if is_sql_uri(self.uri):
                with self.errors():
                    self._reader = SqlRunReader(self.uri)
            else:
                self._reader = RestRunReader(self.client)
        return self._reader

    def warm_up(self) -> None:
        """Import MLflow and open the tracking store, so the first visitor does not wait
        for it. Problems are logged: the pages report them when they are visited."""
        try:
            self.check()
            _ = self.client, self.reader
        except Exception as exc:  # noqa: BLE001 - the site starts anyway
            log.warning("tracking store not ready at start-up: %s", tracking.first_line(exc, self.uri))

    def close(self) -> None:
        """Let go of the reader's connections."""
        if self._reader is not None:
            self._reader.close()


def is_connection_error(exc: BaseException) -> bool:
    """Whether ``exc`` says the store could not be reached (rather than a bad request)."""
    names = {type(e).__name__ for e in _chain(exc)}
    if names & {"OperationalError", "ConnectionError", "ConnectTimeout", "ReadTimeout", "MaxRetryError",
                "NewConnectionError", "InterfaceError", "TimeoutError", "ConnectionRefusedError"}:
        return True
    # MLflow's REST client says so only in its message (an MlflowException like any other).
    text = str(exc)
    return "API request to" in text and ("failed" in text or "Max retries" in text)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 10:
        yield current
        current = current.__cause__ or current.__context__
        seen += 1


def rest_client_timeouts() -> dict[str, str]:
    """MLflow's HTTP client retries for minutes before it gives up: the site would hang.
    These environment values (applied with ``setdefault``) make a failed call return in
    seconds, so a page can say the server is down."""
    return {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def apply_rest_client_timeouts() -> None:
    """Apply :func:`rest_client_timeouts` to this process (values already set are kept)."""
    for name, value in rest_client_timeouts().items():
        os.environ.setdefault(name, value)
