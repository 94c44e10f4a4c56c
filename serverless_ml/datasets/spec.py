"""Dataset specs: everything the pipelines need to know about a dataset, declared once.

A spec names the source, the label and its classes, the primary key, the feature schema
(type; numeric range or allowed categories; nullable or not), the raw-to-feature
transform and what the synthetic generator needs. Built-in datasets (``iris``,
``titanic``) declare theirs in Python; any other CSV of a tabular classification problem
is described by a YAML or TOML file and uses the generic transform (rename and select).

Stored rows have the columns ``[primary_key, event_time, *features, label, origin]``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from serverless_ml.dates import date_problem
from serverless_ml.errors import SpecError
from serverless_ml.feature_store.base import ORIGIN_COLUMN, Feature

EVENT_TIME_COLUMN = "event_time"
NUMERIC_TYPES = ("bigint", "double")
FEATURE_TYPES = ("bigint", "double", "string")
DEFAULT_BACKFILL_EVENT_TIME = "2024-01-01"
DEFAULT_JITTER = 0.1

PREDICTIONS_SUFFIX = "_predictions"
"""The dataset's predictions group is ``<name>_predictions``."""
RESERVED_NAME_SUFFIXES = (PREDICTIONS_SUFFIX,)
"""A dataset named with one of these would share a feature group the project writes for
another dataset (``titanic_predictions`` is Titanic's predictions table). The training
feature view ``<name>_training`` is not here: views are apart from groups, in both stores."""

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
"""What a stored column's name (key, label, feature) must look like: Hopsworks wants
identifiers, and the Delta merge predicate names the key column (delta-rs cannot even
quote a name holding a backtick)."""

DATASET_NAME = re.compile(r"[a-z][a-z0-9_]*")
MAX_DATASET_NAME_LENGTH = 64
"""A dataset's name becomes folder and lock-file names (``<name>_predictions.lock``, a
file system allows 255 bytes), experiment and model names: 64 characters leave room."""

STRING_MISSING = ("",)
"""Text that means "missing" in a ``string`` column by default: only the empty field, so
``NA``, ``None`` or ``null`` are kept as written."""
NUMERIC_MISSING = (
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
)
"""Text that means "missing" in a ``bigint``/``double`` column by default: the empty field
and the words pandas' CSV reader took as missing before columns were read as text (so no
numeric file reads differently); none of them is a number."""


def default_missing(type_: str) -> tuple[str, ...]:
    """The texts that mean "missing" in a column of ``type_`` unless the spec says otherwise."""
    return NUMERIC_MISSING if type_ in NUMERIC_TYPES else STRING_MISSING


def name_problem(kind: str, name: str) -> str | None:
    """Why ``name`` cannot name a stored column, or ``None``."""
    if IDENTIFIER.fullmatch(name):
        return None
    how = "source_column" if kind == "feature" else f"{{column: NAME, source_column: {name!r}}}"
    return (f"{kind} {name!r} must start with a letter or underscore and hold only letters, digits and "
            f"underscores (read a file's column of another name with {how})")


