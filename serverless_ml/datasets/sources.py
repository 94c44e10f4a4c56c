"""Finding and reading a dataset's raw source.

Resolution order: an explicit ``--source`` (path or URL), then ``$SML_DATA_DIR/<name>.csv``,
then a path named by the spec file, then scikit-learn's bundled copy (Iris), then the public
URL, downloaded once into a cache. Reading checks the bytes (UTF-8, CSV shape, not empty)
and reports problems in one line that names the file.

A file's fields are read as text, exactly as written (``0001`` stays ``0001``, ``NA`` stays
``NA``): which texts are numbers and which mean "missing" depends on the column's type in
the spec, and is decided by :mod:`serverless_ml.datasets.validation`.

Live rows (``sml ingest``, :func:`load_rows`) come from a path or URL named each time, as
CSV or Parquet (``.parquet``: its columns keep their types, its nulls are missing), and a
URL is downloaded afresh each time (tomorrow's file at the same URL holds other rows).
:func:`open_rows` reads such a file in parts of :data:`CHUNK_ROWS` rows, by the same rules
and with the same messages, so that a large file is never held whole.
"""

from __future__ import annotations

import base64
import codecs
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
from collections.abc import Iterator
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
        offset: The file position of the frame's first row: a chunk of a file read in
            parts (:func:`open_rows`) names its rows as the file numbers them.
    """

    frame: pd.DataFrame
    location: str
    is_file: bool
    offset: int = 0


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


def _check_regular_file(path: Path, expected: str | None = None) -> None:
    """A source on disk must be a regular file (or a link to one): a named pipe would
    block the read forever, and a device (``/dev/zero``) never ends. ``expected``: what the
    command reads (live rows and labels: :data:`ROWS_FILE`), a folder refused as well;
    without it a regular CSV file, and a folder is left to the CSV reader to name."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return  # the reader says it does not exist
    except OSError as exc:
        raise DataValidationError(f"source {path} cannot be read ({exc.strerror})") from None
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        if expected is not None:
            raise DataValidationError(f"source {path} is a directory, expected {expected}")
        return  # a folder: the CSV reader says so
    kind = ("a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a file")
    raise DataValidationError(f"source {path} is {kind}, expected {expected or 'a regular CSV file'}")


ROWS_FILE = "a CSV or Parquet file"
"""What a file of live rows or labels is (:func:`read_rows_file`, :func:`iter_rows_file`)."""


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


def _check_header_names(text: str | IO[str], path: Path) -> None:
    """No column named twice: pandas would rename the second one (``Age.1``) and the
    dataset would silently read the first. ``text`` as for :func:`_check_field_counts`."""
    try:
        header = next(csv.reader(io.StringIO(text, newline="") if isinstance(text, str) else text), [])
    except csv.Error:
        return  # pandas reports the malformed header
    seen: set[str] = set()
    for name in (h.strip() for h in header):
        if name and name in seen:
            raise DataValidationError(f"source file {path} names column {name!r} twice in its header")
        seen.add(name)


def _check_field_counts(text: str | IO[str], path: Path) -> None:
    """Every record has as many fields as the header (``text``: the file's text, or the
    file opened as text with ``newline=""``).

    pandas fills a short line with missing values (and takes an extra first field on
    every line as the index), which would store a damaged row silently.
    """
    reader = csv.reader(io.StringIO(text, newline="") if isinstance(text, str) else text)
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


def _download(url: str, cache_dir: Path, name: str, *, suffix: str = ".csv", fresh: bool = False,
              hint: str | None = None) -> Path:
    """Download ``url`` once into ``cache_dir`` (later calls reuse the file); with
    ``fresh``, download it again into a file of its own, which the caller deletes.

    Bounded: every connection and read gives up after :data:`DOWNLOAD_TIMEOUT_S`, the
    whole download after ``$SML_DOWNLOAD_DEADLINE_S`` (default an hour) and at
    ``$SML_MAX_DOWNLOAD_BYTES`` (default 2 GiB). A failed download leaves nothing behind,
    and its message shows the URL without its password.
    """
    digest = hashlib.sha256(url.encode()).hexdigest()[:12]
    target = cache_dir / f"{name}-{digest}{suffix}"
    if fresh:
        target = cache_dir / f"{name}-{digest}-{os.getpid()}-{time.monotonic_ns()}{suffix}"
    elif target.exists():
        return target
    remember(url)  # a log line or error of this process never shows its password
    max_bytes = int(_limit(ENV_MAX_DOWNLOAD_BYTES, DEFAULT_MAX_DOWNLOAD_BYTES))
    deadline_s = _limit(ENV_DOWNLOAD_DEADLINE_S, DEFAULT_DOWNLOAD_DEADLINE_S)
    deadline = time.monotonic() + deadline_s
    # A dataset's own source can also be found in SML_DATA_DIR; a file of live rows or labels only by --source.
    hint = hint or f"give --source PATH or set SML_DATA_DIR to a folder with {name}.csv"
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


