"""Bundled datasets the project was not tuned to, written as a CSV and a dataset spec.

The drift benchmark and the tests need tabular classification data beyond Iris and
Titanic, offline. Each name in :data:`BUNDLED` is built from data scikit-learn ships (or
generates from a fixed seed) and written by :func:`write_dataset` as ``<name>.csv`` next to
``<name>.yaml``, a spec whose ``source: {path: <name>.csv}`` points at the CSV, so
``sml features --dataset <folder>/<name>.yaml`` reads it with no other option.

* ``breast_cancer``: Wisconsin diagnostic, 569 rows, 30 ``double`` features (sklearn's
  names in snake case, e.g. ``mean radius`` -> ``mean_radius``), label ``diagnosis`` in
  ``[malignant, benign]`` (sklearn's order: its target 0 is malignant, 1 benign).
* ``wine``: 178 rows, 13 features (``magnesium`` and ``proline`` are whole numbers, so
  ``bigint``), label ``cultivar`` in ``[class_0, class_1, class_2]``.
* ``digits_features``: 1,797 handwritten digits reduced to 10 features of each 8x8 image
  (total ink, ink per quadrant, the ink's centroid and spread per axis, and
  ``nonzero_pixels``, a ``bigint``); label ``digit``, the integers 0..9.
* ``mixed_synthetic``: 2,000 rows of ``make_classification`` (seed :data:`SEED`): 6
  numeric features of which 2 are ~10 % missing (``nullable``), 2 categorical features made
  by binning informative columns, a ``bigint`` count, label ``outcome`` in
  ``[negative, positive]``.
* ``graded_synthetic``: 6,500 rows, 12 features, 7 classes of very unequal sizes, a
  stand-in for the wine-quality CSV (6,497 rows, 11 measurements and a colour, quality
  grades 3..9) that default training once refused: ``make_classification`` (seed
  :data:`SEED`) with wine quality's class sizes (:data:`GRADE_ROWS`: grade 9 has 5 rows),
  11 ``double`` features and ``batch`` (``red``/``white``, binned from an informative
  column); label ``grade``, the integers 3..9.
* ``rare_synthetic``: 20,000 rows of ``make_classification`` (seed :data:`SEED`), 10
  ``double`` features, label ``kind`` in ``[common, frequent, rare]`` where ``rare`` has
  :data:`RARE_ROWS` rows (0.2 %).

Writing is deterministic: the same bytes on every call (with the same scikit-learn and
NumPy). Rows are numbered 1..N as ``row_id`` (``primary_key: null``).

    from bench.datasets import BUNDLED, write_dataset
    spec_path = write_dataset("wine", Path("/tmp/data"))   # /tmp/data/wine.yaml
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

BUNDLED = ("breast_cancer", "wine", "digits_features", "mixed_synthetic", "graded_synthetic", "rare_synthetic")
"""Names :func:`write_dataset` accepts."""

SEED = 20240101
"""Seed of ``mixed_synthetic`` (generator and missing values)."""

MIXED_ROWS = 2000
MISSING_SHARE = 0.10
"""Share of missing values in each of ``mixed_synthetic``'s two nullable features."""

GRADE_ROWS = {3: 30, 4: 216, 5: 2138, 6: 2839, 7: 1079, 8: 193, 9: 5}
"""Rows per grade of ``graded_synthetic``: wine quality's (red and white together), grade 6
given the three rows that make 6,500."""

RARE_ROWS = 40
"""Rows of the ``rare`` class of ``rare_synthetic`` (of 20,000)."""
RARE_SYNTHETIC_ROWS = {"common": 12_000, "frequent": 20_000 - 12_000 - RARE_ROWS, "rare": RARE_ROWS}

FLOAT_DECIMALS = 6
"""Derived and generated doubles are rounded so the CSV stays small and exact."""


@dataclass(frozen=True)
class _Dataset:
    """A dataset's raw frame (features and label, in column order) and its spec document."""

    frame: pd.DataFrame
    spec: dict[str, Any]


