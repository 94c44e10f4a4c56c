"""The holdout split and the number of cross-validation folds, fitted to the smallest class.

Pure functions on class counts and labels. By default (``holdout == 0`` and ``folds == 0``,
see :mod:`serverless_ml.defaults`) both adapt: every class gets at least one holdout row
and the folds are as many as the smallest class has training rows (at most
:data:`~serverless_ml.defaults.TRAIN_AUTO_FOLDS`), so a class of 3 rows still trains
(1 held out, 2-fold CV). A value the user gave is never changed: it is refused, in one
line saying why, when some class cannot fill it.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from serverless_ml import defaults
from serverless_ml.errors import DataValidationError

MIN_FOLDS = 2
MIN_CLASS_ROWS = 1 + MIN_FOLDS
"""Rows a class needs: one held out, and one per fold of the smallest CV."""


@dataclass(frozen=True)
class SplitPlan:
    """How the training rows are split: holdout rows per class and the CV folds."""

    holdout: float
    """The holdout share asked for (the default's or the user's)."""
    folds: int
    holdout_rows: dict[Hashable, int]
    """Holdout rows of each class (at least one each)."""
    holdout_auto: bool
    folds_auto: bool
    smallest_class: Hashable
    smallest_train_rows: int
    """Training rows of the class with the fewest (what limits the folds)."""
    auto_folds: int = defaults.TRAIN_AUTO_FOLDS
    """The most folds the default chooses."""

    @property
    def adapted(self) -> bool:
        """The default folds were lowered for a small class."""
        return self.folds_auto and self.folds < self.auto_folds

    def describe(self) -> str:
        """One line: what was chosen and, for a default, why."""
        rows = sum(self.holdout_rows.values())
        holdout = f"holdout {rows} rows ({self.holdout:.0%} of each class, at least 1)"
        if self.holdout_auto:
            holdout += " [default]"
        folds = f"{self.folds}-fold CV"
        if self.adapted:
            folds += (f" [default {self.auto_folds} lowered: class {self.smallest_class!r} "
                      f"has {self.smallest_train_rows} training rows]")
        elif self.folds_auto:
            folds += " [default]"
        return f"split: {holdout}, {folds}"


def holdout_rows_of_class(rows: int, holdout: float) -> int:
    """Holdout rows of a class of ``rows`` rows: ``holdout`` of them, rounded, and at least
    one. Each class on its own, so what a class needs does not depend on the others
    (:func:`rows_needed_per_class`)."""
    return min(rows, max(1, math.floor(holdout * rows + 0.5)))


def holdout_rows_per_class(counts: Mapping[Hashable, int], holdout: float) -> dict[Hashable, int]:
    """:func:`holdout_rows_of_class` of every class."""
    return {cls: holdout_rows_of_class(n, holdout) for cls, n in counts.items()}


def rows_needed_per_class(folds: int = defaults.TRAIN_FOLDS, holdout: float = defaults.TRAIN_HOLDOUT) -> int:
    """The fewest rows a class needs for :func:`plan_split` to accept it with these
    ``folds`` and ``holdout`` (0: the adaptive defaults, where :data:`MIN_CLASS_ROWS` do)."""
    share = holdout or defaults.TRAIN_AUTO_HOLDOUT
    least = max(folds, MIN_FOLDS)
    rows = MIN_CLASS_ROWS
    while rows - holdout_rows_of_class(rows, share) < least:
        rows += 1
    return rows


def plan_split(counts: Mapping[Hashable, int], holdout: float, folds: int, dataset: str,
               auto_folds: int = defaults.TRAIN_AUTO_FOLDS) -> SplitPlan:
    """The split for classes with ``counts`` rows; ``holdout == 0`` and ``folds == 0`` mean
    the adaptive defaults (at most ``auto_folds`` folds).

    Raises:
        DataValidationError: a class has fewer than :data:`MIN_CLASS_ROWS` rows, or an
            explicit ``folds`` (or ``holdout``) leaves a class fewer training rows than folds.
    """
    holdout_auto, folds_auto = not holdout, not folds
    share = defaults.TRAIN_AUTO_HOLDOUT if holdout_auto else holdout
    given = " ".join(([] if folds_auto else [f"--folds {folds}"]) + ([] if holdout_auto else [f"--holdout {holdout:g}"]))
    for cls, n in counts.items():
        if n < MIN_CLASS_ROWS:
            least = f"{MIN_CLASS_ROWS} (1 held out, {MIN_FOLDS} for {MIN_FOLDS}-fold CV)"
            if given:  # what the options given need, and what no option goes below
                least = (f"{max(MIN_CLASS_ROWS, rows_needed_per_class(folds, holdout))} for {given} "
                         f"(never fewer than {MIN_CLASS_ROWS}: 1 held out, {MIN_FOLDS} for {MIN_FOLDS}-fold CV)")
            raise DataValidationError(
                f"dataset '{dataset}': class {cls!r} has {n} rows; need at least {least}: add rows of that class, "
                "or drop it or merge it into another class (in the source data and the spec's `classes`)"
            )
    held = holdout_rows_per_class(counts, share)
    train = {cls: counts[cls] - held[cls] for cls in counts}
    smallest = min(train, key=lambda cls: (train[cls], str(cls)))
    have = train[smallest]
    if have < MIN_FOLDS or (not folds_auto and folds > have):
        needed = rows_needed_per_class(folds, holdout)
        fewer = (f"use --folds {have} or fewer" if not folds_auto and have >= MIN_FOLDS
                 else "use a smaller --holdout")
        raise DataValidationError(
            f"dataset '{dataset}': class {smallest!r} has {counts[smallest]} rows; need at least {needed} for "
            f"{given} (each class held out and in every fold; {held[smallest]} held out leaves {have} for "
            f"{max(folds, MIN_FOLDS)}-fold CV): {fewer}, or leave {given} out to adapt to the smallest class"
        )
    if folds_auto:
        chosen = min(auto_folds, have)
    else:
        chosen = folds
    return SplitPlan(share, chosen, held, holdout_auto, folds_auto, smallest, have, auto_folds)


def split_holdout(y: pd.Series, plan: SplitPlan, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the training and holdout rows of ``y``: ``plan.holdout_rows[c]`` rows
    of each class ``c`` drawn at random (seeded), both sorted."""
    rng = np.random.default_rng(seed)
    labels = y.to_numpy()
    hold = [rng.permutation(np.flatnonzero(labels == cls))[:n] for cls, n in plan.holdout_rows.items()]
    hold_idx = np.sort(np.concatenate(hold)) if hold else np.array([], dtype=int)
    train_idx = np.setdiff1d(np.arange(len(labels)), hold_idx)
    return train_idx, hold_idx