def dataset_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a dataset, or ``None``."""
    if not isinstance(name, str) or not DATASET_NAME.fullmatch(name):
        return f"name {name!r} must be lower case letters, digits and underscores, starting with a letter"
    if len(name) > MAX_DATASET_NAME_LENGTH:
        return (f"name {name[:40]!r}... is {len(name)} characters long, longer than {MAX_DATASET_NAME_LENGTH} "
                "(it names tables, folders, lock files, experiments and models)")
    for suffix in RESERVED_NAME_SUFFIXES:
        if name.endswith(suffix):
            return (f"name {name!r} ends in {suffix!r}, which names the project's own tables "
                    f"('{name[: -len(suffix)]}{suffix}' holds the predictions of dataset '{name[: -len(suffix)]}'); "
                    "choose another name")
    return None


def event_time_problem(value: str) -> str | None:
    """Why ``value`` cannot be the backfill's event time, or ``None``: an ISO date or
    date-time. A relative time (``now``, ``today``) would give every re-run new rows."""
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        return (f"backfill_event_time {value!r} is not a date: give a fixed ISO date such as 2024-01-01 "
                "(a relative time such as 'now' would rewrite every row on each re-run)")
    return date_problem(when.date(), "backfill_event_time")

Transform = Callable[[pd.DataFrame], pd.DataFrame]


@dataclass(frozen=True)
class FeatureSpec:
    """One feature column.

    Attributes:
        name: Column name in the feature store (lower snake case).
        type: ``bigint``, ``double`` or ``string``.
        source_column: Raw column it comes from (used in error messages and by the
            generic transform); ``None`` for derived features.
        min, max: Inclusive numeric range.
        categories: Allowed values of a string feature.
        nullable: Whether missing values are allowed (and kept as missing).
        description: Shown in the feature store and on the site.
        missing_values: The texts of the source that mean "missing" here; ``None``: the
            spec's ``missing_values``, else :func:`default_missing` of the type.
    """

    name: str
    type: str
    source_column: str | None = None
    min: float | None = None
    max: float | None = None
    categories: tuple[str, ...] | None = None
    nullable: bool = False
    description: str = ""
    missing_values: tuple[str, ...] | None = None

    @property
    def is_numeric(self) -> bool:
        return self.type in NUMERIC_TYPES

    @property
    def display_column(self) -> str:
        """How the user knows the column, quoted: its raw name, then the feature name
        where the two differ (``'Fare' (feature 'fare')``)."""
        if self.source_column and self.source_column != self.name:
            return f"'{self.source_column}' (feature '{self.name}')"
        return f"'{self.name}'"


@dataclass(frozen=True)
class SyntheticSpec:
    """How the daily generator makes plausible rows.

    Attributes:
        jitter: Standard deviation of the noise added to each jittered feature, as a
            fraction of the class's local spread around the value.
        jitter_features: Numeric features to jitter (default: every ``double``
            feature); the others are resampled as they are, so combinations stay real.
    """

    jitter: float = DEFAULT_JITTER
    jitter_features: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        # NaN passes `< 0` and turns every jittered value into a missing one.
        if isinstance(self.jitter, bool) or not isinstance(self.jitter, (int, float)) or not math.isfinite(self.jitter) \
                or self.jitter < 0:
            raise SpecError(f"synthetic jitter must be a finite number >= 0, got {self.jitter!r}")


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset, declared once.

    Attributes:
        name: Dataset name; also the feature group and registered model name.
        version: Feature group version.
        description: One line shown in the store and on the site.
        source_url: Public URL of the CSV (downloaded into a cache when needed).
        raw_columns: Columns the source must have.
        label: Label column name (in the source and in the store).
        label_type: ``bigint`` or ``string``.
        classes: The label values, in display order.
        positive_class: Binary problems: the class that precision, recall, F1 and ROC AUC
            are about (a spec file's ``positive_class``; default the second of
            ``classes``). ``None`` for multiclass problems, whose metrics are macro
            averages over every class.
        class_names: Human names of the classes (same order as ``classes``).
        primary_key: Key column in the store.
        primary_key_source: Raw column holding the key, or ``None`` to number rows 1..N.
        primary_key_type: ``bigint`` or ``string``.
        source_path: A local source file named by the spec (relative to the spec file).
        label_source: Raw column holding the label, when it is named differently.
        features: The feature schema.
        transform: Pure function from the raw frame to ``[primary_key, *features]``
            (the label is validated and copied separately; same index as the raw frame, so errors can name raw rows).
        backfill_event_time: Event time given to backfilled rows (ISO date).
        event_time_column: The raw column holding each live row's event time (an ISO
            date or date-time; naive means UTC), read by ``sml ingest``; ``None``: the
            rows take ``--date`` or the time of the ingest. The backfill does not read it.
        synthetic: Generator settings.
        sklearn_loader: For datasets scikit-learn ships: returns the raw frame offline.
        derive: Recomputes derived features of feature rows (after synthetic drift).
        numeric_products: The model pipeline adds the pairwise products of the numeric
            features (after imputation), so the forest's axis-aligned splits can use an
            area such as petal length x width. Computed inside the model, so batch
            inference, the predictor and serving pass raw features only.
        spec_path: File the spec was read from (``None`` for built-ins).
        missing_values: The texts that mean "missing" in every column a feature does not
            override; ``None``: :func:`default_missing` of each column's type.
    """

    name: str
    label: str
    label_type: str
    classes: tuple[Any, ...]
    primary_key: str
    features: tuple[FeatureSpec, ...]
    transform: Transform
    raw_columns: tuple[str, ...]
    version: int = 1
    description: str = ""
    source_url: str | None = None
    class_names: tuple[str, ...] | None = None
    primary_key_source: str | None = None
    primary_key_type: str = "bigint"
    source_path: str | None = None
    label_source: str | None = None
    backfill_event_time: str = DEFAULT_BACKFILL_EVENT_TIME
    synthetic: SyntheticSpec = field(default_factory=SyntheticSpec)
    sklearn_loader: Callable[[], pd.DataFrame] | None = None
    derive: Transform | None = None
    numeric_products: bool = False
    spec_path: Path | None = None
    positive_class: Any = None
    missing_values: tuple[str, ...] | None = None
    event_time_column: str | None = None
    typed_path: str | None = field(default=None, compare=False)
    """The spec file's path as the user typed it (``None`` for built-ins)."""
    slices: tuple[str, ...] | None = None
    """The features monitoring runs report accuracy per slice of (a spec file's
    ``slices``); ``None``: every feature (:mod:`serverless_ml.inference.slices`)."""

    @property
    def dataset_arg(self) -> str:
        """What ``--dataset`` takes to name this dataset again, for hints such as "run `sml
        features --dataset <it>` first": the spec path as typed (quoted for a shell when it
        must be), or the built-in's name."""
        import shlex

        return shlex.quote(self.typed_path) if self.typed_path else self.name

    def __post_init__(self) -> None:
        # Built-ins pass the checks a spec file's parser makes, named by the dataset.
        problems = [dataset_name_problem(self.name), event_time_problem(self.backfill_event_time)]
        problems += [name_problem(kind, name) for kind, name in
                     (("primary key", self.primary_key), ("label", self.label),
                      *(("feature", f.name) for f in self.features))]
        for problem in problems:
            if problem:
                raise SpecError(f"dataset '{self.name}': {problem}")
        if len(self.classes) == 2 and self.positive_class is None:
            object.__setattr__(self, "positive_class", self.classes[1])
        if self.positive_class is not None and (len(self.classes) != 2 or self.positive_class not in self.classes):
            raise SpecError(f"dataset '{self.name}': positive_class {self.positive_class!r} must be one of its two "
                            f"classes ({', '.join(map(str, self.classes))})")
        unknown = [s for s in self.slices or () if s not in self.feature_names]
        if unknown:
            raise SpecError(f"dataset '{self.name}': slices: unknown feature(s) {', '.join(map(repr, unknown))}")

    @property
    def raw_label(self) -> str:
        return self.label_source or self.label

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def predictions_group(self) -> str:
        """The feature group of the dataset's predictions (the features' group is ``name``)."""
        return f"{self.name}{PREDICTIONS_SUFFIX}"

    @property
    def predictions_version(self) -> int:
        """Version of ``<dataset>_predictions``: the feature group's own version. A bumped
        ``version:`` (a changed schema) starts a new predictions table, since its rows have
        other columns; the old version's table stays as history."""
        return self.version

    def missing_for(self, type_: str, feature: FeatureSpec | None = None) -> frozenset[str]:
        """The texts that mean "missing" in a column of ``type_`` (a feature's own list
        first, then the spec's, then the type's default)."""
        if feature is not None and feature.missing_values is not None:
            return frozenset(feature.missing_values)
        if self.missing_values is not None:
            return frozenset(self.missing_values)
        return frozenset(default_missing(type_))

    @property
    def store_columns(self) -> list[str]:
        """Column order of the feature group."""
        return [self.primary_key, EVENT_TIME_COLUMN, *self.feature_names, self.label, ORIGIN_COLUMN]

    def feature(self, name: str) -> FeatureSpec:
        for feature in self.features:
            if feature.name == name:
                return feature
        raise SpecError(f"dataset '{self.name}' has no feature '{name}' (features: {', '.join(self.feature_names)})")

    def store_schema(self) -> list[Feature]:
        """The feature group schema (feature-store types)."""
        described = {f.name: f.description for f in self.features}
        types = {f.name: f.type for f in self.features}
        types.update(
            {self.primary_key: self.primary_key_type, EVENT_TIME_COLUMN: "timestamp", self.label: self.label_type, ORIGIN_COLUMN: "string"}
        )
        return [Feature(c, types[c], described.get(c, "")) for c in self.store_columns]

    def class_name(self, value: Any) -> str:
        if self.class_names is None:
            return str(value)
        return self.class_names[list(self.classes).index(value)]


