"""The pure parts of training: promotion rule, metrics, model pipeline, search space."""

from __future__ import annotations

import dataclasses

import numpy as np
import optuna
import pandas as pd
import pytest
import skops.io

from serverless_ml.datasets import get_dataset
from serverless_ml.training import evaluation, promotion, search
from serverless_ml.training.model import (
    CALIBRATED_STEP,
    ISOTONIC_MIN_ROWS,
    SKOPS_TRUSTED_TYPES,
    as_model_input,
    build_pipeline,
    calibrated_pipeline,
    calibration_method,
    calibration_plan,
    fit_pipeline,
    fitted_forest,
    raw_feature_importances,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("challenger", "champion", "mode", "promote"),
    [
        (0.85, 0.80, "if-better", True),  # better
        (0.75, 0.80, "if-better", False),  # worse
        (0.80, 0.80, "if-better", False),  # a tie keeps the champion
        (0.80, 0.80, "always", True),  # unless forced
        (0.50, None, "if-better", True),  # no champion
        (0.50, 0.90, "always", True),  # forced
        (0.99, 0.10, "never", False),  # forced
    ],
)
def test_promotion_rule(challenger: float, champion: float | None, mode: str, promote: bool) -> None:
    decision = promotion.decide_promotion(challenger, champion, mode)
    assert decision.promote is promote
    assert decision.reason


def test_a_tie_says_it_keeps_the_champion_and_how_to_promote_anyway() -> None:
    decision = promotion.decide_promotion(0.8, 0.8, rows=120)
    assert not decision.promote
    assert decision.reason == ("holdout accuracy 0.8000 = champion's 0.8000 on 120 holdout rows the champion did not "
                               "train on: a tie keeps the champion (--promote always promotes anyway)")


def test_training_fingerprint_depends_on_every_part_and_not_on_their_order() -> None:
    parts = {"rows_sha256": "ab12", "seed": 42, "folds": 5, "trials": 30}
    same = promotion.training_fingerprint(dict(reversed(list(parts.items()))))
    assert promotion.training_fingerprint(parts) == same
    for key, other in (("rows_sha256", "ab13"), ("seed", 43), ("folds", 3), ("trials", 31)):
        assert promotion.training_fingerprint({**parts, key: other}) != same, key
    assert promotion.training_fingerprint({**parts, "timeout": None}) != same


def test_promotion_rejects_unknown_mode() -> None:
    with pytest.raises(ValueError, match="promote mode"):
        promotion.decide_promotion(0.5, 0.5, "sometimes")


