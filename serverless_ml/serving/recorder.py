"""What ``sml serve`` records: every served row as a live feature row, with its served
prediction, written in batches.

Writes, per flush, under the lock that ``sml infer`` and ``sml labels`` take (no batch is
scored and no label attached in between):

1. the feature group ``<dataset>``: the served rows with ``origin=live``, event time the
   request's time, label null (``sml labels`` attaches it later); a row whose key is
   stored already with the same features is left as stored, one stored with other
   features is not recorded (a warning in the log names the key: the features of a
   stored row are history);
2. ``<dataset>_predictions``: each recorded row's served prediction and probabilities,
   with the version that served it, ``scored_at`` the request's time and no ``run_id``
   (no monitoring run scored it), and the stored row's label when it has one already.

A key with a served prediction already (of any version: served again after a promotion)
is not recorded again, so monitoring counts it once. The server records no row of the
champion's own training keys (:class:`.server.ServingApp`), as ``sml infer`` scores none.

``sml infer`` scores only rows that no model has scored, so a served row is never scored
again by batch inference: it counts in the rolling and since-promotion figures of the
monitoring runs logged after it (and ``sml labels`` updates those), not in a batch's own
figures. A flush killed between the two writes leaves live rows without a prediction:
the next ``sml infer`` scores them like any new row.

A flush happens every :data:`~serverless_ml.defaults.SERVE_FLUSH_ROWS` rows or
:data:`~serverless_ml.defaults.SERVE_FLUSH_S` seconds, and on shutdown (SIGTERM, Ctrl-C).
A flush that fails (or waits more than :data:`~serverless_ml.defaults.SERVE_LOCK_WAIT_S`
for the lock) keeps its rows for the next one, tried after a growing pause (at most
:data:`~serverless_ml.defaults.SERVE_RETRY_MAX_S`); a SIGKILL loses the rows buffered
since the last successful flush, at most :data:`~serverless_ml.defaults.SERVE_MAX_PENDING_ROWS`.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from serverless_ml import defaults
from serverless_ml.datasets.spec import EVENT_TIME_COLUMN, DatasetSpec
from serverless_ml.faults import crash_point
from serverless_ml.files import atomic_write_text
from serverless_ml.feature_store.base import LIVE_ORIGIN, ORIGIN_COLUMN, FeatureStore, is_missing, same_value
from serverless_ml.inference.scoring import (
    MODEL_VERSION_COLUMN,
    normalise_predictions,
    predictions_group,
    probability_columns,
    served_mask,
)
from serverless_ml.locks import LockBusy, job_lock

log = logging.getLogger(__name__)

GENERATED_KEY_PREFIX = "served-"
"""A generated ``string`` key: this prefix and a random UUID's 32 hexadecimal digits."""


@dataclass(frozen=True)
class ServedRow:
    """One answered row: its key, typed features, the version that served it, the
    probabilities of each class (spec order) and the request's time."""

    key: Any
    features: dict[str, Any]
    version: int
    proba: np.ndarray
    at: pd.Timestamp


