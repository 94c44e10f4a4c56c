"""Scoring: choose the rows a model has not seen, predict them in chunks, and shape the
predictions for the ``<dataset>_predictions`` feature group."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from serverless_ml.datasets.spec import EVENT_TIME_COLUMN, DatasetSpec
from serverless_ml.feature_store.base import ORIGIN_COLUMN, Feature, FeatureGroup, FeatureStore
from serverless_ml.training.evaluation import metric_key, numbered


CHUNK_ROWS = 100_000
MODEL_VERSION_COLUMN = "model_version"
"""The column of the predictions feature group naming the registered version that scored a
row (part of its primary key). The same text as :data:`serverless_ml.registry.MODEL_VERSION_TAG`
but a feature group's schema, not a run's tag: renaming the tag must not rename stored columns."""


SHADOW_RUN_PREFIX = "shadow:"
"""The ``run_id`` of a shadow prediction (``@challenger`` scoring a batch it does not
serve): this prefix and the batch's monitoring run. One group, keyed by key and model
version, holds both kinds; every reader of served predictions (the statistics' history,
``sml labels``' realized figures, the site) keeps the rows :func:`served_mask` marks."""


def shadow_run_id(run_id: str) -> str:
    """The ``run_id`` column of the challenger's shadow predictions of run ``run_id``'s batch."""
    return f"{SHADOW_RUN_PREFIX}{run_id}"


def served_mask(run_ids: pd.Series) -> np.ndarray:
    """Which predictions rows were served (the champion's), from their ``run_id`` column."""
    return ~run_ids.astype("string").str.startswith(SHADOW_RUN_PREFIX).fillna(False).to_numpy(dtype=bool)


def served_mask_arrow(run_ids: Any) -> np.ndarray:
    """:func:`served_mask` of an Arrow ``run_id`` column (no Python string per row)."""
    import pyarrow.compute as pc

    return ~np.asarray(pc.fill_null(pc.starts_with(run_ids, SHADOW_RUN_PREFIX), False), dtype=bool)


def batch_run_ids(run_ids: pd.Series) -> pd.Series:
    """The monitoring run of each predictions row, served or shadow."""
    return run_ids.astype("string").str.removeprefix(SHADOW_RUN_PREFIX)


def probability_columns(classes: Sequence[Any]) -> list[str]:
    """The predictions table's probability column of each class: ``proba_`` and the class
    value as a metric name allows it, in lower case. Table columns are compared ignoring
    case (Delta), so a name an earlier class has (``a b`` and ``a_b``; ``Yes`` and ``yes``)
    takes a counter: ``proba_a_b_2``; a name never changes once classes are fixed."""
    out: list[str] = []
    for value in classes:
        out.append(numbered(f"proba_{metric_key(value).lower()}", out, "_"))
    return out


def predictions_schema(spec: DatasetSpec) -> list[Feature]:
    """Columns of ``<dataset>_predictions``: one row per (key, model version)."""
    key_type = spec.primary_key_type
    return [
        Feature(spec.primary_key, key_type),
        Feature(MODEL_VERSION_COLUMN, "bigint"),
        Feature(EVENT_TIME_COLUMN, "timestamp"),
        Feature("prediction", spec.label_type),
        Feature("probability", "double", "probability of the predicted class"),
        *[Feature(column, "double", f"probability of class {c}")
          for column, c in zip(probability_columns(spec.classes), spec.classes, strict=True)],
        Feature("actual", spec.label_type, "the row's label when known"),
        Feature("correct", "boolean"),
        Feature(ORIGIN_COLUMN, "string", "origin of the scored feature row"),
        Feature("scored_at", "timestamp"),
        Feature("run_id", "string", "the monitoring run that logged this batch"),
    ]


def predictions_group(spec: DatasetSpec, store: FeatureStore) -> FeatureGroup:
    """The feature group ``<dataset>_predictions`` (created on its first insert): the
    jobs that score (``sml infer``, ``sml simulate``) and un-score (``--replace``) open it here."""
    return store.get_or_create_feature_group(
        name=spec.predictions_group,
        version=spec.predictions_version,
        primary_key=[spec.primary_key, MODEL_VERSION_COLUMN],
        event_time=EVENT_TIME_COLUMN,
        description=f"predictions of the {spec.name} champion, next to the actual labels",
        features=predictions_schema(spec),
    )


def select_new_rows(
    features: pd.DataFrame,
    spec: DatasetSpec,
    scored_keys: Iterable[Any],
    training_keys: Iterable[Any],
    as_of_end: pd.Timestamp,
) -> pd.DataFrame:
    """Rows with event time before ``as_of_end`` that no model has scored yet and that were
    not in the champion's training data."""
    key = spec.primary_key
    mask = features[EVENT_TIME_COLUMN] < as_of_end
    excluded = set(scored_keys) | set(training_keys)
    if excluded:
        mask &= ~features[key].isin(excluded)
    return features[mask].reset_index(drop=True)


class DistinctRowsEncoder:
    """A fitted ``OneHotEncoder`` applied to the distinct rows of its input only, its
    output then gathered back row by row: the same matrix (the encoder maps each row on
    its own), without scikit-learn's Python lookup of every value of a text column (most
    of a chunk's preparation, and time the predicting thread waits for the interpreter
    lock). Used by :meth:`ChunkScorer.prepare` on the job's own copy of the pipeline; the
    registered model is not changed.

    A column whose missing values are not all ``None`` (``NaN`` beside ``None``: the
    encoder may tell them apart) is encoded as it is."""

    def __init__(self, encoder: Any) -> None:
        self.encoder = encoder

    def __getattr__(self, name: str) -> Any:
        return getattr(self.encoder, name)

    def transform(self, x: Any, **params: Any) -> Any:
        if params or not isinstance(x, pd.DataFrame) or len(x) < 2:
            return self.encoder.transform(x, **params)
        rows = len(x)
        combined = np.zeros(rows, dtype=np.int64)
        bound = 1
        for name in x.columns:
            values = x[name].to_numpy()
            codes, uniques = pd.factorize(values, use_na_sentinel=True)
            missing = codes < 0
            if missing.any() and any(v is not None for v in values[missing]):
                return self.encoder.transform(x)
            combined = combined * (len(uniques) + 1) + (codes + 1)
            bound *= len(uniques) + 1
            if bound > 4 * rows:  # renumber the combinations seen so far: the codes stay small
                kept, combined = np.unique(combined, return_inverse=True)
                bound = len(kept)
        seen = np.zeros(bound, dtype=bool)
        seen[combined] = True
        used = np.flatnonzero(seen)
        representative = np.empty(bound, dtype=np.int64)
        representative[combined] = np.arange(rows)  # any row of a combination: the same values
        number = np.full(bound, -1, dtype=np.int64)
        number[used] = np.arange(len(used))
        encoded = self.encoder.transform(x.iloc[representative[used]])
        if not isinstance(encoded, np.ndarray) and not hasattr(encoded, "tocsr"):
            return self.encoder.transform(x)  # a frame (scikit-learn's pandas output): as it is
        return encoded[number[combined]]


def _job_transforms(model: Any) -> Any:
    """The transforming steps of Pipeline ``model`` (``None``: it has none), for scoring
    chunks: a ``ColumnTransformer`` step's one-hot encoders wrapped in
    :class:`DistinctRowsEncoder`, in a copy (the model itself is untouched)."""
    import copy

    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import OneHotEncoder

    steps = getattr(model, "steps", None)
    if not steps or len(steps) < 2:
        return None
    transforms = model[:-1]  # a new Pipeline over a new list of the same fitted steps
    for index, (name, step) in enumerate(transforms.steps):
        if isinstance(step, ColumnTransformer) and hasattr(step, "transformers_"):
            wrapped = copy.copy(step)
            wrapped.transformers_ = [
                (part, DistinctRowsEncoder(fitted) if type(fitted) is OneHotEncoder else fitted, columns)
                for part, fitted, columns in step.transformers_]
            transforms.steps[index] = (name, wrapped)
    return transforms


class ChunkScorer:
    """Scores chunks of rows (feature group layout) with one model: each chunk's predicted
    class and class probabilities, shaped as rows of ``<dataset>_predictions``.

    The prediction and the actual label always come from the same row.
    """

    def __init__(self, model: Any, spec: DatasetSpec, model_version: int, scored_at: pd.Timestamp, run_id: str) -> None:
        classes = list(model.classes_)
        missing = [c for c in spec.classes if c not in classes]
        if missing:
            raise ValueError(f"the model does not know class(es) {missing}")
        self.model, self.spec, self.model_version, self.run_id = model, spec, model_version, run_id
        self.scored_at = pd.Timestamp(scored_at)
        self.order = [classes.index(c) for c in spec.classes]
        self.labels = pd.Index(list(spec.classes))
        self.label_values = np.asarray(spec.classes, dtype=np.int64 if spec.label_type == "bigint" else object)
        # A Pipeline's transforming steps and its final estimator, for :meth:`prepare`.
        self.transforms = _job_transforms(model)
        self.final = model.steps[-1][1] if self.transforms is not None else model

    def prepare(self, model_input: Any) -> Any:
        """``model_input`` through the model's transforming steps (what its ``predict_proba``
        does before the final estimator's): a thread can prepare the next chunk while
        another predicts (the transforms, a one-hot encoder's per-value lookups among them,
        hold the interpreter lock; the forest mostly does not). ``model_input`` itself for a
        model that is not a Pipeline."""
        return model_input if self.transforms is None else self.transforms.transform(model_input)

    def score(self, chunk: pd.DataFrame, model_input: Any = None, proba: Any = None) -> pd.DataFrame:
        """The predictions of ``chunk``: from one ``predict_proba`` call on ``model_input``
        (its model input when already made), or shaped from ``proba``, probabilities
        computed already (the final estimator's on :meth:`prepare`'s output: the same)."""
        from serverless_ml.training.model import as_model_input

        spec = self.spec
        if proba is None:
            if model_input is None:
                model_input = as_model_input(chunk, spec)
            proba = self.model.predict_proba(model_input)
        proba = proba[:, self.order]
        best = proba.argmax(axis=1)
        out = pd.DataFrame({
            spec.primary_key: chunk[spec.primary_key].to_numpy(),
            MODEL_VERSION_COLUMN: np.int64(self.model_version),
            # .array keeps the timezone-aware dtype (to_numpy would box every timestamp).
            EVENT_TIME_COLUMN: chunk[EVENT_TIME_COLUMN].array,
            "prediction": self.label_values[best],
            "probability": proba[np.arange(len(best)), best],
        })
        for i, column in enumerate(probability_columns(spec.classes)):
            out[column] = proba[:, i]
        actual = chunk[spec.label]
        # Prediction and actual come from the same row; class indices compare fast.
        actual_index = self.labels.get_indexer(actual)
        correct = pd.array(best == actual_index, dtype="boolean")
        correct[actual.isna().to_numpy()] = pd.NA
        out["actual"] = actual.array
        out["correct"] = correct
        out[ORIGIN_COLUMN] = chunk[ORIGIN_COLUMN].to_numpy()
        out["scored_at"] = self.scored_at
        out["run_id"] = self.run_id
        return normalise_predictions(out, spec)


def predictions_table(frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    """``pa.Table.from_pandas(frame, schema=schema)`` (without the index), column by column:
    a text column holding one value throughout (a chunk's ``run_id``, mostly its
    ``origin``) is repeated rather than converted value by value, and no conversion
    threads are started (measured: 4 ms a chunk of 100,000 predictions instead of 8)."""
    arrays = []
    for field in schema:
        column = frame[field.name]
        if len(column) and column.dtype == object and (pa.types.is_string(field.type) or pa.types.is_large_string(field.type)):
            first = column.iloc[0]
            if isinstance(first, str) and bool((column.to_numpy() == first).all()):
                arrays.append(pa.repeat(pa.scalar(first, type=field.type), len(column)))
                continue
        arrays.append(pa.Array.from_pandas(column, type=field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def normalise_predictions(frame: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """One dtype per column whatever rows a frame holds: a ``bigint`` label as ``int64``,
    or ``Int64`` with a missing one; timestamps in microseconds, UTC."""
    if spec.label_type == "bigint":
        frame["actual"] = frame["actual"].astype("Int64") if frame["actual"].isna().any() else frame["actual"].astype("int64")
    frame[EVENT_TIME_COLUMN] = frame[EVENT_TIME_COLUMN].astype("datetime64[us, UTC]")
    scored_at = frame["scored_at"]
    if not isinstance(scored_at.dtype, pd.DatetimeTZDtype):
        scored_at = pd.to_datetime(scored_at, utc=True)
    frame["scored_at"] = scored_at.dt.tz_convert("UTC").astype("datetime64[us, UTC]")
    return frame


def score_rows(
    model: Any,
    rows: pd.DataFrame,
    spec: DatasetSpec,
    model_version: int,
    scored_at: pd.Timestamp,
    run_id: str,
    chunk_rows: int = CHUNK_ROWS,
) -> pd.DataFrame:
    """Predict class and class probabilities for ``rows`` (feature group layout) in chunks
    (:class:`ChunkScorer`), as one frame."""
    scorer = ChunkScorer(model, spec, model_version, scored_at, run_id)
    parts = [scorer.score(rows.iloc[start : start + chunk_rows]) for start in range(0, len(rows), chunk_rows)]
    return normalise_predictions(pd.concat(parts, ignore_index=True), spec)


class KeySet:
    """A set of keys held as one sorted array (8 bytes a key for integer keys, where a
    Python set of ten million keys takes over half a gigabyte); membership of a chunk's
    keys is a binary search."""

    def __init__(self, keys: Iterable[Any] | np.ndarray, presorted: bool = False) -> None:
        """``presorted``: ``keys`` is an array already sorted, taken as is (no copy; repeats
        do no harm to the search)."""
        values = keys if isinstance(keys, np.ndarray) else np.asarray(list(keys))
        self.keys = values if presorted else np.sort(values)

    def __len__(self) -> int:
        """Keys held (a key given twice counts twice)."""
        return int(self.keys.size)

    def contains(self, values: np.ndarray) -> np.ndarray:
        """Which of ``values`` are in the set (a mask)."""
        values = np.asarray(values)
        if not self.keys.size or not values.size:
            return np.zeros(values.shape, dtype=bool)
        try:
            found = np.searchsorted(self.keys, values)
        except TypeError:  # keys of another kind than the stored ones: none match
            return np.zeros(values.shape, dtype=bool)
        return self.keys[np.minimum(found, self.keys.size - 1)] == values


def new_rows_mask(
    chunk: pd.DataFrame, spec: DatasetSpec, excluded: Sequence[KeySet], as_of_end: pd.Timestamp
) -> np.ndarray:
    """:func:`select_new_rows` of one chunk, as a mask: event time before ``as_of_end`` and
    the key in none of ``excluded`` (the scored keys, the champion's training keys)."""
    mask = (chunk[EVENT_TIME_COLUMN] < as_of_end).to_numpy()
    keys = chunk[spec.primary_key].to_numpy()
    for keyset in excluded:
        if len(keyset):
            mask &= ~keyset.contains(keys)
    return mask


class RowsDigest:
    """A digest of a set of rows (Arrow record batches of one schema) that does not depend
    on their order or on how they are split into batches: each row is hashed from its
    values (64 bits), and the hashes are summed modulo 2**64. The same rows give the same
    digest in any process, and a batch of millions of rows is digested as it streams by
    (``tracking.rows_digest`` needs the rows in one frame, in key order)."""

    _MIX = np.uint64(0x9E3779B97F4A7C15)
    _KEY = "sml-rows-digest1"  # pandas' hash key: 16 bytes

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self.rows = 0
        self.total = 0

    @classmethod
    def _column_hash(cls, column: pa.Array) -> np.ndarray:
        """64-bit hashes of an Arrow column's values (a missing value hashes to 1)."""
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type) or pa.types.is_boolean(column.type):
            # Few distinct values: hash those, then gather.
            encoded = column.dictionary_encode()
            words = pd.util.hash_array(np.asarray(encoded.dictionary.to_pylist(), dtype=object), hash_key=cls._KEY)
            indices = encoded.indices.fill_null(0).to_numpy(zero_copy_only=False).astype(np.intp, copy=False)
            values = words[indices] if words.size else np.zeros(len(column), dtype=np.uint64)
        else:
            numbers = column.cast(pa.int64()) if pa.types.is_timestamp(column.type) else column
            raw = np.asarray(numbers.fill_null(0).to_numpy(zero_copy_only=False))
            # One copy, mixed in place (splitmix64's finaliser): NumPy passes, no Python per
            # value, no temporary arrays but one.
            values = np.array(raw, dtype=np.float64 if raw.dtype.kind == "f" else np.int64).view(np.uint64)
            shifted = np.empty_like(values)
            with np.errstate(over="ignore"):
                for shift, factor in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB), (31, None)):
                    np.right_shift(values, np.uint64(shift), out=shifted)
                    values ^= shifted
                    if factor is not None:
                        values *= np.uint64(factor)
        if column.null_count:
            values[np.asarray(column.is_null())] = np.uint64(1)  # a missing value hashes to 1
        return values.astype(np.uint64, copy=False)

    def add(self, batch: pa.RecordBatch) -> None:
        """Count ``batch``'s rows in."""
        if batch.schema != self.schema:
            batch = batch.cast(self.schema)
        self.rows += batch.num_rows
        row = np.zeros(batch.num_rows, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for column in batch.columns:
                row *= self._MIX
                row += self._column_hash(column)
            row ^= row >> np.uint64(31)
            self.total = (self.total + int(row.sum(dtype=np.uint64))) % (1 << 64)

    def hexdigest(self, length: int) -> str:
        """The digest, ``length`` hexadecimal characters."""
        import hashlib

        digest = hashlib.sha256("\x1f".join(self.schema.names).encode())
        digest.update(f"{self.rows}:{self.total}".encode())
        return digest.hexdigest()[:length]
