"""The model: one scikit-learn Pipeline from raw feature columns to a class.

Imputation and encoding live inside the pipeline, so batch inference, the web predictor
and ``mlflow models serve`` all apply exactly what training fitted (no train/serve skew).
Categorical encoders are built from the spec's categories, so the encoding does not
depend on which categories a particular training sample happened to contain.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
from sklearn.impute import MissingIndicator, SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, PolynomialFeatures

from serverless_ml.datasets.spec import DatasetSpec

# Types in the pipeline's skops file that skops does not trust by default (a test checks
# that this list is exactly what a fitted calibrated pipeline needs).
SKOPS_TRUSTED_TYPES = [
    "numpy.dtype", "sklearn.tree._tree.Tree", "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration", "sklearn.calibration._TemperatureScaling",
]

CALIBRATED_STEP = "calibrated"
"""The last step of a calibrated pipeline (:func:`calibrated_pipeline`); an uncalibrated
one (the tuning trials', and versions registered before calibration) ends in ``forest``."""
CALIBRATION_FOLDS = 5
ISOTONIC_MIN_ROWS = 1000
"""Below this many training rows the calibration is parametric: isotonic regression
over-fits small calibration sets (scikit-learn's user guide gives the same advice).
Two classes: sigmoid (Platt); more: temperature scaling, which calibrates all classes at
once (sigmoid's one-vs-rest then renormalise under-stated the accuracy of multi-class
forests by 0.07 on iris and wine, temperature scaling by 0.005-0.02, measured by
``python -m bench estimate``; on two classes temperature scaling of the forest's
near-0/1 probabilities under-stated Titanic's by 0.16, sigmoid by 0.01)."""


FOREST_FAMILIES: dict[str, type] = {"random_forest": RandomForestClassifier, "extra_trees": ExtraTreesClassifier}
"""The forests the search may choose (param ``family``; default ``random_forest``): extra
trees draw split thresholds at random, which on some datasets generalises better."""


def numeric_features(spec: DatasetSpec) -> list[str]:
    return [f.name for f in spec.features if f.is_numeric]


def categorical_features(spec: DatasetSpec) -> list[str]:
    return [f.name for f in spec.features if not f.is_numeric]


def build_pipeline(spec: DatasetSpec, params: dict[str, Any], seed: int, n_jobs: int = 1) -> Pipeline:
    """Imputation and one-hot encoding, then a forest with ``params``: a random forest, or
    extra trees with ``params["family"] == "extra_trees"`` (:data:`FOREST_FAMILIES`).

    Numeric features: median imputation with a missing-value indicator (a missing age is
    information); with the spec's ``numeric_products``, also the pairwise products of the
    imputed values (column ``"a b"`` is a x b). Categorical features: one-hot over the
    spec's categories; a missing or unknown value is all zeros (ignored, not an error).
    """
    transformers: list[tuple[str, Any, list[str]]] = []
    numeric = numeric_features(spec)
    if numeric:
        steps: list[tuple[str, Any]] = [("impute", SimpleImputer(strategy="median", keep_empty_features=True))]
        if spec.numeric_products:
            steps.append(("products", PolynomialFeatures(degree=2, interaction_only=True, include_bias=False)))
        transformers.append(("numeric", Pipeline(steps), numeric))
        # The columns SimpleImputer(add_indicator=True) would append, kept out of the products.
        transformers.append(("missing", MissingIndicator(features="missing-only", error_on_new=False), numeric))
    categorical = categorical_features(spec)
    if categorical:
        categories = [list(spec.feature(name).categories or []) for name in categorical]
        encoder = OneHotEncoder(
            categories=categories if all(categories) else "auto",
            handle_unknown="ignore",
            sparse_output=False,
        )
        # A missing category (None or NaN) is encoded as all zeros: unknown to every column.
        transformers.append(("categorical", encoder, categorical))
    knobs = dict(params)
    family = FOREST_FAMILIES[knobs.pop("family", "random_forest")]
    forest = family(random_state=seed, n_jobs=n_jobs, **knobs)
    return Pipeline(
        [("prepare", ColumnTransformer(transformers, remainder="drop", verbose_feature_names_out=False)), ("forest", forest)]
    )


def calibration_plan(labels: Any) -> tuple[str, int]:
    """How a pipeline trained on ``labels`` calibrates its probabilities: the method
    (``isotonic`` from :data:`ISOTONIC_MIN_ROWS` rows, else ``sigmoid`` for two classes
    and ``temperature`` for more; ``none`` when a class has fewer than 2 rows) and the
    folds (at most :data:`CALIBRATION_FOLDS`, at most the rarest class's rows)."""
    counts = np.unique(np.asarray(labels, dtype=object).astype(str), return_counts=True)[1]
    folds = int(min(CALIBRATION_FOLDS, counts.min())) if len(counts) else 0
    if len(counts) < 2 or folds < 2:
        return "none", 0
    if len(labels) >= ISOTONIC_MIN_ROWS:
        return "isotonic", folds
    return ("sigmoid" if len(counts) == 2 else "temperature"), folds


def calibrated_pipeline(spec: DatasetSpec, params: dict[str, Any], seed: int, labels: Any, n_jobs: int = 1) -> Pipeline:
    """:func:`build_pipeline` whose forest's probabilities are calibrated, still one
    Pipeline (so batch inference, the site and ``mlflow models serve`` use the same model).

    The last step is scikit-learn's ``CalibratedClassifierCV`` with ``ensemble=False``:
    the forest's out-of-fold probabilities on the training rows fit the calibrator, and
    one forest refitted on all of them predicts (no ensemble of fold forests: scoring
    costs what an uncalibrated forest costs). Method and folds: :func:`calibration_plan`
    of ``labels`` (the training rows' classes); with ``none`` the plain pipeline.
    """
    from sklearn.calibration import CalibratedClassifierCV

    plain = build_pipeline(spec, params, seed, n_jobs)
    method, folds = calibration_plan(labels)
    if method == "none":
        return plain
    # An int: stratified folds in row order (the training rows are already shuffled by
    # the split), and no splitter object in the model file for skops to distrust.
    calibrator = CalibratedClassifierCV(plain.named_steps["forest"], method=method, ensemble=False, cv=folds)
    return Pipeline([("prepare", plain.named_steps["prepare"]), (CALIBRATED_STEP, calibrator)])


def fit_pipeline(pipeline: Pipeline, x: Any, y: Any) -> Pipeline:
    """Fit a pipeline of :func:`calibrated_pipeline` or :func:`build_pipeline` on ``x``, ``y``.

    scikit-learn 1.9's temperature scaling encodes text labels to ``0..K-1`` and takes
    numeric ones as those codes already: labels ``1, 2, 3`` (or ``10, 20, 30``) gave
    every row probabilities near ``1/K`` (its predictions stayed right, so only the
    calibration, the estimate and the alerts showed it). Numeric labels other than
    ``0..K-1`` are therefore fitted as their codes (in sorted order, as scikit-learn's
    ``LabelEncoder`` orders classes) and the calibrated step's ``classes_`` set back to the
    labels: ``predict`` returns the labels, ``predict_proba``'s columns are in their order.
    """
    step = pipeline.steps[-1][1]
    labels = np.asarray(y)
    if getattr(step, "method", None) == "temperature" and labels.size and not isinstance(labels[0], str):
        classes, codes = np.unique(labels, return_inverse=True)
        if not np.array_equal(classes, np.arange(len(classes))):
            pipeline.fit(x, codes)
            step.classes_ = classes
            return pipeline
    return pipeline.fit(x, y)


def calibration_method(pipeline: Pipeline) -> str:
    """``sigmoid``/``isotonic`` for a calibrated pipeline, ``none`` for a plain one."""
    last = pipeline.steps[-1][1]
    return str(getattr(last, "method", "none")) if pipeline.steps[-1][0] == CALIBRATED_STEP else "none"


def fitted_forest(pipeline: Pipeline) -> Any:
    """The fitted forest of a plain or calibrated pipeline (a calibrated one's forest is
    the one refitted on all training rows)."""
    if pipeline.steps[-1][0] == CALIBRATED_STEP:
        return pipeline.steps[-1][1].calibrated_classifiers_[0].estimator
    return pipeline.named_steps["forest"]


def raw_feature_importances(pipeline: Pipeline, spec: DatasetSpec) -> dict[str, float]:
    """The forest's importances summed back onto the raw features they came from (a
    product's importance split evenly between its two features)."""
    names = pipeline.named_steps["prepare"].get_feature_names_out()
    importances = fitted_forest(pipeline).feature_importances_
    totals: dict[str, float] = {name: 0.0 for name in spec.feature_names}
    numeric = numeric_features(spec)
    products = {f"{a} {b}": [a, b] for i, a in enumerate(numeric) for b in numeric[i + 1:]}
    for encoded, value in zip(names, importances, strict=True):
        factors = products.get(str(encoded), [str(encoded)])
        for factor in factors:
            raw = _raw_name(factor, spec)
            totals[raw] = totals.get(raw, 0.0) + float(value) / len(factors)
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def _raw_name(encoded: str, spec: DatasetSpec) -> str:
    if encoded.startswith("missingindicator_"):
        return encoded.removeprefix("missingindicator_")
    if encoded in spec.feature_names:
        return encoded
    # One-hot columns are "<feature>_<category>"; pick the longest feature name that fits.
    matches = [name for name in spec.feature_names if encoded.startswith(name + "_")]
    return max(matches, key=len) if matches else encoded


def as_model_input(frame: Any, spec: DatasetSpec) -> Any:
    """Raw feature columns in spec order, missing categoricals as ``None``; ``double`` and
    nullable ``bigint`` features as floats (a whole-number column with a gap can only be a
    float column in pandas, so the model's signature says ``double`` for it, and a served
    row with the value missing is accepted)."""
    x = frame[spec.feature_names].copy()
    for name in categorical_features(spec):
        column = x[name] if x[name].dtype == object else x[name].astype(object)
        missing = column.isna()
        x[name] = column.where(~missing, None) if missing.any() else column
    for name in numeric_features(spec):
        feature = spec.feature(name)
        if feature.type == "double" or feature.nullable:
            x[name] = x[name].astype(np.float64)
    return x
