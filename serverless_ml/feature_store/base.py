"""The feature-store interface shared by every backend.

The calls mirror the hopsworks 5.2.1 SDK one to one so that the Hopsworks backend is a
thin mapping: ``get_or_create_feature_group(name, version, primary_key, event_time, ...)``,
``FeatureGroup.insert(df, wait=True)`` (an upsert by primary key), ``FeatureGroup.read()``,
``get_or_create_feature_view(name, version, query, labels)`` and
``FeatureView.get_batch_data(start_time, end_time)``.

Filters are built like Hopsworks filters: ``fg.get_feature("origin") == "backfill"``.
"""

from __future__ import annotations

import abc
import operator
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd
import pyarrow as pa

from serverless_ml.errors import SchemaMismatchError

ORIGIN_COLUMN = "origin"
"""Every feature row records where it came from (see :data:`ORIGINS`)."""

ORIGINS = ("backfill", "synthetic", "live")

# Hopsworks offline type names are the canonical type names of the interface.
ARROW_TYPES: dict[str, pa.DataType] = {
    "bigint": pa.int64(),
    "double": pa.float64(),
    "string": pa.string(),
    "boolean": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}


def to_utc(moment: datetime | str | pd.Timestamp) -> pd.Timestamp:
    """A timezone-aware UTC timestamp; naive values are taken to be UTC."""
    ts = pd.Timestamp(moment)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


@dataclass(frozen=True, eq=False)
class Feature:
    """A typed column of a feature group (hsfs ``Feature``: name and type)."""

    name: str
    type: str
    description: str = ""

    def __post_init__(self) -> None:
        if self.type not in ARROW_TYPES:
            raise SchemaMismatchError(
                f"feature '{self.name}': unknown type '{self.type}' "
                f"(expected one of {', '.join(ARROW_TYPES)})"
            )

    # Comparisons build filters, as in hsfs. Dataclass equality is not needed for features.
    def __eq__(self, value: object) -> Filter:  # type: ignore[override]
        return Filter(self.name, "==", value)

    def __ne__(self, value: object) -> Filter:  # type: ignore[override]
        return Filter(self.name, "!=", value)

    def __lt__(self, value: object) -> Filter:
        return Filter(self.name, "<", value)

    def __le__(self, value: object) -> Filter:
        return Filter(self.name, "<=", value)

    def __gt__(self, value: object) -> Filter:
        return Filter(self.name, ">", value)

    def __ge__(self, value: object) -> Filter:
        return Filter(self.name, ">=", value)

    def isin(self, values: Iterable[Any]) -> Filter:
        return Filter(self.name, "isin", tuple(values))

    __hash__ = object.__hash__


_OPS: dict[str, Callable[[pd.Series, Any], pd.Series]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "isin": lambda s, v: s.isin(v),
}


@dataclass(frozen=True)
class Filter:
    """A predicate on one feature; combine with ``&`` and ``|``."""

    feature: str
    op: str
    value: Any

    def mask(self, df: pd.DataFrame) -> pd.Series:
        return _OPS[self.op](df[self.feature], self.value).fillna(False).astype(bool)

    def features(self) -> set[str]:
        return {self.feature}

    def __and__(self, other: Filter | Logic) -> Logic:
        return Logic("&", self, other)

    def __or__(self, other: Filter | Logic) -> Logic:
        return Logic("|", self, other)


@dataclass(frozen=True)
class Logic:
    """Two filters joined by ``&`` or ``|``."""

    op: str
    left: Filter | Logic
    right: Filter | Logic

    def mask(self, df: pd.DataFrame) -> pd.Series:
        left, right = self.left.mask(df), self.right.mask(df)
        return left & right if self.op == "&" else left | right

    def features(self) -> set[str]:
        return self.left.features() | self.right.features()

    def __and__(self, other: Filter | Logic) -> Logic:
        return Logic("&", self, other)

    def __or__(self, other: Filter | Logic) -> Logic:
        return Logic("|", self, other)


@dataclass(frozen=True)
class InsertResult:
    """What an upsert changed: rows new to the group, rows whose values changed, and the
    table version after the write (unchanged when nothing was written)."""

    inserted: int
    updated: int
    unchanged: int
    version: int | None

    @property
    def written(self) -> int:
        return self.inserted + self.updated


