"""Where things live: one place that resolves paths and URIs from options and environment.

Nothing here runs on import; call :func:`resolve_settings` from an entry point.
Order of precedence for each setting: explicit option, then environment variable, then
the default below (relative to the working directory, like MLflow's own default).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from serverless_ml import defaults

ENV_STORE_DIR = "SML_STORE_DIR"
ENV_DATA_DIR = "SML_DATA_DIR"
ENV_CACHE_DIR = "SML_CACHE_DIR"
ENV_FEATURE_STORE = "SML_FEATURE_STORE"
ENV_TRACKING_URI = "MLFLOW_TRACKING_URI"
ENV_STATE_DIR = "SML_STATE_DIR"

DEFAULT_HOME = Path("sml_data")
DEFAULT_STORE_DIRNAME = "feature_store"
DEFAULT_TRACKING_DB = "mlflow.db"
DEFAULT_CACHE_DIR = Path("~/.cache/serverless-ml")
DEFAULT_FEATURE_STORE = defaults.FEATURE_STORE
OPTUNA_DB = "optuna.db"


@dataclass(frozen=True)
class Settings:
    """Resolved locations for one command invocation.

    Attributes:
        store_dir: Directory of the embedded feature store (one Delta table per group).
        tracking_uri: MLflow tracking URI.
        data_dir: Directory searched for ``<dataset>.csv`` sources, if any.
        cache_dir: Directory where downloaded sources are cached.
        feature_store: Backend name (``local`` or ``hopsworks``).
        state_dir: Directory of the jobs' own state: their locks (``_locks/``) and the
            scheduler's last slots (``_schedule/``). Default: ``store_dir``, where they
            have always been.
        optuna_dir: Directory of the default Optuna study database (``optuna.db``, used
            when ``sml train`` is given no ``--storage``): ``state_dir`` when one is given;
            by default next to a SQLite tracking database, else the parent of
            ``store_dir`` (where they have always been). Derived from the tracking URI
            and the store: settings for another URI or store come from
            :func:`resolve_settings`, not ``dataclasses.replace``.
    """

    store_dir: Path
    tracking_uri: str
    data_dir: Path | None
    cache_dir: Path
    feature_store: str
    state_dir: Path
    optuna_dir: Path

    @property
    def optuna_storage(self) -> str:
        """The default Optuna storage URL (a SQLite database in :attr:`optuna_dir`)."""
        return f"sqlite:///{self.optuna_dir / OPTUNA_DB}"


def default_tracking_uri() -> str:
    """MLflow's own default, ``./mlflow.db``: ``mlflow ui`` and ``mlflow run`` started in
    the same folder see the same runs without any configuration."""
    return f"sqlite:///{Path(DEFAULT_TRACKING_DB).resolve()}"


def resolve_settings(
    store_dir: str | os.PathLike[str] | None = None,
    tracking_uri: str | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    feature_store: str | None = None,
    state_dir: str | os.PathLike[str] | None = None,
) -> Settings:
    """Resolve settings from explicit values, then the environment, then defaults."""
    env = os.environ
    store = store_dir or env.get(ENV_STORE_DIR) or DEFAULT_HOME / DEFAULT_STORE_DIRNAME
    uri = tracking_uri or env.get(ENV_TRACKING_URI) or default_tracking_uri()
    data = data_dir or env.get(ENV_DATA_DIR) or None
    cache = env.get(ENV_CACHE_DIR) or DEFAULT_CACHE_DIR
    backend = (feature_store or env.get(ENV_FEATURE_STORE) or DEFAULT_FEATURE_STORE).lower()
    store_path = Path(store).expanduser().resolve()
    state = state_dir or env.get(ENV_STATE_DIR) or None
    state_path = Path(state).expanduser().resolve() if state else store_path
    return Settings(
        store_dir=store_path,
        tracking_uri=uri,
        data_dir=Path(data).expanduser().resolve() if data else None,
        cache_dir=Path(cache).expanduser(),
        feature_store=backend,
        state_dir=state_path,
        optuna_dir=state_path if state else default_optuna_dir(uri, store_path),
    )


def default_optuna_dir(tracking_uri: str, store_dir: Path) -> Path:
    """Where the Optuna studies live when no state directory is given: next to a SQLite
    tracking database (its path as the URI writes it: relative to the working
    directory if the URI's is), else in the parent of ``store_dir`` (the project home)."""
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri.removeprefix("sqlite:///")).parent
    return store_dir.parent.resolve()
