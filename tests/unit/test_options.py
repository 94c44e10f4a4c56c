"""Options validate themselves: every options dataclass refuses a bad value at construction
with the one-line error the CLI prints, whoever builds it (CLI, scheduler, benchmarks,
tests), and its defaults are :mod:`serverless_ml.defaults`."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math

import pytest

from serverless_ml import defaults
from serverless_ml.datasets import get_dataset
from serverless_ml.datasets.synthetic import parse_drift
from serverless_ml.errors import SmlError
from serverless_ml.inference.monitoring import AlertRule
from serverless_ml.pipelines.infer import InferOptions
from serverless_ml.pipelines.main import MainOptions
from serverless_ml.pipelines.schedule import ScheduleOptions
from serverless_ml.pipelines.simulate import SimulateOptions
from serverless_ml.pipelines.train import TrainOptions

END = dt.date(2024, 3, 1)
TITANIC = get_dataset("titanic")


def _refused(build, message: str) -> None:  # noqa: ANN001 - a callable building options
    with pytest.raises(SmlError) as raised:
        build()
    assert str(raised.value) == message
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(("changes", "message"), [
    ({"seed": -1}, "--seed must be >= 0, got -1"),
    ({"worker_id": 1}, "--worker-id needs --workers-only"),
    ({"trials": -1}, "--trials must be >= 1 (or 0 to refit an existing study's best trial), got -1"),
    ({"trials": 0, "workers_only": True, "study_name": "s"}, "--trials must be >= 1 with --workers-only, got 0"),
    ({"workers_only": True}, "--workers-only needs --study-name: every worker and the final `sml train --trials 0` "
                             "name the same study"),
    ({"workers_only": True, "study_name": "s", "worker_id": -2}, "--worker-id must be >= 0, got -2"),
    ({"holdout": 0.7}, f"--holdout must be between 0.05 and 0.5 (or 0: {defaults.TRAIN_AUTO_HOLDOUT}, "
                       "at least one row of each class), got 0.7"),
    ({"folds": 1}, f"--folds must be between 2 and 20 (or 0: {defaults.TRAIN_AUTO_FOLDS}, fewer when a class "
                   "has fewer training rows), got 1"),
    ({"workers": 0}, "--workers must be >= 1, got 0"),
    ({"timeout": 0.0}, "--timeout must be > 0 seconds (or 0 for the default budget), got 0.0"),
    ({"promote": "sometimes"}, "--promote must be one of if-better, always, never"),
])
def test_train_options_refuse_each_bad_value(changes: dict, message: str) -> None:
    _refused(lambda: TrainOptions(**changes), message)
    # dataclasses.replace builds anew: a bad value cannot slip in afterwards either.
    _refused(lambda: dataclasses.replace(TrainOptions(), **changes), message)


def test_train_options_defaults_are_the_defaults_module() -> None:
    options = TrainOptions()
    assert (options.trials, options.seed, options.holdout, options.folds, options.auto_folds, options.promote,
            options.workers) == (defaults.TRAIN_TRIALS, defaults.TRAIN_SEED, defaults.TRAIN_HOLDOUT, defaults.TRAIN_FOLDS,
                                 defaults.TRAIN_AUTO_FOLDS, defaults.TRAIN_PROMOTE, defaults.TRAIN_WORKERS)
    assert options.promote in defaults.TRAIN_PROMOTE_MODES


@pytest.mark.parametrize(("changes", "message"), [
    ({"accuracy_drop": 1.5}, "--accuracy-drop must be between 0 and 1, got 1.5"),
    ({"drift_p_value": 0.0}, "--drift-p-value must be in (0, 1), 0 and 1 excluded, got 0.0"),
    ({"drift_p_value": math.nan}, "--drift-p-value must be in (0, 1), 0 and 1 excluded, got nan"),
    ({"drift_share": 1.0}, "--drift-share must be in [0, 1), got 1.0"),
    ({"drift_min_effect": -0.1}, "--drift-min-effect must be between 0 and 100, got -0.1"),
    ({"drift_min_effect": math.nan}, "--drift-min-effect must be between 0 and 100, got nan"),
])
def test_alert_rule_refuses_each_bad_threshold(changes: dict, message: str) -> None:
    _refused(lambda: AlertRule(**changes), message)


@pytest.mark.parametrize(("changes", "message"), [
    ({"rolling_days": 0}, "--rolling-days must be >= 1, got 0"),
    ({"as_of": dt.date(9999, 12, 31)}, None),
])
def test_infer_options_refuse_each_bad_value(changes: dict, message: str | None) -> None:
    with pytest.raises(SmlError) as raised:
        InferOptions(**changes)
    if message is not None:
        assert str(raised.value) == message
    else:
        assert "--as-of" in str(raised.value)


def test_infer_options_defaults_are_the_defaults_module() -> None:
    options = InferOptions()
    rule = options.rule
    assert (options.rolling_days, options.figures, options.fail_on_alert) == (
        defaults.INFER_ROLLING_DAYS, defaults.LOG_FIGURES, False)
    assert (rule.accuracy_drop, rule.drift_p_value, rule.drift_share, rule.drift_min_effect) == (
        defaults.INFER_ACCURACY_DROP, defaults.INFER_DRIFT_P_VALUE, defaults.INFER_DRIFT_SHARE,
        defaults.INFER_DRIFT_MIN_EFFECT)


DRIFT = parse_drift("age+15", TITANIC)


@pytest.mark.parametrize(("changes", "message"), [
    ({"rows": 0}, "--rows must be between 1 and 10000, got 0"),
    ({"rows": 10_001}, "--rows must be between 1 and 10000, got 10001"),
    ({"seed": -1}, "--seed must be between 0 and 9999, got -1"),
    ({"seed": 10_000}, "--seed must be between 0 and 9999, got 10000"),
    ({"replace": True, "keep_existing": True},
     "--replace and --keep-existing exclude each other: rewrite the existing days, or keep them"),
    ({"days": 0}, "--days must be between 1 and 3660, got 0"),
    ({"retrain_every": 0}, "--retrain-every must be >= 1 (or 0: no retraining), got 0"),
    ({"drift": DRIFT}, "--drift needs --drift-from DAY (the first day of the drift episode, 1..--days)"),
    ({"drift": DRIFT, "drift_from": 4}, "--drift-from must be a day between 1 and 3, got 4"),
    ({"drift_from": 1}, "--drift-from needs --drift SPEC (e.g. 'age+15,fare*2')"),
    ({"drift": DRIFT, "drift_from": 1, "drift_days": 0}, "--drift-days must be >= 1 (or 0: to the last day), got 0"),
    ({"retrain_trials": 0}, "--retrain-trials must be >= 1, got 0"),
])
def test_simulate_options_refuse_each_bad_value(changes: dict, message: str) -> None:
    _refused(lambda: SimulateOptions(**{"days": 3, "end_date": END, **changes}), message)


def test_simulate_options_refuse_a_first_day_out_of_range() -> None:
    with pytest.raises(SmlError, match="the first simulated day"):
        SimulateOptions(days=3, end_date=dt.date(1970, 1, 2))


def test_simulate_options_defaults_are_the_defaults_module() -> None:
    options = SimulateOptions(days=defaults.SIMULATE_DAYS, end_date=END)
    assert (options.rows, options.seed, options.retrain_trials) == (
        defaults.SIMULATE_ROWS, defaults.DAILY_SEED, defaults.SIMULATE_RETRAIN_TRIALS)


@pytest.mark.parametrize(("changes", "message"), [
    ({"rows": -5}, "--rows must be between 1 and 10000, got -5"),
    ({"seed": 10_000}, "--seed must be between 0 and 9999, got 10000"),
    ({"retrain_trials": 0}, "--retrain-trials must be >= 1, got 0"),
    ({"daily_cron": "61 * * * *"}, "--daily-cron: cron expression '61 * * * *': minute field '61' must lie within 0-59"),
    ({"infer_cron": "* * *"}, "--infer-cron: cron expression '* * *' must have 5 fields: minute hour day-of-month "
                              "month day-of-week"),
    ({"retrain_cron": "0 0 31 2 *"}, "--retrain-cron: cron expression '0 0 31 2 *' never fires"),
])
def test_schedule_options_refuse_each_bad_value(changes: dict, message: str) -> None:
    _refused(lambda: ScheduleOptions(**changes), message)


def test_schedule_options_defaults_are_the_defaults_module() -> None:
    options = ScheduleOptions()
    assert options.crons == {"daily": defaults.SCHEDULE_DAILY_CRON, "infer": defaults.SCHEDULE_INFER_CRON,
                             "retrain": defaults.SCHEDULE_RETRAIN_CRON}
    assert tuple(options.crons) == defaults.SCHEDULE_JOBS
    assert (options.rows, options.seed, options.retrain_trials) == (
        defaults.DAILY_ROWS, defaults.DAILY_SEED, defaults.SIMULATE_RETRAIN_TRIALS)


def test_main_options_refuse_too_few_trials_and_default_to_the_defaults_module() -> None:
    _refused(lambda: MainOptions(trials=0), "--trials must be >= 1, got 0")
    options = MainOptions()
    assert (options.dataset, options.trials, options.days) == (defaults.DATASET, defaults.TRAIN_TRIALS, defaults.SIMULATE_DAYS)


def test_the_spec_key_table_marks_exactly_the_required_keys() -> None:
    from serverless_ml.datasets.spec import REQUIRED, REQUIRED_KEYS, SPEC_KEYS, parse_spec

    assert {key for key, default, _ in SPEC_KEYS if default is REQUIRED} == set(REQUIRED_KEYS)
    assert len({key for key, _, _ in SPEC_KEYS}) == len(SPEC_KEYS)
    for key, default, _ in SPEC_KEYS:
        if default is REQUIRED:
            with pytest.raises(SmlError, match=f"^f.yaml: missing required key '{key}'$"):
                parse_spec({k: "x" for k in REQUIRED_KEYS if k != key}, "f.yaml")


@pytest.mark.parametrize(("changes", "message"), [
    ({"refresh_s": 0.5}, "--refresh must be a number of seconds between 1 and 86400, got 0.5"),
    ({"refresh_s": math.nan}, "--refresh must be a number of seconds between 1 and 86400, got nan"),
    ({"refresh_s": 1e308}, "--refresh must be a number of seconds between 1 and 86400, got 1e+308"),
    ({"port": 70_000}, "--port must be between 1 and 65535, got 70000"),
    ({"port": -1}, "--port must be between 1 and 65535, got -1"),
])
def test_site_options_refuse_each_bad_value(changes: dict, message: str) -> None:
    from monitoring_app.options import SiteOptions

    _refused(lambda: SiteOptions(**changes), message)


def test_site_options_defaults_are_the_defaults_module() -> None:
    from monitoring_app.options import SiteOptions

    options = SiteOptions()
    assert (options.host, options.port, options.refresh_s) == (defaults.SITE_HOST, defaults.SITE_PORT, defaults.SITE_REFRESH_S)


@pytest.mark.parametrize(("changes", "message"), [
    ({"port": 0}, "--port must be between 1 and 65535, got 0"),
    ({"port": 65_536}, "--port must be between 1 and 65535, got 65536"),
    ({"workers": 0}, "--workers must be >= 1, got 0"),
])
def test_tracking_server_options_refuse_each_bad_value(changes: dict, message: str) -> None:
    from serverless_ml.tracking_server import ServerOptions

    _refused(lambda: ServerOptions(**changes), message)


def test_tracking_server_options_defaults_are_the_defaults_module() -> None:
    from serverless_ml.tracking_server import ServerOptions

    options = ServerOptions()
    assert (options.host, options.port, options.workers) == (
        defaults.TRACKING_SERVER_HOST, defaults.TRACKING_SERVER_PORT, defaults.TRACKING_SERVER_WORKERS)