def _as_tuple(value: Any) -> tuple[Any, ...] | None:
    return None if value is None else tuple(value)


_QUOTE_HINT = "YAML reads 01 unquoted as the number 1 and yes as true"


def _texts(value: Any, what: str, example: str, allow_empty: bool = False) -> tuple[str, ...]:
    """A spec's list of texts compared with the file's fields, exactly as written: every
    item must be a string (quoted in YAML), so ``01`` cannot silently become ``1``.

    Raises:
        SpecError: without the file's name (the caller adds it).
    """
    if not isinstance(value, list) or (not value and not allow_empty):
        raise SpecError(f"{what} must be a {'' if allow_empty else 'non-empty '}list of quoted texts, e.g. {example}")
    for item in value:
        if not isinstance(item, str):
            shown = "null" if item is None else repr(item)
            raise SpecError(f"{what}: {shown} is not text; quote every item, e.g. {example} ({_QUOTE_HINT})")
    return tuple(value)


def _parse_missing(value: Any, what: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    texts = _texts(value, f"{what}missing_values", '["", "NA", "?"]', allow_empty=True)
    if len(set(texts)) != len(texts):
        raise SpecError(f"{what}missing_values lists a text twice")
    return texts


FEATURE_KEYS = frozenset({"type", "source_column", "min", "max", "categories", "nullable", "description", "missing_values"})


def _feature_bounds(name: str, raw: Mapping[str, Any]) -> tuple[Any, Any]:
    """A feature's ``min`` and ``max``: numbers (not NaN), ``min <= max``."""
    low, high = raw.get("min"), raw.get("max")
    for bound, value in (("min", low), ("max", high)):
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value)):
            raise SpecError(f"feature '{name}' {bound} must be a number, got {value!r}")
    if low is not None and high is not None and low > high:
        raise SpecError(f"feature '{name}' has min {low} greater than max {high}")
    return low, high


