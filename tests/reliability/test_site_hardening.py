"""Site hardening: what the monitoring site does with hostile data and hostile requests.

One world per module: a spec-only dataset whose class name, category values and
description hold HTML and script (``<script>alert(1)</script>``, ``<img onerror>``),
backfilled, trained and scored once, so the payloads sit in the feature store, the model
registry, the monitoring runs and the predictions table. ``sml dashboard`` serves it from
a subprocess with its defaults (bind address, debug), exactly as a user starts it.

- The defaults: the command binds 127.0.0.1 (checked in the kernel's socket table, not
  only in the code), Dash's debug mode and dev tools are off, an unknown path shows the
  site's "not found" page without a traceback.
- The payloads are text: a headless Chromium shows them literally on every page, no
  dialog opens, no script or ``onerror`` element is created.
- The predictor: its callback, called directly, answers a huge number, a 100 kB string,
  wrong types, missing fields and unknown categories with messages, never an exception;
  over HTTP (``/_dash-update-component``), malformed or oversized bodies get a 4xx and
  well-formed ones a message, never a 500, and every callback of the site survives
  wrong-typed values. The server's log shows no traceback afterwards.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml

from monitoring_app import create_app, ids
from monitoring_app.hardening import MAX_JSON_DEPTH, MAX_REQUEST_BYTES
from monitoring_app.pages import predict
from serverless_ml import defaults
from serverless_ml.datasets import get_dataset
from serverless_ml.datasets.sources import load_source
from serverless_ml.feature_store.local import LocalFeatureStore
from serverless_ml.pipelines.features import add_daily_rows, backfill
from serverless_ml.pipelines.infer import InferOptions, infer
from serverless_ml.pipelines.train import TrainOptions, train
from serverless_ml.settings import Settings, resolve_settings
from dash_text import OVERVIEW_CALLBACK, text_of
from worlds import copy_database

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

CLASS_PAYLOAD = "<script>alert(1)</script>"
CATEGORY_PAYLOADS = ("<script>alert(2)</script>", "<img src=x onerror=alert(3)>")
DESCRIPTION_PAYLOAD = "<script>alert(4)</script> measured by hand"
DAY = dt.date(2024, 3, 1)
SERVER_START_TIMEOUT_S = 120
UPDATE = "/_dash-update-component"


# --- the world and the server ---------------------------------------------------------


@dataclass(frozen=True)
class EvilWorld:
    folder: Path
    spec_path: Path

    @property
    def settings(self) -> Settings:
        return resolve_settings(store_dir=self.folder / "store", tracking_uri=f"sqlite:///{self.folder / 'mlflow.db'}")


def write_evil_dataset(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    n = 120
    kind = np.where(np.arange(n) % 2 == 0, CLASS_PAYLOAD, "plain")
    size = np.clip(np.where(kind == "plain", rng.normal(3, 1, n), rng.normal(7, 1, n)), 0, 10).round(2)
    colour = rng.choice(np.array([*CATEGORY_PAYLOADS, "blue"], dtype=object), n)
    pd.DataFrame({"size": size, "colour": colour, "kind": kind}).to_csv(folder / "evil.csv", index=False)
    spec = {
        "name": "evil",
        "description": DESCRIPTION_PAYLOAD,
        "source": {"path": "evil.csv"},
        "label": "kind",
        "classes": [CLASS_PAYLOAD, "plain"],
        "primary_key": None,
        "features": {
            "size": {"type": "double", "min": 0, "max": 10},
            "colour": {"type": "string", "categories": [*CATEGORY_PAYLOADS, "blue"]},
        },
    }
    path = folder / "evil.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def evil_world(tmp_path_factory: pytest.TempPathFactory, mlflow_template_db: Path) -> EvilWorld:
    """The payloads in every place the site reads: store rows, registry, runs, predictions."""
    folder = tmp_path_factory.mktemp("evil_world")
    copy_database(mlflow_template_db, folder / "mlflow.db")
    world = EvilWorld(folder, write_evil_dataset(folder))
    spec = get_dataset(str(world.spec_path))
    store = LocalFeatureStore(folder / "store")
    settings = world.settings
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setenv("MLFLOW_TRACKING_URI", settings.tracking_uri)
        backfill(spec, store, load_source(spec, str(folder / "evil.csv")))
        add_daily_rows(spec, store, DAY, n=20, seed=0)
        train(spec, store, settings, TrainOptions(trials=1, seed=1, folds=2, quiet=True))
        report = infer(spec, store, settings, InferOptions(as_of=DAY, figures=False),
                       dt.datetime.combine(DAY, dt.time(12), tzinfo=dt.timezone.utc))
        assert report.rows_scored == 20
    mlflow.set_tracking_uri(None)
    return world


@dataclass
class Server:
    url: str
    port: int
    process: subprocess.Popen
    stdout: Path
    stderr: Path

    def log(self) -> str:
        return self.stdout.read_text(errors="replace") + self.stderr.read_text(errors="replace")


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(url: str, body: bytes | None = None, content_type: str = "application/json") -> tuple[int, dict[str, str], str]:
    """``(status, headers, text)`` of a GET (or a POST of ``body``), whatever the status."""
    request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    if body is not None:
        request.add_header("Content-Type", content_type)
    try:
        with _NO_PROXY.open(request, timeout=60) as response:
            return response.status, dict(response.headers), response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode(errors="replace")


@pytest.fixture(scope="module")
def server(evil_world: EvilWorld, free_port, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:  # noqa: ANN001
    """``sml dashboard --dataset evil.yaml --port P`` with every other option at its default."""
    port = free_port()
    logs = tmp_path_factory.mktemp("dashboard")
    env = dict(os.environ)
    env.update({
        "SML_STORE_DIR": str(evil_world.folder / "store"),
        "MLFLOW_TRACKING_URI": evil_world.settings.tracking_uri,
        "SML_CACHE_DIR": str(logs / ".cache"),
        "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
        "no_proxy": "localhost,127.0.0.1", "NO_PROXY": "localhost,127.0.0.1",
    })
    stdout, stderr = logs / "stdout.txt", logs / "stderr.txt"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "serverless_ml.cli", "dashboard", "--dataset", str(evil_world.spec_path), "--port", str(port)],
            cwd=evil_world.folder, env=env, stdout=out, stderr=err,
        )
    running = Server(f"http://127.0.0.1:{port}", port, process, stdout, stderr)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"sml dashboard exited with {process.returncode}:\n{running.log()}", pytrace=False)
            try:
                if http(running.url + "/")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"sml dashboard did not answer within {SERVER_START_TIMEOUT_S} s:\n{running.log()}", pytrace=False)
            time.sleep(0.5)
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- defaults: this machine only, debug off ---------------------------------------------


def _listeners(port: int) -> set[str]:
    """Addresses with a socket listening on ``port`` (from the kernel's tables)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if int(hex_port, 16) == port and fields[3] == "0A":  # 0A: LISTEN
                found.add(address)
    return found


def test_the_dashboard_binds_this_machine_only_with_debug_off(server: Server, reliability) -> None:  # noqa: ANN001
    from click.testing import CliRunner

    from monitoring_app.app import DEFAULT_HOST
    from serverless_ml.cli import cli

    assert defaults.SITE_HOST == DEFAULT_HOST == "127.0.0.1"
    options = {p.name: p for p in cli.commands["dashboard"].params}
    assert options["host"].default == "" and "127.0.0.1, this machine only" in (options["host"].help or "")
    assert "(debug off)" in CliRunner().invoke(cli, ["--help"]).output
    # The running server: one listening socket, on 127.0.0.1 (0100007F), none on 0.0.0.0 or ::.
    assert _listeners(server.port) == {"0100007F"}, _listeners(server.port)
    log = server.log()
    assert f"monitoring site on http://127.0.0.1:{server.port}/" in log
    assert "Debug mode: off" in log and "Debugger is active" not in log
    # Dash's dev tools: not in the page's configuration, not in the page.
    status, _, html = http(server.url + "/")
    assert status == 200
    config = json.loads(re.search(r'<script id="_dash-config" type="application/json">(.*?)</script>', html, re.S).group(1))
    assert config["ui"] is False and config["props_check"] is False
    assert not config.get("hot_reload")
    assert "dash-debug-menu" not in html
    reliability.add("site hardening", cases=3)


def test_the_dashboard_log_has_the_url_once_no_request_lines_and_no_colour_codes(server: Server) -> None:
    """Its output is a file here, not a terminal: werkzeug would colour its warning and log
    a line per request (each page's scripts and styles), Dash and werkzeug repeat the URL."""
    for path in ("/", "/_dash-layout", "/_dash-dependencies", "/no/such/page"):
        assert http(server.url + path)[0] in (200, 404), path
    time.sleep(0.5)  # the server writes its log line after the answer
    log = server.log()
    assert log.count(f"127.0.0.1:{server.port}") == 1, log
    assert '"GET /' not in log and "Dash is running" not in log, log
    assert "\x1b[" not in log, log
    assert "development server" in log and "gunicorn" in log, log


def test_create_app_has_debug_off(evil_world: EvilWorld) -> None:
    app = create_app(evil_world.settings)
    assert app.server.debug is False
    assert app._dev_tools.ui is False and app._dev_tools.props_check is False  # noqa: SLF001
    assert app._dev_tools.hot_reload is False  # noqa: SLF001


def test_an_unknown_path_shows_no_traceback(server: Server, reliability) -> None:  # noqa: ANN001
    paths = ["/no/such/page", "/_dash-component-suites/nope/nope.js", "/../../etc/passwd", "/%00", "/predict/../../x"]
    for path in paths:
        status, headers, text = http(server.url + path)
        assert status in (200, 400, 404), (path, status)
        assert "Traceback" not in text and 'File "' not in text and "site-packages" not in text, (path, text[:500])
        assert headers.get("X-Content-Type-Options") == "nosniff", (path, headers)
        assert headers.get("X-Frame-Options") == "DENY", (path, headers)
    reliability.add("site hardening", cases=len(paths))


# --- payloads are text -----------------------------------------------------------------


def _settle(tab: Any) -> None:
    tab.wait_for_load_state("networkidle")
    tab.wait_for_function("() => !document.querySelector('[data-dash-is-loading=\"true\"]')")
    tab.wait_for_load_state("networkidle")


PAGES_AND_TEXT = {
    "/?dataset=evil": [CLASS_PAYLOAD],
    "/predictions?dataset=evil": [CLASS_PAYLOAD],
    "/confusion?dataset=evil": [CLASS_PAYLOAD],
    "/data?dataset=evil": [DESCRIPTION_PAYLOAD, *CATEGORY_PAYLOADS, CLASS_PAYLOAD],
    "/models?dataset=evil": [],
    "/drift?dataset=evil": [],
    "/slices?dataset=evil": [],
}


@pytest.mark.browser
def test_payloads_in_the_data_are_shown_as_text_and_never_run(server: Server, browser: Any, reliability) -> None:  # noqa: ANN001
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(60_000)
    dialogs: list[str] = []
    errors: list[str] = []
    tab.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        for path, texts in PAGES_AND_TEXT.items():
            tab.goto(server.url + path)
            _settle(tab)
            for text in texts:
                tab.locator("main").get_by_text(text, exact=False).first.wait_for()
            assert dialogs == [], (path, dialogs)
            assert tab.evaluate("() => [...document.scripts].some(s => s.textContent.includes('alert('))") is False, path
            assert tab.locator("[onerror]").count() == 0, path
            assert tab.locator("main script").count() == 0, path

        # The predictor: the <script> category chosen, the class name comes back as text.
        tab.goto(server.url + "/predict?dataset=evil")
        _settle(tab)
        colour = tab.locator(".field", has_text="colour")
        colour.locator(".dash-dropdown").click()
        for value in CATEGORY_PAYLOADS:
            tab.get_by_role("option", name=value, exact=True).wait_for()
        tab.get_by_role("option", name=CATEGORY_PAYLOADS[0], exact=True).click()
        tab.locator(".field", has_text="size").locator("input").fill("9")
        tab.get_by_role("button", name="Predict").click()
        answer = tab.locator(f"#{ids.PREDICT_ANSWER}")
        answer.wait_for()
        assert re.search(r"says\s+(<script>alert\(1\)</script>|plain)\s+with probability", answer.inner_text()), answer.inner_text()
        assert dialogs == [] and errors == [], (dialogs, errors)
        assert tab.locator("[onerror]").count() == 0 and tab.locator("main script").count() == 0
    finally:
        context.close()
    reliability.add("site hardening", cases=len(PAGES_AND_TEXT) + 1)


# --- the predictor, called directly ------------------------------------------------------


@pytest.fixture(scope="module")
def direct(evil_world: EvilWorld) -> Iterator[Callable[..., Any]]:
    """``direct(fn, *args)`` runs a callback inside the app's request context."""
    app = create_app(evil_world.settings, datasets=[str(evil_world.spec_path)], cache_ttl_s=0.0)

    def run(fn: Callable[..., Any], *args: Any) -> Any:
        with app.server.test_request_context():
            return fn(*args)

    yield run


STATE = {"dataset": "evil"}
# values (size, colour), state -> (text in the result, message of size, message of colour)
PREDICTOR_CASES: dict[str, tuple[Any, Any, tuple[str, str, str]]] = {
    "valid": ([5, "blue"], STATE, ("The champion (version 1) says", "", "")),
    "huge number": ([1e308, "blue"], STATE, ("1 value(s) outside the schema", "1e+308 is outside the allowed range (0 to 10)", "")),
    "number beyond float": (["9" * 400, "blue"], STATE, ("outside the schema", "enter a finite number (0 to 10)", "")),
    # An integer beyond float's range (JSON may hold one) used to be a 500 with a traceback.
    "integer beyond float": ([10**400, "blue"], STATE, ("outside the schema", "enter a finite number (0 to 10)", "")),
    "negative integer beyond float": ([-(10**400), "blue"], STATE, ("outside the schema", "enter a finite number (0 to 10)", "")),
    "100 kB string for a number": (["x" * 100_000, "blue"], STATE, ("outside the schema", "is not a number", "")),
    "100 kB string for a category": ([5, "x" * 100_000], STATE, ("outside the schema", "", "longer than 1000 characters")),
    "unknown category": ([5, "green"], STATE, ("outside the schema", "", "'green' is not one of")),
    "a list for a number": ([[1, 2], "blue"], STATE, ("outside the schema", "'[1, 2]' is not a number", "")),
    "an object for a category": ([5, {"a": 1}], STATE, ("outside the schema", "", "is not one of")),
    "true for a number": ([True, "blue"], STATE, ("outside the schema", "True is not a number", "")),
    "missing value": ([None, "blue"], STATE, ("outside the schema", "required: enter a number (0 to 10)", "")),
}
MALFORMED_CALLS: dict[str, tuple[Any, Any, str, int]] = {
    # values, state -> text in the result, number of messages
    "a field missing": ([5], STATE, "the form does not match the dataset", 1),
    "a field too many": ([5, "blue", 1], STATE, "the form does not match the dataset", 3),
    "no values": (None, STATE, "the form does not match the dataset", 0),
    "values as text": ("5,blue", STATE, "the form does not match the dataset", 0),
    "state as text": ([5, "blue"], "evil", "the form does not match the dataset", 2),
    "dataset as a list": ([5, "blue"], {"dataset": ["evil"]}, "unknown dataset of type list", 2),
    "a 100 kB dataset name": ([5, "blue"], {"dataset": "e" * 100_000}, "unknown dataset 'eeee", 2),
}


def test_the_predictor_answers_bad_values_with_messages(direct: Callable[..., Any], reliability) -> None:  # noqa: ANN001
    for name, (values, state, (result_text, size_message, colour_message)) in PREDICTOR_CASES.items():
        result, messages = direct(predict.predict, 1, values, state)
        assert result_text in text_of(result), (name, text_of(result))
        assert len(messages) == 2, name
        assert size_message in messages[0] and colour_message in messages[1], (name, messages)
        assert all(len(m) < 300 for m in messages), name  # a 100 kB value is not echoed back
    reliability.add("site hardening", cases=len(PREDICTOR_CASES))


def test_the_predictor_answers_malformed_calls_with_a_message(direct: Callable[..., Any], reliability) -> None:  # noqa: ANN001
    for name, (values, state, result_text, count) in MALFORMED_CALLS.items():
        result, messages = direct(predict.predict, 1, values, state)
        shown = text_of(result)
        assert result_text in shown and len(shown) < 500, (name, shown[:500])
        assert messages == [""] * count, (name, messages)
    reliability.add("site hardening", cases=len(MALFORMED_CALLS))


# --- the predictor and every callback over HTTP -------------------------------------------


def predict_body(values: list[Any], state: Any = STATE, features: tuple[str, ...] = ("size", "colour")) -> dict[str, Any]:
    """A callback request as the Predict page's button sends it."""
    pattern = json.dumps({"feature": ["ALL"], "type": ids.PREDICT_ERROR}, sort_keys=True, separators=(",", ":"))
    output = f"..{ids.PREDICT_RESULT}.children...{pattern}.children.."
    return {
        "output": output,
        "outputs": [{"id": ids.PREDICT_RESULT, "property": "children"},
                    [{"id": ids.predict_error(f), "property": "children"} for f in features]],
        "inputs": [{"id": ids.PREDICT_SUBMIT, "property": "n_clicks", "value": 1}],
        "changedPropIds": [f"{ids.PREDICT_SUBMIT}.n_clicks"],
        "state": [[{"id": ids.predict_input(f), "property": "value", "value": v} for f, v in zip(features, values, strict=False)],
                  {"id": ids.PREDICT_STATE, "property": "data", "value": state}],
    }


def _post(server: Server, body: Any) -> tuple[int, str]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    status, _, text = http(server.url + UPDATE, raw)
    return status, text


def test_a_well_formed_prediction_request_is_answered(server: Server) -> None:
    status, text = _post(server, predict_body([5, "blue"]))
    assert status == 200, text[:500]
    assert "The champion (version 1) says" in text


HTTP_VALUES = {
    # values -> (status, text in the answer)
    "huge number": ([1e308, "blue"], (200, "1e+308 is outside the allowed range (0 to 10)")),
    "100 kB string": ([5, "x" * 100_000], (200, "longer than 1000 characters")),
    "integer beyond float": ([10**400, "blue"], (200, "enter a finite number (0 to 10)")),
    "unknown category": ([5, "green"], (200, "is not one of")),
    "a field missing": ([5], (200, "the form does not match the dataset")),
    "an object for a value": ([{"a": 1}, "blue"], (400, "the value of value must be text or a number")),
    "a list for a value": ([[1] * 1000, "blue"], (400, "the value of value must be text or a number")),
}


def _malformed_bodies() -> dict[str, tuple[Any, int, str]]:
    good = predict_body([5, "blue"])
    return {
        "not JSON": (b"{output: ", 400, "the body is not JSON"),
        "not UTF-8": (b"\xff\xfe{}", 400, "the body is not JSON"),
        "empty body": (b"", 400, "the body is not a JSON object"),
        "a JSON array": ([good], 400, "the body is not a JSON object"),
        "a JSON number": (1e308, 400, "the body is not a JSON object"),
        "no output": ({k: v for k, v in good.items() if k != "output"}, 400, "no callback has this output"),
        "an unknown output": ({**good, "output": "nope.children"}, 400, "no callback has this output"),
        "no inputs": ({k: v for k, v in good.items() if k != "inputs"}, 400, "'inputs' must be a list of 1 item(s)"),
        "no state": ({k: v for k, v in good.items() if k != "state"}, 400, "'state' must be a list of 2 item(s)"),
        "inputs as text": ({**good, "inputs": "x"}, 400, "'inputs' must be a list of 1 item(s)"),
        "no outputs": ({k: v for k, v in good.items() if k != "outputs"}, 400, "'outputs' is missing"),
        "the form state not a list": ({**good, "state": [None, good["state"][1]]}, 400, "a list is expected"),
        "the store's data as text": (predict_body([5, "blue"], state="evil"), 400, "the value of data must be an object"),
        "an item without an id": ({**good, "inputs": [{"property": "n_clicks", "value": 1}]}, 400, "without an id and a property"),
        "n_clicks as text": ({**good, "inputs": [{"id": ids.PREDICT_SUBMIT, "property": "n_clicks", "value": "x" * 1000}]}, 400,
                             "the value of n_clicks must be a whole number"),
        "changedPropIds not a list": ({**good, "changedPropIds": 5}, 400, "'changedPropIds' must be a list of strings"),
        "deeply nested": ({**good, "changedPropIds": [[[[[["x"]]]]]]}, 400, "'changedPropIds' must be a list of strings"),
        "oversized body": (predict_body([5, "x" * (2 * MAX_REQUEST_BYTES)]), 413, "larger than"),
        # Python's JSON reader (or Dash after it) used to recurse into a 500 with a traceback.
        "nested 100000 deep": (b'{"output": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400,
                               f"nested deeper than {MAX_JSON_DEPTH} levels"),
        "nested 40 deep in the store's data": (predict_body([5, "blue"], state=_nested(40)), 400,
                                               f"nested deeper than {MAX_JSON_DEPTH} levels"),
        "brackets inside strings are not nesting": (predict_body([5, "[{" * 1000]), 200, "longer than 1000 characters"),
        "a click count beyond float": ({**good, "inputs": [{"id": ids.PREDICT_SUBMIT, "property": "n_clicks", "value": 10**400}]},
                                       400, "the value of n_clicks must be a whole number"),
    }


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"dataset": "evil"}
    for _ in range(depth):
        value = {"dataset": "evil", "inner": value}
    return value


