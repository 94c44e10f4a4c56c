"""The shadow challenger on a real Delta store and MLflow tracking database: a batch scored
by ``@champion`` is also scored by ``@challenger`` (stored with its version, never served
or counted as the champion's), the run logs the paired comparison, and ``--promote live``
moves ``@champion`` only when the paired test says the challenger is better.

The two models are constructed cheaply in the trained world: its champion (version 1, a
tuned forest) and a forest fitted on shuffled labels (version 2, about as good as a coin
weighted by the class shares), registered directly with MLflow."""

from __future__ import annotations

import dataclasses
import datetime as dt

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from serverless_ml import defaults, registry
from serverless_ml.datasets import get_dataset
from serverless_ml.feature_store.base import BACKFILL_ORIGIN, ORIGIN_COLUMN
from serverless_ml.feature_store.local import LocalFeatureStore
from serverless_ml.inference import estimate, paired
from serverless_ml.inference.scoring import SHADOW_RUN_PREFIX, served_mask, shadow_run_id
from serverless_ml.pipelines.features import add_daily_rows
from serverless_ml.pipelines.infer import InferOptions, infer
from serverless_ml.pipelines.train import log_and_register
from serverless_ml.training.model import as_model_input, build_pipeline
from served import record_served
from worlds import insert_live_rows, noon_of, trained_template, world  # noqa: F401 - fixtures

pytestmark = pytest.mark.integration

SPEC = get_dataset("titanic")
NAME = registry.model_name("titanic")
DAY = dt.date(2024, 3, 1)
ROWS = 300
QUIET = InferOptions(figures=False)


def _register_shuffled_model(store: LocalFeatureStore) -> int:
    """A forest fitted on the backfill rows with their labels shuffled, registered as a
    new version (no alias moves); returns its number."""
    rows = store.get_feature_group("titanic", 1).read()
    rows = rows[rows[ORIGIN_COLUMN] == BACKFILL_ORIGIN]
    x = as_model_input(rows, SPEC)
    labels = np.random.default_rng(3).permutation(rows[SPEC.label].to_numpy())
    model = build_pipeline(SPEC, {"n_estimators": 20, "max_depth": 4}, seed=3).fit(x, labels)
    version = int(log_and_register(model, x, NAME))
    mlflow.set_tracking_uri(None)
    return version


def _set_aliases(champion: int, challenger: int) -> None:
    client = MlflowClient()
    client.set_registered_model_alias(NAME, registry.CHAMPION, str(champion))
    client.set_registered_model_alias(NAME, registry.CHALLENGER, str(challenger))


def _predictions(store: LocalFeatureStore) -> pd.DataFrame:
    return store.get_feature_group("titanic_predictions", 1).read()


def _direct_comparison(predictions: pd.DataFrame, champion: int, challenger: int) -> paired.PairedComparison:
    """The paired comparison computed straight from the stored rows."""
    served = predictions[served_mask(predictions["run_id"]) & (predictions["model_version"] == champion)]
    shadow = predictions[~served_mask(predictions["run_id"]) & (predictions["model_version"] == challenger)]
    both = served.merge(shadow, on="passenger_id", suffixes=("_a", "_b"))
    both = both[both["actual_a"].notna()]
    return paired.compare_paired((both["prediction_a"] == both["actual_a"]).to_numpy(),
                                 (both["prediction_b"] == both["actual_b"]).to_numpy())


