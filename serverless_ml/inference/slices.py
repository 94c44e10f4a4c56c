"""Accuracy per slice of a batch: which group of rows (third class, white wines, the
oldest quarter of passengers) a model does worst on, which an overall accuracy hides.

A *slice* is the rows of a batch that share one value of one slice feature (the spec's
``slices``; default every feature):

- a ``string`` feature: one slice per value (kind ``category``);
- a numeric feature with at most ``bins`` distinct values among the champion's training
  rows: one slice per value (kind ``values``; ``pclass`` 1, 2, 3 stays three slices
  rather than being cut at quantiles that fall on its values);
- any other numeric feature: ``bins`` bins cut at the quantiles of the champion's
  training rows (kind ``bins``; the edges are the interior quantiles ``1/bins ..
  (bins-1)/bins``, without repeats, an edge at the training minimum moved up to the next
  training value; the outer bins are open, so a live value outside the training range
  has a bin);
- a missing value is a slice of its own (``missing``) in every kind.

The edges come from the training rows the champion was fitted on (the rows batch
inference already reads as the drift reference: the training run's keys at its data
version), so they are the same for every batch of a model, and each monitoring run
stores the plan it used (features, kinds, exact edges) in its slice table: ``sml
labels`` recomputes a run's realized slice figures with that plan, not a new one.

Each slice has its rows, its labelled rows, its realized accuracy (labelled rows, with
the Wilson interval) when it has at least ``min_rows`` labelled rows and its accuracy
estimated from the champion's probabilities (mean probability of the predicted class,
CBPE, recalibrated as the batch's estimate: :mod:`serverless_ml.inference.estimate`) when
it has at least ``min_rows`` rows;
below, the figure is "not computed" (``None``), never a number drawn from a handful of
rows. The worst slice is the one with the lowest accuracy among those with a figure: its
realized accuracy when computed, else its estimate (ties: the slice with more rows).

Everything here is pure: :class:`SliceTotals` counts a batch chunk by chunk (memory
holds a few numbers per slice; a feature sliced by value with more than
:data:`MAX_VALUES` distinct values in a batch is dropped from the table with a note).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pandas as pd

from serverless_ml import defaults, registry
from serverless_ml.datasets.spec import DatasetSpec
from serverless_ml.inference import estimate, monitoring
from serverless_ml.training import evaluation

CATEGORY = "category"
VALUES = "values"
BINS = "bins"
KINDS = (CATEGORY, VALUES, BINS)
REALIZED = "realized"
ESTIMATED = "estimated"
NOT_COMPUTED = "not computed"
MISSING = "missing"
"""The label of the slice of rows whose value is missing."""
MAX_VALUES = defaults.SLICE_MAX_VALUES
"""A feature sliced by value (a category, or a number with few training values) with more
distinct values than this in a batch is not sliced (a slice per value of a free-text
column would be a table of single rows)."""
_ROWS, _LABELLED, _CORRECT, _CONFIDENCE, _SPREAD = range(5)


def _number(value: float) -> str:
    """A number as a slice label shows it (whole numbers without ``.0``)."""
    return f"{value:.6g}"


@dataclass(frozen=True)
class SliceFeature:
    """How one feature is sliced: its ``kind`` and, for ``bins``, the interior edges."""

    name: str
    kind: str
    edges: tuple[float, ...] = ()

    def keys(self, values: pd.Series) -> tuple[np.ndarray, list[Any]]:
        """Each row's slice as a code into the returned keys (-1: missing). A key is a bin
        index for ``bins``, else the value itself."""
        if self.kind == BINS:
            numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
            missing = np.isnan(numbers)
            codes = np.searchsorted(np.asarray(self.edges, dtype=float), numbers, side="right").astype(np.int64)
            codes[missing] = -1
            return codes, list(range(len(self.edges) + 1))
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
        return np.asarray(codes, dtype=np.int64), [_plain(u) for u in uniques]

    def label(self, key: Any) -> str:
        """The slice's label: its value, its bin (``< 22``, ``[22, 28.5)``, ``>= 35``) or
        :data:`MISSING`."""
        if key is None:
            return MISSING
        if self.kind == BINS:
            i, edges = int(key), self.edges
            if not edges:
                return "all"
            if i == 0:
                return f"< {_number(edges[0])}"
            if i == len(edges):
                return f">= {_number(edges[-1])}"
            return f"[{_number(edges[i - 1])}, {_number(edges[i])})"
        return _number(key) if isinstance(key, float) else str(key)

    def bounds(self, key: Any) -> tuple[float | None, float | None]:
        """A bin's lower (inclusive) and upper (exclusive) edge; ``None`` for open ends and
        other kinds."""
        if self.kind != BINS or key is None:
            return None, None
        i = int(key)
        return (self.edges[i - 1] if i > 0 else None), (self.edges[i] if i < len(self.edges) else None)


def _plain(value: Any) -> Any:
    """A NumPy scalar as the Python value JSON writes."""
    return value.item() if isinstance(value, np.generic) else value


@dataclass(frozen=True)
class SlicePlan:
    """The slice features of a model, with the settings the figures were computed with."""

    features: tuple[SliceFeature, ...]
    min_rows: int = defaults.SLICE_MIN_ROWS
    bins: int = defaults.SLICE_BINS
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"min_rows": self.min_rows, "bins": self.bins, "notes": list(self.notes),
                "features": [{"feature": f.name, "kind": f.kind, "edges": list(f.edges)} for f in self.features]}

    @classmethod
    def from_json(cls, payload: object) -> SlicePlan | None:
        """The plan of :meth:`to_json` (``None`` for anything else)."""
        try:
            assert isinstance(payload, Mapping)
            features = tuple(SliceFeature(str(f["feature"]), str(f["kind"]), tuple(float(e) for e in f["edges"]))
                             for f in payload["features"])
            assert all(f.kind in KINDS for f in features)
            return cls(features, int(payload["min_rows"]), int(payload["bins"]), tuple(map(str, payload.get("notes", ()))))
        except (AssertionError, KeyError, TypeError, ValueError):
            return None


def slice_feature_names(spec: DatasetSpec) -> list[str]:
    """The spec's ``slices``, or every feature."""
    return list(spec.slices) if spec.slices is not None else spec.feature_names


