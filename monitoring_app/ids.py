"""Every component id of the site, in one place (callbacks and tests refer to these)."""

from __future__ import annotations

# The shell around every page.
URL = "url"
DATASET = "dataset-picker"
REFRESH = "refresh"
NAV_PREFIX = "nav-"

# Overview.
OVERVIEW_STATE = "overview-state"
OVERVIEW_WINDOW = "overview-window"
OVERVIEW_BODY = "overview-body"
OVERVIEW_GRAPH = "overview-accuracy"
OVERVIEW_HEADLINE = "overview-headline"
OVERVIEW_LATEST = "overview-latest"
OVERVIEW_ALERTS = "overview-alerts"
OVERVIEW_CLASS_METRICS = "overview-class-metrics"
OVERVIEW_CLASS_SHARES = "overview-class-shares"
OVERVIEW_QUALITY = "overview-quality"
OVERVIEW_LABELS = "overview-labels"
HEADLINE_ROWS = "headline-rows"
HEADLINE_LATEST = "headline-latest"
HEADLINE_CHAMPION = "headline-champion"
HEADLINE_RETRAIN = "headline-retrain"
HEADLINE_ALERTS = "headline-alerts"
HEADLINE_ACCURACY = "headline-accuracy"

# Confusion matrices.
CONFUSION_STATE = "confusion-state"
CONFUSION_RUN = "confusion-run"
CONFUSION_BODY = "confusion-body"
CONFUSION_GRAPH_PREFIX = "confusion-"  # + batch, rolling, since_promotion

# Slices.
SLICES_STATE = "slices-state"
SLICES_RUN = "slices-run"
SLICES_BODY = "slices-body"
SLICES_TABLE = "slices-table"
SLICES_WORST = "slices-worst"

# Predictions table.
PREDICTIONS_STATE = "predictions-state"
PREDICTIONS_TABLE = "predictions-table"
PREDICTIONS_NOTICE = "predictions-notice"
PREDICTIONS_COUNT = "predictions-count"
PREDICTIONS_EXPORT = "predictions-export"
PREDICTIONS_DOWNLOAD = "predictions-download"
PREDICTIONS_AWAITING = "predictions-awaiting"
PREDICTIONS_AWAITING_COUNT = "predictions-awaiting-count"

# Drift.
DRIFT_STATE = "drift-state"
DRIFT_RUN = "drift-run"
DRIFT_RUN_BODY = "drift-run-body"
DRIFT_ALERT = "drift-alert"
DRIFT_TABLE = "drift-table"
DRIFT_STAT = "drift-stat"
DRIFT_FEATURE = "drift-feature"
DRIFT_WINDOW = "drift-window"
DRIFT_HISTORY = "drift-history"
DRIFT_DISTRIBUTION = "drift-distribution"
DRIFT_HISTORY_GRAPH = "drift-history-graph"
DRIFT_DISTRIBUTION_GRAPH = "drift-distribution-graph"

# Models.
MODELS_STATE = "models-state"
MODELS_VERSION = "models-version"
MODELS_TABLE = "models-table"
MODELS_DETAIL = "models-detail"
MODELS_VERSIONS_TABLE = "models-versions"
MODELS_METRICS_TABLE = "models-metrics"
MODELS_TUNING = "models-tuning"
MODELS_LIVE = "models-live"
MODELS_LIVE_TABLE = "models-live-table"
MODELS_LIVE_DECISION = "models-live-decision"
"""Champion vs challenger on live rows (the shadow challenger's paired comparison)."""

# Data.
DATA_STATE = "data-state"
DATA_FEATURE = "data-feature"
DATA_ROWS = "data-rows"
DATA_SUMMARY = "data-summary"
DATA_DISTRIBUTION = "data-distribution"
DATA_CORRELATION = "data-correlation"
DATA_DISTRIBUTION_GRAPH = "data-distribution-graph"
DATA_CORRELATION_GRAPH = "data-correlation-graph"

# Predict.
PREDICT_STATE = "predict-state"
PREDICT_SUBMIT = "predict-submit"
PREDICT_RESULT = "predict-result"
PREDICT_ANSWER = "predict-answer"
PREDICT_PROBABILITY = "predict-probability"
PREDICT_PROBABILITIES = "predict-probabilities"
PREDICT_INPUT = "predict-input"  # pattern-matching type: {"type": PREDICT_INPUT, "feature": name}
PREDICT_ERROR = "predict-error"  # pattern-matching type: {"type": PREDICT_ERROR, "feature": name}


def predict_input(feature: str) -> dict[str, str]:
    return {"type": PREDICT_INPUT, "feature": feature}


def predict_error(feature: str) -> dict[str, str]:
    return {"type": PREDICT_ERROR, "feature": feature}


def nav(page: str) -> str:
    return f"{NAV_PREFIX}{page}"
