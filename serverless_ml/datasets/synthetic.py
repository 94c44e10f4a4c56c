"""The daily synthetic generator: plausible labelled rows for one date.

Labels are drawn from the class prior of the real rows; each row's features are a real row
of that class, resampled, with its jittered numeric features nudged by noise scaled to the
class's local spread around the value (the distance between the class's values ten
percentiles around it), kept within the class's observed range. Noise scaled to the whole
class's spread would smear a skewed, tied feature such as a fare (cheap fares crowd around
7.25) and monitoring would flag the generator itself as drift; local noise keeps the
distribution. Combinations stay plausible (no male "Mrs", no adult "Master") and a good
model scores well on them. ``drift`` shifts chosen
features afterwards so that monitoring can be shown to catch it.

Pure: the date and seed are parameters and nothing here reads the clock.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from serverless_ml.datasets.spec import EVENT_TIME_COLUMN, DatasetSpec
from serverless_ml.errors import SmlError
from serverless_ml.feature_store.base import ORIGIN_COLUMN, SYNTHETIC_ORIGIN

MAX_ROWS_PER_DAY = 10_000
LOCAL_WINDOW = 0.05
_KEY_DAY = 10**8
_KEY_SEED = 10**4
# Synthetic keys hold the seed in four digits (see synthetic_keys): a larger seed would
# reuse the keys of seed % 10**4 and overwrite that seed's rows.
MAX_SEED = _KEY_DAY // _KEY_SEED - 1

_DRIFT_ITEM = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*([+*=])\s*(\S.*?)\s*$")


@dataclass(frozen=True)
class Drift:
    """Shift one feature: ``+`` adds, ``*`` multiplies (numeric), ``=`` sets a category."""

    feature: str
    op: str
    value: float | str

    def __str__(self) -> str:
        return f"{self.feature}{self.op}{self.value}"


def parse_drift(text: str | None, spec: DatasetSpec) -> tuple[Drift, ...]:
    """Parse ``"age+15,fare*2,embarked=Q"`` against the spec's features."""
    if not text or not text.strip():
        return ()
    drifts = []
    for item in text.split(","):
        match = _DRIFT_ITEM.match(item)
        if not match:
            raise SmlError(f"--drift item {item.strip()!r} must look like feature+N, feature*N or feature=CATEGORY")
        name, op, value = match.groups()
        feature = spec.feature(name)
        if feature.is_numeric:
            if op == "=":
                raise SmlError(f"--drift {item.strip()!r}: numeric feature '{name}' takes + or *, not =")
            try:
                number = float(value)
            except ValueError:
                raise SmlError(f"--drift {item.strip()!r}: {value!r} is not a number") from None
            if not np.isfinite(number):
                raise SmlError(f"--drift {item.strip()!r}: {value!r} is not a finite number")
            drifts.append(Drift(name, op, number))
        else:
            if op != "=":
                raise SmlError(f"--drift {item.strip()!r}: categorical feature '{name}' takes =CATEGORY")
            if feature.categories is not None and value not in feature.categories:
                raise SmlError(
                    f"--drift {item.strip()!r}: {value!r} is not one of {', '.join(feature.categories)}"
                )
            drifts.append(Drift(name, op, value))
    return tuple(drifts)


def apply_drift(values: pd.Series, item: Drift, spec: DatasetSpec) -> pd.Series:
    """One feature's values after ``item``, kept within the schema's range."""
    feature = spec.feature(item.feature)
    if item.op == "=":
        return pd.Series(item.value, index=values.index, dtype=object)
    numbers = values.astype(float)
    shifted = numbers + float(item.value) if item.op == "+" else numbers * float(item.value)
    shifted = shifted.clip(
        -np.inf if feature.min is None else feature.min, np.inf if feature.max is None else feature.max
    )
    if feature.type == "bigint":
        shifted = shifted.round()
        return shifted.astype("int64") if shifted.notna().all() else shifted.astype("Int64")
    return shifted


MAX_DECIMALS = 10


def resolution(pool: np.ndarray) -> int | None:
    """The number of decimals the pool's values are written with (0 for whole numbers),
    or None when they use a float's full precision (measurements, not rounded numbers).

    Synthetic values are rounded to the same resolution: a fixed 2 decimals turned a
    density of 0.99xx (about 1,000 distinct values) into 4 distinct values, and every
    clean synthetic day then looked like drift.
    """
    present = pool[~np.isnan(pool)]
    if present.size == 0:
        return 0
    scale = max(float(np.abs(present).max()), 1.0)
    for decimals in range(MAX_DECIMALS + 1):
        if np.allclose(np.round(present, decimals), present, rtol=0, atol=scale * 1e-13):
            return decimals
    return None