def plan_slices(
    spec: DatasetSpec, reference: pd.DataFrame | None, bins: int = defaults.SLICE_BINS,
    min_rows: int = defaults.SLICE_MIN_ROWS,
) -> SlicePlan:
    """How each slice feature of ``spec`` is sliced, numeric ones from ``reference`` (the
    champion's training rows). A numeric feature without a single training value is not
    sliced (a note says so)."""
    out: list[SliceFeature] = []
    notes: list[str] = []
    for name in slice_feature_names(spec):
        if not spec.feature(name).is_numeric:
            out.append(SliceFeature(name, CATEGORY))
            continue
        column = reference[name] if reference is not None and name in reference.columns else pd.Series(dtype=float)
        values = pd.to_numeric(column, errors="coerce").dropna().to_numpy(dtype=float)
        if not values.size:
            notes.append(f"slices: {name} not sliced: no training value to cut it at")
            continue
        distinct = np.unique(values)
        if distinct.size <= bins:
            out.append(SliceFeature(name, VALUES))
            continue
        # A skewed feature (most passengers travel without parents or children) has
        # quantiles at its minimum: such an edge moves to the next value up, so the
        # minimum is a bin of its own rather than an empty one.
        edges = np.unique(np.maximum(np.quantile(values, np.arange(1, bins) / bins), distinct[1]))
        out.append(SliceFeature(name, BINS, tuple(float(e) for e in edges)))
    return SlicePlan(tuple(out), min_rows, bins, tuple(notes))


@dataclass(frozen=True)
class SliceFigures:
    """One slice of a batch: its rows and accuracy (``None``: not computed)."""

    feature: str
    slice: str
    value: Any
    """The value of a ``category``/``values`` slice (``None``: missing, or a bin)."""
    low: float | None
    high: float | None
    """A bin's edges (``None``: open, or not a bin)."""
    missing: bool
    rows: int
    labelled: int
    correct: int
    realized: float | None
    realized_low: float | None
    realized_high: float | None
    estimated: float | None
    estimated_low: float | None
    estimated_high: float | None

    @property
    def basis(self) -> str:
        """What :attr:`accuracy` is: realized, estimated or not computed."""
        if self.realized is not None:
            return REALIZED
        return ESTIMATED if self.estimated is not None else NOT_COMPUTED

    @property
    def accuracy(self) -> float | None:
        """Realized accuracy when computed, else the estimate (``None``: neither)."""
        return self.realized if self.realized is not None else self.estimated

    @property
    def name(self) -> str:
        """``<feature>: <slice>``, as :data:`serverless_ml.registry.WORST_SLICE_TAG` names it."""
        return f"{self.feature}: {self.slice}"