def test_a_worse_challenger_is_scored_in_the_shadow_and_not_promoted(world) -> None:  # noqa: ANN001
    store, settings = world
    worse = _register_shuffled_model(store)
    _set_aliases(champion=1, challenger=worse)
    add_daily_rows(SPEC, store, DAY, n=ROWS, seed=0)
    report = infer(SPEC, store, settings, dataclasses.replace(QUIET, as_of=DAY, promote="live"), noon_of(DAY))

    assert report.model_version == 1 and report.challenger_version == worse and report.rows_scored == ROWS
    predictions = _predictions(store)
    served = served_mask(predictions["run_id"])
    # The challenger's rows: its version, the run's shadow id; the champion's: as before.
    assert set(predictions.loc[~served, "model_version"]) == {worse}
    assert set(predictions.loc[~served, "run_id"]) == {shadow_run_id(report.run_id)}
    assert set(predictions.loc[served, "model_version"]) == {1}
    assert set(predictions.loc[served, "run_id"]) == {report.run_id}
    assert served.sum() == ROWS and (~served).sum() == ROWS
    run = MlflowClient().get_run(report.run_id)
    metrics, tags = run.data.metrics, run.data.tags
    # The champion's figures count its own rows only.
    assert metrics[registry.ROWS_SCORED_METRIC] == ROWS and metrics[registry.ROLLING_ROWS_METRIC] == ROWS
    batch = predictions[served]
    assert metrics[registry.BATCH_ACCURACY_METRIC] == pytest.approx(float((batch["prediction"] == batch["actual"]).mean()))
    shadow = predictions[~served]
    assert metrics[registry.CHALLENGER_BATCH_ACCURACY_METRIC] == pytest.approx(
        float((shadow["prediction"] == shadow["actual"]).mean()))
    assert metrics[registry.CHALLENGER_ESTIMATED_ACCURACY_METRIC] == pytest.approx(float(shadow["probability"].mean()))
    assert metrics[registry.CHALLENGER_ESTIMATE_RECALIBRATION_ROWS_METRIC] == 0  # no labelled shadow row yet: plain CBPE
    assert registry.CHALLENGER_ESTIMATE_RECALIBRATION_A_METRIC not in metrics
    expected = _direct_comparison(predictions, 1, worse)
    assert expected.rows == ROWS and expected.challenger_only < expected.champion_only
    assert metrics[registry.PAIRED_ROWS_METRIC] == ROWS
    assert metrics[registry.PAIRED_CHAMPION_ONLY_METRIC] == expected.champion_only
    assert metrics[registry.PAIRED_CHALLENGER_ONLY_METRIC] == expected.challenger_only
    assert metrics[registry.PAIRED_P_VALUE_METRIC] == pytest.approx(expected.p_value)
    assert metrics[registry.PAIRED_DIFFERENCE_METRIC] == pytest.approx(expected.difference)
    assert metrics[registry.PAIRED_DIFFERENCE_CI_HIGH_METRIC] < 0  # the challenger is worse, and it shows
    assert tags[registry.CHALLENGER_VERSION_TAG] == str(worse)
    assert tags[registry.LIVE_PROMOTION_DECISION_TAG] == "not promoted"
    assert "McNemar" in tags[registry.LIVE_PROMOTION_REASON_TAG]
    assert metrics[registry.LIVE_PROMOTED_METRIC] == 0
    assert metrics[registry.LIVE_PROMOTION_LOOK_METRIC] == 1
    assert metrics[registry.LIVE_PROMOTION_LEVEL_METRIC] == pytest.approx(defaults.LIVE_PROMOTE_ALPHA / 2)
    assert str(MlflowClient().get_model_version_by_alias(NAME, registry.CHAMPION).version) == "1"

    # The next batch: the shadow rows are not the champion's history (rolling rows count
    # served rows), their keys are not scored again, and the window's pairs accumulate.
    next_day = DAY + dt.timedelta(days=1)
    add_daily_rows(SPEC, store, next_day, n=20, seed=0)
    second = infer(SPEC, store, settings, dataclasses.replace(QUIET, as_of=next_day), noon_of(next_day))
    assert second.rows_scored == 20
    metrics = MlflowClient().get_run(second.run_id).data.metrics
    assert metrics[registry.ROLLING_ROWS_METRIC] == ROWS + 20
    assert metrics[registry.PAIRED_ROWS_METRIC] == ROWS + 20
    predictions = _predictions(store)
    assert len(predictions) == 2 * (ROWS + 20)
    assert metrics[registry.PAIRED_CHAMPION_ONLY_METRIC] == _direct_comparison(predictions, 1, worse).champion_only
    # The challenger's estimate is recalibrated on its own labelled shadow rows (the first
    # batch's), as the champion's is on its served ones.
    shadow_rows = predictions[~served_mask(predictions["run_id"])]
    first = shadow_rows[shadow_rows["run_id"] == shadow_run_id(report.run_id)]
    fitted = estimate.fit_recalibration(first["probability"].to_numpy(dtype=float),
                                        (first["prediction"] == first["actual"]).to_numpy())
    latest = shadow_rows[shadow_rows["run_id"] == shadow_run_id(second.run_id)]
    want = estimate.estimate_accuracy(latest["probability"].to_numpy(dtype=float), recalibration=fitted)
    assert metrics[registry.CHALLENGER_ESTIMATE_RECALIBRATION_ROWS_METRIC] == ROWS
    assert (metrics[registry.CHALLENGER_ESTIMATE_RECALIBRATION_A_METRIC],
            metrics[registry.CHALLENGER_ESTIMATE_RECALIBRATION_B_METRIC]) == (pytest.approx(fitted.a), pytest.approx(fitted.b))
    assert (metrics[registry.CHALLENGER_ESTIMATED_ACCURACY_METRIC], metrics[registry.CHALLENGER_ESTIMATED_ACCURACY_CI_LOW_METRIC],
            metrics[registry.CHALLENGER_ESTIMATED_ACCURACY_CI_HIGH_METRIC]) == pytest.approx((want.accuracy, want.low, want.high))
    assert want.accuracy != pytest.approx(float(latest["probability"].mean()), abs=1e-3)  # not plain CBPE
    # The champion's is recalibrated on the champion's rows only.
    assert metrics[registry.ESTIMATE_RECALIBRATION_ROWS_METRIC] == ROWS
    assert metrics[registry.ESTIMATE_RECALIBRATION_A_METRIC] != pytest.approx(fitted.a)
    # Without --promote live nothing is decided (nor counted as a look).
    assert registry.LIVE_PROMOTION_DECISION_TAG not in MlflowClient().get_run(second.run_id).data.tags
    assert registry.LIVE_PROMOTION_LOOK_METRIC not in metrics
    # The next judged batch is the challenger's second look, tested at a stricter level.
    third_day = next_day + dt.timedelta(days=1)
    add_daily_rows(SPEC, store, third_day, n=20, seed=1)
    # 5 of its rows served first: the batch takes them in, and the challenger scores
    # them in the shadow as it scores the batch's other rows.
    rows = store.get_feature_group("titanic", 1).read()
    served_keys = sorted(rows.loc[rows["event_time"].dt.date == third_day, "passenger_id"])[:5]
    record_served(SPEC, store, settings.state_dir, served_keys, pd.Timestamp(noon_of(third_day)) - pd.Timedelta(hours=2), 1)
    third = infer(SPEC, store, settings, dataclasses.replace(QUIET, as_of=third_day, promote="live"), noon_of(third_day))
    assert (third.rows_scored, third.rows_served) == (20, 5)
    predictions = _predictions(store)
    assert len(predictions) == 2 * (ROWS + 40)
    assert (predictions["run_id"] == shadow_run_id(third.run_id)).sum() == 20
    assert set(predictions.loc[predictions["passenger_id"].isin(served_keys), "run_id"]) == {
        third.run_id, shadow_run_id(third.run_id)}
    run = MlflowClient().get_run(third.run_id)
    assert run.data.metrics[registry.PAIRED_ROWS_METRIC] == ROWS + 40
    assert run.data.metrics[registry.PAIRED_CHAMPION_ONLY_METRIC] == _direct_comparison(predictions, 1, worse).champion_only
    assert run.data.metrics[registry.LIVE_PROMOTION_LOOK_METRIC] == 2
    assert run.data.metrics[registry.LIVE_PROMOTION_LEVEL_METRIC] == pytest.approx(defaults.LIVE_PROMOTE_ALPHA / 6)
    assert "look 2: level 0.00833 of 0.05" in run.data.tags[registry.LIVE_PROMOTION_REASON_TAG]


