"""The contract between the jobs and the site: the model registry and the runs' names.

A name that one side writes and another reads is a constant here, and both import it:
the registry's aliases, the tags of a registered version, the tags, metrics and
artifacts of a training run that the site, a later job or ``sml main`` read back, and
the experiment and model names of a dataset. So is the logic that finds the champion,
loads a version's model, reads the rows a version was trained on and picks the drift
reference rows (jobs and site use the same functions). ``tests/unit/test_contract_names.py``
checks that no other module spells these names.

Where the other names live: MLflow's own system tags, the run-owner tags (``sml.host``,
``sml.pid``) and the ``recovered`` tag of a run a later job ended are in
:mod:`serverless_ml.tracking` (below this module, which uses them); the feature groups'
names and versions are properties of :class:`serverless_ml.datasets.spec.DatasetSpec` (``name``/``version`` and
``predictions_group``/``predictions_version``), where the spec refuses a dataset name
that would clash with them.

Nothing happens on import, and importing it is cheap (``sml --help`` imports the jobs'
modules): MLflow and pandas are imported by the functions that use them.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from serverless_ml.errors import NotFoundError
    import pandas as pd

# --- registry aliases ----------------------------------------------------------------------

CHAMPION = "champion"
"""The alias of the version batch inference scores with."""
CHALLENGER = "challenger"
"""The alias of the newest version a training job registered."""

# --- tags of a registered model version ------------------------------------------------------

TRAINING_RUN_ID_TAG = "training_run_id"
"""The training run that registered the version (also a tag of its logged model)."""
HOLDOUT_ACCURACY_TAG = "holdout_accuracy"
"""The version's accuracy on its holdout rows (``%.6f``)."""
PROMOTED_AT_TAG = "promoted_at"
"""When the version became ``champion`` (ISO 8601, UTC)."""
TRAINING_FINGERPRINT_TAG = "sml.training_fingerprint"
"""Tag of a training run and of the version it registered: the
:func:`serverless_ml.training.promotion.training_fingerprint` of what it was trained from."""
DATA_VERSION_TAG = "data_version"
"""The dataset feature group's data version a model was trained on: a tag of the registered
version and of its logged model, a param of its training run, and a tag of each monitoring
run that scored with it (the Models page and batch inference read it back)."""

# --- tags, metrics and artifacts of runs -------------------------------------------------------

ROLE_TAG = "sml.role"
"""What a run of the training experiment is: ``tune``, ``refit`` or ``worker``."""
RETRAIN_TAG = "sml.simulate.retrain"
"""Tag of a simulation's retraining run: the day it retrained after and the simulation's
options (a digest), so a simulation run again over the same days does not retrain again."""
REPLACED_TAG = "sml.replaced"
"""Tag of a monitoring run deleted by ``--replace``: which command deleted it and when."""
TRIAL_NUMBER_TAG = "trial_number"
TRIAL_STATE_TAG = "trial_state"
"""Tags of a trial's nested run: the Optuna trial number and its state."""
BEST_TRIAL_NUMBER_TAG = "best_trial_number"
"""Tag of a training run: the number of the trial its model was refitted from."""
PROMOTION_DECISION_TAG = "promotion_decision"
PROMOTION_REASON_TAG = "promotion_reason"
"""Tags of a training run: ``promoted`` or ``not promoted``, and why."""
CV_ACCURACY_METRIC = "val_accuracy_mean"
"""Mean cross-validated accuracy: of a trial run, and of the best trial on the training run."""
TRAINING_KEYS_ARTIFACT = "training/keys.parquet"
"""The artifact of a training run listing each row's key and its split (train or holdout)."""

# --- training runs: what `sml train` logs that the site's Models page or a later job reads ---

