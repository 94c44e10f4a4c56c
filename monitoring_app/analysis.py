"""Pure computations behind the pages: plain functions on frames, no I/O.

Runs frames are those of :meth:`monitoring_app.data_access.SiteData.monitoring_runs`:
one row per monitoring run, ``metrics.<key>`` and ``tags.<key>`` columns and ``as_of``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from serverless_ml import registry
from serverless_ml.datasets.spec import DatasetSpec, FeatureSpec
from serverless_ml.feature_store.base import BACKFILL_ORIGIN, LIVE_ORIGIN, ORIGIN_COLUMN, SYNTHETIC_ORIGIN
from serverless_ml.inference.scoring import MODEL_VERSION_COLUMN

WINDOWS = {"30d": 30, "90d": 90, "1y": 365, "all": None}
"""Time windows of the Overview chart: label -> days (``None``: everything)."""

ORIGIN_LABELS = {BACKFILL_ORIGIN: "real", SYNTHETIC_ORIGIN: "synthetic", LIVE_ORIGIN: "live"}

# Columns of a runs frame (``SiteData.monitoring_runs``); the batch date parsed from the
# ``as_of`` tag is the column named after the tag.
_ROWS_SCORED = registry.metric_column(registry.ROWS_SCORED_METRIC)
_ALERT = registry.tag_column(registry.ALERT_TAG)
_ALERTS = registry.tag_column(registry.ALERTS_TAG)
_ALERT_TAGS = {"accuracy": registry.tag_column(registry.ALERT_ACCURACY), "drift": registry.tag_column(registry.ALERT_DRIFT)}
_ROWS_LABELLED = registry.metric_column(registry.ROWS_LABELLED_METRIC)
_LABELLED_SHARE = registry.metric_column(registry.LABELLED_SHARE_METRIC)
_BATCH_ACCURACY = registry.metric_column(registry.BATCH_ACCURACY_METRIC)
_BATCH_CI = (registry.metric_column(registry.BATCH_ACCURACY_CI_LOW_METRIC),
             registry.metric_column(registry.BATCH_ACCURACY_CI_HIGH_METRIC))
_ESTIMATED = registry.metric_column(registry.ESTIMATED_ACCURACY_METRIC)
_ESTIMATED_CI = (registry.metric_column(registry.ESTIMATED_ACCURACY_CI_LOW_METRIC),
                 registry.metric_column(registry.ESTIMATED_ACCURACY_CI_HIGH_METRIC))


def within_window(runs: pd.DataFrame, days: int | None) -> pd.DataFrame:
    """Runs whose batch date is within ``days`` of the newest batch (all when ``None``)."""
    if days is None or runs.empty:
        return runs
    end = runs[registry.AS_OF_TAG].max()
    return runs[runs[registry.AS_OF_TAG] > end - pd.Timedelta(days=days)]


def parse_class(value: Any, spec: DatasetSpec) -> Any | None:
    """A label as a tag stores it (a string) back to one of the spec's classes, or ``None``."""
    if value is None:
        return None
    text = str(value).strip()
    for cls in spec.classes:
        if str(cls) == text:
            return cls
    return None


def class_label(value: Any, spec: DatasetSpec) -> str:
    """How a class is shown: its name (``survived``), or the value when it has none."""
    try:
        return spec.class_name(value)
    except ValueError:
        return str(value)


@dataclass(frozen=True)
class Headline:
    """The Overview's numbers: counts over the chosen time window (``window_days``; ``None``:
    every batch), the latest batch and the champion over the whole history."""

    batches: int
    rows_scored: int
    latest_batch: str
    champion_version: int | None
    champion_holdout: float | None
    days_since_retrain: int | None
    champion_since: str | None
    alerts_latest: bool
    alert_batches: int
    accuracy_alert_batches: int = 0
    drift_alert_batches: int = 0
    window_days: int | None = None
    latest_accuracy: BatchAccuracy | None = None
    """The latest batch's accuracy, saying whether it is realized or estimated."""


