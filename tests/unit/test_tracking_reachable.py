"""The tracking-server probe: credentials in the URI go as basic auth, never in the host."""

from __future__ import annotations

import http.server
import threading

import pytest

from serverless_ml.tracking import TrackingServerUnreachable, check_tracking_reachable

pytestmark = pytest.mark.unit


def test_a_reachable_server_with_credentials_in_the_uri_is_reachable() -> None:
    seen: dict[str, str | None] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            seen["path"], seen["auth"] = self.path, self.headers.get("Authorization")
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        check_tracking_reachable(f"http://user:p%40ss@127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
    assert seen == {"path": "/health", "auth": "Basic dXNlcjpwQHNz"}  # user:p@ss


def test_a_down_server_is_one_line_without_the_password() -> None:
    with pytest.raises(TrackingServerUnreachable) as raised:
        check_tracking_reachable("http://user:secret-marker@127.0.0.1:9")
    assert "secret-marker" not in str(raised.value) and "cannot be reached" in str(raised.value)
    # The reason alone, for a caller that words its own message (the site's probe).
    assert raised.value.reason and str(raised.value).endswith(f"({raised.value.reason})")
