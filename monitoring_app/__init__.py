"""The monitoring site: a Dash app that reads MLflow and the feature store.

``create_app(...)`` builds one app (tests build their own); ``create_server()`` is the
WSGI entry point for gunicorn. Nothing is set up on import.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app", "create_server"]


def create_app(*args: Any, **kwargs: Any) -> Any:
    """See :func:`monitoring_app.app.create_app`."""
    from monitoring_app.app import create_app as factory

    return factory(*args, **kwargs)


def create_server() -> Any:
    """See :func:`monitoring_app.app.create_server`."""
    from monitoring_app.app import create_server as factory

    return factory()