def test_prediction_requests_with_bad_values_get_messages_or_4xx(server: Server, reliability) -> None:  # noqa: ANN001
    for name, (values, (status, expected)) in HTTP_VALUES.items():
        got, text = _post(server, predict_body(values))
        assert (got, expected in text) == (status, True), (name, got, text[:300])
        assert len(text) < 20_000, name  # a 100 kB value is not echoed back
    reliability.add("site hardening", cases=len(HTTP_VALUES))


def test_malformed_or_oversized_callback_requests_get_4xx_not_500(server: Server, reliability) -> None:  # noqa: ANN001
    bodies = _malformed_bodies()
    for name, (body, status, expected) in bodies.items():
        got, text = _post(server, body)
        assert got == status and expected in text, (name, got, text[:300])
        assert "Traceback" not in text, name
    reliability.add("site hardening", cases=len(bodies))


def _wrong_values() -> dict[str, Any]:
    return {"text": "evil", "a list": ["evil"], "null": None, "a number": 7, "true": True, "100 kB": "x" * 100_000,
            "an object": {"dataset": ["x"], "window": {"a": 1}, "page": "a", "signature": [1], "run": {}},
            "a state of wrong fields": {"dataset": "evil", "window": 5, "run": ["x"], "version": {"a": 1}}}