def test_a_better_challenger_is_promoted_by_the_live_rule(world) -> None:  # noqa: ANN001
    store, settings = world
    worse = _register_shuffled_model(store)
    _set_aliases(champion=worse, challenger=1)
    add_daily_rows(SPEC, store, DAY, n=ROWS, seed=0)
    report = infer(SPEC, store, settings, dataclasses.replace(QUIET, as_of=DAY, promote="live"), noon_of(DAY))

    assert report.model_version == worse and report.challenger_version == 1
    run = MlflowClient().get_run(report.run_id)
    metrics, tags = run.data.metrics, run.data.tags
    expected = _direct_comparison(_predictions(store), worse, 1)
    assert metrics[registry.PAIRED_ROWS_METRIC] == expected.rows == ROWS
    assert expected.challenger_only > expected.champion_only
    assert metrics[registry.PAIRED_P_VALUE_BETTER_METRIC] == pytest.approx(expected.p_value_better)
    assert metrics[registry.PAIRED_P_VALUE_BETTER_METRIC] < 0.05
    assert metrics[registry.PAIRED_DIFFERENCE_CI_LOW_METRIC] > 0
    assert tags[registry.LIVE_PROMOTION_DECISION_TAG] == "promoted"
    assert metrics[registry.LIVE_PROMOTED_METRIC] == 1
    assert "live promotion: promoted" in report.summary()
    client = MlflowClient()
    champion = client.get_model_version_by_alias(NAME, registry.CHAMPION)
    assert str(champion.version) == "1"
    assert champion.tags[registry.PROMOTED_BY_RUN_TAG] == report.run_id
    assert champion.tags[registry.PROMOTION_PREVIOUS_CHAMPION_TAG] == str(worse)
    assert champion.tags[registry.PROMOTED_AT_TAG].startswith(DAY.isoformat())
    # The Models page says how it became champion (it had said the training run's decision only).
    from dash_text import text_of

    from monitoring_app import create_app
    from monitoring_app.pages import models
    from monitoring_app.site import current_site

    app = create_app(world[1], cache_ttl_s=0.0)
    with app.server.test_request_context():
        try:
            about = text_of(models.render_version(current_site(), SPEC, 1))
        finally:
            current_site().data.close()
    assert f"Promoted live by monitoring run {report.run_id} at {champion.tags[registry.PROMOTED_AT_TAG]}" in about
    assert f"replacing version {worse}" in about
    # Now challenger is champion: the next batch is scored once, by version 1.
    next_day = DAY + dt.timedelta(days=1)
    add_daily_rows(SPEC, store, next_day, n=10, seed=0)
    second = infer(SPEC, store, settings, dataclasses.replace(QUIET, as_of=next_day, promote="live"), noon_of(next_day))
    assert second.model_version == 1 and second.challenger_version is None and second.promotion is None
    assert "--promote live: nothing to judge" in second.summary()
    predictions = _predictions(store)
    assert not predictions.loc[predictions["run_id"] == second.run_id].empty
    assert not predictions["run_id"].str.startswith(SHADOW_RUN_PREFIX + second.run_id).any()


