"""``sml serve`` under faults: SIGKILL after a flush and with rows not flushed yet, SIGKILL
at each named point of a flush's writes (``SML_CRASH_AT``), and hostile requests in the
style of the site-hardening tests. A real server process on a free port each time."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import signal
from pathlib import Path
from typing import Any

import mlflow
import pytest

from serverless_ml.datasets import get_dataset
from lock_checks import assert_locks_free
from served import ROW, live_rows, predictions, start_server, wait_for
from worlds import trained_template, world  # noqa: F401 - fixtures

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

SPEC = get_dataset("titanic")
KEY = SPEC.primary_key


def serve_one_by_one(server: Any, n: int, **changes: Any) -> list[int]:
    keys = []
    for i in range(n):
        status, body = server.predict([{**ROW, "age": 20.0 + i, **changes}])
        assert status == 200, body
        keys.append(body["predictions"][0][KEY])
    return keys


def test_sigkill_loses_at_most_the_unflushed_rows(world, tmp_path: Path, reliability) -> None:  # noqa: ANN001
    store, settings = world
    server = start_server(tmp_path, store, settings, "--flush-rows", "5", "--flush-seconds", "3600")
    flushed = serve_one_by_one(server, 5)
    wait_for(lambda: len(predictions(store)) == 5, what="the flush of the first 5 rows")
    unflushed = serve_one_by_one(server, 3, fare=10.0)
    server.stop(signal.SIGKILL)
    # The flushed batch is whole; the 3 rows after it, never flushed, are what was lost.
    assert sorted(live_rows(store)[KEY]) == sorted(flushed)
    assert sorted(predictions(store)[KEY]) == sorted(flushed)
    assert not set(unflushed) & set(live_rows(store)[KEY])
    assert_locks_free(store.root)
    # The store is usable: batch inference runs, and scores none of the served rows again
    # (its batch takes them in as served).
    from serverless_ml.pipelines.infer import InferOptions, infer

    recorded = len(predictions(store))
    report = infer(SPEC, store, settings, InferOptions(figures=False), dt.datetime.now(dt.timezone.utc))
    mlflow.set_tracking_uri(None)
    assert report.rows_scored == report.rows_served == recorded
    # A new server hands out keys that the killed one did not.
    again = start_server(tmp_path, store, settings, "--flush-rows", "1", "--flush-seconds", "0.5")
    try:
        fresh = serve_one_by_one(again, 2)
        wait_for(lambda: len(predictions(store)) == 7, what="the new server's flush")
    finally:
        again.stop(signal.SIGTERM)
    assert not set(fresh) & set(flushed + unflushed)
    reliability.add("serve faults", kill_points=2)


@pytest.mark.parametrize(("point", "features_written", "predictions_written"), [
    ("serve.flush_locked", False, False),
    ("serve.after_features", True, False),
    ("serve.after_predictions", True, True),
])
def test_a_flush_killed_at_each_point_leaves_whole_tables(world, tmp_path: Path, point: str, features_written: bool,  # noqa: ANN001
                                                          predictions_written: bool, reliability) -> None:  # noqa: ANN001
    store, settings = world
    server = start_server(tmp_path, store, settings, "--flush-rows", "3", "--flush-seconds", "3600",
                          env={"SML_CRASH_AT": point})
    keys = [700001, 700002, 700003]
    try:  # the flush these rows start may kill the server before it answers
        server.predict([{**ROW, KEY: key} for key in keys])
    except (http.client.HTTPException, OSError):
        pass
    server.process.wait(timeout=60)
    assert server.process.returncode == -signal.SIGKILL, server.output()
    live, predicted = live_rows(store), predictions(store)
    assert sorted(live[KEY]) == (sorted(keys) if features_written else [])
    assert sorted(predicted[KEY]) == (sorted(keys) if predictions_written else [])
    assert_locks_free(store.root)
    # Batch inference completes the picture: live rows without a prediction are scored
    # once, rows with one are not scored again.
    from serverless_ml.pipelines.infer import InferOptions, infer

    report = infer(SPEC, store, settings, InferOptions(figures=False), dt.datetime.now(dt.timezone.utc))
    mlflow.set_tracking_uri(None)
    # Rows with a served prediction are taken in as served, the others scored.
    assert report.rows_scored == (3 if features_written else 0)
    assert report.rows_served == (3 if predictions_written else 0)
    final = predictions(store)
    assert final[KEY].is_unique
    assert set(final[KEY]) == (set(keys) if features_written else set())
    reliability.add("serve faults", kill_points=1)


def hostile_requests() -> dict[str, tuple[str, bytes, int, str]]:
    """name -> (path, body, status, text the answer holds)."""
    def rows(*items: Any) -> bytes:
        return json.dumps({"rows": list(items)}).encode()

    return {
        "nested 100000 deep": ("/predict", b'{"rows": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400, "not JSON"),
        "NaN literal": ("/predict", b'{"rows": [{"pclass": NaN}]}', 400, "not JSON"),
        "Infinity literal": ("/predict", b'{"rows": [{"fare": Infinity}]}', 400, "not JSON"),
        "not UTF-8": ("/predict", b'{"rows": [{"sex": "\xff\xfe"}]}', 400, "not JSON"),
        "an integer beyond float": ("/predict", rows({**ROW, "fare": 10**400}), 422, "enter a finite number"),
        "a key beyond 64 bits": ("/predict", rows({**ROW, KEY: 10**400}), 422, "is not a valid key"),
        # Found by a new user: a client's key in the generated range later collided with a
        # generated one, and that served row was never recorded.
        "a key in the generated range": ("/predict", rows({**ROW, KEY: 2**52 + 3}), 422, "is one sml serve generates"),
        "a 100 kB category": ("/predict", rows({**ROW, "sex": "x" * 100_000}), 422, "longer than 1000 characters"),
        "a boolean number": ("/predict", rows({**ROW, "pclass": True}), 422, "True is not a number"),
        "a list as a value": ("/predict", rows({**ROW, "age": [1, 2]}), 422, "is not a number"),
        "a row that is not an object": ("/predict", rows([1, 2, 3]), 422, "a row must be an object"),
        "rows not a list": ("/predict", b'{"rows": {"a": 1}}', 400, "expected"),
        "a JSON array body": ("/predict", b"[1, 2]", 400, "expected"),
        "a 5000-digit number": ("/predict", b'{"rows": [{"pclass": ' + b"9" * 5000 + b"}]}", 400, "not JSON"),
        "dataframe_split of unequal rows": ("/invocations", json.dumps(
            {"dataframe_split": {"columns": ["pclass", "sex"], "data": [[1]]}}).encode(), 400, "one value per column"),
        "an unknown MLflow format": ("/invocations", b'{"tensor": [1]}', 400, "expected one of"),
        "inputs of unequal columns": ("/invocations", b'{"inputs": {"pclass": [1, 2], "sex": ["male"]}}', 400, "expected"),
        "oversized body": ("/predict", b'{"rows": ["' + b"x" * (2 * 1024 * 1024) + b'"]}', 413, "the most is"),
        "too many rows": ("/predict", rows(*[ROW] * 1001), 413, "the most in one request is 1000"),
    }


def test_hostile_requests_get_4xx_with_a_message_never_500(world, tmp_path: Path, reliability) -> None:  # noqa: ANN001
    store, settings = world
    server = start_server(tmp_path, store, settings, "--flush-seconds", "0.5")
    cases = hostile_requests()
    try:
        for name, (path, body, status, text) in cases.items():
            got, answer = server.request("POST", path, raw=body)
            shown = json.dumps(answer)
            assert got == status and text in shown, (name, got, shown[:300])
            assert len(shown) < 20_000, name  # a 100 kB value is not echoed back
        # Still serving, and only valid rows were recorded.
        status, body = server.predict([ROW])
        assert status == 200
        wait_for(lambda: len(predictions(store)) == 1, what="the valid row's flush")
    finally:
        server.stop(signal.SIGTERM)
    log = server.output()
    assert "Traceback" not in log and "internal error" not in log
    assert len(live_rows(store)) == 1
    reliability.add("serve faults", hostile_requests=len(cases))


def test_the_server_binds_this_machine_only_by_default(world, tmp_path: Path) -> None:  # noqa: ANN001
    store, settings = world
    server = start_server(tmp_path, store, settings)
    try:
        listening = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
        local = {fields[1] for fields in listening if fields[3] == "0A"}  # state LISTEN
        assert f"0100007F:{server.port:04X}" in local  # 127.0.0.1
        assert not any(address.endswith(f":{server.port:04X}") and not address.startswith("0100007F") for address in local)
    finally:
        server.stop(signal.SIGTERM)
    assert f"http://127.0.0.1:{server.port}/predict" in server.output()
