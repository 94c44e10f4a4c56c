"""The tracking an entry configures once and hands down (``tracking.Tracking``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from serverless_ml import tracking
from serverless_ml.settings import resolve_settings

pytestmark = pytest.mark.unit


def test_configuring_reaches_no_store(tmp_path: Path) -> None:
    import mlflow

    uri = f"sqlite:///{tmp_path / 'a' / 'mlflow.db'}"
    configured = tracking.configure_tracking(resolve_settings(store_dir=tmp_path / "store", tracking_uri=uri))
    assert configured.uri == uri
    assert mlflow.get_tracking_uri() == uri  # the fluent API (start_run, log_model) reads this
    # No database yet: a command refused on bad input after this leaves none behind.
    assert (tmp_path / "a").is_dir() and not (tmp_path / "a" / "mlflow.db").exists()


def test_the_client_is_bound_to_the_configured_store(tracking_uri: str, tmp_path: Path) -> None:
    import mlflow

    configured = tracking.configure_tracking(resolve_settings(store_dir=tmp_path / "store", tracking_uri=tracking_uri))
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'b' / 'mlflow.db'}")  # e.g. another job of the process
    assert configured.client.tracking_uri == tracking_uri
    assert configured.client is configured.client  # one client per process
    created = configured.client.create_experiment("bound")
    assert mlflow.MlflowClient(tracking_uri=tracking_uri).get_experiment(created).name == "bound"
    assert not (tmp_path / "b").exists()


def test_a_given_tracking_is_used_as_it_is(tmp_path: Path) -> None:
    import mlflow

    first = tracking.configure_tracking(resolve_settings(store_dir=tmp_path / "store",
                                                         tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"))
    elsewhere = f"sqlite:///{tmp_path / 'other' / 'mlflow.db'}"
    mlflow.set_tracking_uri(elsewhere)
    other_settings = resolve_settings(store_dir=tmp_path / "store", tracking_uri=elsewhere)
    assert tracking.tracking_for(other_settings, first) is first
    assert not (tmp_path / "other").exists()  # not configured again: its folder was never made
    made = tracking.tracking_for(other_settings, None)
    assert made.uri == elsewhere and (tmp_path / "other").is_dir()
