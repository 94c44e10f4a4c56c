"""The serving rules as plain functions: row validation (shared with the site's form), the
answer's columns, MLflow's request formats, generated keys, the recorder's buffering."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from monitoring_app import forms
from serverless_ml import defaults
from serverless_ml.datasets import get_dataset
from serverless_ml.serving import schema
from serverless_ml.serving.recorder import FlushReport, KeyBlocks, Recorder, ServedRow
from serverless_ml.serving.server import RequestError, invocation_records, predict_records

TITANIC = get_dataset("titanic")
ROW = {"pclass": 3, "sex": "male", "age": 22.0, "fare": 7.25, "embarked": "S", "sibsp": 1, "parch": 0,
       "title": "Mr", "family_size": 2}


def test_rows_are_checked_with_the_forms_rules_and_errors_name_row_field_and_allowed_values() -> None:
    bad = [ROW, {**ROW, "pclass": 7, "sex": "alien"}, {**ROW, "age": None, "embarked": None}, {**ROW, "fare": 10**400},
           "not a row", {**ROW, "deck": "C"}]
    rows, errors = schema.validate_records(TITANIC.features, bad)
    found = {(e.row, e.field): e for e in errors}
    assert set(found) == {(1, "pclass"), (1, "sex"), (3, "fare"), (4, ""), (5, "deck")}
    assert found[(1, "pclass")].allowed == "a whole number (1 to 3)"
    assert found[(1, "sex")].allowed == "one of 'male', 'female'"
    assert found[(1, "sex")].describe() == "rows[1]: field 'sex': 'alien' is not one of male, female; allowed: one of 'male', 'female'"
    assert "finite number" in found[(3, "fare")].message
    # The same message as the Predict page gives for the same value.
    assert found[(1, "pclass")].message == forms.validate_form(TITANIC, {**ROW, "pclass": 7}).errors["pclass"]
    assert rows[2]["age"] is None and rows[2]["embarked"] is None  # nullable: missing is kept
    assert rows[0]["pclass"] == 3 and isinstance(rows[0]["pclass"], int)


def test_the_model_frame_is_what_the_form_builds() -> None:
    frame = schema.model_frame(TITANIC.features, [ROW, {**ROW, "age": None, "embarked": None}])
    one = forms.model_input(TITANIC, ROW)
    pd.testing.assert_frame_equal(frame.head(1), one)
    assert list(frame.columns) == TITANIC.feature_names
    assert np.isnan(frame["age"].iloc[1]) and frame["embarked"].iloc[1] is None
    assert frame["pclass"].dtype == np.int64 and frame["fare"].dtype == np.float64


def test_the_answer_has_class_names_and_a_column_per_class() -> None:
    proba = np.array([[0.8, 0.2], [0.5, 0.5], [0.1, 0.9]])
    answer = schema.answer_frame(["died", "survived"], proba)
    assert list(answer.columns) == ["prediction", "probability", "probability_died", "probability_survived"]
    assert answer["prediction"].tolist() == ["died", "died", "survived"]  # a tie: the first class, as the site
    assert answer["probability"].tolist() == [0.8, 0.5, 0.9]


def test_mlflow_request_formats_give_the_same_rows() -> None:
    columns = list(ROW)
    expected = [ROW, {**ROW, "age": 30.0}]
    bodies = [
        {"dataframe_split": {"columns": columns, "data": [[r[c] for c in columns] for r in expected]}},
        {"dataframe_records": expected}, {"instances": expected}, {"inputs": expected},
        {"inputs": {c: [r[c] for r in expected] for c in columns}},
    ]
    for body in bodies:
        assert invocation_records(body) == expected, body
    assert predict_records({"rows": expected}) == expected
    for bad in ({"dataframe_split": {"columns": ["a"], "data": [[1, 2]]}}, {"tensor": []}, [1], {"inputs": {"a": [1], "b": []}}):
        with pytest.raises(RequestError) as caught:
            invocation_records(bad)
        assert caught.value.status == 400
    with pytest.raises(RequestError):
        predict_records({"rows": {"a": 1}})


def test_generated_integer_keys_never_repeat_across_servers(tmp_path: Path) -> None:
    first, second = KeyBlocks(tmp_path, "titanic", "bigint"), KeyBlocks(tmp_path, "titanic", "bigint")
    keys: list[int] = []
    threads = [threading.Thread(target=lambda b=b: keys.extend(b.take(1500))) for b in (first, second, first)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(keys) == 4500 and len(set(keys)) == 4500
    assert all(defaults.SERVE_KEY_BASE <= k < 2**53 for k in keys)
    texts = KeyBlocks(tmp_path, "passengers", "string").take(3)
    assert len(set(texts)) == 3 and all(t.startswith("served-") and len(t) == 39 for t in texts)


def test_the_recorder_flushes_by_size_keeps_failed_rows_and_bounds_its_buffer() -> None:
    written: list[int] = []
    fail = threading.Event()
    flushed = threading.Event()

    def write(rows: list[ServedRow]) -> FlushReport:
        if fail.is_set():
            raise OSError("disk full")
        written.extend(r.key for r in rows)
        flushed.set()
        return FlushReport(len(rows), len(rows), len(rows), [])

    def row(key: int) -> ServedRow:
        return ServedRow(key, {}, 1, np.array([0.5, 0.5]), pd.Timestamp.now(tz="UTC"))

    recorder = Recorder(write, flush_rows=3, flush_s=3600, max_pending=5)
    try:
        assert recorder.add([row(1), row(2)])
        assert not flushed.wait(0.3)  # below the size, before the time
        assert recorder.add([row(3)])
        assert flushed.wait(10) and written == [1, 2, 3]
    finally:
        recorder.close()
    # A store that refuses writes: rows wait (in order) up to the bound, then add refuses.
    fail.set()
    bounded = Recorder(write, flush_rows=100, flush_s=3600, max_pending=5)
    try:
        assert bounded.add([row(4), row(5)]) and bounded.flush() is None
        assert bounded.waiting == 2  # kept for the next flush
        assert bounded.add([row(6), row(7), row(8)])
        assert bounded.add([row(9)]) is False and bounded.waiting == 5
        fail.clear()
    finally:
        bounded.close()  # writes what waits
    assert written == [1, 2, 3, 4, 5, 6, 7, 8]


def test_a_failing_flush_backs_off_and_is_logged_once_per_streak(caplog: pytest.LogCaptureFixture) -> None:
    attempts: list[float] = []
    fail = threading.Event()
    fail.set()
    written: list[int] = []

    def write(rows: list[ServedRow]) -> FlushReport:
        attempts.append(time.monotonic())
        if fail.is_set():
            raise OSError("store refused")
        written.extend(r.key for r in rows)
        return FlushReport(len(rows), len(rows), len(rows), [])

    caplog.set_level(logging.INFO, logger="serverless_ml.serving.recorder")
    # The buffer is over flush_rows throughout: before the fix the thread flushed again at once.
    recorder = Recorder(write, flush_rows=1, flush_s=0.05, max_pending=100, retry_max_s=0.2)
    try:
        assert recorder.add([_row(1), _row(2)])
        time.sleep(1.0)
        # 0, 0.05, 0.15, 0.35, 0.55, 0.75, 0.95 s: about 7 tries in a second, not thousands.
        assert 3 <= len(attempts) <= 10, len(attempts)
        gaps = np.diff(attempts)
        assert (gaps >= 0.04).all() and gaps.max() <= 0.5
        assert gaps[-1] >= 0.15  # capped at retry_max_s, not growing past it
        failed = [r for r in caplog.records if "failed" in r.getMessage()]
        assert len(failed) == 1 and failed[0].levelno == logging.WARNING  # once per streak
        fail.clear()
        deadline = time.monotonic() + 5
        # The write returns before the recorder counts and logs its success: wait for both.
        while not (written and recorder.waiting == 0 and any("works again" in r.getMessage() for r in caplog.records)) \
                and time.monotonic() < deadline:
            time.sleep(0.02)
        assert written == [1, 2] and recorder.waiting == 0
        recovered = [r for r in caplog.records if "works again" in r.getMessage()]
        assert len(recovered) == 1
    finally:
        recorder.close()


def _row(key: int) -> ServedRow:
    return ServedRow(key, {}, 1, np.array([0.5, 0.5]), pd.Timestamp.now(tz="UTC"))


def test_a_closed_recorder_refuses_rows_and_logs_in_one_line_what_its_last_flush_lost(
        caplog: pytest.LogCaptureFixture) -> None:
    def write(rows: list[ServedRow]) -> FlushReport:
        raise OSError("lock 'infer-titanic' is held by another job")

    caplog.set_level(logging.INFO, logger="serverless_ml.serving.recorder")
    recorder = Recorder(write, flush_rows=100, flush_s=3600)
    assert recorder.add([_row(1), _row(2), _row(3)])
    recorder.close()
    assert recorder.add([_row(4)]) is False  # closed: the request answers 503, not an unrecorded 200
    lost = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert lost == ["3 served row(s) not recorded: the last flush, at shutdown, failed: "
                    "lock 'infer-titanic' is held by another job"]


def test_a_recorder_built_before_a_fork_starts_its_thread_with_the_first_rows() -> None:
    written: list[int] = []

    def write(rows: list[ServedRow]) -> FlushReport:
        written.extend(r.key for r in rows)
        return FlushReport(len(rows), len(rows), len(rows), [])

    recorder = Recorder(write, flush_rows=1, flush_s=3600, start=False)
    try:
        assert recorder.thread is None
        assert recorder.add([_row(1)])
        assert recorder.thread is not None and recorder.thread.is_alive()
        deadline = time.monotonic() + 5
        while not written and time.monotonic() < deadline:
            time.sleep(0.02)
        assert written == [1]
    finally:
        recorder.close()


def test_key_reservations_restart_above_stored_keys_when_their_file_is_lost(tmp_path: Path) -> None:
    base = defaults.SERVE_KEY_BASE
    largest = base + 5000
    blocks = KeyBlocks(tmp_path, "titanic", "bigint", lambda: largest)
    path = blocks.path
    path.parent.mkdir(parents=True)
    for damaged in ("", "not a number", None):  # empty (a kill mid-write before the fix), garbage, missing
        if damaged is None:
            path.unlink()
        else:
            path.write_text(damaged, encoding="utf-8")
        blocks = KeyBlocks(tmp_path, "titanic", "bigint", lambda: largest)
        first = blocks.take(1)[0]
        assert first == largest + 1, (damaged, first)
        assert path.read_text(encoding="utf-8") == str(largest + 1 + defaults.SERVE_KEY_BLOCK)
    # A readable file is taken as it is; the reservation leaves no temporary file behind.
    assert KeyBlocks(tmp_path, "titanic", "bigint", lambda: largest).take(1)[0] == largest + 1 + defaults.SERVE_KEY_BLOCK
    assert sorted(p.name for p in path.parent.iterdir()) == ["titanic.next_key", "titanic.next_key.lock"]
    # Nothing stored in the range: from the base.
    (tmp_path / "fresh").mkdir()
    assert KeyBlocks(tmp_path / "fresh", "titanic", "bigint", lambda: None).take(1) == [base]


def test_the_model_carries_the_packages_python_files_only(tmp_path: Path) -> None:
    from serverless_ml.serving.flavor import copy_package_code

    package = tmp_path / "src" / "pkg"
    (package / "sub" / "__pycache__").mkdir(parents=True)
    for name, text in {"__init__.py": "", "sub/mod.py": "X = 1\n", "py.typed": "", ".env": "API_KEY=secret\n",
                       "config.yaml": "password: x\n", "sub/notes.txt": "x", "sub/__pycache__/mod.cpython-312.pyc": "x",
                       "sub/local.py~": "x"}.items():
        (package / name).write_text(text, encoding="utf-8")
    copied = copy_package_code(package, tmp_path / "code")
    found = sorted(str(p.relative_to(tmp_path / "code")) for p in (tmp_path / "code").rglob("*") if p.is_file())
    assert found == ["pkg/__init__.py", "pkg/py.typed", "pkg/sub/mod.py"]
    assert sorted(map(str, copied)) == found
    assert (tmp_path / "code" / "pkg" / "sub" / "mod.py").read_text(encoding="utf-8") == "X = 1\n"
    # The real package: every Python file, nothing else.
    real = Path(schema.__file__).resolve().parents[1]
    copy_package_code(real, tmp_path / "real")
    copied_real = {p.relative_to(tmp_path / "real" / real.name) for p in (tmp_path / "real").rglob("*") if p.is_file()}
    expected = {p.relative_to(real) for p in real.rglob("*.py") if "__pycache__" not in p.parts} | {Path("py.typed")}
    assert copied_real == expected