HOLDOUT_METRIC_PREFIX = "test_"
"""The prefix of a training run's holdout metrics (the ``prefix`` given to
:func:`serverless_ml.training.evaluation.classification_metrics`): ``test_accuracy``,
``test_f1``, per class ``test_f1_<class key>``..."""
HOLDOUT_ACCURACY_METRIC = f"{HOLDOUT_METRIC_PREFIX}accuracy"
HOLDOUT_PRECISION_METRIC = f"{HOLDOUT_METRIC_PREFIX}precision"
HOLDOUT_RECALL_METRIC = f"{HOLDOUT_METRIC_PREFIX}recall"
HOLDOUT_F1_METRIC = f"{HOLDOUT_METRIC_PREFIX}f1"
HOLDOUT_ROC_AUC_METRIC = f"{HOLDOUT_METRIC_PREFIX}roc_auc"
"""The refitted model's holdout scores (binary: of the positive class; multiclass: macro
means) that the Models page shows."""
BASELINE_HOLDOUT_ACCURACY_METRIC = f"baseline_{HOLDOUT_ACCURACY_METRIC}"
"""The majority-class baseline's holdout accuracy (of a training and a worker run)."""
CV_ACCURACY_STD_METRIC = "val_accuracy_std"
"""Standard deviation of the cross-validated accuracy: of a trial run, and of the best
trial on the training run (next to :data:`CV_ACCURACY_METRIC`)."""
TRIALS_COMPLETED_METRIC = "trials_completed"
"""How many trials of the study had completed when the training run refitted its best."""
STUDY_NAME_TAG = "study_name"
"""The Optuna study of a training, worker or trial run: a tag, and a param of training and
worker runs (and a part of the training fingerprint: renaming it retrains once)."""
BEST_TRIAL_VALUE_TAG = "best_trial_value"
"""Tag of a training or worker run: the best trial's mean CV accuracy (``%.6f``)."""
WORKER_RUN_IDS_TAG = "worker_run_ids"
"""Tag of a refit run (``--trials 0``): the runs of the workers whose trials the study
holds, comma-separated."""
SEARCH_SPACE_ARTIFACT = "search_space.json"
"""The artifact of a training run describing the search space its trials drew from."""
POSITIVE_CLASS_PARAM = "positive_class"
"""Param of a training run of a two-class dataset: the class its binary holdout scores are of
(the Models page names it)."""


EVALUATION_FOLDER = "evaluation/"
"""The folder of a training run's holdout evaluation artifacts (:func:`evaluation_artifact`)."""


def evaluation_artifact(name: str, extension: str = "json") -> str:
    """A training run's holdout evaluation ``name`` (``confusion_matrix``,
    ``feature_importances``): a JSON table and a PNG figure."""
    return f"{EVALUATION_FOLDER}{name}.{extension}"


# --- end of the training runs' names ---

# --- monitoring runs (one per scored batch; batch inference writes, the site and `sml main` read) ---

AS_OF_TAG = "as_of"
"""The batch's date (``YYYY-MM-DD``); also the tag of the batch's dataset input. The site
names its parsed batch-date column after it."""
MODEL_VERSION_TAG = "model_version"
"""The registered version that scored the batch (the site names its version column after it)."""
SIMULATED_TAG = "simulated"
"""``true`` on a monitoring run ``sml simulate`` logged (its runs end when they start)."""
ALERT_TAG = "alert"
"""``true`` when the batch raised an alert, else ``false``."""
ALERTS_TAG = "alerts"
"""The batch's alert messages, joined by :data:`MESSAGE_SEPARATOR`."""
ALERT_ACCURACY = "alert_accuracy"
"""Whether the batch raised an accuracy alert: a tag (``true``/``false``) and a metric (1/0)."""
ALERT_DRIFT = "alert_drift"
"""Whether the batch raised a drift alert: a tag (``true``/``false``) and a metric (1/0)."""
NOT_COMPUTED_TAG = "not_computed"
"""What the batch could not compute and why, joined by :data:`MESSAGE_SEPARATOR`."""
MESSAGE_SEPARATOR = " | "
DRIFT_BASIS_TAG = "drift_basis"
"""What drift was judged on: ``batch``, ``window`` or ``none``."""
DRIFT_WINDOW_TAG = "drift_window"
"""The days of the recent window drift was judged on (``first..last`` or one day)."""
DRIFT_WINDOW_ROLLING_TAG = "drift_window_rolling"
"""The days of the rolling window drift was also judged on (empty: none)."""
LATEST_KEY_TAG = "latest_key"
LATEST_PREDICTION_TAG = "latest_prediction"
LATEST_ACTUAL_TAG = "latest_actual"
LATEST_PROBABILITY_METRIC = "latest_probability"
"""The batch's latest row: its key, prediction, actual label (tags) and probability (metric)."""

