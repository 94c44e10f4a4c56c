"""A real HTTP receiver for notification tests: ``http.server`` in a thread on a free port
of 127.0.0.1, recording every request and answering from a script of status codes."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    """One request as the receiver saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class HookReceiver:
    """The receiver's state: the requests it got, and the statuses it answers with (the
    first ones in order, then ``then``); the first ``slow`` requests are answered only
    after ``delay_s`` seconds."""

    port: int = 0
    statuses: list[int] = field(default_factory=list)
    then: int = 200
    requests: list[Received] = field(default_factory=list)
    slow: int = 0
    delay_s: float = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def url_with(self, userinfo: str = "", path: str = "/hook", query: str = "") -> str:
        """The receiver's URL with user information and a query (credentials to mask)."""
        return f"http://{userinfo + '@' if userinfo else ''}127.0.0.1:{self.port}{path}{'?' + query if query else ''}"

    def payloads(self) -> list[Any]:
        return [r.json() for r in self.requests]


@contextmanager
def hook_receiver(statuses: list[int] | None = None, then: int = 200, port: int = 0, slow: int = 0,
                  delay_s: float = 0.0) -> Iterator[HookReceiver]:
    """A running receiver (on ``port``, default a free one); stopped on exit."""
    state = HookReceiver(statuses=list(statuses or []), then=then, slow=slow, delay_s=delay_s)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with lock:
                state.requests.append(Received("POST", self.path, dict(self.headers.items()), body))
                status = state.statuses.pop(0) if state.statuses else state.then
                delay = state.delay_s if len(state.requests) <= state.slow else 0.0
            time.sleep(delay)
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
            return

    class Server(ThreadingHTTPServer):
        def handle_error(self, request: Any, client_address: Any) -> None:
            return  # a client that gave up on a slow answer: its broken pipe is expected

    server = Server(("127.0.0.1", port), Handler)
    state.port = int(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
