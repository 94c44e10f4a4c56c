"""A file of live rows read and validated in parts (`sml ingest` in bounded memory) gives
what the file read whole gives: the same rows, and the same first error with the file's
row and line, whatever the part size; duplicate keys are found across parts. Parts of 7
rows here, so every file below spans several."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from serverless_ml.datasets import titanic
from serverless_ml.datasets.sources import Source, iter_csv_file, iter_parquet_file, read_csv_file, read_parquet_file
from serverless_ml.datasets.spec import parse_spec
from serverless_ml.datasets.validation import KeyLedger, build_feature_rows, iter_feature_rows
from serverless_ml.errors import DataValidationError
from serverless_ml.pipelines.ingest import keyed_spec

pytestmark = pytest.mark.unit

STAMP = pd.Timestamp("2024-02-01", tz="UTC")
PART = 7


def _things() -> object:
    return parse_spec({
        "name": "things", "label": "y", "classes": [0, 1], "primary_key": "id", "event_time_column": "seen",
        "features": {"v": {"type": "double", "nullable": True, "min": 0, "max": 100},
                     "n": {"type": "bigint", "min": 0, "max": 9},
                     "colour": {"type": "string", "categories": ["red", "white"]}},
    }, "things.yaml")


def _whole(spec: object, source_of: object, path: Path) -> pd.DataFrame | str:
    """The rows, or the error message, of the file read and validated at once."""
    try:
        source = source_of(path)  # type: ignore[operator]
        event_time = None if spec.event_time_column else STAMP  # type: ignore[attr-defined]
        return build_feature_rows(source, spec, "live", event_time, label_required=False,  # type: ignore[arg-type]
                                  event_time_column=spec.event_time_column)  # type: ignore[attr-defined]
    except DataValidationError as exc:
        return str(exc)


def _in_parts(spec: object, parts_of: object, path: Path, part_rows: int = PART) -> pd.DataFrame | str:
    """The same, read in parts of ``part_rows`` rows."""
    try:
        event_time = None if spec.event_time_column else STAMP  # type: ignore[attr-defined]
        frames = list(iter_feature_rows(parts_of(path, part_rows), spec, "live", event_time,  # type: ignore[operator, arg-type]
                                        label_required=False, event_time_column=spec.event_time_column))  # type: ignore[attr-defined]
        return pd.concat(frames, ignore_index=True)
    except DataValidationError as exc:
        return str(exc)


def _csv_source(path: Path) -> Source:
    return Source(read_csv_file(path), str(path), True)


def _parquet_source(path: Path) -> Source:
    return Source(read_parquet_file(path), str(path), False)


def _rows_equal(whole: pd.DataFrame | str, parts: pd.DataFrame | str) -> None:
    assert isinstance(whole, pd.DataFrame), whole
    assert isinstance(parts, pd.DataFrame), parts
    # A part without a missing label has an int64 label, the whole file Int64: the same
    # values, and the store's schema makes them one type.
    pd.testing.assert_frame_equal(parts, whole, check_dtype=False)
    assert parts.isna().equals(whole.isna())


# --- the same rows ---------------------------------------------------------------------------------


def test_the_titanic_file_in_parts_of_seven_gives_the_rows_it_gives_whole(tmp_path: Path, data_dir: Path) -> None:
    spec = keyed_spec(titanic.SPEC)
    raw = read_csv_file(data_dir / "titanic.csv")
    raw.loc[raw.index[::5], "Survived"] = ""  # live rows: some labels not known yet
    path = tmp_path / "live.csv"
    raw.to_csv(path, index=False)
    whole, parts = _whole(spec, _csv_source, path), _in_parts(spec, iter_csv_file, path)
    _rows_equal(whole, parts)
    assert len(parts) == 891
    # Parquet too, its columns typed.
    parquet = tmp_path / "live.parquet"
    pq.write_table(pa.Table.from_pandas(pd.read_csv(data_dir / "titanic.csv"), preserve_index=False), parquet,
                   row_group_size=50)
    _rows_equal(_whole(spec, _parquet_source, parquet), _in_parts(spec, iter_parquet_file, parquet))


# --- the same first error ------------------------------------------------------------------------


HEADER = "id,v,n,colour,y,seen"


def _good_rows(n: int) -> list[list[str]]:
    return [[str(i + 1), f"{(i % 9) * 1.5}", str(i % 10), "red" if i % 3 else "white", str(i % 2), "2024-02-01"]
            for i in range(n)]


# Faults planted in a field (column index, text): every check of every column.
FAULTS = [
    (0, ""), (0, "x"), (0, "2.5"), (0, "99999999999999999999"), (0, "DUP"),  # key: missing, bad, fraction, too large, duplicate
    (1, "abc"), (1, "1e400"), (1, "-1"), (1, "inf"),  # double: not a number, infinite, below the minimum
    (2, "1.5"), (2, "12"), (2, ""), (2, "z"),  # bigint: fraction, above the maximum, missing, not a number
    (3, "blue"), (3, ""),  # category: unknown, missing
    (4, "2"), (4, "x"),  # label outside the classes (a missing one is fine for live rows)
    (5, ""), (5, "now"), (5, "1969-01-01"), (5, "2024-02-01T10:00:00.123456789"),  # event time
]


def _write(path: Path, rows: list[list[str]], header: str = HEADER) -> Path:
    path.write_text(header + "\n" + "".join(",".join(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_planted_faults_give_the_first_error_of_the_whole_file_with_its_row_and_line(tmp_path: Path) -> None:
    """Random files of 40 rows with two to four faults anywhere: the error named is the
    one the whole file gives, be the faults in one part or several, of one check or many."""
    spec = _things()
    rng = random.Random(17)
    refused = 0
    for trial in range(150):
        rows = _good_rows(40)
        for _ in range(rng.randint(2, 4)):
            column, text = rng.choice(FAULTS)
            row = rng.randrange(40)
            rows[row][column] = rows[rng.randrange(row)][0] if text == "DUP" and row else text
        path = _write(tmp_path / f"t{trial}.csv", rows)
        whole, parts = _whole(spec, _csv_source, path), _in_parts(spec, iter_csv_file, path)
        if isinstance(whole, str):
            refused += 1
            assert parts == whole, f"trial {trial}"
        else:
            _rows_equal(whole, parts)
    assert refused > 100  # the faults were planted


@pytest.mark.parametrize(("faults", "expected"), [
    # A bad value in part 1, a bad label in part 3: the label is checked first.
    ({(2, 1): "z", (17, 4): "5"}, "column 'y', row 18 (line 19): label 5 is not one of 0, 1"),
    # A key of part 1 again in part 4 comes before a bad value in part 2 (keys are checked first).
    ({(25, 0): "3", (9, 3): "blue"}, "column 'id', row 26 (line 27): duplicate primary key 3 (first seen in row 3 (line 4))"),
    # Two bad values of the same check: the earlier part's.
    ({(30, 1): "-2", (11, 1): "-1"}, "column 'v', row 12 (line 13): -1.0 is outside the allowed range [0, 100]"),
])
def test_errors_in_several_parts(tmp_path: Path, faults: dict[tuple[int, int], str], expected: str) -> None:
    rows = _good_rows(35)
    for (row, column), text in faults.items():
        rows[row][column] = text
    path = _write(tmp_path / "f.csv", rows)
    message = _in_parts(_things(), iter_csv_file, path)
    assert message == _whole(_things(), _csv_source, path)
    assert isinstance(message, str) and message.endswith(expected), message


@pytest.mark.parametrize(("content", "expected"), [
    # A short line in part 1, a line with a field too many in part 4: the parser's error.
    (lambda rows: rows[:3] + [rows[3][:5]] + rows[4:25] + [rows[25] + ["x"]] + rows[26:], "line 27, saw 7"),
    # A short line in part 4 after a bad value in part 1: the file's shape comes first.
    (lambda rows: [[*rows[0][:1], "abc", *rows[0][2:]]] + rows[1:25] + [rows[25][:5]] + rows[26:],
     "line 27 has 5 fields, expected 6 like the header"),
    # Every line one field too many (pandas would take the first as an index).
    (lambda rows: [["0", *r] for r in rows], "line 2 has 7 fields, expected 6"),
])
def test_a_malformed_line_anywhere_comes_before_bad_values(tmp_path: Path, content: object, expected: str) -> None:
    path = _write(tmp_path / "m.csv", content(_good_rows(35)))  # type: ignore[operator]
    message = _in_parts(_things(), iter_csv_file, path)
    assert message == _whole(_things(), _csv_source, path)
    assert isinstance(message, str) and "is not well-formed CSV" in message and expected in message, message


@pytest.mark.parametrize("data", [
    b"id,v\n1,2\n" + b"3,4\n" * 500_000 + b"5,\xff\n",  # past the first MiB read
    b"\xef\xbb\xbfid,v\n1,\xe9\n",  # after a byte-order mark
    b"id,v\n1,2\n\xe2\x82",  # cut in the middle of a character
    b"id,v\n1,2\n3,\x00\n" + b"4,5\n" * 300_000 + b"\xff",  # a NUL first, but not UTF-8 further on
    b"id,v\n1,2\n3,\x004\n",
    b" \n\t\n",
    b"id,id\n1,2\n",
    b"id,v\n",
])
def test_the_checks_of_the_bytes_are_those_of_the_whole_file(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "b.csv"
    path.write_bytes(data)
    with pytest.raises(DataValidationError) as whole:
        read_csv_file(path)
    with pytest.raises(DataValidationError) as parts:
        list(iter_csv_file(path, PART))
    assert str(parts.value) == str(whole.value)


def test_a_missing_column_is_named_once_after_the_whole_file_is_read(tmp_path: Path) -> None:
    rows = [r[:3] + r[4:] for r in _good_rows(20)]
    path = _write(tmp_path / "c.csv", rows, "id,v,n,y,seen")
    message = _in_parts(_things(), iter_csv_file, path)
    assert message == _whole(_things(), _csv_source, path)
    assert isinstance(message, str) and "missing column(s) 'colour'" in message


def test_parquet_rows_are_named_by_their_row_in_the_file(tmp_path: Path) -> None:
    frame = pd.DataFrame([[int(r[0]), float(r[1]), int(r[2]), r[3], int(r[4]), r[5]] for r in _good_rows(30)],
                         columns=HEADER.split(","))
    frame.loc[22, "colour"] = "blue"
    frame.loc[26, "id"] = 4
    path = tmp_path / "p.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=4)
    message = _in_parts(_things(), iter_parquet_file, path)
    assert message == _whole(_things(), _parquet_source, path)
    assert isinstance(message, str) and message.endswith("column 'id', row 27: duplicate primary key 4 (first seen in row 4)")


# --- the ledger of keys ----------------------------------------------------------------------------


def test_the_ledger_finds_each_parts_first_repeated_key_and_where_it_was_first_seen() -> None:
    rng = np.random.default_rng(3)
    for _ in range(30):
        keys = rng.integers(0, 400, size=int(rng.integers(1, 300)))
        ledger, offset, found = KeyLedger(), 0, []
        sizes = rng.integers(1, 40, size=len(keys))
        while offset < len(keys):
            part = keys[offset:offset + int(sizes[offset])]
            hit = ledger.add(part, offset)
            found.append(None if hit is None else (hit[0] + offset, hit[1]))
            offset += len(part)
        # Expected from the whole array: per part, its first row whose key came before.
        seen: dict[int, int] = {}
        expected, offset = [], 0
        while offset < len(keys):
            part = keys[offset:offset + int(sizes[offset])]
            first = None
            for i, k in enumerate(part):
                if first is None and int(k) in seen:
                    first = (offset + i, seen[int(k)])
                seen.setdefault(int(k), offset + i)
            expected.append(first)
            offset += len(part)
        assert found == expected
        assert ledger.contains(np.arange(-5, 405)).tolist() == [int(k) in seen for k in range(-5, 405)]


def test_text_keys_are_held_as_hashes_that_tell_them_apart() -> None:
    texts = pd.Series(["a", "b", "A", "a ", "1", "01"])
    values = KeyLedger.values(texts, "string")
    assert len(set(values.tolist())) == 6
    ledger = KeyLedger()
    assert ledger.add(values, 0) is None
    assert ledger.add(KeyLedger.values(pd.Series(["c", "01"]), "string"), 6) == (1, 5)