ROWS_SCORED_METRIC = "rows_scored"
SCORED_AT_TAG = "batch_scored_at"
"""When ``sml infer`` scored a batch (ISO 8601, UTC, microseconds): the ``scored_at`` of
the rows it scored, and the bound of the predictions its windows had seen (its served rows
keep their requests' earlier times). Runs logged before it: the latest ``scored_at`` of
their rows."""
ROWS_SERVED_METRIC = "served_rows"
"""How many of a batch's ``rows_scored`` are rows ``sml serve`` answered (and recorded)
that the batch took in with their served predictions, rather than scored."""
ROWS_LABELLED_METRIC = "rows_labelled"
BATCH_ACCURACY_METRIC = "batch_accuracy"
BATCH_ACCURACY_CI_LOW_METRIC = "batch_accuracy_ci_low"
BATCH_ACCURACY_CI_HIGH_METRIC = "batch_accuracy_ci_high"
"""The batch's accuracy on its labelled rows and its 95% Wilson interval."""
ROLLING_ACCURACY_METRIC = "rolling_accuracy"
"""Accuracy over the rolling window (days up to the batch's date)."""
CUMULATIVE_ACCURACY_METRIC = "cumulative_accuracy"
"""Accuracy of the champion since its promotion, up to the batch's date."""
CHAMPION_HOLDOUT_ACCURACY_METRIC = "champion_holdout_accuracy"
"""The scoring champion's holdout accuracy (the reference the accuracy alert compares with)."""
DRIFT_SHARE_METRIC = "drift_share"
"""The share of features that drifted."""
DRIFT_ROWS_METRIC = "drift_rows"
DRIFT_ROWS_ROLLING_METRIC = "drift_rows_rolling"
"""How many rows the recent and the rolling drift windows held."""
DRIFT_P_PREFIX = "drift_p_"
DRIFT_PADJ_PREFIX = "drift_padj_"
DRIFT_EFFECT_PREFIX = "drift_effect_"
DRIFT_PSI_PREFIX = "drift_psi_"
"""Per-feature drift metrics: ``<prefix><metric key of the feature>`` (p-value, adjusted
p-value, effect size, population stability index)."""
DRIFT_P_VALUE_PARAM = "drift_p_value"
DRIFT_MIN_EFFECT_PARAM = "drift_min_effect"
"""The drift rule a batch was judged with (params of its run)."""
DRIFT_ARTIFACT = "drift.json"
"""The batch's drift report: basis, windows, thresholds and every feature's figures."""

# --- monitoring runs, continued: windows, per-class metrics, params, reports (issue 20) ---------------

ROLLING_ROWS_METRIC = "rolling_rows"
"""Labelled rows in the rolling window (the denominator of :data:`ROLLING_ACCURACY_METRIC`)."""
CUMULATIVE_ROWS_METRIC = "cumulative_rows"
"""Labelled rows since the champion's promotion (of :data:`CUMULATIVE_ACCURACY_METRIC`)."""
DRIFT_WINDOW_DAYS_METRIC = "drift_window_days"
"""How many days the recent drift window spans."""
ROLLING_PRECISION_STEM = "rolling_precision"
ROLLING_RECALL_STEM = "rolling_recall"
PREDICTED_SHARE_STEM = "predicted_share"
TRAINING_SHARE_STEM = "training_share"
"""Per-class metrics of a monitoring run: ``<stem>_<class key>`` (:func:`class_metric`).
The precision and recall stems are :func:`window_metric_prefix` of ``rolling`` and the
names :func:`serverless_ml.training.evaluation.metrics_from_confusion` gives them."""
ROLLING_DAYS_PARAM = "rolling_days"
FIGURES_PARAM = "figures"
"""A monitoring run's ``--figures`` (``True``: its confusion matrices are drawn as PNGs too,
and ``sml labels`` draws them when labels arrive, even for a batch that had none)."""
ACCURACY_DROP_PARAM = "accuracy_drop"
DRIFT_SHARE_THRESHOLD_PARAM = "drift_share_threshold"
DRIFT_WINDOW_ROWS_PARAM = "drift_window_rows"
"""The rest of the rule a batch was judged with (params of its run; with
:data:`DRIFT_P_VALUE_PARAM` and :data:`DRIFT_MIN_EFFECT_PARAM`)."""
LATEST_ARTIFACT = "latest.json"
"""The batch's latest scored row (its columns as text)."""