def _snake_case(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


def _feature(type_: str, description: str = "", **schema: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": type_, **{k: v for k, v in schema.items() if v is not None}}
    if description:
        out["description"] = description
    return out


def _spec(name: str, description: str, label: str, classes: list[Any], features: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "version": 1,
        "description": description,
        "source": {"path": f"{name}.csv"},
        "label": label,
        "classes": classes,
        "primary_key": None,
        "features": features,
    }


def _measurements(bunch: Any, name: str, description: str, label: str, whole_numbers: bool) -> _Dataset:
    """A scikit-learn bunch of non-negative measurements as a frame and spec: feature names
    in snake case, the label as ``target_names`` (in sklearn's order), and with
    ``whole_numbers`` the columns holding only whole numbers as ``bigint``."""
    names = [_snake_case(n) for n in bunch.feature_names]
    frame = pd.DataFrame(bunch.data, columns=names)
    whole = [n for n in names if (frame[n] % 1 == 0).all()] if whole_numbers else []
    frame[whole] = frame[whole].astype("int64")
    frame[label] = np.asarray(bunch.target_names)[bunch.target]
    features = {
        # Measurements (of cell nuclei, of chemistry): never negative.
        feature: _feature("bigint" if feature in whole else "double", f"sklearn's '{raw}'", min=0)
        for feature, raw in zip(names, bunch.feature_names, strict=True)
    }
    return _Dataset(frame, _spec(name, description, label, [str(c) for c in bunch.target_names], features))


def _breast_cancer() -> _Dataset:
    from sklearn.datasets import load_breast_cancer

    # sklearn's target is 0 = malignant, 1 = benign; target_names keeps that order.
    return _measurements(load_breast_cancer(), "breast_cancer",
                         "Breast cancer Wisconsin (diagnostic): cell nuclei measurements from a biopsy image",
                         "diagnosis", whole_numbers=False)


def _wine() -> _Dataset:
    from sklearn.datasets import load_wine

    # magnesium and proline are whole numbers: bigint.
    return _measurements(load_wine(), "wine", "Wine cultivars from chemical analysis (three cultivars of one Italian region)",
                         "cultivar", whole_numbers=True)


def _digits_features() -> _Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.astype(float)  # (n, 8, 8), intensities 0..16
    full = 16.0
    ink = images.sum(axis=(1, 2))
    rows = np.arange(8.0)[None, :, None]
    cols = np.arange(8.0)[None, None, :]
    centroid_row = (images * rows).sum(axis=(1, 2)) / ink
    centroid_col = (images * cols).sum(axis=(1, 2)) / ink
    spread_row = np.sqrt((images * (rows - centroid_row[:, None, None]) ** 2).sum(axis=(1, 2)) / ink)
    spread_col = np.sqrt((images * (cols - centroid_col[:, None, None]) ** 2).sum(axis=(1, 2)) / ink)

    def quadrant(r: slice, c: slice) -> np.ndarray:
        return images[:, r, c].sum(axis=(1, 2)) / (16 * full)

    top, bottom, left, right = slice(0, 4), slice(4, 8), slice(0, 4), slice(4, 8)
    frame = pd.DataFrame(
        {
            "ink_total": ink / (64 * full),
            "ink_top_left": quadrant(top, left),
            "ink_top_right": quadrant(top, right),
            "ink_bottom_left": quadrant(bottom, left),
            "ink_bottom_right": quadrant(bottom, right),
            "centroid_row": centroid_row,
            "centroid_col": centroid_col,
            "spread_row": spread_row,
            "spread_col": spread_col,
        }
    ).round(FLOAT_DECIMALS)
    frame["nonzero_pixels"] = (images > 0).sum(axis=(1, 2)).astype("int64")
    frame["digit"] = bunch.target.astype("int64")
    share = "share of the maximum ink (16 per pixel)"
    features = {
        "ink_total": _feature("double", f"ink of the whole 8x8 image, {share}", min=0, max=1),
        "ink_top_left": _feature("double", f"ink of the top-left 4x4 quadrant, {share}", min=0, max=1),
        "ink_top_right": _feature("double", f"ink of the top-right 4x4 quadrant, {share}", min=0, max=1),
        "ink_bottom_left": _feature("double", f"ink of the bottom-left 4x4 quadrant, {share}", min=0, max=1),
        "ink_bottom_right": _feature("double", f"ink of the bottom-right 4x4 quadrant, {share}", min=0, max=1),
        "centroid_row": _feature("double", "ink-weighted mean row (0 = top, 7 = bottom)", min=0, max=7),
        "centroid_col": _feature("double", "ink-weighted mean column (0 = left, 7 = right)", min=0, max=7),
        "spread_row": _feature("double", "ink-weighted standard deviation of the row", min=0, max=3.5),
        "spread_col": _feature("double", "ink-weighted standard deviation of the column", min=0, max=3.5),
        "nonzero_pixels": _feature("bigint", "pixels with any ink", min=0, max=64),
    }
    spec = _spec(
        "digits_features",
        "Handwritten digits (8x8 images) reduced to ink, centroid and spread features",
        "digit",
        list(range(10)),
        features,
    )
    return _Dataset(frame, spec)


TIERS = ("bronze", "silver", "gold", "platinum")
REGIONS = ("north", "south", "west")


def _mixed_synthetic() -> _Dataset:
    from sklearn.datasets import make_classification

    # shuffle=False keeps the column order (6 informative, 2 redundant, 1 noise) but also
    # leaves the rows sorted by cluster and class, so the rows are shuffled here: any run
    # of rows (a backfill, a window) is then a sample of the whole distribution.
    x, y = make_classification(
        n_samples=MIXED_ROWS, n_features=9, n_informative=6, n_redundant=2, n_repeated=0,
        n_classes=2, shuffle=False, random_state=SEED,
    )
    rng = np.random.default_rng(SEED)
    order = rng.permutation(MIXED_ROWS)
    x, y = x[order], y[order]
    frame = pd.DataFrame(
        {
            "signal_a": x[:, 0],
            "signal_b": x[:, 1],
            "signal_c": x[:, 2],
            "mix_a": x[:, 6],
            "mix_b": x[:, 7],
            "noise": x[:, 8],
        }
    ).round(FLOAT_DECIMALS)
    for column in ("signal_b", "mix_b"):
        frame.loc[rng.random(MIXED_ROWS) < MISSING_SHARE, column] = np.nan
    # Categories from quantile bins of two informative columns, so they carry signal.
    frame["tier"] = pd.qcut(x[:, 3], len(TIERS), labels=list(TIERS)).astype(str)
    frame["region"] = pd.qcut(x[:, 4], len(REGIONS), labels=list(REGIONS)).astype(str)
    frame["visits"] = rng.poisson(np.exp(1.0 + 0.5 * np.clip(x[:, 5], -3, 3))).astype("int64")
    frame["outcome"] = np.where(y == 1, "positive", "negative")
    features = {
        "signal_a": _feature("double", "informative"),
        "signal_b": _feature("double", f"informative; about {MISSING_SHARE:.0%} missing", nullable=True),
        "signal_c": _feature("double", "informative"),
        "mix_a": _feature("double", "a linear mix of the informative columns"),
        "mix_b": _feature("double", f"a linear mix of the informative columns; about {MISSING_SHARE:.0%} missing",
                          nullable=True),
        "noise": _feature("double", "unrelated to the label"),
        "tier": _feature("string", "quartile of an informative column", categories=list(TIERS)),
        "region": _feature("string", "tercile of an informative column", categories=list(REGIONS)),
        "visits": _feature("bigint", "Poisson count whose rate grows with an informative column", min=0),
    }
    spec = _spec(
        "mixed_synthetic",
        f"make_classification (seed {SEED}) with missing values, categories and a count",
        "outcome",
        ["negative", "positive"],
        features,
    )
    return _Dataset(frame, spec)


def _exact_class_rows(
    x: np.ndarray, y: np.ndarray, rows: list[int], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Exactly ``rows[k]`` rows of class ``k`` (``make_classification`` only approximates
    its ``weights``), in a random order: any run of rows is a sample of the whole."""
    keep = np.concatenate([rng.permutation(np.flatnonzero(y == k))[:n] for k, n in enumerate(rows)])
    if len(keep) != sum(rows):
        raise AssertionError("make_classification made too few rows of a class")
    keep = rng.permutation(keep)
    return x[keep], y[keep]


def _generated(n_features: int, rows: list[int], **make: Any) -> tuple[np.ndarray, np.ndarray, np.random.Generator]:
    """``make_classification`` rows with exactly ``rows[k]`` rows of class ``k``."""
    from sklearn.datasets import make_classification

    total = sum(rows)
    # Enough of every class to draw from: weights a little above the wanted shares.
    weights = [max(n / total, 0.002) * 1.3 for n in rows]
    weights = [w / sum(weights) for w in weights]
    x, y = make_classification(
        n_samples=int(total * 1.5), n_features=n_features, n_classes=len(rows), weights=weights,
        shuffle=False, random_state=SEED, **make,
    )
    rng = np.random.default_rng(SEED)
    x, y = _exact_class_rows(x, y, rows, rng)
    return x, y, rng


def _graded_synthetic() -> _Dataset:
    grades = list(GRADE_ROWS)
    # 11 columns: 6 informative, 3 redundant (mixes), 2 noise; one more informative column
    # becomes the categorical `batch`. Clusters overlap (class_sep) and 20 % of the labels
    # are relabelled at random, so that, as on wine quality, a default forest is right about
    # 7 times in 10.
    x, y, _rng = _generated(12, list(GRADE_ROWS.values()), n_informative=7, n_redundant=3, n_repeated=0,
                           n_clusters_per_class=2, class_sep=0.7, flip_y=0.2)
    names = [f"measure_{i:02d}" for i in range(1, 12)]
    columns = [0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 11]  # column 6 (informative) becomes `batch`
    frame = pd.DataFrame(x[:, columns], columns=names).round(FLOAT_DECIMALS)
    frame["batch"] = np.where(x[:, 6] > np.median(x[:, 6]), "white", "red")
    frame["grade"] = np.asarray(grades, dtype="int64")[y]
    features: dict[str, Any] = {
        name: _feature("double", "informative" if i < 6 else ("a linear mix of informative columns" if i < 9 else "noise"))
        for i, name in enumerate(names)
    }
    features["batch"] = _feature("string", "red or white: half of an informative column", categories=["red", "white"])
    spec = _spec(
        "graded_synthetic",
        f"make_classification (seed {SEED}) with wine quality's 6,500 rows, 12 features and 7 unequal grades",
        "grade",
        grades,
        features,
    )
    return _Dataset(frame, spec)


def _rare_synthetic() -> _Dataset:
    kinds = list(RARE_SYNTHETIC_ROWS)
    x, y, _ = _generated(10, list(RARE_SYNTHETIC_ROWS.values()), n_informative=5, n_redundant=2, n_repeated=0,
                         n_clusters_per_class=2, class_sep=1.0, flip_y=0.01)
    names = [f"x{i:02d}" for i in range(1, 11)]
    frame = pd.DataFrame(x, columns=names).round(FLOAT_DECIMALS)
    frame["kind"] = np.asarray(kinds)[y]
    features = {
        name: _feature("double", "informative" if i < 5 else ("a linear mix of informative columns" if i < 7 else "noise"))
        for i, name in enumerate(names)
    }
    spec = _spec(
        "rare_synthetic",
        f"make_classification (seed {SEED}), 20,000 rows with a rare class of {RARE_ROWS} rows",
        "kind",
        kinds,
        features,
    )
    return _Dataset(frame, spec)


_BUILDERS: dict[str, Callable[[], _Dataset]] = {
    "breast_cancer": _breast_cancer,
    "wine": _wine,
    "digits_features": _digits_features,
    "mixed_synthetic": _mixed_synthetic,
    "graded_synthetic": _graded_synthetic,
    "rare_synthetic": _rare_synthetic,
}
assert tuple(_BUILDERS) == BUNDLED


def write_dataset(name: str, folder: Path) -> Path:
    """Write ``<name>.csv`` and its spec ``<name>.yaml`` into ``folder``.

    Args:
        name: One of :data:`BUNDLED`.
        folder: Created when missing; existing files of that name are replaced.

    Returns:
        The spec's path (load it with ``serverless_ml.datasets.load_spec_file``).

    Raises:
        ValueError: ``name`` is not bundled.
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown bundled dataset '{name}' (expected one of {', '.join(BUNDLED)})")
    dataset = _BUILDERS[name]()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    csv_path = folder / f"{name}.csv"
    spec_path = folder / f"{name}.yaml"
    csv_path.write_text(dataset.frame.to_csv(index=False, lineterminator="\n"), encoding="utf-8")
    header = f"# Written by bench/datasets.py (write_dataset('{name}', ...)); rows are in {name}.csv.\n"
    body = yaml.safe_dump(dataset.spec, sort_keys=False, default_flow_style=None, width=120, allow_unicode=True)
    spec_path.write_text(header + body, encoding="utf-8")
    return spec_path
