"""Where things live: one place that resolves paths and URIs from options and environment.

Nothing here runs on import; call :func:`resolve_settings` from an entry point.
Order of precedence for each setting: explicit option, then environment variable, then
the default below (relative to the working directory, like MLflow's own default).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENV_STORE_DIR = "SML_STORE_DIR"
ENV_DATA_DIR = "SML_DATA_DIR"
ENV_CACHE_DIR = "SML_CACHE_DIR"
ENV_FEATURE_STORE = "SML_FEATURE_STORE"
ENV_TRACKING_URI = "MLFLOW_TRACKING_URI"

DEFAULT_HOME = Path("sml_data")
DEFAULT_STORE_DIRNAME = "feature_store"
DEFAULT_TRACKING_DB = "mlflow.db"
DEFAULT_CACHE_DIR = Path("~/.cache/serverless-ml")
DEFAULT_FEATURE_STORE = "local"


@dataclass(frozen=True)
class Settings:
    """Resolved locations for one command invocation.

    Attributes:
        store_dir: Directory of the embedded feature store (one Delta table per group).
        tracking_uri: MLflow tracking URI.
        data_dir: Directory searched for ``<dataset>.csv`` sources, if any.
        cache_dir: Directory where downloaded sources are cached.
        feature_store: Backend name (``local`` or ``hopsworks``).
    """

    store_dir: Path
    tracking_uri: str
    data_dir: Path | None
    cache_dir: Path
    feature_store: str


def default_tracking_uri() -> str:
    """MLflow's own default, ``./mlflow.db``: ``mlflow ui`` and ``mlflow run`` started in
    the same folder see the same runs without any configuration."""
    return f"sqlite:///{Path(DEFAULT_TRACKING_DB).resolve()}"


def resolve_settings(
    store_dir: str | os.PathLike[str] | None = None,
    tracking_uri: str | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    feature_store: str | None = None,
) -> Settings:
    """Resolve settings from explicit values, then the environment, then defaults."""
    env = os.environ
    store = store_dir or env.get(ENV_STORE_DIR) or DEFAULT_HOME / DEFAULT_STORE_DIRNAME
    uri = tracking_uri or env.get(ENV_TRACKING_URI) or default_tracking_uri()
    data = data_dir or env.get(ENV_DATA_DIR) or None
    cache = env.get(ENV_CACHE_DIR) or DEFAULT_CACHE_DIR
    backend = (feature_store or env.get(ENV_FEATURE_STORE) or DEFAULT_FEATURE_STORE).lower()
    return Settings(
        store_dir=Path(store).expanduser().resolve(),
        tracking_uri=uri,
        data_dir=Path(data).expanduser().resolve() if data else None,
        cache_dir=Path(cache).expanduser(),
        feature_store=backend,
    )