def jitter_locally(values: np.ndarray, pool: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
    """Add ``N(0, scale * local spread)`` to each value, where the local spread is half the
    distance between the pool's values ten percentiles around it; clip to the pool's range
    and round to the pool's own resolution (:func:`resolution`: whole numbers stay whole).
    Missing values stay missing."""
    reference = np.sort(pool[~np.isnan(pool)])
    out = values.copy()
    present = ~np.isnan(values)
    if reference.size < 2 or scale == 0 or not present.any():
        return out
    grid = np.linspace(0.0, 1.0, reference.size)
    quantile = np.interp(values[present], reference, grid)
    low = np.interp(np.clip(quantile - LOCAL_WINDOW, 0, 1), grid, reference)
    high = np.interp(np.clip(quantile + LOCAL_WINDOW, 0, 1), grid, reference)
    noise = rng.normal(0.0, 1.0, size=quantile.size) * scale * (high - low) / 2
    jittered = values[present] + noise
    decimals = resolution(reference)
    if decimals is not None:
        jittered = jittered.round(decimals)
    out[present] = jittered.clip(reference[0], reference[-1])
    return out


def check_seed(seed: int) -> None:
    """Refuse a seed that synthetic keys cannot hold (:data:`MAX_SEED`), in one line."""
    if not 0 <= seed <= MAX_SEED:
        raise SmlError(f"--seed must be between 0 and {MAX_SEED}, got {seed}")


def check_rows_and_seed(rows: int, seed: int) -> None:
    """Refuse a day's row count (1..:data:`MAX_ROWS_PER_DAY`) or seed out of range, in one
    line each: the checks of every caller (``sml daily``, ``simulate``, ``schedule``)."""
    if not 1 <= rows <= MAX_ROWS_PER_DAY:
        raise SmlError(f"--rows must be between 1 and {MAX_ROWS_PER_DAY}, got {rows}")
    check_seed(seed)


def synthetic_keys(spec: DatasetSpec, day: dt.date, seed: int, n: int) -> pd.Series:
    """Primary keys unique per (date, seed, row) and disjoint from real keys.

    A bigint key reads ``YYYYMMDD SSSS RRRR`` (date, seed, row), so ``seed`` must be at
    most :data:`MAX_SEED` and ``n`` at most :data:`MAX_ROWS_PER_DAY`.
    """
    check_seed(seed)
    if spec.primary_key_type == "bigint":
        base = int(day.strftime("%Y%m%d")) * _KEY_DAY + seed * _KEY_SEED
        return pd.Series(np.arange(n, dtype="int64") + base)
    return pd.Series([f"syn-{day:%Y%m%d}-{seed}-{i}" for i in range(n)], dtype=object)


def check_generated(rows: pd.DataFrame, spec: DatasetSpec, day: dt.date) -> None:
    """Generated rows hold no missing value where the schema forbids one and no infinite
    number: they are written as they are, and a NaN jitter once wrote non-nullable
    features as null.

    Raises:
        SmlError: the first feature, label or key at fault; nothing was written.
    """
    columns = [(f.name, f.nullable, f.is_numeric) for f in spec.features]
    columns += [(spec.label, False, spec.label_type == "bigint"), (spec.primary_key, False, spec.primary_key_type == "bigint")]
    for name, nullable, numeric in columns:
        values = rows[name]
        missing = values.isna().to_numpy()
        if missing.any() and not nullable:
            raise SmlError(f"{spec.name}: synthetic rows for {day.isoformat()} would hold a missing value in '{name}' "
                           f"(row {int(np.flatnonzero(missing)[0]) + 1}), which is not nullable; nothing was written "
                           "(check the spec's synthetic settings and --drift)")
        if numeric and not np.isfinite(values[~missing].to_numpy(dtype=float)).all():
            raise SmlError(f"{spec.name}: synthetic rows for {day.isoformat()} would hold an infinite value in '{name}'; "
                           "nothing was written (check the spec's synthetic settings and --drift)")


def generate_rows(
    real: pd.DataFrame,
    spec: DatasetSpec,
    day: dt.date,
    n: int,
    seed: int,
    drift: tuple[Drift, ...] = (),
) -> pd.DataFrame:
    """``n`` synthetic rows for ``day`` in the feature group's layout.

    Args:
        real: Real rows of the dataset (feature group layout).
        spec: The dataset spec.
        day: Event date of the rows.
        n: How many rows (1..10,000).
        seed: Random seed; the same (real, day, n, seed) gives the same rows.
        drift: Shifts applied after generation.
    """
    check_rows_and_seed(n, seed)
    if real.empty:
        raise SmlError(f"dataset '{spec.name}' has no real rows to learn from; run `sml features --dataset {spec.dataset_arg}` first")
    rng = np.random.default_rng([seed, day.toordinal()])
    present = [c for c in spec.classes if (real[spec.label] == c).any()]
    prior = real[spec.label].value_counts(normalize=True).reindex(present).to_numpy()
    labels = rng.choice(len(present), size=n, p=prior / prior.sum())
    jittered = spec.synthetic.jitter_features
    if jittered is None:
        jittered = tuple(f.name for f in spec.features if f.type == "double")
    parts = []
    for k, cls in enumerate(present):
        positions = np.flatnonzero(labels == k)
        if positions.size == 0:
            continue
        pool = real[real[spec.label] == cls]
        picked = pool.iloc[rng.integers(0, len(pool), size=positions.size)].copy()
        picked.index = positions
        for name in jittered:
            values = jitter_locally(
                picked[name].astype(float).to_numpy(), pool[name].astype(float).to_numpy(), spec.synthetic.jitter, rng
            )
            if spec.feature(name).type == "bigint":  # whole numbers stay whole, in the column's own dtype
                values = np.round(values)
                dtype = "Int64" if np.isnan(values).any() else picked[name].dtype
                picked[name] = pd.Series(values, index=picked.index).astype(dtype)
            else:
                picked[name] = values
        parts.append(picked)
    # Rows stay in the order their labels were drawn.
    rows = pd.concat(parts).sort_index()
    for item in drift:
        rows[item.feature] = apply_drift(rows[item.feature], item, spec)
    if spec.derive is not None:
        rows = spec.derive(rows)
    rows[spec.primary_key] = synthetic_keys(spec, day, seed, n)
    rows[EVENT_TIME_COLUMN] = pd.Series(pd.Timestamp(day, tz="UTC"), index=rows.index).astype("datetime64[us, UTC]")
    rows[ORIGIN_COLUMN] = SYNTHETIC_ORIGIN
    check_generated(rows, spec, day)
    return rows[spec.store_columns]
