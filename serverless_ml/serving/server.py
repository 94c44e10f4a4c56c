"""``sml serve``: a REST server of ``models:/<dataset>@champion`` that records what it serves.

Reads: the champion (the sklearn Pipeline of ``registry.load_version_model``, the same
object batch inference and the site score with) and the alias every
:data:`~serverless_ml.defaults.SERVE_ALIAS_CHECK_S` seconds, from a background thread, so
a promotion is served without a restart and a request never waits for the registry.
Writes: every served row and its prediction (:mod:`.recorder`), in batches.

Routes (JSON in, JSON out):

- ``POST /predict`` ``{"rows": [{feature: value, ...}, ...]}``: ``{"model_version": N,
  "predictions": [{<key>: K, "prediction": "survived", "probability": 0.81,
  "probability_died": 0.19, "probability_survived": 0.81}, ...]}``; a row outside the
  spec is 422 with ``{"error": ..., "errors": [{"row", "field", "message", "allowed"}]}``.
- ``POST /invocations``: MLflow's scoring format (``dataframe_split``,
  ``dataframe_records``, ``inputs``, ``instances``) with the same answer as
  ``{"predictions": [...], "model_version": N}``; a bad row is 400 with MLflow's
  ``{"error_code": "INVALID_PARAMETER_VALUE", "message": ...}`` plus ``errors``.
- ``GET /ping``, ``GET /health``: 200 with the version served.

A row's key (the spec's key column, e.g. ``passenger_id``) is optional: without it the
server generates one that cannot collide (:class:`.recorder.KeyBlocks`) and returns it,
so the label can be sent later with ``sml labels``. A body over
:data:`~serverless_ml.defaults.SERVE_MAX_BODY_BYTES` or more than
:data:`~serverless_ml.defaults.SERVE_MAX_ROWS` rows is 413; a body that is not JSON of
that shape 400. Responses and logs never carry the tracking URI or any secret: an
unexpected error is a 500 with one line, the traceback goes to the log (scrubbed).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from serverless_ml import defaults, registry
from serverless_ml.datasets.spec import DatasetSpec
from serverless_ml.feature_store.base import FeatureStore
from serverless_ml.inference.scoring import MODEL_VERSION_COLUMN, KeySet
from serverless_ml.serving import schema as rules
from serverless_ml.serving.recorder import (
    GENERATED_KEY_PREFIX,
    KeyBlocks,
    Recorder,
    ServedRow,
    largest_generated_key,
    write_rows,
)
from serverless_ml.settings import Settings

log = logging.getLogger(__name__)

DATASET_ENV = "SML_SERVE_DATASET"
"""The dataset (a built-in name or a spec file) of :func:`create_server` (gunicorn)."""
JSON_TYPE = [("Content-Type", "application/json")]
SECURITY_HEADERS = [("X-Content-Type-Options", "nosniff")]


class RequestError(Exception):
    """A request refused with a status and a JSON body."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body.get("error") or body.get("message"))
        self.status, self.body = status, body


@dataclass(frozen=True)
class Served:
    """The model being served, and the keys of the rows its training run used (train and
    holdout: ``sml infer`` does not score them; served, they are answered, not recorded)."""

    version: int
    pipeline: Any
    training_keys: KeySet = field(default_factory=lambda: KeySet(np.array([])))


STATUS_TEXT = {200: "200 OK", 400: "400 Bad Request", 404: "404 Not Found", 405: "405 Method Not Allowed",
               411: "411 Length Required", 413: "413 Payload Too Large", 422: "422 Unprocessable Entity",
               500: "500 Internal Server Error", 503: "503 Service Unavailable"}