@dataclass(frozen=True)
class SliceTable:
    """Every slice of a batch, feature by feature, and the plan they were cut with."""

    plan: SlicePlan
    slices: tuple[SliceFigures, ...]
    notes: tuple[str, ...] = ()

    @property
    def worst(self) -> SliceFigures | None:
        """The slice with the lowest :attr:`SliceFigures.accuracy` (ties: more rows first,
        then table order); ``None`` when no slice has a figure."""
        ranked = [(s.accuracy, -s.rows, i) for i, s in enumerate(self.slices) if s.accuracy is not None]
        return self.slices[min(ranked)[2]] if ranked else None

    def to_json(self) -> dict[str, Any]:
        """The JSON object of :data:`serverless_ml.registry.SLICES_ARTIFACT`."""
        worst = self.worst
        return {
            "window": "batch",
            "plan": self.plan.to_json(),
            "notes": list(self.notes),
            "worst": None if worst is None else {"feature": worst.feature, "slice": worst.slice, "name": worst.name,
                                                 "accuracy": worst.accuracy, "basis": worst.basis, "rows": worst.rows},
            "slices": [{**{f.name: getattr(s, f.name) for f in fields(s)}, "basis": s.basis} for s in self.slices],
        }

    @classmethod
    def from_json(cls, payload: object) -> SliceTable | None:
        """The table of :meth:`to_json` (``None`` for anything else)."""
        if not isinstance(payload, Mapping):
            return None
        plan = SlicePlan.from_json(payload.get("plan"))
        rows = payload.get("slices")
        if plan is None or not isinstance(rows, list):
            return None
        names = [f.name for f in fields(SliceFigures)]
        try:
            slices = tuple(SliceFigures(**{n: row[n] for n in names}) for row in rows)
        except (KeyError, TypeError):
            return None
        return cls(plan, slices, tuple(map(str, payload.get("notes") or ())))


class SliceTotals:
    """Per-slice counts of a batch that streams by in chunks (:meth:`add`), turned into its
    :class:`SliceTable` by :meth:`table`."""

    def __init__(self, plan: SlicePlan) -> None:
        self.plan = plan
        self.counts: dict[str, dict[Any, np.ndarray]] = {f.name: {} for f in plan.features}
        self.dropped: dict[str, int] = {}
        self.probabilities = True

    def add(self, features: pd.DataFrame, actual: np.ndarray, predicted: np.ndarray,
            confidence: np.ndarray | None) -> None:
        """Count in rows: their feature values, actual and predicted class codes (-1:
        missing) and probability of the predicted class (``None``: not known), position by
        position."""
        n = len(features)
        if not n:
            return
        labelled = actual >= 0
        # Each row's outcome: 0 unlabelled, 1 labelled and wrong, 2 labelled and right: the
        # rows, labelled and correct counts of every slice from one integer count.
        outcome = labelled.astype(np.int64) + (labelled & (actual == predicted))
        if confidence is None:
            self.probabilities = False
        else:
            spread = confidence * (1.0 - confidence)
        for feature in self.plan.features:
            if feature.name in self.dropped:
                continue
            codes, keys = feature.keys(features[feature.name])
            shifted = codes + 1  # 0: missing
            slots = len(keys) + 1
            counts = np.bincount(shifted * 3 + outcome, minlength=3 * slots).reshape(slots, 3).astype(np.float64)
            sums = np.zeros((slots, 5))
            sums[:, _ROWS] = counts.sum(axis=1)
            sums[:, _LABELLED] = counts[:, 1] + counts[:, 2]
            sums[:, _CORRECT] = counts[:, 2]
            if confidence is not None:
                sums[:, _CONFIDENCE] = np.bincount(shifted, weights=confidence, minlength=slots)
                sums[:, _SPREAD] = np.bincount(shifted, weights=spread, minlength=slots)
            held = self.counts[feature.name]
            for position in np.flatnonzero(sums[:, _ROWS]):
                key = None if position == 0 else keys[position - 1]
                held[key] = held[key] + sums[position] if key in held else sums[position].copy()
            if feature.kind in (CATEGORY, VALUES) and len(held) > MAX_VALUES:
                self.dropped[feature.name] = len(held)
                held.clear()

    def table(self) -> SliceTable:
        """The slices counted so far, feature by feature in plan order; within a feature,
        bins in order, values sorted, missing last."""
        min_rows = self.plan.min_rows
        out = []
        for feature in self.plan.features:
            held = self.counts[feature.name]
            for key in sorted((k for k in held if k is not None), key=_sort_key) + ([None] if None in held else []):
                c = held[key]
                rows, labelled, correct = int(round(c[_ROWS])), int(round(c[_LABELLED])), int(round(c[_CORRECT]))
                realized = realized_low = realized_high = None
                if labelled >= min_rows:
                    realized = correct / labelled
                    realized_low, realized_high = monitoring.wilson_interval(correct, labelled)
                estimated = estimated_low = estimated_high = None
                if self.probabilities and rows >= min_rows:
                    found = estimate.estimate_from_sums(float(c[_CONFIDENCE]), float(c[_SPREAD]), rows)
                    estimated, estimated_low, estimated_high = found.accuracy, found.low, found.high
                low, high = feature.bounds(key)
                out.append(SliceFigures(
                    feature.name, feature.label(key), None if feature.kind == BINS else key, low, high, key is None,
                    rows, labelled, correct, realized, realized_low, realized_high, estimated, estimated_low,
                    estimated_high))
        notes = list(self.plan.notes)
        notes += [f"slices: {name} not sliced: more than {MAX_VALUES} distinct values in the batch"
                  for name in self.dropped]
        if not self.probabilities:
            notes.append("slices: estimated accuracy not computed: the predictions have no class probabilities")
        table = SliceTable(self.plan, tuple(out), tuple(notes))
        if out and table.worst is None:
            table = SliceTable(self.plan, table.slices, (*notes, f"slices: no worst slice: no slice has {min_rows} rows"))
        return table