def _feature_categories(name: str, raw: Mapping[str, Any], type_: str) -> tuple[str, ...] | None:
    """A string feature's ``categories``: texts as written, each once."""
    categories = raw.get("categories")
    if categories is None:
        return None
    if type_ != "string":
        raise SpecError(f"feature '{name}': categories must be a non-empty list on a string feature")
    texts = _texts(categories, f"feature '{name}': categories", '["01", "02"]')
    if len(set(texts)) != len(texts):
        raise SpecError(f"feature '{name}': categories list a value twice")
    return texts


def _parse_feature(name: str, raw: Any) -> FeatureSpec:
    """One entry of ``features:`` (errors without the file's name: :func:`parse_spec` adds it)."""
    if not isinstance(raw, Mapping):
        raise SpecError(f"feature '{name}' must be a mapping with at least 'type'")
    problem = name_problem("feature", name)
    if problem:
        raise SpecError(problem)
    unknown = set(raw) - FEATURE_KEYS
    if unknown:
        raise SpecError(f"feature '{name}' has unknown key(s) {', '.join(sorted(unknown))}")
    type_ = raw.get("type")
    if type_ not in FEATURE_TYPES:
        raise SpecError(f"feature '{name}' has type {type_!r}, expected one of {', '.join(FEATURE_TYPES)}")
    low, high = _feature_bounds(name, raw)
    categories = _feature_categories(name, raw, type_)
    missing_values = _parse_missing(raw.get("missing_values"), f"feature '{name}': ")
    if (low is not None or high is not None) and type_ == "string":
        raise SpecError(f"feature '{name}': min/max apply to numeric features only")
    nullable = raw.get("nullable", False)
    if not isinstance(nullable, bool):
        raise SpecError(f"feature '{name}': nullable must be true or false")
    return FeatureSpec(
        name=name,
        type=type_,
        source_column=str(raw.get("source_column", name)),
        min=low,
        max=high,
        categories=categories,
        nullable=nullable,
        description=str(raw.get("description", "")),
        missing_values=missing_values,
    )


