"""The log of ``sml dashboard``'s development server: the command prints the site's URL
once; no line per request and no colour codes in a log file.

Left alone, Dash logs "Dash is running on <url>" twice (its own handler and the root's),
and werkzeug sets its logger to INFO: its start-up message repeats the URL and wraps the
development-server warning in ANSI colour codes, and every request (each page's dozen
scripts and styles) is a line. gunicorn logs no requests unless ``--access-logfile``
is given.
"""

from __future__ import annotations

import logging
import re
from typing import Any

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


class StripAnsi(logging.Filter):
    """Removes ANSI colour codes from a record's message (werkzeug colours its
    development-server warning and the status of each request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = ANSI_ESCAPE.sub("", record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(ANSI_ESCAPE.sub("", arg) if isinstance(arg, str) else arg for arg in record.args)
        return True


def quiet_development_server(app: Any, level: int, colour: bool) -> None:
    """Set the log of the development server that ``app.run`` starts.

    Args:
        app: The Dash app (after :func:`monitoring_app.app.create_app`, which sets Dash's
            logger to INFO).
        level: werkzeug's level: ``logging.WARNING`` shows errors only (no request lines,
            no start-up lines); ``logging.DEBUG`` (``sml --verbose``) shows both.
        colour: Keep werkzeug's colour codes (the log goes to a terminal).
    """
    app.logger.setLevel(logging.WARNING)  # "Dash is running on <url>": the command prints the URL
    werkzeug = logging.getLogger("werkzeug")
    werkzeug.setLevel(level)
    for old in [f for f in werkzeug.filters if isinstance(f, StripAnsi)]:
        werkzeug.removeFilter(old)  # a second site in this process (tests) sets it afresh
    if not colour:
        werkzeug.addFilter(StripAnsi())