# --- live rows, late labels and estimated performance (issue 17) -----------------------------------------

LABELLED_SHARE_METRIC = "labelled_share"
"""The share of a batch's rows whose label is known (``rows_labelled / rows_scored``);
updated on the batch's own run when labels arrive (``sml labels``)."""
ESTIMATED_ACCURACY_METRIC = "estimated_accuracy"
ESTIMATED_ACCURACY_CI_LOW_METRIC = "estimated_accuracy_ci_low"
ESTIMATED_ACCURACY_CI_HIGH_METRIC = "estimated_accuracy_ci_high"
"""The batch's accuracy estimated from the champion's calibrated probabilities (CBPE) and
the 95 % interval of the accuracy its rows will realise
(:mod:`serverless_ml.inference.estimate`)."""
ESTIMATED_PREFIX = "estimated_"
"""Estimated per-class metrics of a batch: ``estimated_precision_<class key>``,
``estimated_recall_<class key>``, ``estimated_f1_<class key>`` (the window prefix of
:func:`window_metric_prefix` for the window ``estimated``)."""
ROLLING_ESTIMATED_ACCURACY_METRIC = "rolling_estimated_accuracy"
"""The estimated accuracy over the rolling window's scored rows (labelled or not)."""
ESTIMATE_RECALIBRATION_ROWS_METRIC = "estimate_recalibration_rows"
"""The champion's labelled predictions the batch's estimated accuracy was recalibrated on
(0: plain CBPE of the probabilities; :class:`serverless_ml.inference.estimate.Recalibration`)."""
ESTIMATE_RECALIBRATION_A_METRIC = "estimate_recalibration_a"
ESTIMATE_RECALIBRATION_B_METRIC = "estimate_recalibration_b"
"""The recalibration's intercept and slope, ``g(p) = sigmoid(a + b logit p)`` (logged when it
was fitted on labelled rows)."""
ACCURACY_BASIS_TAG = "accuracy_basis"
"""What the batch's accuracy alert was judged on when the batch was scored: ``realized``
(every row labelled), ``estimated`` (labels missing: the CBPE estimate) or ``none``. A
record of that decision, like the alert tags: labels arriving later update the run's
realized figures, not this tag."""
REALIZED_DIGEST_TAG = "sml.realized_digest"
"""A digest of the realized figures last logged on a monitoring run (``sml labels``
recomputes a run's figures when the labels under them changed, and writes this last:
a crash in between leaves a stale digest, which the next ``sml labels`` repairs)."""
LABELS_UPDATED_AT_TAG = "labels_updated_at"
"""When ``sml labels`` last changed the realized figures of a monitoring run (UTC ISO)."""

CALIBRATION_METHOD_PARAM = "calibration_method"
"""How the champion's probabilities were calibrated (``sigmoid``, ``isotonic``, ``none``)."""
HOLDOUT_ECE_METRIC = f"{HOLDOUT_METRIC_PREFIX}ece"
HOLDOUT_BRIER_METRIC = f"{HOLDOUT_METRIC_PREFIX}brier"
"""Calibration quality on the holdout: expected calibration error (10 equal-width bins of
the predicted class's probability) and the multi-class Brier score."""
RELIABILITY_ARTIFACT_STEM = "reliability_diagram"
"""The holdout's reliability diagram: :func:`evaluation_artifact` of this stem (JSON, PNG)."""


def window_metric_prefix(window: str) -> str:
    """The prefix of the metrics of a monitoring run's confusion ``window`` (``batch``,
    ``rolling``): ``<window>_accuracy``, ``<window>_precision_<class key>``, ..."""
    return f"{window}_"


def class_metric(stem: str, class_key: str) -> str:
    """The metric ``stem`` (say :data:`PREDICTED_SHARE_STEM`) of the class ``class_key``."""
    return f"{stem}_{class_key}"


