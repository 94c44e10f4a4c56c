"""``sml serve``'s WSGI application and server in this process, with a real (tiny) sklearn
Pipeline: what it records of the champion's training keys, its answer once shutdown has
begun, a shutdown that waits for the request being answered, threads started after a fork."""

from __future__ import annotations

import json
import threading
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.dummy import DummyClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from serverless_ml.datasets import get_dataset
from serverless_ml.inference.scoring import KeySet
from serverless_ml.serving import schema
from serverless_ml.serving.recorder import FlushReport, KeyBlocks, Recorder, ServedRow
from serverless_ml.serving.server import ServingApp, close_server, make_wsgi_server

TITANIC = get_dataset("titanic")
KEY = TITANIC.primary_key
ROW = {"pclass": 3, "sex": "male", "age": 22.0, "fare": 7.25, "embarked": "S", "sibsp": 1, "parch": 0,
       "title": "Mr", "family_size": 2}


class Gate:
    """Holds the model's transform step (so a request is inside ``answer``) until opened."""

    def __init__(self) -> None:
        self.closed, self.entered, self.opened = False, threading.Event(), threading.Event()

    def __call__(self, frame: pd.DataFrame) -> pd.DataFrame:
        if self.closed:
            self.entered.set()
            assert self.opened.wait(20)
        return frame


def pipeline(gate: Gate) -> Pipeline:
    frame = schema.model_frame(TITANIC.features, [ROW, {**ROW, "sex": "female"}])
    model = Pipeline([("gate", FunctionTransformer(gate)), ("model", DummyClassifier(strategy="prior"))])
    return model.fit(frame, [0, 1])


def build(tmp_path: Path, written: list[Any], gate: Gate | None = None, training_keys: list[int] | None = None,
          start: bool = True) -> ServingApp:
    def write(rows: list[ServedRow]) -> FlushReport:
        written.extend(r.key for r in rows)
        return FlushReport(len(rows), len(rows), len(rows), [])

    model = pipeline(gate or Gate())
    return ServingApp(TITANIC, lambda: 1, lambda version: model, Recorder(write, flush_rows=10**6, flush_s=3600, start=start),
                      KeyBlocks(tmp_path, "titanic", "bigint", lambda: None),
                      load_training_keys=lambda version: KeySet(np.asarray(training_keys or [], dtype=np.int64)),
                      start=start)


def post(port: int, rows: list[dict[str, Any]]) -> tuple[int, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=json.dumps({"rows": rows}).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def call(app: ServingApp, rows: list[dict[str, Any]]) -> tuple[str, Any]:
    from werkzeug.test import Client

    response = Client(app).post("/predict", json={"rows": rows})
    return response.status, response.get_json()


def test_the_champions_training_keys_are_answered_not_recorded(tmp_path: Path) -> None:
    written: list[Any] = []
    app = build(tmp_path, written, training_keys=[7, 8])
    try:
        status, body = call(app, [{**ROW, KEY: 7}, {**ROW, KEY: 9}, ROW])
        assert status == "200 OK", body
        answered = [p[KEY] for p in body["predictions"]]
        assert answered[:2] == [7, 9] and len(answered) == 3
    finally:
        app.close()
    assert sorted(written) == sorted(answered[1:])  # 7 was a training row: not monitoring traffic


def test_a_request_once_shutdown_began_gets_503_not_an_unrecorded_answer(tmp_path: Path) -> None:
    written: list[Any] = []
    app = build(tmp_path, written)
    app.close()
    status, body = call(app, [{**ROW, KEY: 11}])
    assert status.startswith("503") and "shutting down" in body["error"]
    assert written == []


def test_shutdown_waits_for_the_request_being_answered_and_records_its_rows(tmp_path: Path) -> None:
    written: list[Any] = []
    gate = Gate()
    app = build(tmp_path, written, gate)
    server = make_wsgi_server(app, "127.0.0.1", 0)

    def serve() -> None:  # as serve_forever: serve until shut down, then close_server
        server.serve_forever(poll_interval=0.05)
        close_server(server, app)

    serving = threading.Thread(target=serve)
    serving.start()
    answers: list[tuple[int, Any]] = []
    gate.closed = True
    client = threading.Thread(target=lambda: answers.append(post(server.server_port, [{**ROW, KEY: 21}])))
    client.start()
    try:
        assert gate.entered.wait(20)  # the request is inside the application
        server.shutdown()  # what SIGTERM does: the serving loop ends
        serving.join(0.5)
        # Closing waits for the request thread before the last flush.
        assert serving.is_alive() and app.recorder is not None and not app.recorder.closed
    finally:
        gate.opened.set()
    client.join(20)
    serving.join(20)
    assert not serving.is_alive()
    assert answers and answers[0][0] == 200, answers
    assert written == [21]  # answered 200, and recorded


def threads_running(app: ServingApp) -> tuple[bool, bool]:
    """Whether the alias thread and the recorder's thread run."""
    recorder = app.recorder.thread if app.recorder is not None else None
    return (app.poller is not None and app.poller.is_alive(), recorder is not None and recorder.is_alive())


def test_threads_start_with_the_first_request_when_built_before_a_fork(tmp_path: Path) -> None:
    written: list[Any] = []
    app = build(tmp_path, written, start=False)
    try:
        assert app.recorder is not None
        assert threads_running(app) == (False, False)
        status, _ = call(app, [ROW])
        assert status == "200 OK"
        assert threads_running(app) == (True, True)
    finally:
        app.close()
    assert len(written) == 1


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Any:
    before = set(threading.enumerate())
    yield
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive() and not t.daemon]
    assert not leaked, leaked


def test_a_text_key_with_control_characters_or_the_generated_prefix_is_refused(tmp_path: Path) -> None:
    """Found by a new user: a key holding a NUL or a newline was stored."""
    import dataclasses

    spec = dataclasses.replace(TITANIC, primary_key_type="string")
    model = pipeline(Gate())
    app = ServingApp(spec, lambda: 1, lambda version: model,
                     Recorder(lambda rows: FlushReport(len(rows), len(rows), len(rows), []), flush_rows=10**6, flush_s=3600),
                     KeyBlocks(tmp_path, "titanic", "string", lambda: None), start=False)
    try:
        for key, message in (("a\nb", "is not a valid key"), ("nul\x00", "is not a valid key"),
                             ("served-abc", "is one sml serve generates")):
            status, body = call(app, [{**ROW, KEY: key}])
            assert status.startswith("422"), (key, status)
            assert message in json.dumps(body), body
        status, body = call(app, [{**ROW, KEY: "P-0001"}])
        assert status.startswith("200") and body["predictions"][0][KEY] == "P-0001"
    finally:
        app.close()
