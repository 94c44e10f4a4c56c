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
INFER_PROMOTE = "never"
INFER_PROMOTE_MODES = ("never", "live")
"""``sml infer --promote``: ``live`` promotes ``@challenger`` when the paired test on live
rows says it is better (:func:`serverless_ml.training.promotion.decide_live_promotion`)."""
LIVE_PROMOTE_ALPHA = 0.05
"""The chance, over a challenger's whole life, that ``--promote live`` promotes one no
better than the champion: spent over the batches that judge it, look ``k`` testing at
``alpha / (k (k + 1))`` (:func:`serverless_ml.training.promotion.look_level`)."""
LIVE_PROMOTE_MIN_DISCORDANT = 10
"""Rows on which exactly one of champion and challenger is right that ``--promote live``
needs before it decides (fewer: not promoted, whatever the p-value)."""
SCHEDULE_RETRAIN_COOLDOWN_H = 24.0
"""``sml schedule --retrain-on-alert``: no retrain on an alert within this many hours of the last."""
# `sml infer` and `sml simulate --figures/--no-figures`: PNGs of the confusion matrices next to
# their JSON tables, so every monitoring run looks the same in the MLflow UI whichever
# command logged it (the site draws the JSON tables itself).
LOG_FIGURES = True
# Accuracy per slice of a batch (serverless_ml/inference/slices.py): a slice's realized
# accuracy needs this many labelled rows, its estimate this many rows ("not computed"
# below: the Wilson interval of 30 rows at 80 % is already +-0.14 wide); numeric
# features with more distinct training values than SLICE_BINS are cut at the quantiles
# of the champion's training rows into SLICE_BINS bins.
SLICE_MIN_ROWS = 30
SLICE_BINS = 4
SLICE_MAX_VALUES = 100
"""A feature sliced by value with more distinct values than this in a batch is left out of
the slice table, with a note."""

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

# sml serve: a REST server of @champion, this machine only by default.
SERVE_HOST = "127.0.0.1"
SERVE_PORT = 5001
SERVE_MAX_BODY_BYTES = 1024 * 1024
"""The largest request body (413 above): 1 MiB holds about 5,000 Titanic rows as JSON."""
SERVE_MAX_ROWS = 1000
"""The most rows in one request (413 above)."""
SERVE_FLUSH_ROWS = 100
"""Served rows are written to the store when this many are buffered..."""
SERVE_FLUSH_S = 5.0
"""...or this many seconds after the last write, whichever comes first (and on SIGTERM)."""
SERVE_MAX_PENDING_ROWS = 10_000
"""Served rows that may wait for a write (the store refusing flushes, or a job holding its
lock): beyond, requests get 503 rather than answers that would not be recorded. Also the
most rows a SIGKILL (or a crash) can lose."""
SERVE_RETRY_MAX_S = 60.0
"""After a failed flush the next try waits ``flush seconds`` doubled per failure in a row,
at most this many seconds (even with a full buffer)."""
SERVE_LOCK_WAIT_S = 30.0
"""How long a flush waits for the ``infer-<dataset>`` lock (held by ``sml infer`` or ``sml
labels``) before giving up: a background flush then retries later; the last flush, at
shutdown, logs how many rows were not recorded and exits."""
SERVE_ALIAS_CHECK_S = 5.0
"""How often the server asks the registry which version ``@champion`` is (a promotion is
served within this many seconds plus the new model's load time, without a restart)."""
SERVE_KEY_BASE = 2**52
"""Generated ``bigint`` keys of served rows start here (and stay below 2**53, exact in JSON)."""
SERVE_KEY_BLOCK = 1024
"""Generated keys are reserved in blocks of this many (a lock file in the state directory)."""

TRACKING_SERVER_HOST = "127.0.0.1"
TRACKING_SERVER_PORT = 5000
# MLflow starts 4 uvicorn workers; 2 serve a team's training jobs and leave a small
# machine's memory to the jobs themselves.
TRACKING_SERVER_WORKERS = 2

# Notifications (`--notify URL`, SML_NOTIFY_URL; serverless_ml/notify.py): each POST is tried
# this many times, waiting NOTIFY_BACKOFF_S, then twice that, ... between tries (0.5 s + 1 s),
# each try given NOTIFY_TIMEOUT_S to answer. A receiver that is down costs a job about
# 1.5 s (connection refused) and at most 3 x 5 + 1.5 s (no answer) once: the job's other
# notifications skip a receiver that failed.
NOTIFY_ATTEMPTS = 3
NOTIFY_BACKOFF_S = 0.5
NOTIFY_TIMEOUT_S = 5.0

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
        "promote": INFER_PROMOTE,
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