def champion_since(runs: pd.DataFrame, version: Any) -> pd.Timestamp | None:
    """The first batch date of the newest unbroken stretch of batches scored by model
    ``version``, which must have scored the latest batch (``None`` otherwise: say, a
    champion promoted after the latest batch, or runs that do not name their model)."""
    if runs.empty or registry.tag_column(registry.MODEL_VERSION_TAG) not in runs or version is None:
        return None
    versions = runs[registry.tag_column(registry.MODEL_VERSION_TAG)].astype(object).to_numpy()
    scored = np.array([str(v) == str(version) for v in versions], dtype=bool)
    if not scored[-1]:
        return None
    others = np.flatnonzero(~scored)
    start = int(others[-1]) + 1 if len(others) else 0
    return pd.Timestamp(runs[registry.AS_OF_TAG].iloc[start])


def headline(runs: pd.DataFrame, champion: Any | None, window_days: int | None = None) -> Headline:
    """Rows scored, batches and alerts within ``window_days`` of the latest batch; the
    latest batch date; the champion and the days since it was trained.

    Days since the retrain are counted in the data's time, not the wall clock's: from the
    first batch the champion scored to the latest batch (a simulated history of years
    run in a minute then shows years). A champion that has not scored a batch yet (or
    whose batches do not say which model scored them) has 0 days.

    Args:
        runs: Monitoring runs, oldest batch first (may be empty).
        champion: The champion :class:`~monitoring_app.data_access.ModelVersion`, if any.
        window_days: The time window of the counts (``None``: every batch).
    """
    shown = within_window(runs, window_days)
    rows = shown[_ROWS_SCORED].fillna(0).sum() if _ROWS_SCORED in shown else 0
    latest = runs.iloc[-1] if not runs.empty else None
    kinds = alert_kinds(shown)
    days, since = None, None
    if champion is not None:
        start = champion_since(runs, champion.version)
        days = 0 if start is None else max(0, int((runs[registry.AS_OF_TAG].iloc[-1] - start).days))
        since = None if start is None else f"{start:%Y-%m-%d}"
    latest_alert = alert_kinds(runs.iloc[-1:]) if latest is not None else kinds.iloc[0:0]
    return Headline(
        batches=len(shown),
        rows_scored=int(rows),
        latest_batch=str(latest[registry.tag_column(registry.AS_OF_TAG)]) if latest is not None else "-",
        champion_version=champion.version if champion is not None else None,
        champion_holdout=champion.holdout_accuracy if champion is not None else None,
        days_since_retrain=days,
        champion_since=since,
        alerts_latest=bool(latest_alert.any(axis=None)) if len(latest_alert) else False,
        alert_batches=int(kinds.any(axis=1).sum()),
        accuracy_alert_batches=int(kinds["accuracy"].sum()),
        drift_alert_batches=int(kinds["drift"].sum()),
        window_days=window_days,
        latest_accuracy=latest_accuracy(runs),
    )


# --- realized and estimated accuracy, label coverage ---------------------------------------------

REALIZED, ESTIMATED, NO_ACCURACY = "realized", "estimated", "none"
"""What a batch's accuracy is based on (as the batch run's ``accuracy_basis`` tag says)."""


def _column(runs: pd.DataFrame, column: str) -> pd.Series:
    """A float column of a runs frame (all missing when the frame lacks it: older runs)."""
    if column in runs:
        return runs[column].astype(float)
    return pd.Series(np.nan, index=runs.index, dtype=float)


def label_coverage(runs: pd.DataFrame) -> pd.DataFrame:
    """Per run: rows ``scored``, rows ``labelled`` and their ``share`` (labelled of scored), from
    the run's ``labelled_share`` or, for runs logged before it, its row counts (``NaN``
    where a run has neither). ``sml labels`` updates these on the batch's own run."""
    scored = _column(runs, _ROWS_SCORED)
    labelled = _column(runs, _ROWS_LABELLED)
    counted = (labelled / scored.where(scored > 0)).clip(0.0, 1.0)
    share = _column(runs, _LABELLED_SHARE).fillna(counted)
    return pd.DataFrame({"scored": scored, "labelled": labelled, "share": share}, index=runs.index)


