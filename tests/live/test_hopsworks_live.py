"""Opt-in smoke test against a real Hopsworks project: ``pytest -m hopsworks_live``.

Skipped (one line, the reason below) unless ``HOPSWORKS_API_KEY`` and
``HOPSWORKS_PROJECT`` are set; ``HOPSWORKS_HOST`` is optional, as for the commands.
Without a key nothing logs in: the skip happens when the module is collected, before
the SDK is imported.

It runs the loop once on a uniquely named copy of the Titanic dataset
(``sml_live_<8 hex>``, so it never touches the project's own ``titanic`` groups):
backfill, one day of daily rows, training (2 trials), batch inference, reading the rows
and predictions back, and then deletes what it created (the feature view, both feature
groups) even when a step failed. MLflow runs go to a temporary SQLite database.

What it shows that the contract suite cannot: which write path the project allows from
this machine (direct delta-rs or Kafka + materialization job, see the log), the dtypes and
column names the real service returns, and that the backend's answers to them hold.
Expect minutes, most of it in Hopsworks jobs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.hopsworks_live

if not (os.environ.get("HOPSWORKS_API_KEY", "").strip() and os.environ.get("HOPSWORKS_PROJECT", "").strip()):
    pytest.skip(
        "live Hopsworks smoke test: set HOPSWORKS_API_KEY and HOPSWORKS_PROJECT (and optionally HOPSWORKS_HOST) to run it",
        allow_module_level=True,
    )

log = logging.getLogger(__name__)


@pytest.fixture
def live_store():  # noqa: ANN201 - HopsworksFeatureStore
    from serverless_ml.feature_store.hopsworks import open_hopsworks_feature_store

    return open_hopsworks_feature_store()


@pytest.fixture
def live_spec(live_store) -> Iterator[object]:  # noqa: ANN001
    """A uniquely named Titanic spec; afterwards, whatever the test created is deleted."""
    from serverless_ml.datasets import get_dataset

    spec = dataclasses.replace(get_dataset("titanic"), name=f"sml_live_{uuid.uuid4().hex[:8]}")
    yield spec
    sdk = live_store._handle
    failures = []
    leftovers = [(spec.predictions_group, 1), (spec.name, spec.version)]
    for name, version in leftovers:
        try:
            found = sdk.get_feature_group(name, version)  # None when the test failed before creating it
            if found is not None:
                found.delete(delete_feature_views=True)  # and the training view, with its training datasets
        except Exception as exc:  # noqa: BLE001 - try every cleanup step, report them all
            if getattr(getattr(exc, "response", None), "status_code", None) == 404:
                continue
            failures.append(f"{name} v{version}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    assert not failures, f"cleanup of {spec.name} in the project failed: {failures}"


def test_the_loop_on_a_live_project(live_store, live_spec, data_dir: Path, tracking_uri: str, tmp_path: Path) -> None:  # noqa: ANN001
    from serverless_ml.datasets import get_dataset
    from serverless_ml.datasets.sources import load_source
    from serverless_ml.pipelines.features import add_daily_rows, backfill
    from serverless_ml.pipelines.infer import InferOptions, infer
    from serverless_ml.pipelines.train import TrainOptions, load_training_rows, train
    from serverless_ml.settings import resolve_settings

    spec = live_spec
    source = load_source(get_dataset("titanic"), None, data_dir)
    features = backfill(spec, live_store, source)
    assert features.inserted == len(source.frame) > 800
    day = dt.date(2024, 2, 1)
    daily = add_daily_rows(spec, live_store, day, n=10, seed=1)
    assert daily.inserted == 10
    again = backfill(spec, live_store, source)
    assert (again.inserted, again.updated, again.data_version) == (0, 0, daily.data_version), "a re-run writes nothing"

    x, y, keys, version = load_training_rows(spec, live_store, include_synthetic=False)
    assert len(x) == len(y) == features.inserted and keys.is_unique and version is not None

    settings = resolve_settings(store_dir=tmp_path / "state", tracking_uri=tracking_uri, feature_store="hopsworks")
    report = train(spec, live_store, settings, TrainOptions(trials=2, seed=1, folds=3, quiet=True))
    assert report.decision.promote

    noon = dt.datetime.combine(day, dt.time(12), tzinfo=dt.timezone.utc)
    scored = infer(spec, live_store, settings, InferOptions(figures=False, as_of=day), noon)
    assert scored.rows_scored == 10

    rows = live_store.get_feature_group(spec.name, spec.version).read()
    assert len(rows) == features.inserted + 10 and rows[spec.primary_key].is_unique
    assert str(rows["event_time"].dtype) == "datetime64[us, UTC]"
    predictions = live_store.get_feature_group(spec.predictions_group, 1).read()
    assert len(predictions) == 10 and predictions[spec.primary_key].is_unique
    log.info("live run on %s: %d rows, %d predictions", spec.name, len(rows), len(predictions))