PARQUET_SUFFIX = ".parquet"


def is_parquet(location: str) -> bool:
    """Whether a path or URL names a Parquet file (by its name: ``.parquet``)."""
    path = urllib.parse.urlsplit(location).path if _is_url(location) else location
    return path.lower().endswith(PARQUET_SUFFIX)


def _nullable_integers(type_: Any) -> Any:
    """Integer columns as pandas' nullable ``Int64``: exact beside nulls (a float would
    round 2**53 + 1). Unsigned 64-bit ones stay as they are (they may not fit)."""
    import pyarrow as pa

    if pa.types.is_integer(type_) and not pa.types.is_uint64(type_):
        return pd.Int64Dtype()
    return None


def _check_parquet_path(path: Path) -> None:
    """A Parquet source is an existing, non-empty file (one line otherwise)."""
    if not path.exists():
        raise NotFoundError(f"source file {path} does not exist")
    if path.is_dir():
        raise DataValidationError(f"source {path} is a directory, expected a Parquet file")
    if path.stat().st_size == 0:
        raise DataValidationError(f"source file {path} is empty")


def read_parquet_file(path: Path) -> pd.DataFrame:
    """Read a Parquet file: its columns keep their types (numbers, text, booleans, dates,
    timestamps), a null is a missing value, text-coded (dictionary) columns are their texts.

    Raises:
        DataValidationError: not a Parquet file, no data rows, or a column named twice.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    _check_parquet_path(path)
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataValidationError(f"source file {path} is not a readable Parquet file: {detail}") from None
    # A frame's index that pandas saved as a column is not a column of the data.
    saved_index = (table.schema.pandas_metadata or {}).get("index_columns", [])
    table = table.drop_columns([c for c in saved_index if isinstance(c, str) and c in table.column_names])
    names = [str(n) for n in table.column_names]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DataValidationError(f"source file {path} names column {twice[0]!r} twice")
    if table.num_rows == 0:
        raise DataValidationError(f"source file {path} has columns but no data rows")
    columns = []
    for column in table.columns:
        columns.append(column.cast(column.type.value_type) if pa.types.is_dictionary(column.type) else column)
    table = pa.Table.from_arrays(columns, names=names)
    try:
        frame = table.to_pandas(types_mapper=_nullable_integers)
    except (pa.ArrowException, ValueError, OverflowError) as exc:
        raise DataValidationError(f"source file {path}: a column cannot be read ({str(exc).splitlines()[0]})") from None
    return frame.reset_index(drop=True)


def read_rows_file(path: Path) -> Source:
    """A local CSV or Parquet file (by its name) of live rows."""
    _check_regular_file(path, ROWS_FILE)
    if is_parquet(str(path)):
        # A Parquet row has no line of the file: messages name rows only.
        return Source(read_parquet_file(path), str(path), False)
    return Source(read_csv_file(path), str(path), True)


CHUNK_ROWS = 100_000
"""Rows per part when a file of live rows is read in parts (:func:`open_rows`): 100 000
Titanic-shaped rows are ~100 MB as a pandas frame of texts, so a part and its validated
copy stay well inside the memory `sml ingest` aims at, and parts are large enough that
pandas' per-call overhead is a few percent of the work."""

_SCAN_BYTES = 1024 * 1024


def _line_and_byte(path: Path, offset: int) -> tuple[int, int]:
    """The line (1-based) of byte ``offset`` of the file, and that byte (read again in
    pieces, for the message about a file that is not UTF-8)."""
    newlines, position = 0, 0
    with open(path, "rb") as fh:
        while position < offset and (piece := fh.read(min(_SCAN_BYTES, offset - position))):
            newlines += piece.count(b"\n")
            position += len(piece)
        byte = fh.read(1)
    return newlines + 1, byte[0] if byte else 0