def test_late_labels_move_the_challengers_figures_and_the_paired_test(world, tmp_path, capsys) -> None:  # noqa: ANN001
    from serverless_ml import cli

    store, settings = world
    worse = _register_shuffled_model(store)
    _set_aliases(champion=1, challenger=worse)
    insert_live_rows(SPEC, store, DAY, 80)
    report = infer(SPEC, store, settings, dataclasses.replace(QUIET, as_of=DAY), noon_of(DAY))
    run_id = report.run_id
    metrics = MlflowClient().get_run(run_id).data.metrics
    assert metrics[registry.PAIRED_ROWS_METRIC] == 0 and metrics[registry.CHALLENGER_ROWS_LABELLED_METRIC] == 0
    assert registry.CHALLENGER_BATCH_ACCURACY_METRIC not in metrics
    assert 0 < metrics[registry.CHALLENGER_ESTIMATED_ACCURACY_METRIC] < 1  # estimated while labels are missing

    keys = _predictions(store)["passenger_id"].drop_duplicates().sort_values()
    labels = pd.DataFrame({"PassengerId": keys, "Survived": np.random.default_rng(5).integers(0, 2, len(keys))})
    labels.to_csv(tmp_path / "labels.csv", index=False)
    store_dir = str(store.root)
    capsys.readouterr()
    try:
        cli.main(["labels", "--dataset", "titanic", "--source", str(tmp_path / "labels.csv"), "--store-dir", store_dir])
    except SystemExit as exc:
        out, err = capsys.readouterr()
        pytest.fail(f"sml labels exited {exc.code}:\n{out}{err}")
    finally:
        mlflow.set_tracking_uri(None)

    predictions = _predictions(store)
    assert predictions["actual"].notna().all()  # the shadow rows' labels too
    metrics = MlflowClient().get_run(run_id).data.metrics
    expected = _direct_comparison(predictions, 1, worse)
    assert expected.rows == 80
    assert metrics[registry.ROLLING_ROWS_METRIC] == 80  # the champion's rows only
    assert metrics[registry.PAIRED_ROWS_METRIC] == 80
    assert metrics[registry.PAIRED_CHAMPION_ONLY_METRIC] == expected.champion_only
    assert metrics[registry.PAIRED_CHALLENGER_ONLY_METRIC] == expected.challenger_only
    assert metrics[registry.PAIRED_P_VALUE_METRIC] == pytest.approx(expected.p_value)
    shadow = predictions[~served_mask(predictions["run_id"])]
    assert metrics[registry.CHALLENGER_BATCH_ACCURACY_METRIC] == pytest.approx(
        float((shadow["prediction"] == shadow["actual"]).mean()))
    assert metrics[registry.CHALLENGER_ROWS_LABELLED_METRIC] == 80


