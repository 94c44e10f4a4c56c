"""Monitoring statistics of scored batches: accuracy with its uncertainty, windows,
per-class metrics, and the alert rule. Plain functions on frames of predictions."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from serverless_ml import defaults
from serverless_ml.errors import SmlError

MIN_ROWS_FOR_CLASS_METRICS = 20
DEFAULT_ACCURACY_DROP = defaults.INFER_ACCURACY_DROP
DEFAULT_DRIFT_P_VALUE = defaults.INFER_DRIFT_P_VALUE
DEFAULT_DRIFT_SHARE = defaults.INFER_DRIFT_SHARE
DEFAULT_DRIFT_MIN_EFFECT = defaults.INFER_DRIFT_MIN_EFFECT


def wilson_interval(correct: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of an accuracy: honest even for a batch of one row."""
    if total == 0:
        return (math.nan, math.nan)
    p = correct / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class AlertRule:
    """Thresholds of the alert rule (defaults in :mod:`serverless_ml.defaults`).

    Attributes:
        accuracy_drop: Alert when the accuracy is, with 95 % confidence, more than this
            below the champion's holdout accuracy (the upper end of its Wilson interval
            is under the holdout accuracy minus this).
        drift_p_value: A feature has drifted when its Benjamini-Hochberg adjusted
            p-value (over all features) is below this...
        drift_min_effect: ...and its effect size is at least this (see
            :mod:`serverless_ml.inference.drift`).
        drift_share: Alert when more than this share of features has drifted (0: any).
    """

    accuracy_drop: float = DEFAULT_ACCURACY_DROP
    drift_p_value: float = DEFAULT_DRIFT_P_VALUE
    drift_share: float = DEFAULT_DRIFT_SHARE
    drift_min_effect: float = DEFAULT_DRIFT_MIN_EFFECT

    def __post_init__(self) -> None:
        """Refuse a threshold out of range (NaN too) in one line, as ``sml infer`` does."""
        if not 0 <= self.accuracy_drop <= 1:
            raise SmlError(f"--accuracy-drop must be between 0 and 1, got {self.accuracy_drop}")
        if not 0 < self.drift_p_value < 1:
            raise SmlError(f"--drift-p-value must be in (0, 1), 0 and 1 excluded, got {self.drift_p_value}")
        if not 0 <= self.drift_share < 1:
            raise SmlError(f"--drift-share must be in [0, 1), got {self.drift_share}")
        if not 0 <= self.drift_min_effect < 100:
            raise SmlError(f"--drift-min-effect must be between 0 and 100, got {self.drift_min_effect}")


@dataclass
class Alerts:
    """What fired, with a sentence for each."""

    accuracy: bool = False
    drift: bool = False
    messages: list[str] = field(default_factory=list)

    @property
    def any(self) -> bool:
        return self.accuracy or self.drift


def evaluate_alerts(
    rule: AlertRule,
    champion_accuracy: float | None,
    batch_correct: int,
    batch_labelled: int,
    rolling_correct: int,
    rolling_labelled: int,
    drift_share: float | None,
    drifted: Sequence[str],
    drift_window: str = "",
    estimated: tuple[float, float, float, int] | None = None,
) -> Alerts:
    """The alert rule.

    Accuracy: the batch's accuracy, or the rolling window's, is below the champion's
    holdout accuracy minus ``accuracy_drop`` with 95 % confidence: the upper end of its
    Wilson interval is under that floor. A 10-row batch at 0.60 (interval 0.31-0.83) is
    noise, not an alert; 100 rows at 0.60 (0.50-0.69) against a floor of 0.73 are.
    While a batch's labels are missing, ``estimated`` (accuracy, interval low and high,
    rows unlabelled: :mod:`serverless_ml.inference.estimate`) stands in for its realized
    accuracy: the alert fires when the upper end of the estimate's interval is under the
    floor, and its message says the accuracy is estimated.
    Drift: at least one feature drifted and the share of drifted features is above
    ``drift_share``.
    """
    alerts = Alerts()
    if champion_accuracy is not None:
        floor = champion_accuracy - rule.accuracy_drop
        if estimated is not None:
            accuracy, low, high, unlabelled = estimated
            if high < floor:
                alerts.accuracy = True
                alerts.messages.append(
                    f"accuracy alert (estimated: {unlabelled} rows have no label yet): estimated batch accuracy "
                    f"{accuracy:.3f} (95 % interval {low:.3f}-{high:.3f}) is below {floor:.3f} (champion holdout "
                    f"{champion_accuracy:.3f} - {rule.accuracy_drop:.2f})"
                )
        for basis, correct, rows in (("batch", batch_correct, batch_labelled), ("rolling", rolling_correct, rolling_labelled)):
            if rows <= 0:
                continue
            low, high = wilson_interval(correct, rows)
            if high < floor and not alerts.accuracy:
                alerts.accuracy = True
                alerts.messages.append(
                    f"accuracy alert: {basis} accuracy {correct / rows:.3f} over {rows} rows (95 % interval "
                    f"{low:.3f}-{high:.3f}) is below {floor:.3f} (champion holdout {champion_accuracy:.3f} "
                    f"- {rule.accuracy_drop:.2f})"
                )
                break
    if drift_share is not None and drifted and drift_share > rule.drift_share:
        alerts.drift = True
        where = f" over {drift_window}" if drift_window else ""
        alerts.messages.append(
            f"drift alert: {len(drifted)} feature(s) drifted{where} ({', '.join(drifted)}): "
            f"adjusted p < {rule.drift_p_value:g} and effect >= {rule.drift_min_effect:g}"
        )
    return alerts


def window(predictions: pd.DataFrame, start: pd.Timestamp | None, end: pd.Timestamp) -> pd.DataFrame:
    """Predictions with event time in ``(start, end]`` (``start=None``: no lower bound)."""
    mask = predictions["event_time"] <= end
    if start is not None:
        mask &= predictions["event_time"] > start
    return predictions[mask]


def latest_row(predictions: pd.DataFrame, key: str) -> dict[str, Any]:
    """The latest scored row of a batch (by event time, then key)."""
    latest = predictions[predictions["event_time"] == predictions["event_time"].max()]
    row = latest.loc[latest[key].idxmax()]
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
