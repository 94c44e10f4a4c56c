"""Sources and spec files that would hang a command or read what they should not (issue
16, hangs and leaks): only regular files and http(s) URLs are read, downloads are bounded
in size and time, a spec file in size and YAML aliases."""

from __future__ import annotations

import dataclasses
import http.server
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from serverless_ml.datasets import iris
from serverless_ml.datasets.sources import load_rows, load_source
from serverless_ml.datasets.spec import MAX_SPEC_FILE_BYTES, load_spec_file
from serverless_ml.errors import SmlError, SpecError

pytestmark = pytest.mark.unit

PASSWORD = "Pw-Marker-2718"


class Handler(http.server.BaseHTTPRequestHandler):
    """``/iris.csv``; ``/endless`` (no length, never ends); ``/huge`` (a length of 1 TB);
    ``/trickle`` (a byte every 0.2 s); ``/to-file`` (a redirect to file:///etc/passwd)."""

    csv = b""
    seen_auth: ClassVar[list[str | None]] = []  # shared by every request's handler

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = self.path.split("?")[0]
        Handler.seen_auth.append(self.headers.get("Authorization"))
        if path == "/missing.csv":
            self.send_response(404)
            self.end_headers()
            return
        if path == "/to-file":
            self.send_response(302)
            self.send_header("Location", "file:///etc/passwd")
            self.end_headers()
            return
        self.send_response(200)
        if path == "/huge":
            self.send_header("Content-Length", str(10**12))
        elif path == "/iris.csv":
            self.send_header("Content-Length", str(len(self.csv)))
        self.end_headers()
        try:
            if path == "/iris.csv":
                self.wfile.write(self.csv)
            elif path == "/trickle":
                for _ in range(200):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.2)
            else:
                for _ in range(10_000):
                    self.wfile.write(b"\0" * 65536)
        except OSError:
            pass  # the client gave up, as it should

    def log_message(self, *args: object) -> None:
        pass


# These bounds tell a refusal from a hang, not a fast refusal from a slow one: the trickle
# takes 40 s without its deadline; a FIFO or an alias bomb never ends. Generous, since the
# suite runs on 2 loaded cores.
HANG_S = 25


@pytest.fixture(scope="module")
def server(data_dir: Path) -> Iterator[str]:
    Handler.csv = (data_dir / "iris.csv").read_bytes() if (data_dir / "iris.csv").exists() else b"a,b\n1,2\n"
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)


def _refused(source: str, cache: Path, *, spec=iris.SPEC) -> str:  # noqa: ANN001
    with pytest.raises(SmlError) as info:
        load_source(spec, source, cache_dir=cache)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_named_pipe_or_a_device_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    started = time.monotonic()
    assert _refused(str(fifo), tmp_path / "cache") == f"source {fifo} is a named pipe (FIFO), expected a regular CSV file"
    assert _refused("/dev/zero", tmp_path / "cache") == "source /dev/zero is a device, expected a regular CSV file"
    assert time.monotonic() - started < HANG_S


def test_a_file_of_live_rows_or_labels_is_refused_as_what_it_is(server: str, tmp_path: Path) -> None:
    """Found by a user trial: a folder was "expected a CSV file" (Parquet is read too), and a
    missing URL was told to set SML_DATA_DIR (which only a dataset's own source is found in)."""
    folder = tmp_path / "rows"
    folder.mkdir()
    fifo = tmp_path / "rows.parquet"
    os.mkfifo(fifo)
    for source, expected in [
        (folder, f"source {folder} is a directory, expected a CSV or Parquet file"),
        (fifo, f"source {fifo} is a named pipe (FIFO), expected a CSV or Parquet file"),
        (f"{server}/missing.csv", f"could not download {server}/missing.csv (HTTP 404 Not Found); "
                                  "check the URL, or download the file and give --source its path"),
    ]:
        with pytest.raises(SmlError) as info:
            load_rows(str(source), "iris", tmp_path / "cache")
        assert str(info.value) == expected
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())



@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/x.csv", "FILE:///etc/hosts"])
def test_only_http_urls_are_sources(url: str, tmp_path: Path) -> None:
    assert "only http:// and https:// URLs are downloaded" in _refused(url, tmp_path / "cache")
    spec = dataclasses.replace(iris.SPEC, source_url=url, sklearn_loader=None)
    message = _refused("", tmp_path / "cache", spec=spec)
    assert "source.url" in message and "must be an http:// or https:// URL" in message
    assert not (tmp_path / "cache").exists()


def test_a_download_sends_credentials_as_basic_auth_and_shows_none(server: str, tmp_path: Path) -> None:
    Handler.seen_auth.clear()
    source = load_source(iris.SPEC, f"{server.replace('//', f'//sml:{PASSWORD}@')}/iris.csv", cache_dir=tmp_path)
    assert Handler.seen_auth and Handler.seen_auth[-1] and Handler.seen_auth[-1].startswith("Basic ")
    assert PASSWORD not in source.location and "sml:***@" in source.location