def generic_transform(
    spec_features: Sequence[FeatureSpec], primary_key: str, primary_key_source: str | None
) -> Transform:
    """The transform of a spec-only dataset: rename raw columns and keep the declared ones."""

    def transform(raw: pd.DataFrame) -> pd.DataFrame:
        out = pd.DataFrame(index=raw.index)
        if primary_key_source is None:
            out[primary_key] = pd.RangeIndex(1, len(raw) + 1)
        else:
            out[primary_key] = raw[primary_key_source]
        for feature in spec_features:
            out[feature.name] = raw[feature.source_column or feature.name]
        return out

    return transform


def _parse_positive_class(raw: Any, classes: Sequence[Any], label_type: str) -> Any:
    """The spec's ``positive_class``, typed like its classes; default the second class of
    a binary problem, ``None`` for multiclass."""
    if raw is None:
        return classes[1] if len(classes) == 2 else None
    if len(classes) != 2:
        raise SpecError(f"positive_class applies to two classes only; this spec has {len(classes)} "
                        f"(multiclass precision, recall, F1 and ROC AUC are macro averages over every class)")
    value: int | str | None
    if label_type == "bigint":
        value = raw if isinstance(raw, int) and not isinstance(raw, bool) else None
        kind = "an integer label"
    else:
        # Compared with the file's labels as written: text, not YAML's reading of `yes`.
        value = raw if isinstance(raw, str) else None
        kind = "a label"
    if value is None or value not in classes:
        hint = f"; quote it ({_QUOTE_HINT})" if label_type == "string" and isinstance(raw, (int, float, bool)) else ""
        raise SpecError(f"positive_class {raw!r} must be {kind} listed in classes "
                        f"({', '.join(map(str, classes))}){hint}")
    return value


def _parse_column(raw: Any, what: str) -> tuple[str, str]:
    """A column named in the store (``raw`` or ``raw['column']``) and the file's column it
    is read from (``raw['source_column']``, default the same name)."""
    if isinstance(raw, Mapping):
        column, source = raw.get("column"), raw.get("source_column", raw.get("column"))
    else:
        column = source = raw
    if not isinstance(column, str) or not isinstance(source, str) or not column or not source:
        raise SpecError(f"{what} must be a column name or {{column: NAME, source_column: FILE_COLUMN}}")
    problem = name_problem(what, column)
    if problem:
        raise SpecError(problem)
    return column, source


# numeric_products adds n(n-1)/2 columns for n numeric features: 45 at this limit.
MAX_PRODUCT_FEATURES = 10

Parsed = dict[str, Any]
"""What the keys checked so far produced (a key's check may read an earlier key's result)."""


def _check_name(value: Any, parsed: Parsed) -> None:
    problem = dataset_name_problem(value)
    if problem:
        raise SpecError(problem)
    parsed["name"] = value


def _check_features(value: Any, parsed: Parsed) -> None:
    if not isinstance(value, Mapping) or not value:
        raise SpecError("'features' must be a non-empty mapping of feature name to its schema")
    parsed["features"] = tuple(_parse_feature(str(name), raw) for name, raw in value.items())


def _check_label(value: Any, parsed: Parsed) -> None:
    unknown = set(map(str, value)) - {"column", "source_column"} if isinstance(value, Mapping) else set()
    if unknown:
        raise SpecError(f"label has unknown key(s) {', '.join(sorted(unknown))}")
    parsed["label"], parsed["label_source"] = _parse_column(value, "label")