def accuracy_bases(runs: pd.DataFrame) -> pd.Series:
    """Per run, what its batch accuracy is: ``realized`` when every row it scored has its
    label (or it has a realized accuracy and no estimate: runs logged before estimates),
    ``estimated`` when labels are missing and it has an estimate, else ``none``. Judged
    from the values, not the ``accuracy_basis`` tag, which is written when the batch is
    scored: labels that arrive later update the values."""
    if runs.empty:
        return pd.Series([], index=runs.index, dtype=object)
    realized = _column(runs, _BATCH_ACCURACY).notna().to_numpy()
    estimated = _column(runs, _ESTIMATED).notna().to_numpy()
    coverage = label_coverage(runs)
    complete = (coverage["share"] >= 1.0 - 1e-9).to_numpy()
    basis = np.where(realized & (complete | ~estimated), REALIZED, np.where(estimated, ESTIMATED, NO_ACCURACY))
    return pd.Series(basis, index=runs.index, dtype=object)


@dataclass(frozen=True)
class BatchAccuracy:
    """A batch's accuracy as the Overview's headline shows it: ``basis`` says whether
    ``value`` (with its 95 % interval ``low``-``high``) is realized from labels or
    estimated from the champion's probabilities; ``realized`` is the accuracy of the rows
    labelled so far (``None``: none is)."""

    as_of: str
    basis: str
    value: float | None
    low: float | None
    high: float | None
    rows_scored: int | None
    rows_labelled: int | None
    realized: float | None


