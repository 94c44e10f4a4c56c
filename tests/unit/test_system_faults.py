"""The one mapping of faults of the machine to one line (serverless_ml/system_faults.py)."""

from __future__ import annotations

import errno
import signal
import sqlite3

import pytest

from serverless_ml import system_faults
from serverless_ml.system_faults import describe


@pytest.fixture(autouse=True)
def _places(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(system_faults, "_PLACES", {"feature store": "/data/store", "MLflow tracking database": "/data/mlflow.db"})


def _raised(exc: BaseException, cause: BaseException | None = None) -> BaseException:
    try:
        try:
            if cause is not None:
                raise cause
        except BaseException as inner:  # noqa: BLE001
            raise exc from inner
        raise exc
    except BaseException as caught:  # noqa: BLE001
        return caught


@pytest.mark.parametrize(("code", "words"), [
    (errno.ENOSPC, "disk is full"), (errno.EDQUOT, "quota"), (errno.EFBIG, "file size limit"),
    (errno.EROFS, "read-only"), (errno.EACCES, "permission denied"),
])
def test_os_errors_name_the_file_and_its_place(code: int, words: str) -> None:
    fault = describe(OSError(code, "x", "/data/store/titanic_1/part-0.parquet"))
    assert fault is not None
    assert str(fault).startswith("feature store /data/store (/data/store/titanic_1/part-0.parquet): ")
    assert words in str(fault)


def test_an_os_error_without_a_file_names_the_places() -> None:
    fault = describe(OSError(errno.ENOSPC, "No space left on device"))
    assert fault is not None and "/data/store" in str(fault) and "/data/mlflow.db" in str(fault)


def test_a_library_error_quoting_an_os_error() -> None:
    fault = describe(RuntimeError("Generic LocalFileSystem error: No space left on device (os error 28)"))
    assert fault is not None and "disk is full" in str(fault)


@pytest.mark.parametrize(("message", "words"), [
    ("database is locked", "another process holds a write transaction"),
    ("database disk image is malformed", "restore it from a backup"),
    ("file is not a database", "restore it from a backup"),
    ("database or disk is full", "disk is full"),
])
def test_sqlite_errors_wrapped_by_other_libraries(message: str, words: str) -> None:
    class WrapperError(Exception):
        pass

    fault = describe(_raised(WrapperError("(sqlite3.OperationalError) ..."), sqlite3.OperationalError(message)))
    assert fault is not None
    assert str(fault).startswith("MLflow tracking database /data/mlflow.db: ") and words in str(fault)


def test_a_bug_keeps_its_traceback() -> None:
    assert describe(ValueError("something else")) is None
    assert describe(OSError(errno.ENOENT, "No such file", "/x")) is None
    assert describe(_raised(KeyError("k"), sqlite3.IntegrityError("UNIQUE constraint failed"))) is None


def test_the_file_size_signal_is_ignored() -> None:
    previous = signal.getsignal(signal.SIGXFSZ)
    try:
        system_faults.ignore_file_size_signal()
        assert signal.getsignal(signal.SIGXFSZ) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGXFSZ, previous)


class _Broken:
    """A local HTTP server whose /health answers 200 and every other request ``status``
    with an HTML body: a tracking server that is up but broken, or not MLflow at all."""

    def __init__(self, status: int) -> None:
        import http.server
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                code = 200 if self.path.startswith("/health") else status
                self.send_response(code)
                self.send_header("Content-Type", "text/html")
                self.end_headers()
                self.wfile.write(b"OK" if code == 200 else b"<html>bad gateway</html>")

            do_GET = do_POST = do_PATCH = do_DELETE = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("status", [503, 404])
def test_a_tracking_server_that_answers_errors_is_one_line_not_a_missing_champion(
    status: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a user trial: a server whose API answered 503 (or a web server that is not
    MLflow) gave "model 'iris' has no champion" after 4 minutes, or a traceback."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from serverless_ml import registry

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    server = _Broken(status)
    try:
        mlflow.set_tracking_uri(server.url)  # as a command sets it (conftest forgets it after the test)
        client = mlflow.MlflowClient(tracking_uri=server.url)
        with pytest.raises(MlflowException) as raised:
            registry.alias_version("iris", "champion", client)  # not "no champion"
        line = str(describe(raised.value))
    finally:
        server.close()
    assert line.startswith(f"MLflow tracking server {server.url} answered HTTP {status} to /api/2.0/mlflow/"), line
    assert line.endswith("it is not working as an MLflow tracking server; check it (its log) and MLFLOW_TRACKING_URI, "
                         "then run again")


def test_a_database_server_that_stops_answering_is_one_line() -> None:
    import sqlalchemy.exc

    class OperationalError(Exception):
        __module__ = "psycopg2"

    driver = OperationalError("server closed the connection unexpectedly\n\tThis probably means the server terminated")
    wrapped = sqlalchemy.exc.OperationalError("SELECT 1", {}, driver)
    assert str(describe(_raised(wrapped))) == (
        "MLflow tracking database server stopped answering (server closed the connection unexpectedly): check that it "
        "is up, then run again")
    assert describe(_raised(ValueError("connection refused"))) is None  # not a driver's: a bug keeps its traceback


def test_a_fault_without_a_file_names_the_artifact_folder_too(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    """Found by a user trial: a model file past `ulimit -f` was said to be in the store or
    the databases; the artifacts' folder (next to a SQLite database) is named with them."""
    from serverless_ml.settings import resolve_settings
    from serverless_ml.tracking import configure_tracking

    monkeypatch.setattr(system_faults, "_PLACES", {})
    configure_tracking(resolve_settings(store_dir=tmp_path / "store", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"))
    line = str(describe(_raised(OSError(errno.EFBIG, "File too large"))))
    assert f"MLflow artifacts {tmp_path / 'mlruns'}" in line and f"MLflow tracking database {tmp_path / 'mlflow.db'}" in line