def test_the_site_shows_champion_vs_challenger_and_serves_only_the_champions_rows(world) -> None:  # noqa: ANN001
    from dash_text import find, text_of

    from monitoring_app import create_app, ids
    from monitoring_app.pages import models
    from monitoring_app.site import current_site

    store, settings = world
    worse = _register_shuffled_model(store)
    _set_aliases(champion=1, challenger=worse)
    add_daily_rows(SPEC, store, DAY, n=ROWS, seed=0)
    report = infer(SPEC, store, settings, dataclasses.replace(QUIET, as_of=DAY, promote="live"), noon_of(DAY))
    expected = _direct_comparison(_predictions(store), 1, worse)

    app = create_app(settings, cache_ttl_s=0.0)
    with app.server.test_request_context():
        try:
            page = models.layout(dataset="titanic")
            shown = current_site().data.predictions(SPEC)
        finally:
            current_site().data.close()
    assert len(shown) == ROWS and set(shown["run_id"]) == {report.run_id}  # the Predictions page's rows
    live = text_of(find(page, ids.MODELS_LIVE_TABLE))
    for value in (f"{expected.champion_accuracy:.3f}", f"{expected.challenger_accuracy:.3f}", f"{expected.p_value:.4g}",
                  f"{expected.champion_only}/{expected.challenger_only}", "not promoted", DAY.isoformat()):
        assert value in live, value
    assert "Last live promotion decision (2024-03-01): not promoted" in text_of(find(page, ids.MODELS_LIVE_DECISION))