def _sort_key(key: Any) -> tuple[int, Any]:
    return (0, key) if isinstance(key, (int, float)) and not isinstance(key, bool) else (1, str(key))


def slice_table(
    spec: DatasetSpec, plan: SlicePlan, predictions: pd.DataFrame, features: pd.DataFrame,
    recalibration: estimate.Recalibration | None = None,
) -> SliceTable:
    """The slice table of a batch's ``predictions`` (``actual``, ``prediction`` and, when
    known, ``probability``), their feature values looked up in ``features`` by key (or in
    :func:`features_by_key` of them, when many batches are looked up). The slices'
    estimates map each probability through ``recalibration``, the batch estimate's
    (``None``: as they are)."""
    key = spec.primary_key
    names = [f.name for f in plan.features]
    indexed = features if features.index.name == key else features_by_key(spec, features)
    values = indexed.reindex(predictions[key].to_numpy())[names]
    totals = SliceTotals(plan)
    lookup = pd.Index(list(spec.classes))
    confidence = predictions["probability"].to_numpy(dtype=float) if "probability" in predictions.columns else None
    if confidence is not None and recalibration is not None:
        confidence = recalibration.apply(confidence)
    totals.add(values.reset_index(drop=True), evaluation.class_codes(predictions["actual"], lookup),
               evaluation.class_codes(predictions["prediction"], lookup), confidence)
    return totals.table()


def features_by_key(spec: DatasetSpec, features: pd.DataFrame) -> pd.DataFrame:
    """The feature rows indexed by key (one row a key), for :func:`slice_table`."""
    return features.drop_duplicates(spec.primary_key).set_index(spec.primary_key)


def worst_slice_metrics(table: SliceTable) -> dict[str, float]:
    """The worst slice's accuracy as :data:`registry.WORST_SLICE_ACCURACY_METRIC` (none when
    no slice has a figure)."""
    worst = table.worst
    if worst is None or worst.accuracy is None:
        return {}
    return {registry.WORST_SLICE_ACCURACY_METRIC: worst.accuracy}


def worst_slice_tags(table: SliceTable | None) -> dict[str, str]:
    """The tags that name a batch's worst slice (none when no slice has a figure)."""
    worst = None if table is None else table.worst
    if worst is None:
        return {}
    return {registry.WORST_SLICE_TAG: worst.name[:4000], registry.WORST_SLICE_BASIS_TAG: worst.basis}