class KeyBlocks:
    """Keys for served rows that came without one, which cannot collide with each other.

    ``string`` keys: ``served-`` and a random UUID. ``bigint`` keys: numbers from
    :data:`~serverless_ml.defaults.SERVE_KEY_BASE` (2**52) up, handed out in blocks of
    :data:`~serverless_ml.defaults.SERVE_KEY_BLOCK` reserved in a file of the state
    directory under an exclusive lock, so two servers (or gunicorn workers) sharing the
    state directory never hand out the same key; they stay below 2**53, exact in every
    JSON reader. A key a user gives in that range may meet a generated one: the recorder
    then keeps the stored row and logs the served one as not recorded.
    """

    def __init__(self, state_dir: Path, dataset: str, key_type: str,
                 largest_stored: Callable[[], int | None] | None = None) -> None:
        """``largest_stored``: the largest generated key stored already (from
        :data:`~serverless_ml.defaults.SERVE_KEY_BASE` up; ``None``: none), asked only when
        the file of reservations is missing, empty or damaged, so reservations go on above it."""
        self.path = state_dir / "_serve" / f"{dataset}.next_key"
        self.lock_path = self.path.with_name(f"{dataset}.next_key.lock")
        self.key_type, self.largest_stored = key_type, largest_stored
        self.lock = threading.Lock()
        self.next = self.end = 0

    def take(self, n: int) -> list[Any]:
        if self.key_type != "bigint":
            return [f"{GENERATED_KEY_PREFIX}{uuid.uuid4().hex}" for _ in range(n)]
        out: list[int] = []
        with self.lock:
            while len(out) < n:
                if self.next >= self.end:
                    self.next, self.end = self._reserve()
                take = min(n - len(out), self.end - self.next)
                out.extend(range(self.next, self.next + take))
                self.next += take
        return out

    def _reserve(self) -> tuple[int, int]:
        """The next block, under an exclusive lock (a file of its own); the file of
        reservations is replaced whole (temporary file, fsync, rename), so a kill at any
        point leaves the old number or the new one, never an empty file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                text = self.path.read_text(encoding="utf-8").strip()
            except (FileNotFoundError, UnicodeDecodeError):
                text = ""
            if text.isdigit():
                start = max(int(text), defaults.SERVE_KEY_BASE)
            else:  # missing, empty or damaged: above every generated key stored already
                largest = self.largest_stored() if self.largest_stored is not None else None
                start = max(defaults.SERVE_KEY_BASE, largest + 1 if largest is not None else 0)
            end = start + defaults.SERVE_KEY_BLOCK
            atomic_write_text(self.path, str(end))
        return start, end


def largest_generated_key(spec: DatasetSpec, store: FeatureStore) -> int | None:
    """The largest ``bigint`` key of the feature group in the generated range
    (:data:`~serverless_ml.defaults.SERVE_KEY_BASE` up to 2**53), ``None`` when none."""
    from serverless_ml.datasets.groups import existing_feature_group

    group = existing_feature_group(spec, store)
    key = group[spec.primary_key]
    largest: int | None = None
    for batch in group.read_batches(columns=[spec.primary_key],
                                    where=(key >= defaults.SERVE_KEY_BASE) & (key < 2**53)):
        if batch.num_rows:
            top = int(np.max(batch.column(0).to_numpy(zero_copy_only=False)))
            largest = top if largest is None else max(largest, top)
    return largest


def feature_rows(spec: DatasetSpec, rows: Sequence[ServedRow]) -> pd.DataFrame:
    """The served rows in the feature group's layout (``origin=live``, label null)."""
    frame: dict[str, Any] = {
        spec.primary_key: pd.Series([r.key for r in rows], dtype="int64" if spec.primary_key_type == "bigint" else object),
        EVENT_TIME_COLUMN: pd.Series([r.at for r in rows], dtype="datetime64[us, UTC]"),
    }
    for feature in spec.features:
        values = [r.features.get(feature.name) for r in rows]
        if feature.type == "double":
            frame[feature.name] = pd.Series([np.nan if v is None else float(v) for v in values], dtype="float64")
        elif feature.type == "bigint":
            frame[feature.name] = pd.Series(values, dtype="Int64" if feature.nullable else "int64")
        else:
            frame[feature.name] = pd.Series(values, dtype=object)
    frame[spec.label] = pd.Series([None] * len(rows), dtype="Int64" if spec.label_type == "bigint" else object)
    frame[ORIGIN_COLUMN] = LIVE_ORIGIN
    return pd.DataFrame(frame)[spec.store_columns]


def prediction_rows(spec: DatasetSpec, rows: Sequence[ServedRow]) -> pd.DataFrame:
    """The served predictions in the layout of ``<dataset>_predictions``."""
    proba = np.vstack([r.proba for r in rows]) if rows else np.zeros((0, len(spec.classes)))
    best = proba.argmax(axis=1) if len(rows) else np.zeros(0, dtype=np.int64)
    classes = np.asarray(spec.classes, dtype=np.int64 if spec.label_type == "bigint" else object)
    frame = pd.DataFrame({
        spec.primary_key: pd.Series([r.key for r in rows], dtype="int64" if spec.primary_key_type == "bigint" else object),
        MODEL_VERSION_COLUMN: np.array([r.version for r in rows], dtype=np.int64),
        EVENT_TIME_COLUMN: pd.Series([r.at for r in rows], dtype="datetime64[us, UTC]"),
        "prediction": classes[best],
        "probability": proba[np.arange(len(best)), best],
    })
    for i, column in enumerate(probability_columns(spec.classes)):
        frame[column] = proba[:, i]
    frame["actual"] = pd.Series([None] * len(rows), dtype="Int64" if spec.label_type == "bigint" else object)
    frame["correct"] = pd.array([pd.NA] * len(rows), dtype="boolean")
    frame[ORIGIN_COLUMN] = LIVE_ORIGIN
    frame["scored_at"] = frame[EVENT_TIME_COLUMN]
    frame["run_id"] = pd.Series([None] * len(rows), dtype=object)
    return normalise_predictions(frame, spec)