def _pattern_item(spec: dict[str, Any], value: Any) -> Any:
    raw = spec["id"]
    if raw.startswith("{"):
        pattern = json.loads(raw)
        component = {k: ("size" if v == ["ALL"] else v) for k, v in pattern.items()}
        return [{"id": component, "property": spec["property"], "value": value}]
    return {"id": raw, "property": spec["property"], "value": value}


def _outputs_of(key: str) -> Any:
    parts = key.strip(".").split("...") if key.startswith("..") else [key]
    out: list[Any] = []
    for part in parts:
        component, prop = part.rsplit(".", 1)
        if component.startswith("{"):
            pattern = json.loads(component)
            out.append([{"id": {k: ("size" if v == ["ALL"] else v) for k, v in pattern.items()}, "property": prop}])
        else:
            out.append({"id": component, "property": prop})
    return out if key.startswith("..") else out[0]


def test_every_callback_survives_wrong_typed_values(server: Server, evil_world: EvilWorld, reliability) -> None:  # noqa: ANN001
    """Each callback of the site, with each of its inputs and states replaced in turn by
    values of the wrong type or size: a 200 or a 4xx, never a 500."""
    app = create_app(evil_world.settings, datasets=[str(evil_world.spec_path)])
    callbacks = {key: value for key, value in list(app.callback_map.items())}
    assert len(callbacks) >= 10
    sent = 0
    failures = []
    for key, callback in callbacks.items():
        for which in ("inputs", "state"):
            if not callback.get(which):
                continue
            for name, value in _wrong_values().items():
                body = {
                    "output": key, "outputs": _outputs_of(key),
                    "inputs": [_pattern_item(s, 1) for s in callback["inputs"]],
                    "state": [_pattern_item(s, {"dataset": "evil"}) for s in callback.get("state", [])],
                    "changedPropIds": [f"{callback['inputs'][0]['id']}.{callback['inputs'][0]['property']}"],
                }
                body[which] = [_pattern_item(s, value) for s in callback[which]]
                status, text = _post(server, body)
                sent += 1
                if status >= 500 or "Traceback" in text:
                    failures.append(f"{key[:60]} {which}={name}: {status}")
    assert failures == []
    reliability.add("site hardening", cases=sent)


