"""The shortcuts streamed inference takes for speed give exactly what the plain code gave:
the day counts by counting, and the rows digest (its value is stored on every monitoring
run's dataset input, so a faster implementation must not change it)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from serverless_ml.inference.batch import count_days
from serverless_ml.inference.scoring import RowsDigest


@pytest.mark.parametrize("case", ["dense", "one_day", "sparse", "with_nat", "empty"])
def test_counting_days_equals_sorting_them(case: str) -> None:
    rng = np.random.default_rng(3)
    days = (np.datetime64("2024-01-01") + rng.integers(0, 40, 5000)).astype("datetime64[D]")
    if case == "one_day":
        days = np.full(10, np.datetime64("2024-06-30"), dtype="datetime64[D]")
    elif case == "sparse":  # decades apart: counted by sorting, same answer
        days = np.array(["1970-01-01", "2200-01-01", "1970-01-01"], dtype="datetime64[D]")
    elif case == "with_nat":
        days[::7] = np.datetime64("NaT")
    elif case == "empty":
        days = days[:0]
    found_days, found_counts = count_days(days)
    expected_days, expected_counts = np.unique(days, return_counts=True)
    assert found_days.dtype == expected_days.dtype == np.dtype("datetime64[D]")
    np.testing.assert_array_equal(found_days, expected_days)
    np.testing.assert_array_equal(found_counts, expected_counts)
    assert int(found_counts.sum()) == days.size


def _rows() -> pa.RecordBatch:
    """A thousand rows with a missing value in every column but the key."""
    i = np.arange(1000)
    start = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    return pa.RecordBatch.from_pydict({
        "passenger_id": pa.array(i * 7 + 3, type=pa.int64()),
        "pclass": pa.array([None if k % 11 == 0 else int(k % 3 + 1) for k in i], type=pa.int64()),
        "age": pa.array([None if k % 5 == 0 else k / 8 for k in i], type=pa.float64()),
        "sex": pa.array([None if k % 13 == 0 else ("male" if k % 2 else "female") for k in i], type=pa.string()),
        "survived": pa.array([None if k % 17 == 0 else bool(k % 3) for k in i], type=pa.bool_()),
        "event_time": pa.array([start + dt.timedelta(minutes=int(k)) for k in i], type=pa.timestamp("us", tz="UTC")),
    })


def test_the_rows_digest_keeps_the_value_runs_already_store() -> None:
    # The value the first implementation (a fresh array per mixing step, np.where for the
    # missing values) gave for these rows: runs logged before the faster one name it.
    rows = _rows()
    digest = RowsDigest(rows.schema)
    for start in range(0, rows.num_rows, 300):
        digest.add(rows.slice(start, 300))
    assert (digest.rows, digest.total) == (1000, 16752526767078836070)
    assert digest.hexdigest(32) == "fede28cd277202d7c0aca9633230b8e5"


def test_a_missing_value_hashes_apart_from_every_value_of_its_column() -> None:
    for column in (pa.array([0, None], type=pa.int64()), pa.array([0.0, None]), pa.array(["", None]),
                   pa.array([False, None]), pa.array([None, None], type=pa.string())):
        hashes = RowsDigest._column_hash(column)
        assert hashes.dtype == np.uint64
        assert hashes[1] == 1
        if column.null_count == 1:
            assert hashes[0] != hashes[1]


@pytest.mark.parametrize("rows", [0, 1, 500])
def test_the_predictions_table_is_the_table_pandas_would_give(rows: int) -> None:
    from serverless_ml.datasets import titanic
    from serverless_ml.feature_store.base import arrow_schema
    from serverless_ml.inference.scoring import normalise_predictions, predictions_schema, predictions_table

    spec = titanic.SPEC
    rng = np.random.default_rng(rows)
    probability = rng.random(rows)
    frame = pd.DataFrame({
        "passenger_id": np.arange(rows, dtype=np.int64),
        "model_version": np.int64(3),
        "event_time": pd.Timestamp("2024-03-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 10**6, rows), unit="s"),
        "prediction": rng.integers(0, 2, rows),
        "probability": np.maximum(probability, 1 - probability),
        "proba_0": probability,
        "proba_1": 1 - probability,
        # a missing label in every other row but the first: Int64 with NA
        "actual": pd.array([None if k % 2 and k else k % 2 for k in range(rows)], dtype="Int64"),
        "correct": pd.array([None if k % 2 and k else bool(k % 3) for k in range(rows)], dtype="boolean"),
        "origin": ["live" if k % 7 else "backfill" for k in range(rows)],  # two values
        "scored_at": pd.Timestamp("2024-03-02 10:00", tz="UTC"),
        "run_id": "0123456789abcdef0123456789abcdef",  # one value
    })
    frame = normalise_predictions(frame, spec)
    schema = arrow_schema(predictions_schema(spec))
    expected = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    found = predictions_table(frame, schema)
    assert found.schema.equals(schema)
    assert found.equals(expected)
    # a text column whose first value repeats but not throughout, or with a missing value
    if rows > 2:
        frame.loc[frame.index[-1], "run_id"] = "another"
        frame.loc[frame.index[1], "origin"] = None
        assert predictions_table(frame, schema).equals(pa.Table.from_pandas(frame, schema=schema, preserve_index=False))


def _parquet_metadata(tmp_path: Path, table: pa.Table) -> object:
    import pyarrow.parquet as pq

    path = tmp_path / f"{len(list(tmp_path.iterdir()))}.parquet"
    pq.write_table(table, path, row_group_size=40)
    return pq.ParquetFile(path).metadata


def test_a_file_is_left_unfiltered_only_when_its_statistics_prove_every_row_passes(tmp_path: Path) -> None:
    from serverless_ml.feature_store.base import Filter, Logic
    from serverless_ml.feature_store.local import _every_row_passes

    start = pd.Timestamp("2024-01-01", tz="UTC")
    schema = pa.schema([("key", pa.int64()), ("event_time", pa.timestamp("us", tz="UTC")), ("x", pa.float64()),
                        ("s", pa.string())])

    def table(keys: list[int | None], days: list[int], xs: list[float]) -> pa.Table:
        return pa.table({"key": pa.array(keys, type=pa.int64()),
                         "event_time": pa.array([start + pd.Timedelta(days=d) for d in days], type=schema.field(1).type),
                         "x": pa.array(xs), "s": pa.array(["a"] * len(keys))}, schema=schema)

    keys, days = list(range(100)), [k % 10 for k in range(100)]  # days 0..9, in three row groups
    whole = _parquet_metadata(tmp_path, table(keys, days, [float("nan")] * 100))
    with_missing_key = _parquet_metadata(tmp_path, table([None, *keys[1:]], days, [0.0] * 100))
    before = Filter("event_time", "<", start + pd.Timedelta(days=10))
    assert _every_row_passes(whole, before, schema)
    assert _every_row_passes(whole, Filter("event_time", "<=", start + pd.Timedelta(days=9)), schema)
    assert not _every_row_passes(whole, Filter("event_time", "<", start + pd.Timedelta(days=9)), schema)
    assert _every_row_passes(whole, Filter("key", ">=", 0), schema)
    assert not _every_row_passes(whole, Filter("key", ">", 0), schema)
    assert not _every_row_passes(with_missing_key, Filter("key", ">=", 0), schema)  # a missing key fails any test
    assert not _every_row_passes(whole, Filter("x", "<", 1.0), schema)  # NaN is not in a float's statistics
    assert not _every_row_passes(whole, Filter("s", "==", "a"), schema)  # text: never trusted
    assert not _every_row_passes(whole, Filter("key", "isin", list(range(100))), schema)
    assert not _every_row_passes(whole, Filter("key", "!=", 1000), schema)
    assert _every_row_passes(whole, Logic("&", before, Filter("key", "<", 100)), schema)
    assert not _every_row_passes(whole, Logic("&", before, Filter("key", "<", 99)), schema)
    assert _every_row_passes(whole, Logic("|", Filter("key", "<", 99), before), schema)
    assert not _every_row_passes(whole, Filter("event_time", "<", "not a time"), schema)


def test_batches_read_with_a_filter_are_the_rows_that_pass_it_file_by_file(tmp_path: Path) -> None:
    from serverless_ml.feature_store.base import Feature
    from serverless_ml.feature_store.local import LocalFeatureStore

    store = LocalFeatureStore(tmp_path)
    group = store.get_or_create_feature_group("rows", 1, ["key"], "event_time", features=[
        Feature("key", "bigint"), Feature("event_time", "timestamp"), Feature("x", "double")])
    start = pd.Timestamp("2024-01-01", tz="UTC")
    for first, days in ((0, 5), (100, 20)):  # a file of days 0-4, then one of days 0-19
        keys = np.arange(first, first + 100)
        group.insert(pd.DataFrame({"key": keys, "event_time": start + pd.to_timedelta(keys % days, unit="D"),
                                   "x": keys / 3}))
    stored = group.read()
    for where in (group.get_feature("event_time") < start + pd.Timedelta(days=10),
                  (group.get_feature("event_time") < start + pd.Timedelta(days=10)) & (group.get_feature("key") >= 50),
                  group.get_feature("key") < 0):
        batches = list(group.read_batches(where=where, batch_rows=30))
        assert all(batch.num_rows <= 30 for batch in batches)
        expected = stored[where.mask(stored)].reset_index(drop=True)
        if not batches:
            assert expected.empty
            continue
        found = pa.Table.from_batches(batches).to_pandas().sort_values("key").reset_index(drop=True)
        pd.testing.assert_frame_equal(found, expected)
