"""Feature stores: one interface (:mod:`.base`), an embedded Delta Lake backend
(:mod:`.local`, the default) and, later, a Hopsworks backend."""

from __future__ import annotations

from serverless_ml.errors import SmlError
from serverless_ml.feature_store.base import (
    ORIGIN_COLUMN,
    ORIGINS,
    Feature,
    FeatureGroup,
    FeatureStore,
    FeatureView,
    Filter,
    InsertResult,
    Query,
)
from serverless_ml.settings import Settings

__all__ = [
    "ORIGIN_COLUMN",
    "ORIGINS",
    "Feature",
    "FeatureGroup",
    "FeatureStore",
    "FeatureView",
    "Filter",
    "InsertResult",
    "Query",
    "open_feature_store",
]


def open_feature_store(settings: Settings) -> FeatureStore:
    """The feature store the settings name (``local`` by default)."""
    if settings.feature_store == "local":
        from serverless_ml.feature_store.local import LocalFeatureStore

        return LocalFeatureStore(settings.store_dir)
    raise SmlError(
        f"unknown feature store '{settings.feature_store}' (set --feature-store or SML_FEATURE_STORE to 'local')"
    )
