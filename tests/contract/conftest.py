"""Contract fixtures: one feature-store interface, every backend.

``backend`` is parametrized over ``local`` (real Delta tables in a temporary directory)
and ``hopsworks`` (the Hopsworks backend over the in-memory SDK stand-in of
:mod:`hopsworks_standin`). A test written against it runs on both.

Hopsworks credentials from the developer's shell never reach a test: a real key in the
environment must not make a test talk to a real project.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from serverless_ml.feature_store import Capabilities, FeatureStore
from serverless_ml.feature_store.hopsworks import HopsworksFeatureStore
from serverless_ml.feature_store.local import LocalFeatureStore

from hopsworks_standin import StandInService

HOPSWORKS_VARIABLES = (
    "HOPSWORKS_API_KEY",
    "HOPSWORKS_PROJECT",
    "HOPSWORKS_HOST",
    "HOPSWORKS_PORT",
    "HOPSWORKS_ENGINE",
    "REST_ENDPOINT",
    "HOPS_START_TIME",
    "HOPS_END_TIME",
)


@pytest.fixture(autouse=True)
def _no_hopsworks_credentials(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in HOPSWORKS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    yield


@dataclass
class Backend:
    """One backend under test.

    Attributes:
        name: ``local`` or ``hopsworks``.
        open_store: A new store object over the same storage (as another process would
            open it).
        snapshot: Everything stored; two equal snapshots mean nothing was written.
        capabilities: What the backend guarantees beyond the common contract.
        service: The in-memory Hopsworks (``None`` for the local backend).
    """

    name: str
    open_store: Callable[[], FeatureStore]
    snapshot: Callable[[], Any]
    capabilities: Capabilities
    service: StandInService | None = None


@pytest.fixture
def standin() -> StandInService:
    """A fresh in-memory Hopsworks."""
    return StandInService()


@pytest.fixture(params=["local", "hopsworks"])
def backend(request: pytest.FixtureRequest, store_dir: Path, tree_digest, standin: StandInService) -> Backend:
    if request.param == "local":
        return Backend(
            "local", lambda: LocalFeatureStore(store_dir), lambda: tree_digest(store_dir), LocalFeatureStore.capabilities
        )
    return Backend(
        "hopsworks",
        lambda: HopsworksFeatureStore(standin.feature_store),
        standin.snapshot,
        HopsworksFeatureStore.capabilities,
        standin,
    )