def _check_classes(value: Any, parsed: Parsed) -> None:
    """Integers (a ``bigint`` label) or texts as written (a ``string`` label), each once."""
    if not isinstance(value, list) or len(value) < 2:
        raise SpecError("'classes' must list at least two label values")
    if all(isinstance(c, int) and not isinstance(c, bool) for c in value):
        label_type = "bigint"
    else:
        label_type = "string"
        value = list(_texts(value, "'classes' of a text label", '["yes", "no"]; or only integers: [0, 1]'))
    if len(set(value)) != len(value):
        raise SpecError("'classes' has duplicates")
    parsed["classes"], parsed["label_type"] = tuple(value), label_type


def _check_positive_class(value: Any, parsed: Parsed) -> None:
    parsed["positive_class"] = _parse_positive_class(value, parsed["classes"], parsed["label_type"])


def _check_class_names(value: Any, parsed: Parsed) -> None:
    if value is not None and (not isinstance(value, list) or len(value) != len(parsed["classes"])):
        raise SpecError("'class_names' must list one name per class")
    parsed["class_names"] = _as_tuple(value)


PRIMARY_KEY_KEYS = frozenset({"column", "type", "source_column"})
PRIMARY_KEY_TYPES = ("bigint", "string")


def _check_primary_key(value: Any, parsed: Parsed) -> None:
    """The key column (default: rows numbered ``row_id``), its type and its file column;
    no feature may share its name, the label's or a reserved column's."""
    key_type = "bigint"
    if value is None:
        key, key_source = "row_id", None
    else:
        if isinstance(value, Mapping) and ("column" not in value or value.get("type", "bigint") not in PRIMARY_KEY_TYPES
                                           or set(value) - PRIMARY_KEY_KEYS):
            raise SpecError("primary_key must be a column name or "
                            "{column: NAME, type: bigint|string, source_column: FILE_COLUMN}")
        key, key_source = _parse_column(value, "primary key")
        if isinstance(value, Mapping):
            key_type = value.get("type", "bigint")
    reserved = {EVENT_TIME_COLUMN, ORIGIN_COLUMN, parsed["label"], key}
    clash = [f.name for f in parsed["features"] if f.name in reserved]
    if clash:
        raise SpecError(f"feature name(s) {', '.join(clash)} clash with the label, key or a reserved column")
    parsed["primary_key"], parsed["primary_key_source"], parsed["primary_key_type"] = key, key_source, key_type


def _check_source(value: Any, parsed: Parsed) -> None:
    source = value or {}
    if isinstance(source, str):
        source = {"url": source}
    if not isinstance(source, Mapping):
        raise SpecError("'source' must be a URL or a mapping with 'url' or 'path'")
    url, path = source.get("url"), source.get("path")
    parsed["source_url"] = str(url) if url else None
    parsed["source_path"] = str(path) if path else None


def _check_synthetic(value: Any, parsed: Parsed) -> None:
    raw = value or {}
    try:
        synthetic = SyntheticSpec(
            jitter=float(raw.get("jitter", DEFAULT_JITTER)),
            jitter_features=_as_tuple(raw.get("jitter_features")),
        )
    except (TypeError, ValueError, AttributeError):
        raise SpecError("'synthetic' must be a mapping with a numeric 'jitter'") from None
    for jittered in synthetic.jitter_features or ():
        if jittered not in {f.name for f in parsed["features"] if f.is_numeric}:
            raise SpecError(f"synthetic jitter feature '{jittered}' is not a numeric feature")
    parsed["synthetic"] = synthetic


def _check_version(value: Any, parsed: Parsed) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise SpecError("version must be a positive integer")
    parsed["version"] = value


def _check_backfill_event_time(value: Any, parsed: Parsed) -> None:
    text = str(value)
    problem = event_time_problem(text)
    if problem:
        raise SpecError(problem)
    parsed["backfill_event_time"] = text