def test_a_failed_download_shows_no_password(free_port, tmp_path: Path) -> None:  # noqa: ANN001
    message = _refused(f"http://sml:{PASSWORD}@x@127.0.0.1:{free_port()}/iris.csv?token=T0ken-Marker", tmp_path / "cache")
    assert message.startswith("could not download http://sml:***@127.0.0.1:")
    assert PASSWORD not in message and "T0ken-Marker" not in message and "token=***" in message


@pytest.mark.parametrize(
    ("path", "env", "expected"),
    [
        ("/huge", {}, "it is 1000000000000 bytes, over the limit of 2147483648 bytes that SML_MAX_DOWNLOAD_BYTES sets"),
        ("/endless", {"SML_MAX_DOWNLOAD_BYTES": "3000000"}, "it has more than 3000000 bytes"),
        ("/trickle", {"SML_DOWNLOAD_DEADLINE_S": "1"}, "not complete after 1 s, the limit SML_DOWNLOAD_DEADLINE_S sets"),
        ("/to-file", {}, "Redirection to url 'file:///etc/passwd' is not allowed"),
    ],
)
def test_downloads_are_bounded_and_leave_nothing(path: str, env: dict[str, str], expected: str, server: str,
                                                 tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    started = time.monotonic()
    message = _refused(f"{server}{path}", tmp_path / "cache")
    assert expected in message, message
    assert time.monotonic() - started < HANG_S
    assert not (tmp_path / "cache").exists()  # no partial file, no empty cache folder


def test_a_bad_download_limit_is_one_line(server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SML_MAX_DOWNLOAD_BYTES", "lots")
    assert _refused(f"{server}/iris.csv", tmp_path / "cache") == "SML_MAX_DOWNLOAD_BYTES must be a positive number, got 'lots'"


SPEC = """\
name: wine
source: {path: wine.csv}
label: cultivar
classes: [class_0, class_1]
features:
  alcohol: {type: double, min: 10, max: 16}
"""

ALIAS_BOMB = SPEC + "description:\n  - &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"  - &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True)
)


def _spec_error(path: Path) -> str:
    started = time.monotonic()
    with pytest.raises(SpecError) as info:
        load_spec_file(path)
    assert time.monotonic() - started < HANG_S
    return str(info.value)


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path: Path) -> None:
    (tmp_path / "bomb.yaml").write_text(ALIAS_BOMB)
    assert _spec_error(tmp_path / "bomb.yaml") == (
        f"dataset spec file {tmp_path / 'bomb.yaml'}, line 9: YAML alias *a - aliases are not allowed in a spec "
        "(write the value out)"
    )
    (tmp_path / "merge.yaml").write_text(SPEC + "synthetic: &s {jitter: 0.1}\nother: {<<: *s}\n")
    assert "YAML alias *s" in _spec_error(tmp_path / "merge.yaml")


def test_a_spec_file_is_bounded_in_size_depth_and_kind(tmp_path: Path) -> None:
    (tmp_path / "big.yaml").write_text(SPEC + "#" * MAX_SPEC_FILE_BYTES)
    assert _spec_error(tmp_path / "big.yaml").endswith("is larger than 1024 KiB; a spec is a page of settings")
    (tmp_path / "deep.toml").write_text("a = " + "[" * 50_000 + "]" * 50_000)
    assert _spec_error(tmp_path / "deep.toml").endswith("cannot be parsed: values are nested too deeply")
    (tmp_path / "deep.yaml").write_text("description: " + "[" * 50_000 + "]" * 50_000)
    assert _spec_error(tmp_path / "deep.yaml").endswith("cannot be parsed: values are nested too deeply")
    os.mkfifo(tmp_path / "pipe.yaml")
    assert _spec_error(tmp_path / "pipe.yaml").endswith("pipe.yaml is not a regular file")
    (tmp_path / "good.yaml").write_text(SPEC + "description: &d plain anchors are harmless\n")
    assert load_spec_file(tmp_path / "good.yaml").description == "plain anchors are harmless"


def test_a_data_folder_that_does_not_exist_is_refused_not_replaced_by_the_public_copy(tmp_path: Path) -> None:
    """Found by a user trial: a misspelled SML_DATA_DIR fell back to scikit-learn's Iris
    (or the download) without a word."""
    from serverless_ml.datasets import get_dataset
    from serverless_ml.datasets.sources import load_source
    from serverless_ml.errors import SmlError

    with pytest.raises(SmlError, match=r"^data folder .*/typo \(SML_DATA_DIR\) does not exist: point it at the folder"):
        load_source(get_dataset("iris"), None, tmp_path / "typo")
    (tmp_path / "file").write_text("x")
    with pytest.raises(SmlError, match=r"\(SML_DATA_DIR\) is not a folder"):
        load_source(get_dataset("iris"), None, tmp_path / "file")
    # A folder without the dataset's file: the next source, as before.
    assert load_source(get_dataset("iris"), None, tmp_path).location == "scikit-learn bundled copy"
