"""What every page needs: the datasets, the data-access object and the site's settings.

The app factory puts one :class:`Site` in the Flask config; layouts and callbacks get it
with :func:`current_site` (they run inside a request), so two apps in one process (tests)
never share state.
"""

from __future__ import annotations

import datetime as dt
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

from serverless_ml import tracking
from serverless_ml.datasets.spec import DatasetSpec
from serverless_ml.settings import Settings

from monitoring_app.data_access import SiteData

SITE_KEY = "SML_SITE"


MAX_NAME_SHOWN = 80
"""An unknown dataset name longer than this is cut in messages (it comes from the URL)."""


class UnknownDataset(LookupError):
    """The URL names a dataset the site does not know."""


@dataclass
class Site:
    """One monitoring site's configuration and data access.

    Attributes:
        settings: Where MLflow and the feature store are.
        datasets: Dataset name -> spec, in picker order.
        data: The one data-access object (with its cache).
        default_dataset: Shown when the URL names none.
        refresh_s: Seconds between the pages' refreshes.
        mlflow_ui_url: Base URL of the MLflow UI for run links (``None``: no links).
        clock: The current time (tests pass a fixed one).
    """

    settings: Settings
    datasets: dict[str, DatasetSpec]
    data: SiteData
    default_dataset: str
    refresh_s: float
    mlflow_ui_url: str | None
    clock: Callable[[], dt.datetime]

    def spec(self, name: str | None) -> DatasetSpec:
        """The dataset ``name`` (the default one when ``None`` or empty).

        Raises:
            UnknownDataset: the site has no such dataset.
        """
        if name is not None and not isinstance(name, str):  # a forged request
            raise UnknownDataset(f"unknown dataset of type {type(name).__name__} (choose one of: {', '.join(self.datasets)})")
        key = name or self.default_dataset
        if key not in self.datasets:
            shown = key if len(key) <= MAX_NAME_SHOWN else key[:MAX_NAME_SHOWN] + "..."
            raise UnknownDataset(f"unknown dataset '{shown}' (choose one of: {', '.join(self.datasets)})")
        return self.datasets[key]

    def now(self) -> dt.datetime:
        return self.clock()

    @property
    def mlflow_ui_link_base(self) -> str | None:
        """The MLflow UI's URL for links: without the user and password it may carry,
        which every visitor of the page would otherwise read (the browser asks for them)."""
        if not self.mlflow_ui_url:
            return None
        parts = urllib.parse.urlsplit(self.mlflow_ui_url.rstrip("/"))
        return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]))

    def run_url(self, experiment_id: str | None, run_id: str) -> str | None:
        """The run's page in the MLflow UI, when its URL is configured."""
        base = self.mlflow_ui_link_base
        if base is None or experiment_id is None:
            return None
        return f"{base}/#/experiments/{urllib.parse.quote(str(experiment_id))}/runs/{urllib.parse.quote(run_id)}"

    def model_url(self, name: str, version: int) -> str | None:
        base = self.mlflow_ui_link_base
        if base is None:
            return None
        return f"{base}/#/models/{urllib.parse.quote(name)}/versions/{version}"

    @property
    def mlflow_ui_label(self) -> str | None:
        return tracking.redact_uri(self.mlflow_ui_url) if self.mlflow_ui_url else None


def current_site() -> Site:
    """The site of the app serving the current request."""
    from flask import current_app

    return current_app.config[SITE_KEY]
