"""Every parameter default, in one place.

The ``sml`` CLI and the ``MLproject`` entry points read these values; a test checks that
the MLproject file states the same defaults.
"""

from __future__ import annotations

DATASET = "titanic"
DAILY_ROWS = 10
DAILY_SEED = 0
FEATURE_STORE = "local"
FEATURE_STORES = ("local", "hopsworks")
"""The feature store backends (``--feature-store`` choices)."""

TRAIN_TRIALS = 30
TRAIN_SEED = 42
# 0 = adapt: a TRAIN_AUTO_HOLDOUT share of each class held out (at least one row of each)
# and TRAIN_AUTO_FOLDS folds, fewer when the smallest class has fewer training rows; a
# value the user gives is used as given (or refused when a class cannot fill it).
TRAIN_HOLDOUT = 0.0
TRAIN_FOLDS = 0
TRAIN_AUTO_HOLDOUT = 0.2
TRAIN_AUTO_FOLDS = 5
# `--timeout 0` (the default): the search starts no trial after this many seconds, so that
# default `sml train` on a 6,500-row set takes <= 120 s on a 2-core machine. Measured with
# `python -m bench train --only datasets`: Titanic, Iris and the 6,500-row set ran all 30
# trials within it (`sml train` 19 s, 20 s, 37 s); the 20,000-row set ran 22 (74 s).
TRAIN_TIME_BUDGET_S = 60.0
TRAIN_WORKERS = 1
TRAIN_PROMOTE = "if-better"
TRAIN_PROMOTE_MODES = ("if-better", "always", "never")
"""``--promote`` choices (:mod:`serverless_ml.training.promotion` applies them)."""

INFER_ROLLING_DAYS = 30
INFER_ACCURACY_DROP = 0.10
INFER_DRIFT_P_VALUE = 0.01
INFER_DRIFT_SHARE = 0.0
INFER_DRIFT_MIN_EFFECT = 0.1
# `sml infer` and `sml simulate --figures/--no-figures`: PNGs of the confusion matrices next to
# their JSON tables, so every monitoring run looks the same in the MLflow UI whichever
# command logged it (the site draws the JSON tables itself).
LOG_FIGURES = True

SIMULATE_DAYS = 30
SIMULATE_ROWS = 10
SIMULATE_RETRAIN_TRIALS = 10
SIMULATE_LABEL_DELAY = 0
"""Days after a simulated row's day its label arrives (``sml simulate --label-delay``)."""
SIMULATE_LABEL_SHARE = 1.0
"""The share of simulated rows whose label ever arrives (``sml simulate --label-share``)."""

SCHEDULE_DAILY_CRON = "5 0 * * *"
SCHEDULE_INFER_CRON = "15 0 * * *"
SCHEDULE_RETRAIN_CRON = "30 0 * * 0"
SCHEDULE_JOBS = ("daily", "infer", "retrain")
"""The scheduler's jobs (``--run-now`` choices), in the order a slot runs them."""

# sml dashboard: this machine only, by default.
SITE_HOST = "127.0.0.1"
SITE_PORT = 8050
SITE_REFRESH_S = 30.0
SITE_REFRESH_RANGE_S = (1.0, 86400.0)
"""The refresh periods the site accepts (a browser timer of NaN, 0 or 1e308 ms breaks every page)."""

TRACKING_SERVER_HOST = "127.0.0.1"
TRACKING_SERVER_PORT = 5000
# MLflow starts 4 uvicorn workers; 2 serve a team's training jobs and leave a small
# machine's memory to the jobs themselves.
TRACKING_SERVER_WORKERS = 2

# MLproject entry point -> parameter -> default (as MLproject states it; "" means unset).
ENTRY_POINT_DEFAULTS: dict[str, dict[str, object]] = {
    "features": {"dataset": DATASET, "source": "", "store_dir": "", "feature_store": FEATURE_STORE},
    "daily": {
        "dataset": DATASET,
        "date": "",
        "rows": DAILY_ROWS,
        "seed": DAILY_SEED,
        "drift": "",
        "replace": "false",
        "store_dir": "",
        "feature_store": FEATURE_STORE,
    },
    "ingest": {"dataset": DATASET, "source": "", "date": "", "store_dir": "", "feature_store": FEATURE_STORE},
    "labels": {"dataset": DATASET, "source": "", "overwrite": "false", "store_dir": "", "feature_store": FEATURE_STORE},
    "train": {
        "dataset": DATASET,
        "trials": TRAIN_TRIALS,
        "timeout": 0.0,
        "seed": TRAIN_SEED,
        "holdout": TRAIN_HOLDOUT,
        "folds": TRAIN_FOLDS,
        "workers": TRAIN_WORKERS,
        "storage": "",
        "study_name": "",
        "include_synthetic": "false",
        "promote": TRAIN_PROMOTE,
        "store_dir": "",
        "feature_store": FEATURE_STORE,
    },
    "batch_inference": {
        "dataset": DATASET,
        "as_of": "",
        "rolling_days": INFER_ROLLING_DAYS,
        "accuracy_drop": INFER_ACCURACY_DROP,
        "drift_p_value": INFER_DRIFT_P_VALUE,
        "drift_min_effect": INFER_DRIFT_MIN_EFFECT,
        "drift_share": INFER_DRIFT_SHARE,
        "fail_on_alert": "false",
        "store_dir": "",
        "feature_store": FEATURE_STORE,
    },
    "simulate": {
        "dataset": DATASET,
        "days": SIMULATE_DAYS,
        "end_date": "",
        "rows": SIMULATE_ROWS,
        "seed": DAILY_SEED,
        "drift": "",
        "drift_from": 0,
        "drift_days": 0,
        "retrain_every": 0,
        "retrain_trials": SIMULATE_RETRAIN_TRIALS,
        "replace": "false",
        "keep_existing": "false",
        "label_delay": SIMULATE_LABEL_DELAY,
        "label_share": SIMULATE_LABEL_SHARE,
        "store_dir": "",
        "feature_store": FEATURE_STORE,
    },
    "main": {
        "dataset": DATASET,
        "trials": TRAIN_TRIALS,
        "days": SIMULATE_DAYS,
        "drift": "",
        "drift_from": 0,
        "drift_days": 0,
        "label_delay": SIMULATE_LABEL_DELAY,
        "label_share": SIMULATE_LABEL_SHARE,
        "store_dir": "",
    },
}