def _number(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def latest_accuracy(runs: pd.DataFrame) -> BatchAccuracy | None:
    """The latest batch's accuracy, realized or estimated (:func:`accuracy_bases`)."""
    if runs.empty:
        return None
    last = runs.iloc[-1]
    basis = str(accuracy_bases(runs.iloc[-1:]).iloc[0])
    columns = {REALIZED: (_BATCH_ACCURACY, *_BATCH_CI), ESTIMATED: (_ESTIMATED, *_ESTIMATED_CI)}.get(basis)
    value, low, high = (_number(last.get(c)) for c in columns) if columns else (None, None, None)
    coverage = label_coverage(runs.iloc[-1:]).iloc[0]
    scored, labelled = _number(coverage["scored"]), _number(coverage["labelled"])
    return BatchAccuracy(
        as_of=str(last.get(registry.tag_column(registry.AS_OF_TAG))), basis=basis, value=value, low=low, high=high,
        rows_scored=None if scored is None else int(scored), rows_labelled=None if labelled is None else int(labelled),
        realized=_number(last.get(_BATCH_ACCURACY)),
    )


# --- alerts ------------------------------------------------------------------------------------

ALERT_KINDS = ("accuracy", "drift")
"""The alerts a monitoring run raises; its ``alerts`` tag holds their messages, each
starting with ``<kind> alert``, joined with `` | ``."""


def alert_messages(text: Any) -> list[str]:
    """The messages of an ``alerts`` tag."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return []
    return [m.strip() for m in str(text).split(registry.MESSAGE_SEPARATOR) if m.strip()]


def message_kind(message: str) -> str:
    """``accuracy``, ``drift`` or ``other``: what an alert message is about."""
    return next((kind for kind in ALERT_KINDS if message.startswith(f"{kind} alert")), "other")


def alert_kinds(runs: pd.DataFrame) -> pd.DataFrame:
    """Per run, whether it raised an accuracy alert and a drift alert (columns
    ``accuracy``, ``drift``): from its ``alert_accuracy``/``alert_drift`` tags, or, for runs
    without them, from its ``alert`` tag and the kind of its messages (an alert whose
    messages were not read counts as an accuracy alert: the first rule had only that)."""
    out = pd.DataFrame(False, index=runs.index, columns=list(ALERT_KINDS))
    if runs.empty:
        return out
    alert = runs[_ALERT].eq("true") if _ALERT in runs else pd.Series(False, index=runs.index)
    messages = runs[_ALERTS] if _ALERTS in runs else pd.Series(None, index=runs.index, dtype=object)
    for kind in ALERT_KINDS:
        column = _ALERT_TAGS[kind]
        tag = runs[column] if column in runs else pd.Series(None, index=runs.index, dtype=object)
        flag = tag.eq("true").to_numpy(dtype=bool)
        untagged = (tag.isna() & alert).to_numpy(dtype=bool)  # only these need their messages read
        if untagged.any():
            flag[untagged] = [any(message_kind(m) == kind for m in alert_messages(t)) for t in messages[untagged]]
        out[kind] = flag
    unexplained = alert & ~out.any(axis=1)
    out.loc[unexplained, "accuracy"] = True
    return out


@dataclass(frozen=True)
class AlertItem:
    """One alert of one batch, as the Overview lists it."""

    as_of: str
    kind: str
    message: str


def alert_list(runs: pd.DataFrame, limit: int | None = None) -> list[AlertItem]:
    """The alerts of ``runs``, newest batch first: each message of a run's ``alerts`` tag,
    or one line naming the alert when the run wrote no message (``limit``: at most that
    many)."""
    if runs.empty:
        return []
    kinds = alert_kinds(runs)
    alerted = runs[kinds.any(axis=1)]
    messages = alerted[_ALERTS] if _ALERTS in alerted else pd.Series(None, index=alerted.index, dtype=object)
    out: list[AlertItem] = []
    for run_id in alerted.index[::-1]:
        day = str(alerted.at[run_id, registry.tag_column(registry.AS_OF_TAG)])
        found = alert_messages(messages.get(run_id))
        if found:
            out += [AlertItem(day, message_kind(m), m) for m in found]
        else:
            out += [AlertItem(day, kind, f"{kind} alert (the run wrote no message)")
                    for kind in ALERT_KINDS if kinds.at[run_id, kind]]
        if limit is not None and len(out) >= limit:
            return out[:limit]
    return out


@dataclass(frozen=True)
class LatestPrediction:
    """The newest scored row, as the latest monitoring run recorded it."""

    as_of: str
    key: str
    prediction: Any | None
    actual: Any | None
    probability: float | None
    model_version: str | None

    @property
    def correct(self) -> bool | None:
        if self.prediction is None or self.actual is None:
            return None
        return self.prediction == self.actual


def latest_prediction(runs: pd.DataFrame, spec: DatasetSpec) -> LatestPrediction | None:
    """The latest run's ``latest_*`` tags and ``latest_probability`` metric."""
    if runs.empty:
        return None
    last = runs.iloc[-1]
    probability = last.get(registry.metric_column(registry.LATEST_PROBABILITY_METRIC))
    return LatestPrediction(
        as_of=str(last.get(registry.tag_column(registry.AS_OF_TAG))),
        key=str(last.get(registry.tag_column(registry.LATEST_KEY_TAG))),
        prediction=parse_class(last.get(registry.tag_column(registry.LATEST_PREDICTION_TAG)), spec),
        actual=parse_class(last.get(registry.tag_column(registry.LATEST_ACTUAL_TAG)), spec),
        probability=None if probability is None or pd.isna(probability) else float(probability),
        model_version=last.get(registry.tag_column(registry.MODEL_VERSION_TAG)),
    )


def version_changes(runs: pd.DataFrame) -> pd.DataFrame:
    """The batches where the model version differs from the batch before (``as_of``,
    ``model_version``); the first batch is not a change."""
    if runs.empty or registry.tag_column(registry.MODEL_VERSION_TAG) not in runs:
        return pd.DataFrame(columns=[registry.AS_OF_TAG, registry.MODEL_VERSION_TAG])
    versions = runs[registry.tag_column(registry.MODEL_VERSION_TAG)]
    changed = versions.ne(versions.shift()) & versions.shift().notna()
    return pd.DataFrame({registry.AS_OF_TAG: runs.loc[changed, registry.AS_OF_TAG], registry.MODEL_VERSION_TAG: versions[changed]})


# --- the Data page --------------------------------------------------------------------------


def origin_label(origin: str) -> str:
    return ORIGIN_LABELS.get(origin, origin)


ORIGIN_ORDER = (BACKFILL_ORIGIN, SYNTHETIC_ORIGIN, LIVE_ORIGIN)
"""How the Data page orders the rows' origins: real (backfilled), synthetic, live."""


def origins_present(rows: pd.DataFrame) -> list[str]:
    """The origins ``rows`` has, in :data:`ORIGIN_ORDER` (real always first), then any other."""
    present = set(rows[ORIGIN_COLUMN].dropna().astype(str).unique())
    others = sorted(present - set(ORIGIN_ORDER))
    return [BACKFILL_ORIGIN, *(o for o in ORIGIN_ORDER[1:] if o in present), *others]


def feature_summary(rows: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """Per feature: type, schema, missing values among the rows of each origin present
    (real, synthetic, live: a column each, ``missing (real)`` always), and a short
    description of the values (range and mean, or the most common categories)."""
    origins = origins_present(rows)
    parts = {origin: rows[rows[ORIGIN_COLUMN] == origin] for origin in origins}
    out = []
    for feature in spec.features:
        column = rows[feature.name]
        line = {"feature": feature.name, "type": feature.type, "schema": schema_text(feature)}
        for origin in origins:
            line[f"missing ({origin_label(origin)})"] = _missing_text(parts[origin][feature.name])
        line.update({"values": _values_text(column, feature), "description": feature.description})
        out.append(line)
    return pd.DataFrame(out)


def schema_text(feature: FeatureSpec) -> str:
    """The schema's constraint on a feature, in words."""
    parts = []
    if feature.categories:
        parts.append("one of " + ", ".join(feature.categories))
    if feature.min is not None or feature.max is not None:
        low = "-inf" if feature.min is None else f"{feature.min:g}"
        high = "inf" if feature.max is None else f"{feature.max:g}"
        parts.append(f"{low} to {high}")
    parts.append("may be missing" if feature.nullable else "required")
    return "; ".join(parts)


def _missing_text(column: pd.Series) -> str:
    if column.empty:
        return "no rows"
    missing = int(column.isna().sum())
    return f"{missing} ({missing / len(column):.1%})"


def _values_text(column: pd.Series, feature: FeatureSpec) -> str:
    present = column.dropna()
    if present.empty:
        return "no values"
    if feature.is_numeric:
        values = present.astype(float)
        return f"{values.min():g} to {values.max():g}, mean {values.mean():.3g}"
    counts = present.astype(str).value_counts()
    top = ", ".join(f"{k} {v / len(present):.0%}" for k, v in counts.head(4).items())
    return top + (", ..." if len(counts) > 4 else "")


def encoded_features(rows: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """Numeric features as they are and categorical ones one-hot (``feature=value``
    columns, a missing value being its own ``feature=<missing>`` column when present)."""
    parts = {}
    for feature in spec.features:
        column = rows[feature.name]
        if feature.is_numeric:
            parts[feature.name] = pd.to_numeric(column, errors="coerce").astype(float)
            continue
        values = list(feature.categories or sorted(column.dropna().astype(str).unique()))
        for value in values:
            parts[f"{feature.name}={value}"] = (column.astype(object) == value).astype(float)
        if column.isna().any():
            parts[f"{feature.name}=<missing>"] = column.isna().astype(float)
    return pd.DataFrame(parts, index=rows.index)


def label_correlations(rows: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """Pearson correlation of each (encoded) feature with each class indicator: rows are
    features, columns class names. Rows without a label (live rows whose label has not
    come) are left out; so are missing numeric values, pairwise; a constant column has
    no correlation (NaN)."""
    rows = rows[rows[spec.label].notna()]
    features = encoded_features(rows, spec)
    out = {}
    for cls in spec.classes:
        indicator = (rows[spec.label] == cls).astype(float)
        out[class_label(cls, spec)] = features.apply(lambda col, ind=indicator: _corr(col, ind))
    return pd.DataFrame(out, index=features.columns)


def _corr(a: pd.Series, b: pd.Series) -> float:
    mask = a.notna() & b.notna()
    if mask.sum() < 3:
        return math.nan
    x, y = a[mask].to_numpy(), b[mask].to_numpy()
    if np.std(x) == 0 or np.std(y) == 0:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


def select_origin(rows: pd.DataFrame, which: str) -> pd.DataFrame:
    """The ``real`` (backfill), ``synthetic`` or ``live`` rows (an origin's label,
    :data:`ORIGIN_LABELS`), or ``all`` of them."""
    if which == "all":
        return rows
    origin = next((o for o, label in ORIGIN_LABELS.items() if label == which), which)
    return rows[rows[ORIGIN_COLUMN] == origin]


# --- data quality over time (the Overview) ------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    """What a model saw in training: the range of each numeric feature and the values of
    each text feature (missing values aside)."""

    low: dict[str, float]
    high: dict[str, float]
    values: dict[str, frozenset[str]]


def reference_profile(rows: pd.DataFrame, spec: DatasetSpec) -> Profile:
    """The :class:`Profile` of ``rows`` (say, a model's training rows)."""
    low, high, values = {}, {}, {}
    for feature in spec.features:
        present = rows[feature.name].dropna()
        if feature.is_numeric:
            numbers = pd.to_numeric(present, errors="coerce").dropna().astype(float)
            low[feature.name] = float(numbers.min()) if len(numbers) else math.nan
            high[feature.name] = float(numbers.max()) if len(numbers) else math.nan
        else:
            values[feature.name] = frozenset(present.astype(str).unique().tolist())
    return Profile(low, high, values)


QUALITY_COLUMNS = ("rows", "missing_share", "out_of_range_share", "unseen_categories", "missing_detail",
                   "out_of_range_detail", "unseen_detail")
MAX_DETAIL_ITEMS = 4


def _detail(counts: pd.DataFrame, total: pd.Series | None = None) -> pd.Series:
    """Per row of ``counts`` (runs x features): the features with a count, largest first,
    as ``age 20%, fare 5%`` (shares of ``total``) or ``age 3`` (counts)."""
    values = counts.to_numpy(dtype=float)
    names = list(counts.columns)
    totals = total.reindex(counts.index).to_numpy(dtype=float) if total is not None else None
    # Largest first, ties in feature order (a stable sort of the negated counts).
    order = np.argsort(-values, axis=1, kind="stable")
    out = []
    for i in range(len(values)):
        parts: list[str] = []
        for j in order[i]:
            value = values[i, j]
            if not value > 0:
                break
            if len(parts) == MAX_DETAIL_ITEMS:
                parts.append("...")
                break
            parts.append(f"{names[j]} {value / totals[i]:.0%}" if totals is not None and totals[i] else f"{names[j]} {int(value)}")
        out.append(", ".join(parts))
    return pd.Series(out, index=counts.index, dtype=object)


def data_quality(
    predictions: pd.DataFrame, rows: pd.DataFrame, spec: DatasetSpec, profiles: dict[str, Profile], default: Profile
) -> pd.DataFrame:
    """Per monitoring run (the ``run_id`` of its predictions): how many rows it scored and how
    their features compare with what its model was trained on.

    Args:
        predictions: The predictions group (``<key>``, ``model_version``, ``run_id``).
        rows: The feature group (``<key>`` and the features).
        spec: The dataset.
        profiles: Model version (as text) -> the :class:`Profile` of its training rows.
        default: The profile of a version without one (the real rows, say).

    Returns:
        Indexed by run id, the :data:`QUALITY_COLUMNS`: ``rows``; ``missing_share``, the
        share of the batch's feature values that are missing; ``out_of_range_share``, the
        share of its numeric values outside the range the model's training rows span;
        ``unseen_categories``, how many distinct values of text features its training
        rows never had; and per figure the features behind it, as text.
    """
    key = spec.primary_key
    names = list(spec.feature_names)
    if predictions.empty:
        return pd.DataFrame(columns=list(QUALITY_COLUMNS), index=pd.Index([], name="run_id"))
    features = rows.drop_duplicates(key, keep="last").set_index(key)[names]
    values = features.reindex(predictions[key].to_numpy()).reset_index(drop=True)
    run = pd.Series(predictions["run_id"].astype(str).to_numpy(), name="run_id")
    version = pd.Series(predictions[MODEL_VERSION_COLUMN].astype(str).to_numpy())
    codes, uniques = pd.factorize(version)  # rows of each model version by integer comparisons
    chosen = {v: profiles.get(v, default) for v in uniques}
    counts = run.value_counts(sort=False)

    missing = values.isna()
    out_of_range = pd.DataFrame(False, index=values.index, columns=names)
    numeric_present = pd.DataFrame(False, index=values.index, columns=names)
    unseen_pairs = []
    for feature in spec.features:
        column = values[feature.name]
        if feature.is_numeric:
            numbers = pd.to_numeric(column, errors="coerce").astype(float)
            low = version.map({v: p.low.get(feature.name, math.nan) for v, p in chosen.items()}).astype(float)
            high = version.map({v: p.high.get(feature.name, math.nan) for v, p in chosen.items()}).astype(float)
            out_of_range[feature.name] = (numbers < low) | (numbers > high)
            numeric_present[feature.name] = numbers.notna()
        else:
            text = column.astype(object).where(column.notna(), None)
            seen = np.zeros(len(values), dtype=bool)
            for k, profile in enumerate(chosen.values()):
                mine = codes == k
                known = sorted(profile.values.get(feature.name, frozenset()))
                seen[mine] = text[mine].astype(str).isin(known).to_numpy(dtype=bool)
            unseen = column.notna() & ~seen
            if unseen.any():
                unseen_pairs.append(pd.DataFrame({"run_id": run[unseen], "value": feature.name + "=" + text[unseen].astype(str)}))
    by_run = run.to_numpy()
    missing_counts = missing.groupby(by_run).sum()
    range_counts = out_of_range.groupby(by_run).sum()
    numeric_counts = numeric_present.groupby(by_run).sum().sum(axis=1)
    out = pd.DataFrame(index=pd.Index(counts.index, name="run_id"))
    out["rows"] = counts.astype(int)
    out["missing_share"] = missing_counts.sum(axis=1) / (counts * max(len(names), 1))
    out["out_of_range_share"] = (range_counts.sum(axis=1) / numeric_counts.where(numeric_counts > 0)).fillna(0.0)
    if unseen_pairs:
        pairs = pd.concat(unseen_pairs).drop_duplicates()
        grouped = pairs.groupby("run_id")["value"]
        out["unseen_categories"] = grouped.size().reindex(out.index, fill_value=0).astype(int)
        listed = grouped.apply(lambda v: ", ".join(sorted(v)[:MAX_DETAIL_ITEMS]) + (", ..." if len(v) > MAX_DETAIL_ITEMS else ""))
        out["unseen_detail"] = listed.reindex(out.index).fillna("")
    else:
        out["unseen_categories"] = 0
        out["unseen_detail"] = ""
    out["missing_detail"] = _detail(missing_counts, counts).reindex(out.index).fillna("")
    out["out_of_range_detail"] = _detail(range_counts).reindex(out.index).fillna("")
    return out[list(QUALITY_COLUMNS)]
