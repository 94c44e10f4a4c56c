"""Finding and reading a dataset's raw source.

Resolution order: an explicit ``--source`` (path or URL), then ``$SML_DATA_DIR/<name>.csv``,
then a path named by the spec file, then scikit-learn's bundled copy (Iris), then the public
URL, downloaded once into a cache. Reading checks the bytes (UTF-8, CSV shape, not empty)
and reports problems in one line that names the file.

A file's fields are read as text, exactly as written (``0001`` stays ``0001``, ``NA`` stays
``NA``): which texts are numbers and which mean "missing" depends on the column's type in
the spec, and is decided by :mod:`serverless_ml.datasets.validation`.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import hashlib
import http.client
import io
import json
import math
import os
import re
import shlex
import stat
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pandas as pd

from serverless_ml.datasets.spec import DatasetSpec
from serverless_ml.errors import DataValidationError, NotFoundError, SmlError, SpecError
from serverless_ml.redaction import redact_uri, remember, scrub

DOWNLOAD_TIMEOUT_S = 30


@dataclass(frozen=True)
class Source:
    """A raw frame and where it came from.

    Attributes:
        frame: Raw rows, indexed 0..N-1 in file order; from a file, every field as the
            text written there (an empty field is ``""``).
        location: Path, URL or ``sklearn`` (for messages and run params).
        is_file: Whether rows map to file lines (line = row + 1, after the header).
    """

    frame: pd.DataFrame
    location: str
    is_file: bool


DOWNLOAD_SCHEMES = ("http", "https")
ENV_MAX_DOWNLOAD_BYTES = "SML_MAX_DOWNLOAD_BYTES"
DEFAULT_MAX_DOWNLOAD_BYTES = 2 * 1024**3
ENV_DOWNLOAD_DEADLINE_S = "SML_DOWNLOAD_DEADLINE_S"
DEFAULT_DOWNLOAD_DEADLINE_S = 3600.0
_CHUNK_BYTES = 1024 * 1024


def _url_scheme(value: str) -> str | None:
    """The scheme of ``value`` when it is written as a URL (``scheme://...``), lower case."""
    match = re.match(r"([A-Za-z][A-Za-z0-9+.\-]*)://", value)
    return match.group(1).lower() if match else None


def _is_url(value: str) -> bool:
    """Whether ``value`` is a URL this project downloads: http:// or https:// only (a
    ``file://`` URL would copy any local file into the cache; ``ftp://`` and the rest are
    not sources)."""
    return _url_scheme(value) in DOWNLOAD_SCHEMES


def _limit(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value <= 0:
        raise SmlError(f"{name} must be a positive number, got {raw!r}")
    return value


def _check_regular_file(path: Path) -> None:
    """A source on disk must be a regular file (or a link to one): a named pipe would
    block the read forever, and a device (``/dev/zero``) never ends."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return  # the reader says it does not exist
    except OSError as exc:
        raise DataValidationError(f"source {path} cannot be read ({exc.strerror})") from None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return  # a folder: the reader says so
    kind = ("a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a file")
    raise DataValidationError(f"source {path} is {kind}, expected a regular CSV file")


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects to http(s) URLs only (urllib would also follow one to ftp://)."""

    def redirect_request(  # noqa: PLR0913 - urllib's signature
        self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str, headers: http.client.HTTPMessage, newurl: str,
    ) -> urllib.request.Request | None:
        if _url_scheme(newurl) not in DOWNLOAD_SCHEMES:
            raise urllib.error.URLError(f"redirected to {redact_uri(newurl)}, which is not an http(s) URL")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _request(url: str) -> urllib.request.Request:
    """A request for ``url``; credentials in it (``https://user:password@host/...``) go in
    a basic-auth header that is not sent on to a host a redirect names."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return urllib.request.Request(url)
    host = parts.netloc.rpartition("@")[2]
    request = urllib.request.Request(urllib.parse.urlunsplit(parts._replace(netloc=host)))
    user = urllib.parse.unquote(parts.username or "")
    token = base64.b64encode(f"{user}:{urllib.parse.unquote(parts.password or '')}".encode()).decode()
    request.add_unredirected_header("Authorization", f"Basic {token}")
    return request


def read_csv_file(path: Path) -> pd.DataFrame:
    """Read a CSV file strictly: UTF-8, a header, at least one row, no ragged lines.

    Every field is returned as its text: pandas' own typing would turn ``0001`` into ``1.0``
    and ``NA`` into a missing value before the spec could say the column holds text.
    """
    if not path.exists():
        raise NotFoundError(f"source file {path} does not exist")
    if path.is_dir():
        raise DataValidationError(f"source {path} is a directory, expected a CSV file")
    data = path.read_bytes()
    if not data.strip():
        raise DataValidationError(f"source file {path} is empty")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataValidationError(
            f"source file {path} is not UTF-8 text: byte 0x{data[exc.start]:02x} on line {line} (offset {exc.start})"
        ) from None
    if "\x00" in text:
        offset = text.index("\x00")
        raise DataValidationError(
            f"source file {path} holds a NUL byte on line {text.count(chr(10), 0, offset) + 1} "
            "(binary data, or another encoding than UTF-8?); the CSV reader would cut the field there"
        )
    _check_header_names(text, path)
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_filter=False)
    except pd.errors.ParserError as exc:
        detail = str(exc).strip().splitlines()[0].replace("Error tokenizing data. C error: ", "")
        raise DataValidationError(f"source file {path} is not well-formed CSV: {detail}") from None
    except pd.errors.EmptyDataError:
        raise DataValidationError(f"source file {path} has no header line") from None
    if frame.empty:
        raise DataValidationError(f"source file {path} has a header but no data rows")
    _check_field_counts(text, path)
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame.reset_index(drop=True)


OTHER_DELIMITERS = {";": "semicolon", "\t": "tab", "|": "'|'"}
"""Delimiters a header read as one column may hold, and their names in messages."""


def other_delimiter(header: list[Any]) -> str | None:
    """The delimiter a CSV seems to use instead of ``,``: its header read as one column
    holds ``;``, a tab or ``|`` (the most frequent of them); else ``None``."""
    if len(header) != 1:
        return None
    name = str(header[0])
    found = [sep for sep in OTHER_DELIMITERS if sep in name]
    return max(found, key=name.count) if found else None


def other_delimiter_hint(header: list[Any], location: str | Path) -> str | None:
    """What to do with a CSV that uses another delimiter than ``,`` (``None`` when its
    header does not look like one): sml reads comma-separated files only, so convert it.
    The command keeps every field as written (``dtype=str``: ``007`` stays ``007``)."""
    sep = other_delimiter(header)
    if sep is None:
        return None
    said = f"the file seems to be {OTHER_DELIMITERS[sep]}-separated; sml reads comma-separated files only"
    source = str(location)
    if _url_scheme(source) is not None:
        return f"{said}: save it as CSV with commas and use that file"
    target = str(Path(source).with_name(f"{Path(source).stem}_commas.csv"))
    code = (f"import pandas as pd; pd.read_csv({json.dumps(source, ensure_ascii=False)}, sep={json.dumps(sep)}, "
            f"dtype=str, keep_default_na=False).to_csv({json.dumps(target, ensure_ascii=False)}, index=False)")
    return f"{said}: convert it, e.g. `python -c {shlex.quote(code)}`, and use {target} (or save it as CSV with commas)"


def _check_header_names(text: str, path: Path) -> None:
    """No column named twice: pandas would rename the second one (``Age.1``) and the
    dataset would silently read the first."""
    try:
        header = next(csv.reader(io.StringIO(text, newline="")), [])
    except csv.Error:
        return  # pandas reports the malformed header
    seen: set[str] = set()
    for name in (h.strip() for h in header):
        if name and name in seen:
            raise DataValidationError(f"source file {path} names column {name!r} twice in its header")
        seen.add(name)


def _check_field_counts(text: str, path: Path) -> None:
    """Every record has as many fields as the header.

    pandas fills a short line with missing values (and takes an extra first field on
    every line as the index), which would store a damaged row silently.
    """
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
        if other_delimiter(header) is not None:
            # Another delimiter than ','; the column check says so, naming the columns.
            return
        for record in reader:
            # pandas skips blank lines; so does this check.
            if record and len(record) != len(header):
                raise DataValidationError(
                    f"source file {path} is not well-formed CSV: line {reader.line_num} has "
                    f"{len(record)} fields, expected {len(header)} like the header"
                )
    except csv.Error:
        # pandas parsed the file already (e.g. a field longer than the csv module's
        # limit); nothing more to say about its shape.
        return


def _download(url: str, cache_dir: Path, name: str) -> Path:
    """Download ``url`` once into ``cache_dir`` (later calls reuse the file).

    Bounded: every connection and read gives up after :data:`DOWNLOAD_TIMEOUT_S`, the
    whole download after ``$SML_DOWNLOAD_DEADLINE_S`` (default an hour) and at
    ``$SML_MAX_DOWNLOAD_BYTES`` (default 2 GiB). A failed download leaves nothing behind,
    and its message shows the URL without its password.
    """
    digest = hashlib.sha256(url.encode()).hexdigest()[:12]
    target = cache_dir / f"{name}-{digest}.csv"
    if target.exists():
        return target
    remember(url)  # a log line or error of this process never shows its password
    max_bytes = int(_limit(ENV_MAX_DOWNLOAD_BYTES, DEFAULT_MAX_DOWNLOAD_BYTES))
    deadline_s = _limit(ENV_DOWNLOAD_DEADLINE_S, DEFAULT_DOWNLOAD_DEADLINE_S)
    deadline = time.monotonic() + deadline_s
    hint = f"give --source PATH or set SML_DATA_DIR to a folder with {name}.csv"
    created_dir = not cache_dir.exists()
    tmp: str | None = None
    try:
        opener = urllib.request.build_opener(_HttpOnlyRedirects())
        with opener.open(_request(url), timeout=DOWNLOAD_TIMEOUT_S) as response:
            length = response.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > max_bytes:
                raise _TooLarge(f"it is {int(length)} bytes")
            cache_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".part")
            with os.fdopen(fd, "wb") as fh:
                received = 0
                # read1: what has arrived (up to a chunk), so the deadline is checked as
                # the bytes trickle in; each wait is bounded by the socket timeout.
                while chunk := response.read1(_CHUNK_BYTES):
                    received += len(chunk)
                    if received > max_bytes:
                        raise _TooLarge(f"it has more than {max_bytes} bytes")
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"not complete after {deadline_s:g} s, the limit {ENV_DOWNLOAD_DEADLINE_S} sets")
                    fh.write(chunk)
        os.replace(tmp, target)
        tmp = None
        return target
    except _TooLarge as exc:
        raise SmlError(
            f"could not download {redact_uri(url)}: {exc}, over the limit of {max_bytes} bytes "
            f"that {ENV_MAX_DOWNLOAD_BYTES} sets; raise it, or {hint}"
        ) from None
    except (urllib.error.URLError, TimeoutError, OSError, http.client.HTTPException, ValueError) as exc:
        reason = f"HTTP {exc.code} {exc.reason}" if isinstance(exc, urllib.error.HTTPError) else getattr(exc, "reason", None) or exc
        raise SmlError(f"could not download {redact_uri(url)} ({scrub(str(reason), url)[:300]}); {hint}") from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if created_dir and not target.exists():
            with contextlib.suppress(OSError):
                cache_dir.rmdir()  # only if empty


class _TooLarge(Exception):
    """A download over the size limit."""


def load_source(
    spec: DatasetSpec,
    source: str | None = None,
    data_dir: Path | None = None,
    cache_dir: Path | None = None,
) -> Source:
    """Find and read the dataset's raw rows (see the module docstring for the order)."""
    cache_dir = cache_dir or Path("~/.cache/serverless-ml").expanduser()
    if spec.source_url and not _is_url(spec.source_url):
        where = f"dataset spec file {spec.spec_path}" if spec.spec_path else f"dataset '{spec.name}'"
        raise SpecError(f"{where}: source.url {redact_uri(spec.source_url)} must be an http:// or https:// URL "
                        "(a local file is source.path)")
    if source:
        if _is_url(source):
            return Source(read_csv_file(_download(source, cache_dir, spec.name)), redact_uri(source), True)
        if _url_scheme(source) is not None:
            raise SmlError(f"--source {redact_uri(source)}: only http:// and https:// URLs are downloaded; "
                           "give a local path or an http(s) URL")
        path = Path(source).expanduser()
        _check_regular_file(path)
        return Source(read_csv_file(path), str(path), True)
    if data_dir is not None:
        candidate = data_dir / f"{spec.name}.csv"
        if candidate.exists():
            _check_regular_file(candidate)
            return Source(read_csv_file(candidate), str(candidate), True)
    if spec.source_path:
        base = spec.spec_path.parent if spec.spec_path else Path.cwd()
        path = (base / spec.source_path).resolve()
        _check_regular_file(path)
        return Source(read_csv_file(path), str(path), True)
    if spec.sklearn_loader is not None:
        return Source(spec.sklearn_loader(), "scikit-learn bundled copy", False)
    if spec.source_url:
        return Source(read_csv_file(_download(spec.source_url, cache_dir, spec.name)), redact_uri(spec.source_url), True)
    raise NotFoundError(
        f"dataset '{spec.name}' has no source: give --source PATH_OR_URL, set SML_DATA_DIR, "
        "or add source.url / source.path to its spec"
    )
