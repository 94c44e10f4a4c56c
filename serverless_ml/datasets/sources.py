"""Finding and reading a dataset's raw source.

Resolution order: an explicit ``--source`` (path or URL), then ``$SML_DATA_DIR/<name>.csv``,
then a path named by the spec file, then scikit-learn's bundled copy (Iris), then the public
URL, downloaded once into a cache. Reading checks the bytes (UTF-8, CSV shape, not empty)
and reports problems in one line that names the file.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from serverless_ml.datasets.spec import DatasetSpec
from serverless_ml.errors import DataValidationError, NotFoundError, SmlError

DOWNLOAD_TIMEOUT_S = 30


@dataclass(frozen=True)
class Source:
    """A raw frame and where it came from.

    Attributes:
        frame: Raw rows, indexed 0..N-1 in file order.
        location: Path, URL or ``sklearn`` (for messages and run params).
        is_file: Whether rows map to file lines (line = row + 1, after the header).
    """

    frame: pd.DataFrame
    location: str
    is_file: bool


def _is_url(value: str) -> bool:
    return value.startswith(("http://", "https://"))


def read_csv_file(path: Path) -> pd.DataFrame:
    """Read a CSV file strictly: UTF-8, a header, at least one row, no ragged lines."""
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
        frame = pd.read_csv(io.StringIO(text), dtype=None, keep_default_na=True)
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
        if len(header) == 1 and any(sep in header[0] for sep in (";", "\t", "|")):
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
    digest = hashlib.sha256(url.encode()).hexdigest()[:12]
    target = cache_dir / f"{name}-{digest}.csv"
    if target.exists():
        return target
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:  # noqa: S310 (http(s) only)
            payload = response.read()
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SmlError(
            f"could not download {url} ({reason}); give --source PATH or set SML_DATA_DIR to a folder with {name}.csv"
        ) from None
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".part")
    with os.fdopen(fd, "wb") as fh:
        fh.write(payload)
    os.replace(tmp, target)
    return target


def load_source(
    spec: DatasetSpec,
    source: str | None = None,
    data_dir: Path | None = None,
    cache_dir: Path | None = None,
) -> Source:
    """Find and read the dataset's raw rows (see the module docstring for the order)."""
    cache_dir = cache_dir or Path("~/.cache/serverless-ml").expanduser()
    if source:
        if _is_url(source):
            return Source(read_csv_file(_download(source, cache_dir, spec.name)), source, True)
        path = Path(source).expanduser()
        return Source(read_csv_file(path), str(path), True)
    if data_dir is not None:
        candidate = data_dir / f"{spec.name}.csv"
        if candidate.exists():
            return Source(read_csv_file(candidate), str(candidate), True)
    if spec.source_path:
        base = spec.spec_path.parent if spec.spec_path else Path.cwd()
        path = (base / spec.source_path).resolve()
        return Source(read_csv_file(path), str(path), True)
    if spec.sklearn_loader is not None:
        return Source(spec.sklearn_loader(), "scikit-learn bundled copy", False)
    if spec.source_url:
        return Source(read_csv_file(_download(spec.source_url, cache_dir, spec.name)), spec.source_url, True)
    raise NotFoundError(
        f"dataset '{spec.name}' has no source: give --source PATH_OR_URL, set SML_DATA_DIR, "
        "or add source.url / source.path to its spec"
    )