def _scan_csv_bytes(path: Path) -> None:
    """The checks :func:`read_csv_file` makes on a file's bytes before parsing it (not
    empty, UTF-8, no NUL byte), in its order and with its messages, reading the file in
    pieces of :data:`_SCAN_BYTES`."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    newlines = 0  # in the pieces before the one being decoded
    decoded = 0  # bytes given to the decoder (after a byte-order mark)
    nonblank = False
    nul_line: int | None = None
    bad: int | None = None  # the first byte that is not UTF-8, counted as read_csv_file counts it
    with open(path, "rb") as fh:
        first = True
        while piece := fh.read(_SCAN_BYTES):
            nonblank = nonblank or bool(piece.strip())
            text_bytes = piece[len(codecs.BOM_UTF8):] if first and piece.startswith(codecs.BOM_UTF8) else piece
            first = False
            try:
                text = decoder.decode(text_bytes)
            except UnicodeDecodeError as exc:
                bad = decoded - (len(exc.object) - len(text_bytes)) + exc.start
                break
            if nul_line is None and "\x00" in text:
                nul_line = newlines + text.count("\n", 0, text.index("\x00")) + 1
            newlines += piece.count(b"\n")
            decoded += len(text_bytes)
        else:
            try:
                decoder.decode(b"", final=True)
            except UnicodeDecodeError as exc:
                bad = decoded - len(exc.object) + exc.start
    if not nonblank:
        raise DataValidationError(f"source file {path} is empty")
    if bad is not None:
        # ``bytes.decode("utf-8-sig")`` counts offsets after a byte-order mark; the byte
        # and line are then read at that offset of the whole file, as read_csv_file does.
        line, byte = _line_and_byte(path, bad)
        raise DataValidationError(f"source file {path} is not UTF-8 text: byte 0x{byte:02x} on line {line} (offset {bad})")
    if nul_line is not None:
        raise DataValidationError(
            f"source file {path} holds a NUL byte on line {nul_line} "
            "(binary data, or another encoding than UTF-8?); the CSV reader would cut the field there"
        )


def iter_csv_file(path: Path, chunk_rows: int = CHUNK_ROWS, location: str | None = None) -> Iterator[Source]:
    """A CSV file in parts of ``chunk_rows`` rows, read by the rules of
    :func:`read_csv_file` (every field its text; the same checks and messages, each raised
    where that function would: the file's bytes and header before the first part, a
    malformed line when the parser reaches it, a short or long line after the last part).
    A caller that must name the first problem as :func:`read_csv_file` would reads every
    part even after a bad value.

    Yields:
        Sources of ``chunk_rows`` rows at most (the last fewer), ``offset`` their first
        row's position in the file, ``location`` (default the path) naming them.
    """
    if not path.exists():
        raise NotFoundError(f"source file {path} does not exist")
    if path.is_dir():
        raise DataValidationError(f"source {path} is a directory, expected a CSV file")
    _scan_csv_bytes(path)
    with open(path, encoding="utf-8-sig", newline="") as fh:
        _check_header_names(fh, path)
    where = str(path) if location is None else location
    offset = 0
    try:
        with pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8-sig",
                         chunksize=chunk_rows) as reader:
            for chunk in reader:
                if chunk.empty:
                    continue
                chunk.columns = [str(c).strip() for c in chunk.columns]
                yield Source(chunk.reset_index(drop=True), where, True, offset)
                offset += len(chunk)
    except pd.errors.ParserError as exc:
        detail = str(exc).strip().splitlines()[0].replace("Error tokenizing data. C error: ", "")
        raise DataValidationError(f"source file {path} is not well-formed CSV: {detail}") from None
    except pd.errors.EmptyDataError:
        raise DataValidationError(f"source file {path} has no header line") from None
    if offset == 0:
        raise DataValidationError(f"source file {path} has a header but no data rows")
    with open(path, encoding="utf-8-sig", newline="") as fh:
        _check_field_counts(fh, path)


def iter_parquet_file(path: Path, chunk_rows: int = CHUNK_ROWS, location: str | None = None) -> Iterator[Source]:
    """A Parquet file in parts of ``chunk_rows`` rows (its row groups read one batch at a
    time), each part as :func:`read_parquet_file` gives the whole file: the same types and
    checks; a part that cannot be read is refused when it is reached.

    Yields:
        Sources as :func:`iter_csv_file` yields them (``is_file`` off: a Parquet row has
        no line).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    _check_parquet_path(path)

    def unreadable(exc: BaseException) -> DataValidationError:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return DataValidationError(f"source file {path} is not a readable Parquet file: {detail}")

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise unreadable(exc) from None
    with parquet:
        schema = parquet.schema_arrow
        saved_index = (schema.pandas_metadata or {}).get("index_columns", [])
        dropped = [c for c in saved_index if isinstance(c, str) and c in schema.names]
        names = [str(n) for n in schema.names if n not in dropped]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise DataValidationError(f"source file {path} names column {twice[0]!r} twice")
        if parquet.metadata.num_rows == 0:
            raise DataValidationError(f"source file {path} has columns but no data rows")
        where = str(path) if location is None else location
        offset = 0
        batches = parquet.iter_batches(batch_size=chunk_rows)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                break
            except (pa.ArrowException, OSError) as exc:
                raise unreadable(exc) from None
            if batch.num_rows == 0:
                continue
            table = pa.Table.from_batches([batch]).drop_columns(dropped)
            columns = [c.cast(c.type.value_type) if pa.types.is_dictionary(c.type) else c for c in table.columns]
            try:
                frame = pa.Table.from_arrays(columns, names=names).to_pandas(types_mapper=_nullable_integers)
            except (pa.ArrowException, ValueError, OverflowError) as exc:
                raise DataValidationError(f"source file {path}: a column cannot be read ({str(exc).splitlines()[0]})") from None
            yield Source(frame.reset_index(drop=True), where, False, offset)
            offset += len(frame)


