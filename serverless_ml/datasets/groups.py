"""A dataset's feature group in a feature store: opened (created on its first insert),
or required to hold rows already. The jobs that write it (``sml features``, ``sml daily``)
and those that read it (``sml train``, ``sml infer``, ``sml simulate``) open it here.

The group's name and version are the spec's (:attr:`DatasetSpec.name`,
:attr:`DatasetSpec.version`); the predictions group is opened by
:func:`serverless_ml.inference.scoring.predictions_group`.
"""

from __future__ import annotations

from serverless_ml.datasets.spec import EVENT_TIME_COLUMN, DatasetSpec
from serverless_ml.errors import NotFoundError, SchemaMismatchError
from serverless_ml.feature_store.base import FeatureGroup, FeatureStore, SchemaChangedError


def feature_group_for(spec: DatasetSpec, store: FeatureStore) -> FeatureGroup:
    """The dataset's feature group (created on its first insert).

    Raises:
        SchemaMismatchError: the group of this version is stored with another schema; the
            message names the columns that differ and the ``version:`` to give the spec.
    """
    try:
        return store.get_or_create_feature_group(
            name=spec.name,
            version=spec.version,
            primary_key=[spec.primary_key],
            event_time=EVENT_TIME_COLUMN,
            description=spec.description,
            features=spec.store_schema(),
        )
    except SchemaChangedError as exc:
        raise SchemaMismatchError(schema_change_message(spec, exc)) from None


def schema_change_message(spec: DatasetSpec, exc: SchemaChangedError) -> str:
    """One line: the columns in which the stored group differs from the spec, and how to
    get a new group (the rows of the old one stay where they are)."""
    where = f"stored feature group '{exc.group}' version {exc.version} has another schema than "
    if spec.typed_path is None:
        return (f"{where}the built-in dataset '{spec.name}' ({exc.differences}): "
                "use another --store-dir for this version of sml")
    return (f"{where}the spec {spec.dataset_arg} ({exc.differences}): "
            f"bump `version:` in {spec.dataset_arg} to {exc.version + 1}")


def existing_feature_group(spec: DatasetSpec, store: FeatureStore) -> FeatureGroup:
    """The dataset's feature group, which must hold data already."""
    group = feature_group_for(spec, store)
    if not group.exists():
        raise NotFoundError(
            f"feature group '{spec.name}' version {spec.version} is empty; run `sml features --dataset {spec.dataset_arg}` first"
        )
    return group