def test_responses_carry_security_headers(server: Server) -> None:
    for url, body in ((server.url + "/", None), (server.url + UPDATE, json.dumps(predict_body([5, "blue"])).encode())):
        _, headers, _ = http(url, body)
        assert headers.get("X-Content-Type-Options") == "nosniff"
        assert headers.get("X-Frame-Options") == "DENY"
        assert headers.get("Referrer-Policy") == "same-origin"


def test_the_server_logged_no_traceback(server: Server) -> None:
    """After every request above (pytest keeps the file's order), and hostile ones of its
    own: a forged request is answered, not logged as a failure of the site."""
    for body, _, _ in _malformed_bodies().values():
        _post(server, body)
    forged_version = {
        "output": f"{ids.MODELS_DETAIL}.children", "outputs": {"id": ids.MODELS_DETAIL, "property": "children"},
        "inputs": [{"id": ids.MODELS_VERSION, "property": "value", "value": "not a version"}],
        "state": [{"id": ids.MODELS_STATE, "property": "data", "value": {"dataset": "evil"}}],
        "changedPropIds": [f"{ids.MODELS_VERSION}.value"],
    }
    status, text = _post(server, forged_version)
    assert status == 200 and "no model version 'not a version'" in text, (status, text[:300])
    log = server.log()
    assert "Traceback" not in log, log[-3000:]
    assert " 500 " not in log, [line for line in log.splitlines() if " 500 " in line][:5]
    assert server.process.poll() is None, "the server is still up"