class FeatureGroup(abc.ABC):
    """A versioned table of features keyed by a primary key, with an event-time column."""

    name: str
    version: int
    primary_key: list[str]
    event_time: str | None
    description: str
    features: list[Feature]

    @abc.abstractmethod
    def insert(self, df: pd.DataFrame, wait: bool = True) -> InsertResult:
        """Upsert ``df`` by primary key. Rows identical to stored ones are not rewritten.

        Raises:
            SchemaMismatchError: a column is missing, extra or of the wrong type, or a
                primary key is null or duplicated; nothing is written.
        """

    @abc.abstractmethod
    def read(self, version: int | None = None) -> pd.DataFrame:
        """The whole group, at its latest version or at ``version`` (time travel)."""

    @abc.abstractmethod
    def exists(self) -> bool:
        """Whether the group has been created (by a first insert)."""

    @abc.abstractmethod
    def data_version(self) -> int | None:
        """The version of the group's data now (``None`` before the first insert)."""

    def get_feature(self, name: str) -> Feature:
        for feature in self.features:
            if feature.name == name:
                return feature
        raise KeyError(f"feature group '{self.name}' has no feature '{name}'")

    def __getitem__(self, name: str) -> Feature:
        return self.get_feature(name)

    def select_all(self) -> Query:
        return Query(self, [f.name for f in self.features])

    def select(self, features: Sequence[str]) -> Query:
        for name in features:
            self.get_feature(name)
        return Query(self, list(features))

    def select_except(self, features: Sequence[str]) -> Query:
        return Query(self, [f.name for f in self.features if f.name not in set(features)])


@dataclass
class Query:
    """A selection of features from one feature group, optionally filtered."""

    feature_group: FeatureGroup
    features: list[str]
    filters: Filter | Logic | None = None

    def filter(self, condition: Filter | Logic) -> Query:
        combined = condition if self.filters is None else self.filters & condition
        return Query(self.feature_group, list(self.features), combined)

    def read(self, version: int | None = None) -> pd.DataFrame:
        df = self.feature_group.read(version=version)
        if self.filters is not None:
            df = df[self.filters.mask(df)]
        return df[self.features].reset_index(drop=True)


@dataclass
class FeatureView:
    """Features and labels selected from a feature group, handed out for training and
    batch scoring."""

    name: str
    version: int
    query: Query
    labels: list[str] = field(default_factory=list)

    def _frame(
        self,
        start_time: datetime | None,
        end_time: datetime | None,
        extra_filter: Filter | Logic | None,
        keep: Sequence[str],
        version: int | None = None,
    ) -> pd.DataFrame:
        fg = self.query.feature_group
        df = fg.read(version=version)
        condition = self.query.filters
        if extra_filter is not None:
            condition = extra_filter if condition is None else condition & extra_filter
        if condition is not None:
            df = df[condition.mask(df)]
        if fg.event_time and start_time is not None:
            df = df[df[fg.event_time] >= to_utc(start_time)]
        if fg.event_time and end_time is not None:
            df = df[df[fg.event_time] < to_utc(end_time)]
        columns = list(dict.fromkeys([*keep, *self.query.features]))
        return df[columns].reset_index(drop=True)

    def _extras(self, primary_key: bool, event_time: bool) -> list[str]:
        fg = self.query.feature_group
        extras: list[str] = []
        if primary_key:
            extras += fg.primary_key
        if event_time and fg.event_time:
            extras.append(fg.event_time)
        return extras

    def training_data(
        self,
        extra_filter: Filter | Logic | None = None,
        primary_key: bool = False,
        event_time: bool = False,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        version: int | None = None,
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Features and labels, as ``(X, y)`` like hsfs ``FeatureView.training_data``.

        ``version`` pins the feature group's data version (the local store's time travel).
        """
        df = self._frame(start_time, end_time, extra_filter, self._extras(primary_key, event_time), version)
        x = df.drop(columns=[c for c in self.labels if c in df.columns])
        return x, df[self.labels]

    def get_batch_data(
        self,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        primary_key: bool = False,
        event_time: bool = False,
        extra_filter: Filter | Logic | None = None,
    ) -> pd.DataFrame:
        """Features (no labels) of rows whose event time is in ``[start_time, end_time)``."""
        df = self._frame(start_time, end_time, extra_filter, self._extras(primary_key, event_time))
        return df.drop(columns=[c for c in self.labels if c in df.columns])


class FeatureStore(abc.ABC):
    """Creates and finds feature groups and feature views."""

    @abc.abstractmethod
    def get_or_create_feature_group(
        self,
        name: str,
        version: int,
        primary_key: Sequence[str],
        event_time: str | None = None,
        description: str = "",
        features: Sequence[Feature] | None = None,
    ) -> FeatureGroup:
        """The group ``name``/``version``; created (empty) on its first insert."""

    @abc.abstractmethod
    def get_feature_group(self, name: str, version: int) -> FeatureGroup:
        """An existing group. Raises NotFoundError when it was never written."""

    @abc.abstractmethod
    def get_or_create_feature_view(
        self,
        name: str,
        version: int,
        query: Query,
        labels: Sequence[str] = (),
        description: str = "",
    ) -> FeatureView:
        """A feature view over ``query`` with ``labels`` as targets."""