class ServingApp:
    """The WSGI application of ``sml serve`` (and of gunicorn: :func:`create_server`)."""

    def __init__(self, spec: DatasetSpec, load_version: Callable[[], int | None], load_model: Callable[[int], Any],
                 recorder: Recorder | None, keys: KeyBlocks, alias_check_s: float = defaults.SERVE_ALIAS_CHECK_S,
                 max_body_bytes: int = defaults.SERVE_MAX_BODY_BYTES, max_rows: int = defaults.SERVE_MAX_ROWS,
                 load_training_keys: Callable[[int], KeySet] | None = None, start: bool = True) -> None:
        """``load_version``: the version behind ``@champion`` now (``None``: none);
        ``load_model``: a version's Pipeline; ``load_training_keys``: the keys its training
        run used. The first champion is loaded here. ``start=False``: the alias thread
        starts with the first request (after gunicorn's fork, even with ``--preload``)."""
        self.spec, self.schema = spec, rules.ServingSchema.from_spec(spec)
        self.load_version, self.load_model, self.load_training_keys = load_version, load_model, load_training_keys
        self.recorder, self.keys = recorder, keys
        self.alias_check_s, self.max_body_bytes, self.max_rows = alias_check_s, max_body_bytes, max_rows
        version = load_version()
        if version is None:
            raise registry.no_champion(spec.name, spec.dataset_arg)
        self.served = self._load(version)
        self.stopping = threading.Event()
        self.starting = threading.Lock()
        self.poller: threading.Thread | None = None
        if start:
            self.start()

    def _load(self, version: int) -> Served:
        pipeline = self.load_model(version)
        keys = self.load_training_keys(version) if self.load_training_keys is not None else KeySet(np.array([]))
        return Served(version, pipeline, keys)

    def start(self) -> None:
        """Start following the alias (once; in the process that serves)."""
        with self.starting:
            if self.poller is None and not self.stopping.is_set():
                self.poller = threading.Thread(target=self._follow_alias, name="sml-serve-alias", daemon=True)
                self.poller.start()

    # --- the alias --------------------------------------------------------------------------

    def _follow_alias(self) -> None:
        while not self.stopping.wait(self.alias_check_s):
            self.check_alias()

    def check_alias(self) -> None:
        """Load the version behind ``@champion`` when it is not the one served."""
        try:
            version = self.load_version()
            if version is None or version == self.served.version:
                return
            served = self._load(version)
        except Exception as exc:  # noqa: BLE001 - keep serving the current version
            from serverless_ml.redaction import scrub_known

            log.warning("checking @%s failed, still serving version %d: %s", registry.CHAMPION, self.served.version,
                        scrub_known(str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
            return
        previous = self.served.version
        self.served = served
        log.warning("now serving %s version %d (was %d)", registry.model_name(self.spec.name), version, previous)

    def close(self) -> None:
        """Stop following the alias and write the rows not recorded yet."""
        self.stopping.set()
        if self.recorder is not None:
            self.recorder.close()

    # --- requests ---------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method, path = environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "/")
        if self.poller is None:
            self.start()
        try:
            if path in ("/ping", "/health"):
                status, body = 200, {"status": "ok", MODEL_VERSION_COLUMN: self.served.version}
            elif path in ("/predict", "/invocations"):
                if method != "POST":
                    raise RequestError(405, {"error": f"{path} takes POST"})
                status, body = 200, self.answer(path, self._read_json(environ))
            else:
                raise RequestError(404, {"error": f"no route {path[:100]!r}: POST /predict or /invocations, GET /ping"})
        except RequestError as exc:
            status, body = exc.status, exc.body
        except Exception:
            log.exception("serving a request failed")
            status, body = 500, {"error": "internal error; the server's log has the details"}
        payload = json.dumps(body, allow_nan=False).encode()
        start_response(STATUS_TEXT[status], [*JSON_TYPE, *SECURITY_HEADERS, ("Content-Length", str(len(payload)))])
        return [payload]

    def _read_json(self, environ: Mapping[str, Any]) -> Any:
        try:
            length = int(environ.get("CONTENT_LENGTH") or -1)
        except ValueError:
            raise RequestError(400, {"error": "Content-Length is not a number"}) from None
        if length > self.max_body_bytes:
            raise RequestError(413, {"error": f"body of {length} bytes; the most is {self.max_body_bytes}"})
        if length < 0:
            raise RequestError(411, {"error": "a body with a Content-Length is required"})
        raw = environ["wsgi.input"].read(length)
        try:
            return json.loads(raw, parse_constant=_refuse_constant)
        except (ValueError, RecursionError) as exc:
            raise RequestError(400, {"error": f"the body is not JSON: {str(exc)[:100]}"}) from None

    def answer(self, path: str, body: Any) -> dict[str, Any]:
        """Validate, predict, record; the response body."""
        at = pd.Timestamp.now(tz="UTC")
        mlflow_format = path == "/invocations"
        records = invocation_records(body) if mlflow_format else predict_records(body)
        if not records:
            raise RequestError(400, {"error": "no rows"})
        if len(records) > self.max_rows:
            raise RequestError(413, {"error": f"{len(records)} rows; the most in one request is {self.max_rows}"})
        key = self.spec.primary_key
        rows, errors = rules.validate_records(self.schema.fields, records, passthrough=[key])
        errors = [*errors, *self._key_errors(records, errors)]
        if errors:
            errors.sort(key=lambda e: e.row)
            text = "; ".join(e.describe() for e in errors[:5])
            if mlflow_format:
                raise RequestError(400, {"error_code": "INVALID_PARAMETER_VALUE", "message": f"invalid input: {text}",
                                         "errors": [e.as_dict() for e in errors]})
            raise RequestError(422, {"error": f"invalid input: {text}", "errors": [e.as_dict() for e in errors]})
        missing = [i for i, row in enumerate(rows) if row.get(key) is None]
        for i, generated in zip(missing, self.keys.take(len(missing)), strict=True):
            rows[i][key] = generated
        served = self.served  # one version for the whole request
        proba = rules.class_probabilities(served.pipeline, self.schema.classes, rules.model_frame(self.schema.fields, rows))
        answer = rules.answer_frame(self.schema.class_names, proba)
        # The champion's own training rows are answered, not recorded: sml infer does not
        # score them either (they are not monitoring traffic).
        trained = served.training_keys.contains(
            np.asarray([row[key] for row in rows], dtype=np.int64 if self.spec.primary_key_type == "bigint" else object))
        recorded = [ServedRow(row[key], row, served.version, proba[i], at) for i, row in enumerate(rows) if not trained[i]]
        if self.recorder is not None and recorded and not self.recorder.add(recorded):
            # Every answer is recorded: none is given while the store refuses the rows, or
            # once the server is shutting down (its last flush has begun).
            if self.recorder.closed:
                raise RequestError(503, {"error": "the server is shutting down; try again later"})
            raise RequestError(503, {"error": f"{self.recorder.waiting} served rows are waiting to be written to the "
                                              "feature store, which refuses them now; try again later"})
        predictions = []
        for i, item in enumerate(answer.to_dict(orient="records")):
            predictions.append({key: rows[i][key], **{k: (float(v) if isinstance(v, float) else v) for k, v in item.items()}})
        return {MODEL_VERSION_COLUMN: served.version, "predictions": predictions}

    def _key_errors(self, records: list[Any], errors: list[rules.RowError]) -> list[rules.RowError]:
        """Keys given in the request: of the key's type, not twice in one request."""
        key, out, seen = self.spec.primary_key, [], set()
        bad_rows = {e.row for e in errors}
        integer = self.spec.primary_key_type == "bigint"
        allowed = "a whole number (or leave it out: one is generated)" if integer else \
            f"a text of at most {rules.MAX_TEXT_LENGTH} printable characters, no control characters (or leave it out: one is generated)"
        for position, record in enumerate(records):
            if position in bad_rows or not isinstance(record, Mapping) or record.get(key) is None:
                continue
            value = record[key]
            ok = (isinstance(value, int) and not isinstance(value, bool) and -2**63 <= value < 2**63) if integer else \
                (isinstance(value, str) and 0 < len(value) <= rules.MAX_TEXT_LENGTH and value.isprintable())
            reserved = ok and (defaults.SERVE_KEY_BASE <= value < 2**53 if integer
                               else value.startswith(GENERATED_KEY_PREFIX))
            if not ok:
                out.append(rules.RowError(position, key, f"{str(value)[:40]!r} is not a valid key", allowed))
            elif reserved:
                out.append(rules.RowError(
                    position, key, f"key {str(value)[:40]!r} is one sml serve generates",
                    f"below {defaults.SERVE_KEY_BASE} or from 2**53 (or leave it out: one is generated)" if integer
                    else f"a key not starting with {GENERATED_KEY_PREFIX!r} (or leave it out: one is generated)"))
            elif value in seen:
                out.append(rules.RowError(position, key, f"key {str(value)[:40]!r} is given twice in this request",
                                          "each key once per request"))
            seen.add(value)
        return out


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def predict_records(body: Any) -> list[Any]:
    """The rows of a ``/predict`` body, ``{"rows": [...]}``."""
    if not isinstance(body, dict) or not isinstance(body.get("rows"), list):
        raise RequestError(400, {"error": 'expected {"rows": [{feature: value, ...}, ...]}'})
    return list(body["rows"])


def invocation_records(body: Any) -> list[Any]:
    """The rows of an MLflow ``/invocations`` body: ``dataframe_split`` (``columns`` and
    ``data``), ``dataframe_records``, ``inputs`` (records, or columns of equal length) or
    ``instances``."""
    fail = RequestError(400, {"error_code": "BAD_REQUEST", "message": (
        "expected one of dataframe_split {columns, data}, dataframe_records [...], inputs, instances")})
    if not isinstance(body, dict):
        raise fail
    if "dataframe_split" in body:
        split = body["dataframe_split"]
        if not isinstance(split, dict) or not isinstance(split.get("columns"), list) or not isinstance(split.get("data"), list):
            raise fail
        columns = split["columns"]
        if not all(isinstance(c, str) for c in columns) or not all(isinstance(r, list) and len(r) == len(columns)
                                                                   for r in split["data"]):
            raise RequestError(400, {"error_code": "BAD_REQUEST",
                                     "message": "dataframe_split: every row of data needs one value per column"})
        return [dict(zip(columns, row, strict=True)) for row in split["data"]]
    for name in ("dataframe_records", "instances", "inputs"):
        if name in body:
            value = body[name]
            if isinstance(value, list):
                return list(value)
            if isinstance(value, dict) and all(isinstance(v, list) for v in value.values()):
                lengths = {len(v) for v in value.values()}
                if len(lengths) != 1:
                    raise fail
                n = lengths.pop()
                return [{k: v[i] for k, v in value.items()} for i in range(n)]
            raise fail
    raise fail


def build_app(spec: DatasetSpec, store: FeatureStore, settings: Settings, record: bool = True,
              flush_rows: int = defaults.SERVE_FLUSH_ROWS, flush_s: float = defaults.SERVE_FLUSH_S,
              start: bool = True) -> ServingApp:
    """The application for ``spec``: the tracking set-up of this process, the champion,
    and (``record``) the recorder; ``start=False``: their threads start with the first
    request."""
    from serverless_ml import tracking
    from serverless_ml.datasets.groups import existing_feature_group

    existing_feature_group(spec, store)  # served rows go there: it must exist
    registry.refuse_without_database(settings.tracking_uri, spec.name, spec.dataset_arg)
    tracker = tracking.configure_tracking(settings)
    name = registry.model_name(spec.name)

    def load_version() -> int | None:
        version = registry.alias_version(name, registry.CHAMPION, tracker.client)
        return int(version.version) if version is not None else None

    def load_model(version: int) -> Any:
        return registry.load_version_model(name, version)

    def load_training_keys(version: int) -> KeySet:
        # As sml infer: every key of the version's training run (train and holdout).
        keys = registry.version_training_keys(tracker.client.get_model_version(name, str(version)), spec.primary_key,
                                              tracker.client)
        return KeySet(np.asarray(keys.all)) if keys is not None else KeySet(np.array([]))

    recorder = Recorder(lambda rows: write_rows(spec, store, settings.state_dir, rows), flush_rows, flush_s,
                        start=start) if record else None
    try:
        return ServingApp(spec, load_version, load_model, recorder,
                          KeyBlocks(settings.state_dir, spec.name, spec.primary_key_type,
                                    lambda: largest_generated_key(spec, store)),
                          load_training_keys=load_training_keys, start=start)
    except BaseException:
        if recorder is not None:
            recorder.close()
        raise


def create_server() -> ServingApp:
    """The WSGI application for gunicorn (``gunicorn 'serverless_ml.serving.server:create_server()'``),
    configured from the environment: ``SML_SERVE_DATASET`` (default titanic),
    ``MLFLOW_TRACKING_URI``, ``SML_STORE_DIR``, ``SML_FEATURE_STORE``, ``SML_STATE_DIR``.
    Rows are flushed when the worker exits (gunicorn's SIGTERM). The background threads
    (the alias, the recorder) start with a worker's first request. Not with ``--preload``:
    the embedded store's Delta Lake runtime (tokio) does not survive the fork."""
    import atexit

    from serverless_ml.datasets import get_dataset
    from serverless_ml.feature_store import open_feature_store
    from serverless_ml.redaction import install_log_scrubber
    from serverless_ml.settings import resolve_settings

    install_log_scrubber()
    settings = resolve_settings()
    spec = get_dataset(os.environ.get(DATASET_ENV) or defaults.DATASET)
    app = build_app(spec, open_feature_store(settings), settings, start=False)
    atexit.register(app.close)
    return app


def make_wsgi_server(app: ServingApp, host: str, port: int) -> Any:
    """werkzeug's threaded server of ``app`` whose :meth:`server_close` waits for the
    requests being answered (a request thread is not a daemon)."""
    from werkzeug.serving import WSGIRequestHandler, make_server

    class QuietHandler(WSGIRequestHandler):
        def log_request(self, *args: Any, **kwargs: Any) -> None:
            if log.isEnabledFor(logging.DEBUG):
                super().log_request(*args, **kwargs)

    server = make_server(host, port, app, threaded=True, request_handler=QuietHandler)
    # threaded=True: a ThreadingMixIn server; server_close() joins the request threads.
    server.daemon_threads = False  # type: ignore[attr-defined]
    server.block_on_close = True  # type: ignore[attr-defined]
    return server


def close_server(server: Any, app: ServingApp) -> None:
    """Stop accepting, wait for the requests being answered (their rows are buffered),
    then write the buffered rows."""
    server.server_close()
    started = time.monotonic()
    app.close()
    log.info("flushed the served rows in %.2f s", time.monotonic() - started)


def serve_forever(app: ServingApp, host: str, port: int, ready: Callable[[], None] | None = None) -> None:
    """Serve ``app`` on ``host:port`` with threads until SIGTERM or Ctrl-C; then flush."""
    server = make_wsgi_server(app, host, port)
    try:
        if ready is not None:
            ready()
        server.serve_forever(poll_interval=0.2)
    finally:
        close_server(server, app)