@dataclass(frozen=True)
class DriftReport:
    """The fields of :data:`DRIFT_ARTIFACT`, its JSON keys being these attribute names
    (the job writes :meth:`to_json`, the site reads :meth:`from_json`)."""

    basis: str | None = None
    """What drift was judged on (as :data:`DRIFT_BASIS_TAG`)."""
    window: str | None = None
    """The recent window's days (as :data:`DRIFT_WINDOW_TAG`)."""
    rows: float | None = None
    """Rows in the recent window."""
    rolling_window: str | None = None
    """The rolling window's days (as :data:`DRIFT_WINDOW_ROLLING_TAG`)."""
    rolling_rows: float | None = None
    """Rows in the rolling window."""
    p_threshold: float | None = None
    min_effect: float | None = None
    """The rule drift was judged with."""
    features: tuple[dict[str, Any], ...] = ()
    """Each feature's figures: the fields of
    :class:`serverless_ml.inference.drift.FeatureDrift`."""

    def to_json(self) -> dict[str, Any]:
        """The report as the JSON object of the artifact (keys in field order)."""
        return {f.name: list(self.features) if f.name == "features" else getattr(self, f.name)
                for f in fields(self)}

    @classmethod
    def from_json(cls, payload: object) -> DriftReport:
        """The report of an artifact's JSON (anything but an object: an empty report; a
        key a run did not write: ``None``, or no features)."""
        if not isinstance(payload, Mapping):
            return cls()
        values = {f.name: payload.get(f.name) for f in fields(cls) if f.name != "features"}
        entries = payload.get("features")
        features = tuple(dict(e) for e in entries if isinstance(e, Mapping)) if isinstance(entries, list) else ()
        return cls(**values, features=features)



def confusion_artifact(window: str, extension: str = "json") -> str:
    """The confusion matrix of a monitoring run's ``window`` (``batch``, ``rolling``,
    ``since_promotion``): a JSON table, and a PNG figure for the first two."""
    return f"confusion/{window}.{extension}"


def tag_column(name: str) -> str:
    """The column of tag ``name`` in a runs frame (MLflow's ``search_runs`` layout)."""
    return f"tags.{name}"


def metric_column(name: str) -> str:
    """The column of metric ``name`` in a runs frame (MLflow's ``search_runs`` layout)."""
    return f"metrics.{name}"


def param_column(name: str) -> str:
    """The column of param ``name`` in a runs frame (MLflow's ``search_runs`` layout)."""
    return f"params.{name}"


_SPLIT_COLUMN = "split"
_TRAIN_SPLIT = "train"
_HOLDOUT_SPLIT = "holdout"


# --- experiments and models ----------------------------------------------------------------------


def training_experiment(dataset: str) -> str:
    """The experiment of a dataset's training runs (a parent run per job, a nested run per trial)."""
    return f"{dataset}-training"


def monitoring_experiment(dataset: str) -> str:
    """The experiment of a dataset's monitoring runs (one per scored batch)."""
    return f"{dataset}-monitoring"


def pipeline_experiment(dataset: str) -> str:
    """The experiment of a dataset's ``main`` runs and their steps' runs."""
    return f"{dataset}-pipeline"


def model_name(dataset: str) -> str:
    """The registered model name of a dataset's model."""
    return dataset


def version_uri(name: str, version: object) -> str:
    """The ``models:/`` URI of a registered version."""
    return f"models:/{name}/{version}"


# --- the champion and its training rows ------------------------------------------------------------