def _check_missing_values(value: Any, parsed: Parsed) -> None:
    parsed["missing_values"] = _parse_missing(value, "")


def _check_event_time_column(value: Any, parsed: Parsed) -> None:
    """The file's column of each live row's event time: a column name, not the label's
    (a row's event time is known when it arrives, its label maybe not)."""
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise SpecError(f"event_time_column must be the name of the source's column of each row's event time, got {value!r}")
    if value is not None and value == parsed["label_source"]:
        raise SpecError(f"event_time_column {value!r} is the label's column; name the column of each row's event time")
    parsed["event_time_column"] = value


def _check_numeric_products(value: Any, parsed: Parsed) -> None:
    if not isinstance(value, bool):
        raise SpecError("numeric_products must be true or false")
    n_numeric = sum(f.is_numeric for f in parsed["features"])
    if value and not 2 <= n_numeric <= MAX_PRODUCT_FEATURES:
        raise SpecError(f"numeric_products needs 2 to {MAX_PRODUCT_FEATURES} numeric features, "
                        f"the spec has {n_numeric}")
    parsed["numeric_products"] = value


def _check_description(value: Any, parsed: Parsed) -> None:
    parsed["description"] = str(value)


def _check_slices(value: Any, parsed: Parsed) -> None:
    """The slice features: a list of feature names, each once (``[]``: no slices)."""
    if value is None:
        parsed["slices"] = None
        return
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SpecError(f"slices must be a list of feature names, got {value!r}")
    names = [f.name for f in parsed["features"]]
    unknown = [v for v in value if v not in names]
    if unknown:
        raise SpecError(f"slices: unknown feature(s) {', '.join(map(repr, unknown))} (features: {', '.join(names)})")
    if len(set(value)) != len(value):
        raise SpecError("slices lists a feature twice")
    parsed["slices"] = tuple(value)


REQUIRED = object()
"""The default of a key a spec must state."""

SPEC_KEYS: tuple[tuple[str, Any, Callable[[Any, Parsed], None]], ...] = (
    # (key, default when absent or REQUIRED, check), checked in this order: a check may
    # read what the rows above it produced.
    ("name", REQUIRED, _check_name),
    ("features", REQUIRED, _check_features),
    ("label", REQUIRED, _check_label),
    ("classes", REQUIRED, _check_classes),
    ("positive_class", None, _check_positive_class),
    ("class_names", None, _check_class_names),
    ("primary_key", None, _check_primary_key),
    ("source", None, _check_source),
    ("synthetic", None, _check_synthetic),
    ("version", 1, _check_version),
    ("backfill_event_time", DEFAULT_BACKFILL_EVENT_TIME, _check_backfill_event_time),
    ("missing_values", None, _check_missing_values),
    ("event_time_column", None, _check_event_time_column),
    ("numeric_products", False, _check_numeric_products),
    ("description", "", _check_description),
    ("slices", None, _check_slices),
)
"""The keys of a spec file, the default of each and the function that checks its value."""
REQUIRED_KEYS = ("name", "label", "classes", "features")
"""The keys a spec must state, in the order a missing one is reported."""
_SPEC_KEYS = frozenset(key for key, _, _ in SPEC_KEYS)


def _parse_keys(data: Any) -> Parsed:
    """Check every key of a parsed spec document (errors without the file's name)."""
    if not isinstance(data, Mapping):
        raise SpecError("expected a mapping at the top level")
    unknown = set(data) - _SPEC_KEYS
    if unknown:
        raise SpecError(f"unknown key(s) {', '.join(sorted(unknown))} (allowed: {', '.join(sorted(_SPEC_KEYS))})")
    for key in REQUIRED_KEYS:
        if key not in data:
            raise SpecError(f"missing required key '{key}'")
    parsed: Parsed = {}
    for key, default, check in SPEC_KEYS:
        check(data.get(key, default), parsed)
    return parsed


