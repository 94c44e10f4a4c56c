"""The development server's log under `sml dashboard` (monitoring_app/serving.py), with
werkzeug's own start-up message and Dash's own logger: no start-up or request lines
unless verbose, no colour codes when the log is not a terminal."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import dash
import pytest
from werkzeug.serving import make_server

from monitoring_app.serving import StripAnsi, quiet_development_server

pytestmark = pytest.mark.unit


@pytest.fixture()
def werkzeug_log() -> Iterator[io.StringIO]:
    """What the ``werkzeug`` logger emits, as text; its level, filters and handlers are
    restored afterwards."""
    logger = logging.getLogger("werkzeug")
    saved = logger.level, list(logger.filters), list(logger.handlers), logger.propagate
    logger.filters[:] = []  # another test's `sml dashboard` may have left one
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield stream
    finally:
        logger.setLevel(saved[0])
        logger.filters[:] = saved[1]
        logger.handlers[:] = saved[2]
        logger.propagate = saved[3]


def _start_and_log(app: dash.Dash) -> None:
    """werkzeug's own start-up message (the development-server warning and the URL)."""
    server = make_server("127.0.0.1", 0, app.server)
    try:
        server.log_startup()
    finally:
        server.server_close()


def test_werkzeug_says_nothing_at_start_unless_verbose(werkzeug_log: io.StringIO) -> None:
    app = dash.Dash(__name__)
    quiet_development_server(app, level=logging.WARNING, colour=False)
    _start_and_log(app)
    assert werkzeug_log.getvalue() == ""
    assert app.logger.level == logging.WARNING  # Dash's "Dash is running on <url>" is INFO


@pytest.mark.parametrize("colour", [False, True])
def test_colour_codes_only_on_a_terminal(werkzeug_log: io.StringIO, colour: bool) -> None:
    app = dash.Dash(__name__)
    quiet_development_server(app, level=logging.DEBUG, colour=colour)
    _start_and_log(app)
    text = werkzeug_log.getvalue()
    assert "WARNING: This is a development server." in text and " * Running on http://127.0.0.1:" in text
    assert ("\x1b[" in text) is colour, repr(text)


def test_the_filter_is_added_once_and_strips_arguments_too(werkzeug_log: io.StringIO) -> None:
    app = dash.Dash(__name__)
    quiet_development_server(app, level=logging.DEBUG, colour=True)
    assert not any(isinstance(f, StripAnsi) for f in logging.getLogger("werkzeug").filters)
    for _ in range(3):
        quiet_development_server(app, level=logging.DEBUG, colour=False)
    assert sum(isinstance(f, StripAnsi) for f in logging.getLogger("werkzeug").filters) == 1
    logging.getLogger("werkzeug").info('"%s" %s', "\x1b[33mGET /nope HTTP/1.1\x1b[0m", 404)
    assert werkzeug_log.getvalue() == '"GET /nope HTTP/1.1" 404\n'
