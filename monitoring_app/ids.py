"""Every component id of the site, in one place (callbacks and tests refer to these)."""

from __future__ import annotations

# The shell around every page.
URL = "url"
DATASET = "dataset-picker"
REFRESH = "refresh"
UPDATED = "last-updated"
NAV_PREFIX = "nav-"

# Overview.
OVERVIEW_STATE = "overview-state"
OVERVIEW_WINDOW = "overview-window"
OVERVIEW_BODY = "overview-body"
OVERVIEW_GRAPH = "overview-accuracy"
OVERVIEW_HEADLINE = "overview-headline"
OVERVIEW_LATEST = "overview-latest"

# Confusion matrices.
CONFUSION_STATE = "confusion-state"
CONFUSION_RUN = "confusion-run"
CONFUSION_BODY = "confusion-body"

# Predictions table.
PREDICTIONS_STATE = "predictions-state"
PREDICTIONS_TABLE = "predictions-table"
PREDICTIONS_NOTICE = "predictions-notice"

# Drift.
DRIFT_STATE = "drift-state"
DRIFT_STAT = "drift-stat"
DRIFT_FEATURE = "drift-feature"
DRIFT_HISTORY = "drift-history"
DRIFT_DISTRIBUTION = "drift-distribution"

# Models.
MODELS_STATE = "models-state"
MODELS_VERSION = "models-version"
MODELS_TABLE = "models-table"
MODELS_DETAIL = "models-detail"

# Data.
DATA_STATE = "data-state"
DATA_FEATURE = "data-feature"
DATA_ROWS = "data-rows"
DATA_SUMMARY = "data-summary"
DATA_DISTRIBUTION = "data-distribution"
DATA_CORRELATION = "data-correlation"

# Predict.
PREDICT_STATE = "predict-state"
PREDICT_SUBMIT = "predict-submit"
PREDICT_RESULT = "predict-result"
PREDICT_INPUT = "predict-input"  # pattern-matching type: {"type": PREDICT_INPUT, "feature": name}
PREDICT_ERROR = "predict-error"  # pattern-matching type: {"type": PREDICT_ERROR, "feature": name}


def predict_input(feature: str) -> dict[str, str]:
    return {"type": PREDICT_INPUT, "feature": feature}


def predict_error(feature: str) -> dict[str, str]:
    return {"type": PREDICT_ERROR, "feature": feature}


def nav(page: str) -> str:
    return f"{NAV_PREFIX}{page}"