def parse_spec(data: Any, where: str) -> DatasetSpec:
    """Build a spec from a parsed YAML/TOML document; ``where`` names it in errors.

    Each key is checked by its row of :data:`SPEC_KEYS`, in order; the first problem is
    the one-line error, prefixed with ``where``.
    """
    try:
        parsed = _parse_keys(data)
    except SpecError as exc:
        raise SpecError(f"{where}: {exc}") from None
    features, label, label_source = parsed["features"], parsed["label"], parsed["label_source"]
    key_source = parsed["primary_key_source"]
    raw_columns = tuple(dict.fromkeys(
        ([key_source] if key_source else []) + [f.source_column or f.name for f in features] + [label_source]
    ))
    return DatasetSpec(
        **{name: parsed[name] for name in (
            "name", "version", "description", "source_url", "label", "label_type", "classes", "positive_class",
            "class_names", "primary_key", "primary_key_source", "primary_key_type", "source_path", "features",
            "backfill_event_time", "synthetic", "numeric_products", "missing_values", "event_time_column", "slices",
        )},
        label_source=label_source if label_source != label else None,
        transform=generic_transform(features, parsed["primary_key"], key_source),
        raw_columns=raw_columns,
    )


MAX_SPEC_FILE_BYTES = 1024 * 1024
"""A spec file is a page of settings; anything larger is refused before it is parsed."""


class _YamlAlias(Exception):
    def __init__(self, anchor: str, line: int) -> None:
        super().__init__(anchor, line)
        self.anchor, self.line = anchor, line


class _SpecYamlLoader(yaml.SafeLoader):
    """YAML's safe loader without aliases (``*name``, and ``<<: *name`` merges).

    An alias repeats a node without repeating its text, so a few hundred bytes of nested
    aliases (a "billion laughs") expand to gigabytes once the value is used (a
    ``description:`` is turned into text). A spec has no need of them.
    """

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _YamlAlias(str(event.anchor), event.start_mark.line + 1)
        return super().compose_node(parent, index)


def _read_spec_text(path: Path) -> str:
    """The text of a spec file: a regular file (a named pipe would block the read) of at
    most :data:`MAX_SPEC_FILE_BYTES`, in UTF-8."""
    try:
        if not path.exists():
            raise SpecError(f"dataset spec file {path} does not exist")
        if not path.is_file():
            raise SpecError(f"dataset spec file {path} is not a regular file")
        with path.open("rb") as fh:
            data = fh.read(MAX_SPEC_FILE_BYTES + 1)
    except OSError as exc:
        raise SpecError(f"dataset spec file {path} cannot be read ({exc.strerror})") from None
    if len(data) > MAX_SPEC_FILE_BYTES:
        raise SpecError(f"dataset spec file {path} is larger than {MAX_SPEC_FILE_BYTES // 1024} KiB; a spec is a page of settings")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SpecError(f"dataset spec file {path} is not UTF-8 text") from None


def load_spec_file(path: str | Path) -> DatasetSpec:
    """Read a dataset spec from a YAML (``.yaml``/``.yml``) or TOML (``.toml``) file of at
    most :data:`MAX_SPEC_FILE_BYTES`; YAML aliases are refused."""
    typed = str(path)
    path = Path(path)
    if path.suffix.lower() not in (".toml", ".yaml", ".yml"):
        if not path.exists():
            raise SpecError(f"dataset spec file {path} does not exist")
        raise SpecError(f"dataset spec file {path}: expected a .yaml, .yml or .toml file")
    text = _read_spec_text(path)
    try:
        if path.suffix.lower() == ".toml":
            data = tomllib.loads(text)
        else:
            data = yaml.load(text, Loader=_SpecYamlLoader)  # noqa: S506 - a SafeLoader without aliases
    except _YamlAlias as exc:
        raise SpecError(
            f"dataset spec file {path}, line {exc.line}: YAML alias *{exc.anchor} - aliases are not allowed "
            "in a spec (write the value out)"
        ) from None
    except RecursionError:
        raise SpecError(f"dataset spec file {path} cannot be parsed: values are nested too deeply") from None
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SpecError(f"dataset spec file {path} cannot be parsed: {first}") from None
    return dataclasses.replace(parse_spec(data, str(path)), spec_path=path.resolve(), typed_path=typed)