def alias_version(name: str, alias: str, client: Any,
                  reraise: Callable[[BaseException], bool] | None = None) -> Any:
    """The registered version of model ``name`` behind ``alias`` (an
    ``mlflow.entities.model_registry.ModelVersion``), or ``None`` when the model or the
    alias does not exist. ``client``: the caller's ``MlflowClient`` (a job's
    :attr:`serverless_ml.tracking.Tracking.client`, the site's). ``reraise``: which MLflow
    errors are not an answer (the site's "store cannot be reached") and propagate."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if reraise is not None and reraise(exc):
            raise
        # Only "not found" is an answer: a server that fails is not a missing champion
        # (found by a user trial: a server answering 503 was told "run sml train first").
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE") and "not found" in str(exc).lower():
            return None
        raise


def champion_version(dataset: str, client: Any, dataset_arg: str | None = None) -> Any:
    """The ``@champion`` version of the dataset's model, for a job that needs one, read
    through the job's ``client`` (:attr:`serverless_ml.tracking.Tracking.client`, which
    has set up a new SQLite store the read would create).

    Raises:
        NotFoundError: there is no champion (the message says to run ``sml train``).
    """
    version = alias_version(model_name(dataset), CHAMPION, client)
    if version is None:
        raise no_champion(dataset, dataset_arg)
    return version


def no_champion(dataset: str, dataset_arg: str | None = None, why: str = "") -> NotFoundError:
    """The error of a command that needs the dataset's champion and finds none: it names
    the model and says to run ``sml train`` (``dataset_arg``: how the user named the
    dataset, a spec file's path for one; ``why``: appended in parentheses)."""
    from serverless_ml.errors import NotFoundError

    detail = f" ({why})" if why else ""
    return NotFoundError(f"model '{model_name(dataset)}' has no champion; run `sml train --dataset "
                         f"{dataset_arg or dataset}` first{detail}")


def load_version_model(name: str, version: str | int, tracking_uri: str | None = None) -> Any:
    """The scikit-learn pipeline of a registered version (``tracking_uri``: the store to
    read, default the process's)."""
    import mlflow

    if tracking_uri is None:
        return mlflow.sklearn.load_model(version_uri(name, version))
    source = mlflow.MlflowClient(tracking_uri).get_model_version_download_uri(name, str(version))
    local = mlflow.artifacts.download_artifacts(artifact_uri=source, tracking_uri=tracking_uri)
    return mlflow.sklearn.load_model(local)


def training_run_id(version: Any) -> str | None:
    """The training run of a registered version (its tag, else the run it came from)."""
    tags = getattr(version, "tags", None) or {}
    return tags.get(TRAINING_RUN_ID_TAG) or getattr(version, "run_id", None) or None


def holdout_accuracy(version: Any) -> float | None:
    """A registered version's holdout accuracy tag (``None``: none, or not a number)."""
    value = (getattr(version, "tags", None) or {}).get(HOLDOUT_ACCURACY_TAG)
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def promoted_at(version: Any) -> str | None:
    """When a registered version became champion (``None``: never)."""
    return (getattr(version, "tags", None) or {}).get(PROMOTED_AT_TAG)


def log_training_keys(keys_train: pd.Series, keys_holdout: pd.Series, primary_key: str) -> None:
    """Log :data:`TRAINING_KEYS_ARTIFACT` on the active run: each row's key and its split."""
    import mlflow
    import pandas as pd

    folder, file_name = TRAINING_KEYS_ARTIFACT.rsplit("/", 1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / file_name
        pd.DataFrame({
            primary_key: pd.concat([keys_train, keys_holdout], ignore_index=True),
            _SPLIT_COLUMN: [_TRAIN_SPLIT] * len(keys_train) + [_HOLDOUT_SPLIT] * len(keys_holdout),
        }).to_parquet(path, index=False)
        mlflow.log_artifact(str(path), artifact_path=folder)


@dataclass(frozen=True)
class TrainingKeys:
    """The keys of the rows a training run used."""

    all: pd.Series
    """Every row's key, training and holdout rows (rows no monitoring batch scores)."""
    train: pd.Series
    """The keys of the rows the model was fitted on (the drift reference)."""


def read_training_keys(run_id: str, primary_key: str, client: Any,
                       reraise: Callable[[BaseException], bool] | None = None) -> TrainingKeys | None:
    """The :data:`TRAINING_KEYS_ARTIFACT` of training run ``run_id``, or ``None`` when it
    has none or another key column (a model registered elsewhere). ``client`` and
    ``reraise`` as in :func:`alias_version` (any error but those is "none")."""
    import pandas as pd

    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = client.download_artifacts(run_id, TRAINING_KEYS_ARTIFACT, tmp)
            keys = pd.read_parquet(local)
        except Exception as exc:  # noqa: BLE001 - a model registered elsewhere has no keys; a damaged file is none
            if reraise is not None and reraise(exc):
                raise
            return None
    if primary_key not in keys or _SPLIT_COLUMN not in keys:
        return None
    return TrainingKeys(
        all=keys[primary_key].reset_index(drop=True),
        train=keys.loc[keys[_SPLIT_COLUMN] == _TRAIN_SPLIT, primary_key].reset_index(drop=True),
    )


def version_training_keys(version: Any, primary_key: str, client: Any,
                          reraise: Callable[[BaseException], bool] | None = None) -> TrainingKeys | None:
    """:func:`read_training_keys` of a registered version's training run (``None``: none)."""
    run_id = training_run_id(version)
    return read_training_keys(run_id, primary_key, client, reraise) if run_id else None


def reference_rows(
    rows: pd.DataFrame, primary_key: str, train_keys: pd.Series | None, real_rows: pd.DataFrame | None = None
) -> tuple[pd.DataFrame, bool]:
    """The drift reference of a model: the rows of ``rows`` it was trained on
    (``train_keys``), else (no keys, or none of them in ``rows``) the real rows, the
    backfill rows of ``real_rows`` (default ``rows``). Returns the rows and whether they
    are the training rows."""
    from serverless_ml.feature_store.base import BACKFILL_ORIGIN, ORIGIN_COLUMN

    if train_keys is not None and len(train_keys):
        reference = rows[rows[primary_key].isin(train_keys)]
        if not reference.empty:
            return reference, True
    source = rows if real_rows is None else real_rows
    return source[source[ORIGIN_COLUMN] == BACKFILL_ORIGIN], False


# --- slices (issue 18, item 6): accuracy per slice of a batch ------------------------------------

SLICES_ARTIFACT = "slices.json"
"""A monitoring run's accuracy per slice of its batch (realized and estimated, with row
counts; :meth:`serverless_ml.inference.slices.SliceTable.to_json`), with the slice plan
(the features, their kind and the bin edges from the champion's training rows)."""
WORST_SLICE_TAG = "worst_slice"
"""The slice of the batch with the lowest accuracy among those with enough rows
(``<feature>: <slice>``; absent when no slice has enough rows)."""
WORST_SLICE_BASIS_TAG = "worst_slice_basis"
"""What the worst slice's accuracy is: ``realized`` (its labelled rows) or ``estimated``."""
WORST_SLICE_ACCURACY_METRIC = "worst_slice_accuracy"
"""The worst slice's accuracy (of :data:`WORST_SLICE_BASIS_TAG`)."""


# --- shadow challenger and live promotion (issue 18, items 3 and 4) ------------------------------------

CHALLENGER_VERSION_TAG = "challenger_version"
"""Tag of a monitoring run whose batch ``@challenger`` also scored (its shadow predictions
are stored with this version and never served)."""
CHALLENGER_BATCH_ACCURACY_METRIC = "challenger_batch_accuracy"
CHALLENGER_ROWS_LABELLED_METRIC = "challenger_rows_labelled"
"""The challenger's accuracy on the batch's labelled rows, and how many (updated by
``sml labels`` when labels arrive)."""
CHALLENGER_ESTIMATED_ACCURACY_METRIC = "challenger_estimated_accuracy"
CHALLENGER_ESTIMATED_ACCURACY_CI_LOW_METRIC = "challenger_estimated_accuracy_ci_low"
CHALLENGER_ESTIMATED_ACCURACY_CI_HIGH_METRIC = "challenger_estimated_accuracy_ci_high"
"""The challenger's accuracy on the batch estimated from its probabilities (CBPE,
recalibrated on its own labelled shadow predictions as the champion's is on its own),
with the interval of :data:`ESTIMATED_ACCURACY_CI_LOW_METRIC`."""
CHALLENGER_ESTIMATE_RECALIBRATION_ROWS_METRIC = "challenger_estimate_recalibration_rows"
"""The challenger's labelled shadow predictions its estimated accuracy was recalibrated on
(0: plain CBPE), as :data:`ESTIMATE_RECALIBRATION_ROWS_METRIC` is the champion's."""
CHALLENGER_ESTIMATE_RECALIBRATION_A_METRIC = "challenger_estimate_recalibration_a"
CHALLENGER_ESTIMATE_RECALIBRATION_B_METRIC = "challenger_estimate_recalibration_b"
"""The challenger's recalibration's intercept and slope (logged when it was fitted), as
:data:`ESTIMATE_RECALIBRATION_B_METRIC` is the champion's."""
PAIRED_ROWS_METRIC = "paired_rows"
"""Labelled rows of the rolling window scored by both the champion and the challenger."""
PAIRED_CHAMPION_ACCURACY_METRIC = "paired_champion_accuracy"
PAIRED_CHALLENGER_ACCURACY_METRIC = "paired_challenger_accuracy"
"""Each model's accuracy on the paired rows."""
PAIRED_DIFFERENCE_METRIC = "paired_accuracy_difference"
PAIRED_DIFFERENCE_CI_LOW_METRIC = "paired_accuracy_difference_ci_low"
PAIRED_DIFFERENCE_CI_HIGH_METRIC = "paired_accuracy_difference_ci_high"
"""The challenger's accuracy minus the champion's on the paired rows and its 95 %
interval (:func:`serverless_ml.inference.paired.paired_difference_interval`)."""
PAIRED_CHAMPION_ONLY_METRIC = "paired_champion_only_correct"
PAIRED_CHALLENGER_ONLY_METRIC = "paired_challenger_only_correct"
"""The discordant pairs: rows only the champion got right, rows only the challenger did."""
PAIRED_P_VALUE_METRIC = "paired_mcnemar_p_value"
PAIRED_P_VALUE_BETTER_METRIC = "paired_mcnemar_p_value_better"
"""McNemar's exact test: two-sided, and one-sided (the challenger right more often)."""
PAIRED_WINDOW_TAG = "paired_window"
"""The days of the paired comparison (the rolling window up to the batch)."""
PROMOTE_MODE_PARAM = "promote"
LIVE_PROMOTE_ALPHA_PARAM = "live_promote_alpha"
LIVE_PROMOTE_MIN_DISCORDANT_PARAM = "live_promote_min_discordant"
"""Params of a monitoring run: ``--promote`` and the live rule it was judged with."""
LIVE_PROMOTION_DECISION_TAG = "live_promotion_decision"
LIVE_PROMOTION_REASON_TAG = "live_promotion_reason"
"""Tags of a monitoring run with ``--promote live`` and a challenger: ``promoted`` or
``not promoted``, and why (the evidence is in the ``paired_*`` metrics)."""
LIVE_PROMOTION_LOOK_METRIC = "live_promotion_look"
LIVE_PROMOTION_LEVEL_METRIC = "live_promotion_level"
"""The live rule's look at this challenger (1 for its first judged batch, 2 for the next...)
and the significance level that look was judged at (:func:`serverless_ml.training.promotion.look_level`)."""
LIVE_PROMOTED_METRIC = "live_promoted"
"""1 when the batch's job moved ``@champion`` to the challenger, else 0."""
PROMOTED_BY_RUN_TAG = "promoted_by_run"
"""Tag of a registered version promoted by ``--promote live``: the monitoring run whose
paired evidence promoted it (with :data:`PROMOTED_AT_TAG`)."""
PROMOTION_PREVIOUS_CHAMPION_TAG = "previous_champion_version"
"""Tag of a version promoted by ``--promote live``: the champion it replaced."""


# --- serving (issue 18 items 1-2: the pyfunc flavor, `sml serve`) ----------------------------------

SERVING_SCHEMA_ARTIFACT = "serving_schema.json"
"""The file next to a logged model's ``MLmodel`` holding the spec's serving rules (features,
ranges, categories, classes and their names), which the pyfunc flavor checks rows against
(``serverless_ml/serving/flavor.py``)."""


# --- notifications (issue 18, item 5: `--notify`, serverless_ml/notify.py) ---------------------

NOTIFIED_TAG_PREFIX = "sml.notified."
"""Prefix of a monitoring run's tag per alert kind (:func:`notified_tag`): the receivers
(masked URLs, joined by :data:`MESSAGE_SEPARATOR`) that alert was delivered to, so a batch's
alert reaches each receiver once however often the job runs."""


def notified_tag(kind: str) -> str:
    """The tag recording where a monitoring run's alert of ``kind`` was delivered."""
    return f"{NOTIFIED_TAG_PREFIX}{kind}"


def refuse_without_database(uri: str, dataset: str, dataset_arg: str) -> None:
    """A command that reads a champion (``sml infer``, ``sml serve``) refuses at once when
    its tracking URI names a SQLite database that does not exist yet: no model can be
    registered there, and opening it would leave an empty database (and its folder)
    behind a refused command."""
    from serverless_ml.tracking import sqlite_database_path

    path = sqlite_database_path(uri)
    if path is not None and not path.exists():
        raise no_champion(dataset, dataset_arg, f"the MLflow tracking database {path} does not exist")
