"""What the site does with requests it did not ask for.

Dash answers a callback request it cannot parse (a body that is not a callback's, an
output no callback has, inputs of the wrong shape) with a 500 and a traceback in the
server's log, and reads a body of any size. The site refuses such requests before Dash
sees them: a body over :data:`MAX_REQUEST_BYTES` gets 413, a malformed callback request
(or one whose values have types no component of the site sends) 400 with one line
saying why, and a script path Dash does not serve 404 (Dash: 500). The callbacks themselves answer bad values (a huge number,
a long string, a missing field) with messages, not errors.

Every response also carries headers that keep browsers from sniffing content types,
framing the site into another page (clickjacking) or sending its URLs elsewhere.
"""

from __future__ import annotations

import json
import re
from typing import Any

import dash
import flask

MAX_REQUEST_BYTES = 1024 * 1024
"""The largest request body the site reads (the Predict form sends a few hundred bytes)."""

MAX_JSON_DEPTH = 32
"""The deepest nesting of lists and objects a callback request may have (the site's own
requests: under 10). Deeper bodies made Python's JSON reader or Dash recurse until a
RecursionError, a 500."""

MAX_COUNT = 2**53
"""The largest click or page count the site takes (every integer up to it is exact as a float)."""

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}

_JSON_SYNTAX = re.compile(rb'[\[\]{}"\\]')

_WILDCARDS = ('["ALL"]', '["ALLSMALLER"]')
_SCALAR = (str, int, float, type(None))


def _is_count(value: Any) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and abs(value) <= MAX_COUNT)


def _is_text(value: Any) -> bool:
    return value is None or isinstance(value, str)


# What the site's components send for each property its callbacks read (every ``data``
# is a dcc.Store holding a dict; every ``value`` a dropdown, radio or form field).
PROPERTY_CHECKS: dict[str, tuple[str, Any]] = {
    "n_clicks": ("a whole number", _is_count),
    "n_intervals": ("a whole number", _is_count),
    "page_current": ("a whole number", _is_count),
    "page_size": ("a whole number", _is_count),
    "data": ("an object", lambda v: v is None or isinstance(v, dict)),
    "search": ("text", _is_text),
    "pathname": ("text", _is_text),
    "filter_query": ("text", _is_text),
    "value": ("text or a number", lambda v: isinstance(v, _SCALAR)),
    "sort_by": ("a list of objects", lambda v: v is None or (isinstance(v, list) and all(isinstance(i, dict) for i in v))),
}


class MalformedCallback(ValueError):
    """A callback request that no page of the site sent."""


def harden(app: dash.Dash) -> None:
    """Size limit, callback-request checks and security headers on ``app``'s server."""
    server: flask.Flask = app.server
    server.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES
    update_path = f"{app.config.routes_pathname_prefix}_dash-update-component"

    @server.before_request
    def _check_callback_request() -> Any:
        if flask.request.method != "POST" or flask.request.path != update_path:
            return None
        length = flask.request.content_length
        if length is not None and length > MAX_REQUEST_BYTES:
            return _refuse(413, f"request body of {length} bytes is larger than {MAX_REQUEST_BYTES}")
        raw = flask.request.get_data(cache=True) or b"null"
        if json_depth(raw) > MAX_JSON_DEPTH:
            return _refuse(400, f"malformed callback request: the body is nested deeper than {MAX_JSON_DEPTH} levels")
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return _refuse(400, "malformed callback request: the body is not JSON")
        try:
            check_callback_request(body, app.callback_map)
        except MalformedCallback as exc:
            return _refuse(400, f"malformed callback request: {exc}")
        return None

    # Dash raises for a script path it does not serve (a 500, the traceback and the list of
    # every file it serves in the log): that is a 404.
    server.register_error_handler(dash.exceptions.DependencyException, lambda exc: _refuse(404, "not found"))

    @server.after_request
    def _security_headers(response: flask.Response) -> flask.Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response


def json_depth(raw: bytes) -> int:
    """The deepest nesting of ``[`` and ``{`` in the JSON text ``raw``, brackets inside
    strings aside; computed without parsing (so without recursion). Malformed text gives
    some number: the parser refuses it afterwards."""
    depth = deepest = 0
    in_string = False
    escaped_at = -1  # the position of the character a backslash escapes
    # Only the bytes that matter are looked at: a body is at most MAX_REQUEST_BYTES.
    for match in _JSON_SYNTAX.finditer(raw):
        char, at = match.group(), match.start()
        if in_string:
            if at == escaped_at:
                continue
            if char == b"\\":
                escaped_at = at + 1
            elif char == b'"':
                in_string = False
        elif char == b'"':
            in_string = True
        elif char in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        elif char in (b"]", b"}"):
            depth -= 1
    return deepest


def _refuse(status: int, message: str) -> flask.Response:
    return flask.Response(message + "\n", status=status, mimetype="text/plain")


def check_callback_request(body: Any, callback_map: dict[str, Any]) -> None:
    """Raise :class:`MalformedCallback` unless ``body`` has the shape of a request for one
    of the app's callbacks: its output, and inputs and state in the number and shape
    (one value, or a list for an ``ALL`` pattern) the callback declares."""
    if not isinstance(body, dict):
        raise MalformedCallback("the body is not a JSON object")
    output = body.get("output")
    if not isinstance(output, str) or output not in callback_map:
        raise MalformedCallback("no callback has this output")
    callback = callback_map[output]
    outputs = body.get("outputs")
    if isinstance(outputs, dict):
        _check_item(outputs, "outputs")
    elif isinstance(outputs, list):
        for item in outputs:
            _check_value(item, "outputs")
    else:
        raise MalformedCallback("'outputs' is missing or not a list")
    for key in ("inputs", "state"):
        declared = callback.get(key) or []
        given = body.get(key, [] if key == "state" else None)
        if not isinstance(given, list) or len(given) != len(declared):
            raise MalformedCallback(f"'{key}' must be a list of {len(declared)} item(s)")
        for spec, item in zip(declared, given, strict=True):
            pattern = str(spec.get("id", ""))
            if any(w in pattern for w in _WILDCARDS):
                if not isinstance(item, list):
                    raise MalformedCallback(f"'{key}': a list is expected for {pattern}")
                for element in item:
                    _check_item(element, key)
            else:
                _check_item(item, key)
    changed = body.get("changedPropIds", [])
    if not isinstance(changed, list) or not all(isinstance(c, str) for c in changed):
        raise MalformedCallback("'changedPropIds' must be a list of strings")


def _check_value(item: Any, key: str) -> None:
    if isinstance(item, list):
        for element in item:
            _check_item(element, key)
    else:
        _check_item(item, key)


def _check_item(item: Any, key: str) -> None:
    if not isinstance(item, dict) or not isinstance(item.get("property"), str) \
            or not isinstance(item.get("id"), (str, dict)):
        raise MalformedCallback(f"'{key}' holds an item without an id and a property")
    if key in ("inputs", "state") and "value" in item:
        what, check = PROPERTY_CHECKS.get(item["property"], ("", lambda v: True))
        if not check(item["value"]):
            raise MalformedCallback(f"'{key}': the value of {item['property']} must be {what}")
