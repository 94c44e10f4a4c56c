"""Options of the monitoring site (``sml dashboard``), checked when they are built.

Imports only :mod:`serverless_ml.defaults` and the error type: the command checks its
options before the site's (slow) imports.
"""

from __future__ import annotations

from dataclasses import dataclass

from serverless_ml import defaults
from serverless_ml.errors import SmlError


@dataclass(frozen=True)
class SiteOptions:
    """Where the site listens and how often its pages refresh (defaults in
    :mod:`serverless_ml.defaults`); a bad value fails at construction in one line."""

    host: str = defaults.SITE_HOST
    port: int = defaults.SITE_PORT
    refresh_s: float = defaults.SITE_REFRESH_S

    def __post_init__(self) -> None:
        low, high = defaults.SITE_REFRESH_RANGE_S
        if not low <= self.refresh_s <= high:  # NaN fails too
            raise SmlError(f"--refresh must be a number of seconds between {low:g} and {high:g}, got {self.refresh_s:g}")
        if not 1 <= self.port <= 65535:
            raise SmlError(f"--port must be between 1 and 65535, got {self.port}")
