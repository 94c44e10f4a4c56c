"""Monitoring statistics of scored batches: accuracy with its uncertainty, windows,
per-class metrics, and the alert rule. Plain functions on frames of predictions."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from serverless_ml import defaults

MIN_ROWS_FOR_CLASS_METRICS = 20
MIN_ROWS_FOR_BATCH_ALERT = 20
DEFAULT_ROLLING_DAYS = defaults.INFER_ROLLING_DAYS
DEFAULT_ACCURACY_DROP = defaults.INFER_ACCURACY_DROP
DEFAULT_DRIFT_P_VALUE = defaults.INFER_DRIFT_P_VALUE
DEFAULT_DRIFT_SHARE = defaults.INFER_DRIFT_SHARE


def wilson_interval(correct: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of an accuracy: honest even for a batch of one row."""
    if total == 0:
        return (math.nan, math.nan)
    p = correct / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def accuracy_of(predictions: pd.DataFrame) -> tuple[float, int]:
    """Accuracy over rows with a known actual label, and how many there were."""
    labelled = predictions[predictions["actual"].notna()]
    if labelled.empty:
        return math.nan, 0
    return float((labelled["prediction"] == labelled["actual"]).mean()), len(labelled)


@dataclass(frozen=True)
class AlertRule:
    """Thresholds of the alert rule (defaults above; configurable per run).

    Attributes:
        accuracy_drop: Alert when accuracy is more than this below the champion's holdout
            accuracy.
        drift_p_value: A feature has drifted when its test's p-value is below this.
        drift_share: Alert when at least this share of features has drifted.
    """

    accuracy_drop: float = DEFAULT_ACCURACY_DROP
    drift_p_value: float = DEFAULT_DRIFT_P_VALUE
    drift_share: float = DEFAULT_DRIFT_SHARE


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
    batch_accuracy: float,
    batch_labelled: int,
    rolling_accuracy: float,
    rolling_labelled: int,
    drift_share: float | None,
    drifted: Sequence[str],
) -> Alerts:
    """The alert rule: accuracy (the batch's when it is big enough, else the rolling
    window's) below the champion's holdout accuracy minus ``accuracy_drop``; or a share of
    drifted features at or above ``drift_share``."""
    alerts = Alerts()
    if champion_accuracy is not None:
        floor = champion_accuracy - rule.accuracy_drop
        if batch_labelled >= MIN_ROWS_FOR_BATCH_ALERT:
            basis, value, rows = "batch", batch_accuracy, batch_labelled
        else:
            basis, value, rows = "rolling", rolling_accuracy, rolling_labelled
        if rows > 0 and not math.isnan(value) and value < floor:
            alerts.accuracy = True
            alerts.messages.append(
                f"accuracy alert: {basis} accuracy {value:.3f} over {rows} rows is below "
                f"{floor:.3f} (champion holdout {champion_accuracy:.3f} - {rule.accuracy_drop:.2f})"
            )
    if drift_share is not None and drift_share >= rule.drift_share and drifted:
        alerts.drift = True
        alerts.messages.append(
            f"drift alert: {len(drifted)} feature(s) drifted ({', '.join(drifted)}), share {drift_share:.2f} >= {rule.drift_share:.2f}"
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