# --- a tracking database that is down or damaged (issue 16, hangs) -----------------------

SITE_START_S = 30.0
"""Measured: 3-5 s (imports). The site used to wait for MLflow's retries (~108 s) before
it listened, and then every page timed out after 60 s."""
PAGE_ANSWER_S = 10.0


@pytest.mark.parametrize("fault", ["PostgreSQL down", "SQLite file truncated"])
def test_the_site_starts_at_once_and_says_the_tracking_database_cannot_be_used(
    fault: str, tmp_path: Path, free_port, mlflow_template_db: Path, reliability,  # noqa: ANN001
) -> None:
    from serverless_ml.testing import stop_process_group

    if fault == "PostgreSQL down":
        uri, expected = f"postgresql://sml:pw@127.0.0.1:{free_port()}/mlflow", "MLflow tracking database postgresql://sml:***@"
        said = "is unreachable"
    else:
        copy_database(mlflow_template_db, tmp_path / "mlflow.db")
        with (tmp_path / "mlflow.db").open("r+b") as fh:
            fh.truncate(4 * 4096)
        uri, expected, said = f"sqlite:///{tmp_path / 'mlflow.db'}", f"MLflow tracking database {tmp_path / 'mlflow.db'}", "is truncated"
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "SML_STORE_DIR": str(tmp_path / "store"),
           "SML_CACHE_DIR": str(tmp_path / ".cache"), "no_proxy": "localhost,127.0.0.1", "NO_PROXY": "localhost,127.0.0.1"}
    log = tmp_path / "dashboard.log"
    with log.open("wb") as out:
        started = time.monotonic()
        process = subprocess.Popen([sys.executable, "-m", "serverless_ml.cli", "dashboard", "--port", str(port)],
                                   cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while True:
            assert process.poll() is None, log.read_text(errors="replace")
            try:
                if http(f"http://127.0.0.1:{port}/")[0] == 200:
                    break
            except OSError:
                time.sleep(0.2)
            assert time.monotonic() - started < SITE_START_S, f"not listening after {SITE_START_S} s\n{log.read_text()}"
        listening_s = time.monotonic() - started
        asked = time.monotonic()
        status, _, body = http(f"http://127.0.0.1:{port}{UPDATE}", json.dumps(OVERVIEW_CALLBACK).encode())
        answered_s = time.monotonic() - asked
    finally:
        stop_process_group(process)
    assert status == 200, body
    notice = json.loads(body)["response"]["overview-body"]["children"]["props"]["children"]
    assert expected in notice and said in notice, notice
    assert answered_s < PAGE_ANSWER_S, f"the page took {answered_s:.1f} s"
    assert "Traceback" not in log.read_text(errors="replace")
    print(f"{fault}: listening after {listening_s:.1f} s, the page answered in {answered_s:.2f} s: {notice}")
    reliability.add("site hardening", cases=1)


# --- stopping cleanly ---------------------------------------------------------------------


def _run_count(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("SELECT count(*) FROM runs").fetchone()[0])
    except sqlite3.OperationalError:  # no such table: the file alone holds no schema yet
        return 0
    finally:
        db.close()


def _runs_in_the_file_alone(path: Path, scratch: Path) -> int:
    """The runs a plain copy of ``path`` (without its ``-wal`` file) holds."""
    copy = scratch / f"copy-{time.monotonic_ns()}.db"
    shutil.copyfile(path, copy)
    return _run_count(copy)


def _database_with_its_runs_in_the_wal(source: Path, target: Path) -> None:
    """``target``: a copy of ``source`` whose every page is still in ``target-wal``, as a
    process that stopped without closing its connections leaves it."""
    script = (
        "import os, sqlite3, sys\n"
        "src, dst = sqlite3.connect(sys.argv[1]), sqlite3.connect(sys.argv[2])\n"
        "dst.execute('PRAGMA journal_mode=WAL'); dst.execute('PRAGMA wal_autocheckpoint=0')\n"
        "src.backup(dst)\n"
        "os._exit(0)\n"  # no close, no checkpoint
    )
    subprocess.run([sys.executable, "-c", script, str(source), str(target)], check=True, timeout=60)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stopped_site_leaves_the_tracking_database_in_one_file(
    stop: signal.Signals, evil_world: EvilWorld, free_port, tmp_path: Path, reliability,  # noqa: ANN001
) -> None:
    """Ctrl-C (or SIGTERM) of `sml dashboard` used to leave mlflow.db-wal: a copy of
    mlflow.db alone then held 0 runs. The site checkpoints the database on its way out."""
    database = tmp_path / "mlflow.db"
    _database_with_its_runs_in_the_wal(evil_world.folder / "mlflow.db", database)
    runs = _run_count(evil_world.folder / "mlflow.db")
    assert runs > 0 and Path(f"{database}-wal").stat().st_size > 0
    assert _runs_in_the_file_alone(database, tmp_path) == 0, "the runs are not in the -wal file only: the test tests nothing"
    port = free_port()
    env = {**os.environ, "SML_STORE_DIR": str(evil_world.folder / "store"), "MLFLOW_TRACKING_URI": f"sqlite:///{database}",
           "SML_CACHE_DIR": str(tmp_path / ".cache"), "no_proxy": "localhost,127.0.0.1", "NO_PROXY": "localhost,127.0.0.1"}
    stdout, stderr = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "serverless_ml.cli", "dashboard", "--dataset", str(evil_world.spec_path), "--port", str(port)],
            cwd=tmp_path, env=env, stdout=out, stderr=err,
            # As from a terminal: a suite started in the background (`make test &`) runs
            # with SIGINT ignored, which its children inherit, and Ctrl-C would do nothing.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
    site = Server(f"http://127.0.0.1:{port}", port, process, stdout, stderr)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            assert process.poll() is None, site.log()
            try:
                if http(site.url + "/monitoring?dataset=evil")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, site.log()
            time.sleep(0.5)
        process.send_signal(stop)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "Traceback" not in site.log(), site.log()
    wal = Path(f"{database}-wal")
    assert not wal.exists() or wal.stat().st_size == 0, f"{wal} holds {wal.stat().st_size} bytes"
    assert _runs_in_the_file_alone(database, tmp_path) == runs
    reliability.add("site hardening", cases=1)