@dataclass
class FlushReport:
    rows: int
    features_inserted: int
    predictions_inserted: int
    not_recorded: list[Any]
    already_served: int = 0
    """Rows whose key has a served prediction already (of any version): not recorded again."""


@contextlib.contextmanager
def _job_lock_within(state_dir: Path, name: str, wait_s: float | None) -> Iterator[None]:
    """:func:`~serverless_ml.locks.job_lock`, waiting at most ``wait_s`` seconds
    (``None``: as long as it takes); :class:`~serverless_ml.locks.LockBusy` after that."""
    if wait_s is None:
        with job_lock(state_dir, name):
            yield
        return
    deadline = time.monotonic() + wait_s
    while True:
        stack = contextlib.ExitStack()
        try:
            stack.enter_context(job_lock(state_dir, name, wait=False))
        except LockBusy:
            if time.monotonic() >= deadline:
                raise LockBusy(f"lock '{name}' is held by another job (sml infer or sml labels) for more than "
                               f"{wait_s:g} s") from None
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
            continue
        with stack:
            yield
        return


def served_keys(spec: DatasetSpec, store: FeatureStore, keys: Sequence[Any]) -> set[Any]:
    """Those of ``keys`` that have a served (not shadow) prediction, of any version."""
    target = predictions_group(spec, store)
    if not keys or not target.exists():
        return set()
    found: set[Any] = set()
    key = spec.primary_key
    for batch in target.read_batches(columns=[key, "run_id"], where=target[key].isin(list(keys))):
        frame = batch.to_pandas()
        found.update(frame.loc[served_mask(frame["run_id"]), key].tolist())
    return found


def _attach_labels(spec: DatasetSpec, predictions: pd.DataFrame, labels: dict[Any, Any]) -> pd.DataFrame:
    """``actual`` and ``correct`` of the rows whose stored row has a label already (as
    ``sml infer`` fills them: the stored row's label, prediction equal to it)."""
    if not labels:
        return predictions
    actual = predictions[spec.primary_key].map(labels)
    known = actual.notna().to_numpy()
    values = [labels[k] if ok else None for k, ok in zip(predictions[spec.primary_key], known, strict=True)]
    predictions["actual"] = pd.Series(values, dtype="Int64" if spec.label_type == "bigint" else object,
                                      index=predictions.index)
    correct = pd.array(predictions["prediction"].to_numpy() == np.asarray(values, dtype=object), dtype="boolean")
    correct[~known] = pd.NA
    predictions["correct"] = correct
    return normalise_predictions(predictions, spec)