def iter_rows_file(path: Path, chunk_rows: int = CHUNK_ROWS, location: str | None = None) -> Iterator[Source]:
    """A local CSV or Parquet file (by its name) of live rows, in parts (see
    :func:`iter_csv_file`)."""
    _check_regular_file(path, ROWS_FILE)
    if is_parquet(str(path)):
        return iter_parquet_file(path, chunk_rows, location)
    return iter_csv_file(path, chunk_rows, location)


def _named_by_url(parts: Iterator[Source], path: Path, url: str) -> Iterator[Source]:
    """``parts`` of a downloaded copy, a problem with it named by its URL (the copy is
    deleted)."""
    try:
        yield from parts
    except SmlError as exc:
        raise type(exc)(str(exc).replace(str(path), redact_uri(url))) from None


@contextlib.contextmanager
def open_rows(source: str, name: str, cache_dir: Path | None = None,
              chunk_rows: int = CHUNK_ROWS) -> Iterator[tuple[str, Iterator[Source]]]:
    """Live rows from ``source`` as :func:`load_rows` finds them, read in parts of
    ``chunk_rows`` rows (:func:`iter_csv_file`, :func:`iter_parquet_file`): memory holds a
    part, whatever the file's size. A URL is downloaded afresh into a file of its own,
    deleted when the block ends.

    Yields:
        The location that names the rows (a path, or the URL without its password) and
        the iterator of parts.
    """
    cache_dir = cache_dir or Path("~/.cache/serverless-ml").expanduser()
    if _is_url(source):
        location = redact_uri(source)
        with _fresh_download(source, cache_dir, name) as path:
            yield location, _named_by_url(iter_rows_file(path, chunk_rows, location), path, source)
        return
    if _url_scheme(source) is not None:
        raise SmlError(f"--source {redact_uri(source)}: only http:// and https:// URLs are downloaded; "
                       "give a local path or an http(s) URL")
    path = Path(source).expanduser()
    yield str(path), iter_rows_file(path, chunk_rows)


@contextlib.contextmanager
def _fresh_download(url: str, cache_dir: Path, name: str) -> Iterator[Path]:
    """``url`` downloaded now into a file of its own, deleted afterwards."""
    path = _download(url, cache_dir, name, suffix=PARQUET_SUFFIX if is_parquet(url) else ".csv", fresh=True,
                     hint="check the URL, or download the file and give --source its path")
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()


def load_rows(source: str, name: str, cache_dir: Path | None = None) -> Source:
    """Live rows from ``source``: a CSV or Parquet (``.parquet``) path, or an http(s) URL
    downloaded afresh (not from the cache: the same URL may serve new rows each day).

    ``name`` (the dataset's) names the download's temporary file in ``cache_dir``.
    """
    cache_dir = cache_dir or Path("~/.cache/serverless-ml").expanduser()
    if _is_url(source):
        with _fresh_download(source, cache_dir, name) as path:
            try:
                rows = read_rows_file(path)
            except SmlError as exc:  # named by its URL: the downloaded copy is deleted
                raise type(exc)(str(exc).replace(str(path), redact_uri(source))) from None
        return Source(rows.frame, redact_uri(source), rows.is_file)
    if _url_scheme(source) is not None:
        raise SmlError(f"--source {redact_uri(source)}: only http:// and https:// URLs are downloaded; "
                       "give a local path or an http(s) URL")
    return read_rows_file(Path(source).expanduser())


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
        if not data_dir.is_dir():
            # A typo would otherwise fall back to the public copy without a word (found by a
            # user trial: a misspelled SML_DATA_DIR trained on scikit-learn's Iris).
            state = "is not a folder" if data_dir.exists() else "does not exist"
            raise SmlError(f"data folder {data_dir} (SML_DATA_DIR) {state}: point it at the folder of "
                           f"<dataset>.csv files, or unset it")
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
    where = f"put {spec.name}.csv in SML_DATA_DIR ({data_dir})" if data_dir is not None else "set SML_DATA_DIR"
    raise NotFoundError(
        f"dataset '{spec.name}' has no source: give --source PATH_OR_URL, {where}, "
        "or add source.url / source.path to its spec"
    )