def _rows(name: str, n: int = 200, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    spec = get_dataset(name)
    rng = np.random.default_rng(seed)
    data: dict[str, object] = {}
    for feature in spec.features:
        if feature.is_numeric:
            low, high = feature.min or 0, feature.max or 10
            values = rng.uniform(low, high, n)
            data[feature.name] = np.round(values).astype("int64") if feature.type == "bigint" else values
        else:
            data[feature.name] = rng.choice(list(feature.categories or ["a"]), n).astype(object)
    frame = pd.DataFrame(data)
    y = pd.Series(rng.choice(list(spec.classes), n))
    return frame, y


@pytest.mark.parametrize("family", ["random_forest", "extra_trees"])
@pytest.mark.parametrize("name", ["titanic", "iris"])
def test_every_fitted_pipeline_needs_only_trusted_types(name: str, family: str) -> None:
    assert _needed_types(name, family) <= set(SKOPS_TRUSTED_TYPES)


def _needed_types(name: str, family: str) -> set[str]:
    """The plain pipeline, the calibrated one of few rows (sigmoid for two classes,
    temperature scaling for more) and the isotonic one (from ISOTONIC_MIN_ROWS rows) of
    both datasets together need exactly the trusted types, no more."""
    spec = get_dataset(name)
    x, y = _rows(name)
    params = {"family": family, "n_estimators": 5, "max_depth": 3}
    needed: set[str] = set()
    plain = build_pipeline(spec, params, seed=0).fit(as_model_input(x, spec), y)
    needed |= set(skops.io.get_untrusted_types(data=skops.io.dumps(plain)))
    small = calibrated_pipeline(spec, params, 0, y).fit(as_model_input(x, spec), y)
    assert calibration_method(small) == ("sigmoid" if len(spec.classes) == 2 else "temperature")
    needed |= set(skops.io.get_untrusted_types(data=skops.io.dumps(small)))
    many = pd.concat([x] * (ISOTONIC_MIN_ROWS // len(x) + 1), ignore_index=True)
    many_y = pd.concat([y] * (ISOTONIC_MIN_ROWS // len(y) + 1), ignore_index=True)
    isotonic = calibrated_pipeline(spec, params, 0, many_y).fit(as_model_input(many, spec), many_y)
    assert calibration_method(isotonic) == "isotonic"
    needed |= set(skops.io.get_untrusted_types(data=skops.io.dumps(isotonic)))
    return needed


def test_trusted_types_are_exactly_what_fitted_pipelines_of_both_datasets_need() -> None:
    needed = set()
    for name in ("titanic", "iris"):
        needed |= _needed_types(name, "random_forest")
    assert sorted(needed) == sorted(SKOPS_TRUSTED_TYPES)


def test_a_calibrated_pipeline_is_one_pipeline_whose_forest_is_refitted_on_every_row() -> None:
    spec = get_dataset("titanic")
    x, y = _rows("titanic")
    model = calibrated_pipeline(spec, {"n_estimators": 10}, 0, y).fit(as_model_input(x, spec), y)
    assert list(model.named_steps) == ["prepare", CALIBRATED_STEP]
    forest = fitted_forest(model)
    assert forest.n_features_in_ == len(model.named_steps["prepare"].get_feature_names_out())
    assert len(model.named_steps[CALIBRATED_STEP].calibrated_classifiers_) == 1  # ensemble=False: one forest
    proba = model.predict_proba(as_model_input(x.head(5), spec))
    assert np.allclose(proba.sum(axis=1), 1.0)
    assert set(raw_feature_importances(model, spec)) == set(spec.feature_names)


@pytest.mark.parametrize("coding", [[1, 2, 3], [10, 20, 30], [1.0, 2.0, 3.0], [-1, 0, 1]])
def test_temperature_scaling_does_not_depend_on_the_numbers_that_name_the_classes(coding: list[float]) -> None:
    """scikit-learn's temperature scaling took numeric labels as class codes: classes 1, 2, 3
    got probabilities near 1/3 on rows it predicted right (found by a user trial)."""
    spec = get_dataset("iris")
    x, _ = _rows("iris", n=300)
    # A label the features decide (petal length in thirds), so the forest is sure of most rows.
    thirds = np.digitize(x["petal_length"], [10 / 3, 20 / 3])
    codes = pd.Series(thirds)  # 0, 1, 2
    recoded = pd.Series(np.asarray(coding)[thirds])
    names = pd.Series(np.asarray(["Setosa", "Versicolor", "Virginica"], dtype=object)[thirds])
    rows = as_model_input(x, spec)
    params = {"n_estimators": 20}
    by_code = fit_pipeline(calibrated_pipeline(spec, params, 0, codes), rows, codes)
    model = fit_pipeline(calibrated_pipeline(spec, params, 0, recoded), rows, recoded)
    by_name = fit_pipeline(calibrated_pipeline(spec, params, 0, names), rows, names)
    assert calibration_method(model) == "temperature"
    assert list(model.classes_) == coding
    proba = model.predict_proba(rows)
    assert np.array_equal(proba, by_code.predict_proba(rows))
    assert np.allclose(proba, by_name.predict_proba(rows))
    assert proba.max(axis=1).mean() > 0.9  # near 1/3 before the fix
    assert np.array_equal(model.predict(rows), np.asarray(coding)[by_code.predict(rows)])
    # The model file holds the labels: a loaded copy predicts them.
    loaded = skops.io.loads(skops.io.dumps(model), trusted=SKOPS_TRUSTED_TYPES)
    assert list(loaded.classes_) == coding
    assert np.array_equal(loaded.predict(rows), model.predict(rows))


def test_the_calibration_plan_follows_the_rows_and_the_rarest_class() -> None:
    assert calibration_plan(["a"] * 50 + ["b"] * 50) == ("sigmoid", 5)
    assert calibration_plan(["a"] * 50 + ["b"] * 50 + ["c"] * 4) == ("temperature", 4)
    assert calibration_plan(["a"] * 990 + ["b"] * 3) == ("sigmoid", 3)
    assert calibration_plan(["a"] * 990 + ["b"] * 10) == ("isotonic", 5)
    assert calibration_plan(["a"] * 30 + ["b"]) == ("none", 0)
    assert calibration_plan(["a"] * 30) == ("none", 0)


def test_pipeline_takes_missing_values_as_none_or_nan_and_unknown_categories() -> None:
    spec = get_dataset("titanic")
    x, y = _rows("titanic")
    model = build_pipeline(spec, {"n_estimators": 10}, seed=0).fit(as_model_input(x, spec), y)
    probe = as_model_input(x.head(4), spec)
    probe["embarked"] = ["S", np.nan, None, "Z"]
    probe["age"] = [np.nan, 1.0, 2.0, 3.0]
    proba = model.predict_proba(probe)
    assert proba.shape == (4, 2)
    assert np.allclose(proba.sum(axis=1), 1.0)


def test_numeric_products_are_computed_inside_the_pipeline_from_raw_features() -> None:
    spec = dataclasses.replace(get_dataset("titanic"), numeric_products=True)
    x, y = _rows("titanic")
    x = as_model_input(x, spec)
    x.loc[:9, "age"] = np.nan
    prepare = build_pipeline(spec, {"n_estimators": 5}, seed=0).fit(x, y).named_steps["prepare"]
    names = list(prepare.get_feature_names_out())
    out = pd.DataFrame(prepare.transform(x), columns=names)
    median_age = x["age"].median()
    assert np.allclose(out["age fare"], x["age"].fillna(median_age) * x["fare"])
    assert np.allclose(out["pclass family_size"], x["pclass"] * x["family_size"])
    assert out["missingindicator_age"].tolist() == x["age"].isna().astype(float).tolist()
    numeric = [f for f in spec.features if f.is_numeric]
    assert sum(" " in n for n in names) == len(numeric) * (len(numeric) - 1) // 2
    assert len(names) == len(set(names)), "no column twice: a duplicate would be drawn twice as often"
    plain = build_pipeline(get_dataset("titanic"), {"n_estimators": 5}, seed=0).fit(x, y).named_steps["prepare"]
    assert not any(" " in n for n in plain.get_feature_names_out())


@pytest.mark.parametrize("name", ["titanic", "iris"])
def test_importances_are_summed_back_onto_raw_features(name: str) -> None:
    spec = get_dataset(name)
    x, y = _rows(name)
    model = build_pipeline(spec, {"n_estimators": 10}, seed=0).fit(as_model_input(x, spec), y)
    importances = raw_feature_importances(model, spec)
    assert set(importances) == set(spec.feature_names)
    assert sum(importances.values()) == pytest.approx(1.0)
    assert list(importances.values()) == sorted(importances.values(), reverse=True)


def test_classification_metrics_binary_and_multiclass() -> None:
    y_true = [0, 0, 1, 1, 1]
    y_pred = [0, 1, 1, 1, 0]
    proba = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]])
    metrics = evaluation.classification_metrics(y_true, y_pred, proba, [0, 1], prefix="test_",
                                                positive_class=1, proba_classes=[0, 1])
    assert metrics["test_accuracy"] == pytest.approx(0.6)
    assert metrics["test_precision"] == pytest.approx(2 / 3)
    assert metrics["test_recall"] == pytest.approx(2 / 3)
    assert metrics["test_roc_auc"] == pytest.approx(5 / 6)
    assert metrics["test_support_1"] == 3
    multi = evaluation.classification_metrics(
        ["a", "b", "c", "c"], ["a", "b", "b", "c"], np.eye(3)[[0, 1, 1, 2]], ["a", "b", "c"], prefix="val_",
        proba_classes=["a", "b", "c"],
    )
    assert multi["val_accuracy"] == pytest.approx(0.75)
    assert multi["val_recall_c"] == pytest.approx(0.5)
    assert "val_roc_auc" in multi


def test_confusion_table_rows_are_actual_columns_predicted() -> None:
    table = evaluation.confusion_table([0, 0, 1, 1], [0, 1, 1, 1], [0, 1])
    assert table["matrix"] == [[1, 1], [0, 2]]
    assert table["labels"] == [0, 1]


def test_baseline_is_the_majority_class() -> None:
    assert evaluation.baseline_accuracy(pd.Series([1, 1, 0]), pd.Series([1, 0, 0, 0])) == pytest.approx(0.25)


SHAPES = [(96, 10, 3), (712, 12, 2), (1437, 10, 10), (5200, 13, 7), (16_000, 10, 3)]
"""(training rows, encoded columns, classes) of Iris, Titanic, digits, the 6,500-row and the 20,000-row bench sets."""


@pytest.mark.parametrize(("rows", "features", "classes"), SHAPES)
def test_search_space_suggestions_stay_inside_the_derived_space(rows: int, features: int, classes: int) -> None:
    space = search.derive_search_space(rows, features, classes)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        params = search.suggest_params(study.ask(), space)
        assert set(params) == set(space)
        for name, dimension in space.items():
            if dimension["type"] == "int":
                assert dimension["low"] <= params[name] <= dimension["high"]
            else:
                assert params[name] in dimension["choices"]


@pytest.mark.parametrize(("rows", "features", "classes"), SHAPES)
def test_every_derived_space_holds_scikit_learns_default_forest(rows: int, features: int, classes: int) -> None:
    from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier

    spec = get_dataset("titanic")
    space = search.derive_search_space(rows, features, classes)
    for params, reference in ((search.DEFAULT_FOREST, RandomForestClassifier()),
                              (search.DEFAULT_EXTRA_TREES, ExtraTreesClassifier())):
        forest = build_pipeline(spec, params, seed=0).named_steps["forest"]
        assert type(forest) is type(reference)
        knobs = {name: value for name, value in params.items() if name != "family"}
        assert knobs == {name: reference.get_params()[name] for name in knobs}
        assert set(space) == set(params)
        for name, value in params.items():
            dimension = space[name]
            if dimension["type"] == "int":
                assert dimension["low"] <= value <= dimension["high"], name
            else:
                assert value in dimension["choices"], name


def test_the_space_grows_with_the_data() -> None:
    small, large = search.derive_search_space(96, 10, 3), search.derive_search_space(16_000, 10, 3)
    assert None in small["max_depth"]["choices"] and None in large["max_depth"]["choices"]
    assert max(d for d in large["max_depth"]["choices"] if d) > max(d for d in small["max_depth"]["choices"] if d)
    assert large["min_samples_leaf"]["high"] > small["min_samples_leaf"]["high"]
    # Leaves relative to the rows of a class: more classes on the same rows, smaller leaves.
    assert (search.derive_search_space(5200, 13, 7)["min_samples_leaf"]["high"]
            < search.derive_search_space(5200, 13, 2)["min_samples_leaf"]["high"])
    # max_features: no two choices that draw the same number of columns.
    for features in (4, 10, 30, 200):
        choices = search.derive_search_space(712, features, 2)["max_features"]["choices"]
        drawn = [search._columns_drawn(c, features) for c in choices]  # noqa: SLF001
        assert len(drawn) == len(set(drawn)) and "sqrt" in choices


def test_the_default_forests_are_a_new_studys_first_trials_and_are_queued_once() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = search.derive_search_space(712, 12, 2)
    study = optuna.create_study(direction="maximize", sampler=search.make_sampler(0))
    search.enqueue_default_forest(study)
    study.optimize(lambda t: float(len(search.suggest_params(t, space))), n_trials=3)
    assert study.trials[0].params == search.DEFAULT_FOREST
    assert study.trials[1].params == search.DEFAULT_EXTRA_TREES
    assert study.trials[2].params not in (search.DEFAULT_FOREST, search.DEFAULT_EXTRA_TREES)
    search.enqueue_default_forest(study)  # a resumed study already has them
    study.optimize(lambda t: float(len(search.suggest_params(t, space))), n_trials=1)
    params = [t.params for t in study.trials]
    assert params.count(search.DEFAULT_FOREST) == 1 and params.count(search.DEFAULT_EXTRA_TREES) == 1


def test_cv_folds_are_stratified_and_seeded() -> None:
    y = pd.Series([0] * 60 + [1] * 40)
    folds = search.cv_folds(y, 5, seed=3)
    assert [tuple(v) for _, v in folds] == [tuple(v) for _, v in search.cv_folds(y, 5, seed=3)]
    for _, val in folds:
        assert y.iloc[val].mean() == pytest.approx(0.4)


@pytest.mark.parametrize("classes", [[0, 1], ["a", "b", "c"]])
def test_confusion_based_metrics_agree_with_scikit_learn(classes: list) -> None:
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    rng = np.random.default_rng(4)
    y_true = list(rng.choice(classes, 300))
    y_pred = list(rng.choice(classes, 300))
    positive = classes[1] if len(classes) == 2 else None
    ours = evaluation.classification_metrics(y_true, y_pred, None, classes, prefix="", positive_class=positive)
    assert evaluation.confusion_table(y_true, y_pred, classes)["matrix"] == confusion_matrix(y_true, y_pred, labels=classes).tolist()
    assert ours["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    average = {"average": "binary", "pos_label": classes[1]} if len(classes) == 2 else {"average": "macro"}
    assert ours["f1"] == pytest.approx(f1_score(y_true, y_pred, **average))
    precision, recall, _f1, support = precision_recall_fscore_support(y_true, y_pred, labels=classes, zero_division=0)
    for i, label in enumerate(classes):
        assert ours[f"precision_{label}"] == pytest.approx(precision[i])
        assert ours[f"recall_{label}"] == pytest.approx(recall[i])
        assert ours[f"support_{label}"] == support[i]


def test_a_figure_without_a_denominator_is_left_out_not_zero() -> None:
    """Found by a user trial: a class the model never predicts showed a precision of 0
    ("every such prediction wrong"). 0/0 is no figure: left out, and said."""
    metrics = evaluation.classification_metrics([0, 1, 1], [1, 1, 1], None, [0, 1], prefix="", positive_class=1)
    assert "precision_0" not in metrics and metrics["recall_0"] == 0.0 and metrics["f1_0"] == 0.0
    assert (metrics["precision"], metrics["recall"]) == (pytest.approx(2 / 3), 1.0)  # of the positive class
    # Multiclass: class 2 has no row and is never predicted (no figure at all); class 1 is
    # never predicted. Macro means are over the classes that have the figure.
    matrix = np.array([[3, 0, 0], [2, 0, 0], [0, 0, 0]])
    metrics = evaluation.metrics_from_confusion(matrix, ["a", "b", "c"], "")
    assert {k for k in metrics if k.endswith(("_b", "_c"))} == {"recall_b", "f1_b", "support_b", "support_c"}
    assert metrics["precision"] == pytest.approx(0.6) and metrics["recall"] == pytest.approx(0.5)
    assert metrics["f1"] == pytest.approx((2 * 3 / (6 + 2)) / 2)
    assert evaluation.undefined_figures(matrix, ["a", "b", "c"], ["A", "B", "C"]) == (
        "precision of 'B', 'C' (predicted for no row); recall of 'C' (no row of that class)")


def test_a_killed_unreaped_process_does_not_count_as_alive() -> None:
    """``close_orphaned_runs`` ends the runs of dead processes: a zombie (killed, its parent
    not reaped it yet, as a job's logging helper orphaned to a PID 1 that never reaps) is
    dead; the same process alive is alive, and a pid that started after the run is not
    the run's owner."""
    import signal
    import subprocess
    import time

    from serverless_ml.tracking import _process_alive

    before = int(time.time() * 1000)
    proc = subprocess.Popen(["sleep", "60"])
    try:
        assert _process_alive(proc.pid, run_start_ms=before + 5000)
        assert not _process_alive(proc.pid, run_start_ms=before - 60_000)  # a younger process
        proc.send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 10
        while open(f"/proc/{proc.pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert not _process_alive(proc.pid, run_start_ms=before + 5000)
    finally:
        proc.kill()
        proc.wait()
    assert not _process_alive(proc.pid, run_start_ms=before + 5000)


@pytest.mark.parametrize("name", ["titanic", "iris"])
def test_the_objective_scores_exactly_as_fitting_the_whole_pipeline_per_fold(name: str) -> None:
    """The search fits each fold's imputer and encoder once and shares them across trials:
    every trial's fold scores must equal those of the whole pipeline cloned and fitted on
    the fold (missing values included, so the imputation is exercised)."""
    from sklearn.base import clone

    spec = get_dataset(name)
    x, y = _rows(name, n=120)
    x = as_model_input(x, spec)
    for i, feature in enumerate(spec.features):
        x.loc[x.index[i::5], feature.name] = np.nan if feature.is_numeric else None
    folds = search.cv_folds(y, 4, seed=3)
    space = search.search_space_for(spec, y)
    objective = search.make_objective(spec, x, y, folds, seed=3, space=space, n_jobs=2, score_train=True)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=1))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective, n_trials=3)
    for trial in study.trials:
        model = build_pipeline(spec, trial.params, seed=3)
        expected_val, expected_train = [], []
        for train_idx, val_idx in folds:
            fitted = clone(model).fit(x.iloc[train_idx], y.iloc[train_idx])
            expected_val.append(fitted.score(x.iloc[val_idx], y.iloc[val_idx]))
            expected_train.append(fitted.score(x.iloc[train_idx], y.iloc[train_idx]))
        assert trial.user_attrs["val_scores"] == expected_val
        assert trial.user_attrs["train_scores"] == expected_train
        assert trial.value == pytest.approx(np.mean(expected_val))


def test_numeric_products_and_the_derived_space_change_the_study_fingerprint() -> None:
    """A study scored without the products (an older sml) or over another space (other
    rows) is not resumed."""
    iris, titanic = get_dataset("iris"), get_dataset("titanic")
    space = search.derive_search_space(712, 12, 2)
    assert search.search_space_fingerprint(space, titanic) == search.search_space_fingerprint(space)
    assert search.search_space_fingerprint(space, iris) != search.search_space_fingerprint(space)
    plain_iris = dataclasses.replace(iris, numeric_products=False)
    assert search.search_space_fingerprint(space, plain_iris) == search.search_space_fingerprint(space)
    other = search.derive_search_space(7120, 12, 2)
    assert other != space and search.search_space_fingerprint(other) != search.search_space_fingerprint(space)


def test_a_nullable_bigint_feature_is_a_double_in_the_model_input_and_signature() -> None:
    """Rows without a gap are int64 in pandas, rows with one float64: the model's input is
    float either way, so its signature accepts a served row whose value is missing."""
    from mlflow.models import infer_signature

    from serverless_ml.datasets.spec import parse_spec

    spec = parse_spec({"name": "gaps", "label": "y", "classes": [0, 1], "features": {
        "score": {"type": "bigint", "nullable": True}, "count": {"type": "bigint"}}}, "test")
    no_gap = pd.DataFrame({"score": np.array([5, 7, 9, 11]), "count": np.array([1, 2, 3, 4])})
    x = as_model_input(no_gap, spec)
    assert x.dtypes.astype(str).to_dict() == {"score": "float64", "count": "int64"}
    model = build_pipeline(spec, {"n_estimators": 5}, seed=0).fit(x, [0, 1, 0, 1])
    inputs = {c.name: c.type.name for c in infer_signature(x, model.predict(x)).inputs.inputs}
    assert inputs == {"score": "double", "count": "long"}
    with_gap = as_model_input(no_gap.assign(score=[5.0, np.nan, 9.0, 11.0]), spec)
    assert len(model.predict(with_gap)) == 4


def test_a_study_half_pinned_by_a_concurrent_worker_is_completed_and_a_different_one_refused() -> None:
    """Workers starting together on a new study each pin it one attribute at a time: one
    may see it half pinned by the other, which is no difference; a value that differs is."""
    from serverless_ml.errors import SmlError
    from serverless_ml.pipelines.train import check_study_rows

    pins = {"sml.dataset": "titanic", "sml.rows_sha256": "abc", "sml.seed": "42", "sml.folds": "3",
            "sml.search_space": "f00"}
    study = optuna.create_study(direction="maximize")
    for key in ("sml.dataset", "sml.rows_sha256", "sml.seed"):  # the other worker got this far
        study.set_user_attr(key, pins[key])
    check_study_rows(study, pins)
    assert study.user_attrs == pins
    with pytest.raises(SmlError, match=r"\(folds, search_space differ\)"):
        check_study_rows(study, {**pins, "sml.folds": "5", "sml.search_space": "bad"})
    assert study.user_attrs == pins


@pytest.mark.parametrize("name", ["titanic", "iris"])
def test_a_chunk_prepared_in_another_step_scores_exactly_as_the_whole_pipeline(name: str) -> None:
    """``sml infer`` runs the pipeline's transforming steps in its reading thread
    (:meth:`ChunkScorer.prepare`) and the final estimator in its predicting one: the
    predictions must be the ones ``predict_proba`` of the whole pipeline gives, bit for bit."""
    import pandas as pd

    from serverless_ml.inference.scoring import ChunkScorer

    spec = get_dataset(name)
    x, y = _rows(name)
    frame = x.copy()
    frame[spec.label] = y
    frame[spec.primary_key] = range(len(frame))
    frame["event_time"] = pd.Timestamp("2024-01-01", tz="UTC")
    frame["origin"] = "live"
    calibrated = calibrated_pipeline(spec, {"n_estimators": 10}, 0, y).fit(as_model_input(x, spec), y)
    plain = build_pipeline(spec, {"n_estimators": 10}, seed=0).fit(as_model_input(x, spec), y)
    raw = as_model_input(frame, spec)
    # The two pipelines on raw rows, and a bare forest (not a Pipeline: nothing to
    # prepare) on the encoded matrix.
    for model, model_input in ((calibrated, raw), (plain, raw), (plain.named_steps["forest"], plain[:-1].transform(raw))):
        scorer = ChunkScorer(model, spec, 1, pd.Timestamp("2024-01-02", tz="UTC"), "run")
        assert (scorer.transforms is None) == (model is not calibrated and model is not plain)
        whole = scorer.score(frame, model_input)
        split = scorer.score(frame, proba=scorer.final.predict_proba(scorer.prepare(model_input)))
        pd.testing.assert_frame_equal(whole, split, check_exact=True)
        direct = model.predict_proba(model_input)[:, scorer.order]
        assert np.array_equal(whole[[c for c in whole.columns if c.startswith("proba_")]].to_numpy(), direct)


def test_model_input_keeps_text_categories_and_turns_only_missing_ones_into_none() -> None:
    spec = get_dataset("titanic")
    x, _ = _rows("titanic")
    frame = x.head(4).copy()
    frame["embarked"] = pd.array(["S", None, "C", "Q"], dtype="string")
    full = x.head(4).copy()
    full["embarked"] = ["S", "C", "C", "Q"]
    gaps, whole = as_model_input(frame, spec), as_model_input(full, spec)
    assert gaps["embarked"].dtype == object and whole["embarked"].dtype == object
    assert gaps["embarked"].tolist() == ["S", None, "C", "Q"]
    assert whole["embarked"].tolist() == ["S", "C", "C", "Q"]
    assert frame["embarked"].dtype == "string"  # the caller's frame is left as it was


def _encoder_cases() -> list[tuple[object, pd.DataFrame]]:
    """Fitted one-hot encoders (the spec's categories, or learnt ones with ``None`` among
    them) and frames to encode: unknown values, ``None``, ``NaN`` beside ``None``, many
    distinct combinations, one row."""
    from sklearn.preprocessing import OneHotEncoder

    rng = np.random.default_rng(3)
    n = 5_000
    frame = pd.DataFrame({
        "a": rng.choice(["x", "y", "z", "unseen", None], n).astype(object),
        "b": rng.choice(["p", "q", None], n).astype(object),
        "c": np.array([f"v{i}" for i in rng.integers(0, 4_000, n)], dtype=object),  # many values
    })
    given = OneHotEncoder(categories=[["x", "y", "z"], ["p", "q"], [f"v{i}" for i in range(3_000)]],
                          handle_unknown="ignore", sparse_output=False).fit(frame.head(10))
    learnt = OneHotEncoder(handle_unknown="ignore", sparse_output=False).fit(frame.iloc[: n // 2])
    nan_and_none = frame.copy()
    nan_and_none.loc[::7, "b"] = np.nan  # NaN beside None in one column
    return [(encoder, case) for encoder in (given, learnt)
            for case in (frame, frame.iloc[n // 2:], nan_and_none, frame.head(1), frame[["a", "b", "c"]].iloc[:0])]


@pytest.mark.parametrize("index", range(10))
def test_the_distinct_rows_encoder_gives_the_encoders_matrix_exactly(index: int) -> None:
    from serverless_ml.inference.scoring import DistinctRowsEncoder

    encoder, frame = _encoder_cases()[index]
    if frame.empty:  # refused alike
        with pytest.raises(ValueError, match="0 sample"):
            encoder.transform(frame)
        with pytest.raises(ValueError, match="0 sample"):
            DistinctRowsEncoder(encoder).transform(frame)
        return
    expected = encoder.transform(frame)
    got = DistinctRowsEncoder(encoder).transform(frame)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert np.array_equal(got, expected)


def test_the_job_copy_of_a_pipeline_wraps_its_encoders_and_leaves_the_model_alone() -> None:
    from sklearn.preprocessing import OneHotEncoder

    from serverless_ml.inference.scoring import ChunkScorer, DistinctRowsEncoder

    spec = get_dataset("titanic")
    x, y = _rows("titanic")
    model = calibrated_pipeline(spec, {"n_estimators": 10}, 0, y).fit(as_model_input(x, spec), y)
    scorer = ChunkScorer(model, spec, 1, pd.Timestamp("2024-01-02", tz="UTC"), "run")
    wrapped = [t for _, t, _ in scorer.transforms[0].transformers_ if isinstance(t, DistinctRowsEncoder)]
    assert len(wrapped) == 1
    assert [type(t) for _, t, _ in model[0].transformers_ if isinstance(t, (OneHotEncoder, DistinctRowsEncoder))] == [OneHotEncoder]
    probe = as_model_input(x, spec)
    probe.loc[::5, "embarked"] = None
    probe.loc[::3, "title"] = "Unheard-of"
    assert np.array_equal(scorer.prepare(probe), model[:-1].transform(probe))


def test_the_distinct_rows_encoder_under_pandas_output_returns_the_encoders_frame() -> None:
    import sklearn

    from serverless_ml.inference.scoring import DistinctRowsEncoder

    encoder, frame = _encoder_cases()[0]
    with sklearn.config_context(transform_output="pandas"):
        expected = encoder.transform(frame)
        got = DistinctRowsEncoder(encoder).transform(frame)
    assert isinstance(got, pd.DataFrame)
    pd.testing.assert_frame_equal(got, expected)