def write_rows(spec: DatasetSpec, store: FeatureStore, state_dir: Path, rows: Sequence[ServedRow],
               lock_wait_s: float | None = defaults.SERVE_LOCK_WAIT_S) -> FlushReport:
    """Write served rows (see the module's docstring) under the ``infer-<dataset>`` lock,
    waiting for it at most ``lock_wait_s`` seconds (:class:`~serverless_ml.locks.LockBusy`
    after that: nothing written)."""
    from serverless_ml.datasets.groups import existing_feature_group

    # One row per key: the first served (a key served twice before a flush is one row).
    seen: dict[Any, ServedRow] = {}
    for row in rows:
        seen.setdefault(row.key, row)
    unique = list(seen.values())
    with _job_lock_within(state_dir, f"infer-{spec.name}", lock_wait_s):
        crash_point("serve.flush_locked")
        group = existing_feature_group(spec, store)
        # A key with a served prediction already (any version): it counts once in
        # monitoring; its feature row is stored already.
        # Still compared with its stored row: one served with other features is named in
        # the log as any such key is (its features are history), though neither is recorded.
        served_before = served_keys(spec, store, list(seen))
        features = feature_rows(spec, unique)
        comparison = group.compare(features)
        keep = comparison.is_new.copy()
        not_recorded: list[Any] = []
        # A key stored already with the same features: its prediction keeps the stored
        # row's event time and origin, and its label when it has one (prediction and row
        # are one row's).
        stored_as: dict[Any, tuple[pd.Timestamp, str]] = {}
        labels: dict[Any, Any] = {}
        if comparison.is_changed.any():
            stored = comparison.changed.set_index(spec.primary_key)
            for position in np.flatnonzero(comparison.is_changed):
                key = features.at[position, spec.primary_key]
                same = all(same_value(stored.at[key, f], features.at[position, f]) for f in spec.feature_names)
                keep[position] = same
                if same:
                    stored_as[key] = (stored.at[key, EVENT_TIME_COLUMN], stored.at[key, ORIGIN_COLUMN])
                    label = stored.at[key, spec.label]
                    if not is_missing(label):
                        labels[key] = label
                else:
                    not_recorded.append(key)
        already = ~comparison.is_new & ~comparison.is_changed  # stored exactly as served: keep it
        fresh = np.array([row.key not in served_before for row in unique], dtype=bool)
        record = (keep | already) & fresh
        new_features = features[comparison.is_new & fresh].reset_index(drop=True)
        inserted = group.insert(new_features, wait=True, on_change="refuse").inserted if len(new_features) else 0
        crash_point("serve.after_features")
        recorded = [row for row, ok in zip(unique, record, strict=True) if ok]
        predictions = prediction_rows(spec, recorded)
        if stored_as:
            where = predictions[spec.primary_key].isin(list(stored_as))
            for position in np.flatnonzero(where.to_numpy()):
                event_time, origin = stored_as[predictions.at[position, spec.primary_key]]
                predictions.at[position, EVENT_TIME_COLUMN] = event_time
                predictions.at[position, ORIGIN_COLUMN] = origin
        predictions = _attach_labels(spec, predictions, labels)
        target = predictions_group(spec, store)
        if len(predictions) and target.exists():  # a shadow prediction of this version: left as it is
            predictions = predictions[target.compare(predictions).is_new].reset_index(drop=True)
        predicted = target.insert(predictions, wait=True, on_change="refuse").inserted if len(predictions) else 0
        crash_point("serve.after_predictions")
    return FlushReport(len(rows), inserted, predicted, not_recorded, len(served_before))


