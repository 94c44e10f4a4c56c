"""Feature stores: one interface (:mod:`.base`), an embedded Delta Lake backend
(:mod:`.local`, the default) and a Hopsworks backend (:mod:`.hopsworks`)."""

from __future__ import annotations

from serverless_ml.errors import SmlError
from serverless_ml.feature_store.base import (
    ORIGIN_COLUMN,
    ORIGINS,
    Capabilities,
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
    "Capabilities",
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
    """The feature store the settings name (``local`` by default).

    ``hopsworks`` logs in with ``HOPSWORKS_API_KEY``, ``HOPSWORKS_PROJECT`` and
    ``HOPSWORKS_HOST`` from the environment (never from settings, so the key cannot end
    up in a printed or logged settings object); without a key it fails at once.
    """
    if settings.feature_store == "local":
        from serverless_ml.feature_store.local import LocalFeatureStore

        return LocalFeatureStore(settings.store_dir)
    if settings.feature_store == "hopsworks":
        from serverless_ml.feature_store.hopsworks import open_hopsworks_feature_store

        return open_hopsworks_feature_store()
    raise SmlError(
        f"unknown feature store '{settings.feature_store}' "
        "(set --feature-store or SML_FEATURE_STORE to 'local' or 'hopsworks')"
    )
