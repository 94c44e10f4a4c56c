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