class Recorder:
    """Buffers served rows and writes them (:func:`write_rows`) from a background thread
    every ``flush_rows`` rows or ``flush_s`` seconds; :meth:`close` writes what is left.

    After a failed flush the next try waits ``flush_s`` doubled per failure in a row, at
    most ``retry_max_s`` (the rows wait, up to ``max_pending``); a streak of failures is
    logged once when it starts and once when a flush succeeds again."""

    def __init__(self, write: Callable[[list[ServedRow]], FlushReport], flush_rows: int = defaults.SERVE_FLUSH_ROWS,
                 flush_s: float = defaults.SERVE_FLUSH_S, max_pending: int = defaults.SERVE_MAX_PENDING_ROWS,
                 retry_max_s: float = defaults.SERVE_RETRY_MAX_S, start: bool = True) -> None:
        """``start=False``: the background thread starts with the first :meth:`add` (a
        gunicorn master that imports the application before it forks starts none)."""
        self.write, self.flush_rows, self.flush_s, self.max_pending = write, flush_rows, flush_s, max_pending
        self.retry_max_s = retry_max_s
        self.pending: list[ServedRow] = []
        self.cond = threading.Condition()
        self.flush_lock = threading.Lock()
        self.closed = False
        self.failures = 0
        """Flushes failed in a row (0: the last one succeeded)."""
        self.attempts = 0
        """Flushes that had rows to write, since the start."""
        self.thread: threading.Thread | None = None
        if start:
            self._start()

    def _start(self) -> None:
        with self.cond:
            if self.thread is None and not self.closed:
                self.thread = threading.Thread(target=self._loop, name="sml-serve-recorder", daemon=True)
                self.thread.start()

    def add(self, rows: Sequence[ServedRow]) -> bool:
        """Buffer ``rows``; ``False`` (nothing buffered) once :meth:`close` has begun, or
        when :data:`max_pending` rows wait already (the store has refused the last flushes)."""
        if self.thread is None:
            self._start()
        with self.cond:
            if self.closed or len(self.pending) + len(rows) > self.max_pending:
                return False
            self.pending.extend(rows)
            if len(self.pending) >= self.flush_rows:
                self.cond.notify()
        return True

    @property
    def waiting(self) -> int:
        return len(self.pending)

    def retry_delay(self) -> float:
        """Seconds before the next try after :attr:`failures` failed flushes in a row."""
        return float(min(self.flush_s * 2.0 ** max(self.failures - 1, 0), self.retry_max_s))

    def _loop(self) -> None:
        while True:
            with self.cond:
                if self.failures:  # back off, whatever the buffer holds
                    self.cond.wait_for(lambda: self.closed, self.retry_delay())
                elif not self.closed and len(self.pending) < self.flush_rows:
                    self.cond.wait(self.flush_s)
                if self.closed:
                    return
            self.flush()

    def flush(self) -> FlushReport | None:
        """Write the rows buffered so far (one flush at a time); on failure they stay
        buffered for the next flush."""
        with self.flush_lock:
            with self.cond:
                batch, self.pending = self.pending, []
            if not batch:
                return None
            self.attempts += 1
            try:
                report = self.write(batch)
            except Exception as exc:  # noqa: BLE001 - the server goes on; the rows wait for the next flush
                from serverless_ml.redaction import scrub_known

                with self.cond:
                    self.pending[:0] = batch
                    waiting = len(self.pending)
                self.failures += 1
                if self.failures == 1:
                    log.warning("recording %d served row(s) failed, kept for the next flush (retrying after %g s, "
                                "then less often, up to every %g s; logged again when it succeeds): %s", waiting,
                                self.retry_delay(), self.retry_max_s,
                                scrub_known(str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
                return None
            if self.failures:
                log.warning("recording served rows works again after %d failed flush(es)", self.failures)
                self.failures = 0
            self._log(report)
            return report

    @staticmethod
    def _log(report: FlushReport) -> None:
        if report.not_recorded:
            log.warning("%d served row(s) not recorded: their key is stored with other features (first: %s)",
                        len(report.not_recorded), report.not_recorded[0])
        log.info("recorded %d served row(s): %d feature row(s), %d prediction(s)%s", report.rows,
                 report.features_inserted, report.predictions_inserted,
                 f"; {report.already_served} served before (not counted twice)" if report.already_served else "")

    def close(self, wait_s: float = defaults.SERVE_LOCK_WAIT_S) -> None:
        """Stop the thread and write what is buffered: one last try, which waits at most
        ``wait_s`` for a flush still running (which gives up waiting for the lock after
        :data:`~serverless_ml.defaults.SERVE_LOCK_WAIT_S` itself), then writes with
        :func:`write_rows`' own lock wait; rows it cannot write are logged as not
        recorded, in one line."""
        with self.cond:
            if self.closed:
                return
            self.closed = True
            self.cond.notify_all()
        deadline = time.monotonic() + wait_s
        if self.thread is not None:
            self.thread.join(timeout=wait_s)
        if not self.flush_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            log.error("%d served row(s) not recorded: a flush still running at shutdown did not finish within %g s",
                      self.waiting, wait_s)
            return
        try:
            with self.cond:
                batch, self.pending = self.pending, []
            if not batch:
                return
            try:
                report = self.write(batch)
            except Exception as exc:  # noqa: BLE001 - shutting down: say what is lost, in one line
                from serverless_ml.redaction import scrub_known

                log.error("%d served row(s) not recorded: the last flush, at shutdown, failed: %s", len(batch),
                          scrub_known(str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
                return
            if self.failures:
                log.warning("recording served rows works again after %d failed flush(es)", self.failures)
            self._log(report)
        finally:
            self.flush_lock.release()
