"""The pieces that let ``sml infer`` stream a batch of any size in bounded memory: the
running totals of :mod:`serverless_ml.inference.batch` fed chunk by chunk give the
statistics of the one-shot :func:`batch.batch_statistics` on the same rows; a drift window
larger than its cap is judged on a uniform seeded sample and the run's notes say so; the
windows chosen from per-day counts are those chosen from every row's day; the rows digest
ignores order and chunking; the local store's batched read and streamed append."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from serverless_ml import registry
from serverless_ml.datasets import titanic
from serverless_ml.feature_store.local import LocalFeatureStore
from serverless_ml.inference import batch, drift, monitoring, slices
from serverless_ml.inference.scoring import KeySet, RowsDigest

pytestmark = pytest.mark.unit

SPEC = titanic.SPEC
KEY = SPEC.primary_key
AS_OF_END = pd.Timestamp("2024-03-11", tz="UTC")  # the end of as-of date 2024-03-10
DAYS = pd.date_range("2024-03-01", periods=11, freq="D", tz="UTC")


def _features(keys: np.ndarray, rng: np.random.Generator, shift: float = 0.0) -> pd.DataFrame:
    """Titanic-shaped feature rows with event times over 2024-03-01..11."""
    n = len(keys)
    sibsp = rng.integers(0, 3, n)
    parch = rng.integers(0, 2, n)
    age = np.round(rng.uniform(1, 70, n) + shift, 1)
    age[rng.random(n) < 0.1] = np.nan
    return pd.DataFrame({
        KEY: keys,
        "event_time": (DAYS[0] + pd.to_timedelta(rng.integers(0, 11 * 24 * 3600, n), unit="s")).astype("datetime64[us, UTC]"),
        "pclass": rng.integers(1, 4, n), "sex": rng.choice(["male", "female"], n).astype(object), "age": age,
        "fare": np.round(rng.gamma(1.2, 27.0, n), 2), "embarked": rng.choice(["S", "C", "Q"], n).astype(object),
        "sibsp": sibsp, "parch": parch, "title": rng.choice(["Mr", "Mrs", "Miss"], n).astype(object),
        "family_size": sibsp + parch + 1, "survived": rng.integers(0, 2, n), "origin": "live",
    })[SPEC.store_columns]


def _scored(rows: pd.DataFrame, rng: np.random.Generator, version: int, unlabelled: float = 0.0) -> pd.DataFrame:
    """Predictions of ``rows`` as the predictions group holds them (random probabilities)."""
    survived = rng.uniform(0.02, 0.98, len(rows))
    actual = rows["survived"].astype("Int64")
    actual[rng.random(len(rows)) < unlabelled] = pd.NA
    prediction = (survived > 0.5).astype(np.int64)
    return pd.DataFrame({
        KEY: rows[KEY].to_numpy(), "model_version": np.int64(version), "event_time": rows["event_time"].array,
        "prediction": prediction, "probability": np.maximum(survived, 1 - survived),
        "proba_0": 1 - survived, "proba_1": survived, "actual": actual,
        "correct": pd.array(prediction == actual.to_numpy(dtype=float, na_value=-1), dtype="boolean"),
        "origin": "live", "scored_at": AS_OF_END, "run_id": "r",
    })


class Champion:
    version = 2
    holdout_accuracy = 0.8

    def __init__(self, reference: pd.DataFrame) -> None:
        self.reference_rows = reference
        self.drift_reference = drift.DriftReference(reference, SPEC)


def _chunks(frame: pd.DataFrame, rows: int) -> list[pd.DataFrame]:
    return [frame.iloc[start : start + rows] for start in range(0, len(frame), rows)]


def _streamed(features: pd.DataFrame, history: pd.DataFrame, scored: pd.DataFrame, champion: Champion,
              rolling_days: int, chunk: int, cap: int = drift.MAX_DRIFT_ROWS) -> batch.BatchStatistics:
    """What the job computes from chunks: the history, the batch's predictions and the
    feature rows each offered ``chunk`` rows at a time (the features in a shuffled order)."""
    totals = batch.BatchTotals(list(SPEC.classes), champion.version, AS_OF_END, rolling_days)
    totals.slices = slices.SliceTotals(slices.plan_slices(SPEC, champion.reference_rows))
    totals.batch_rows = len(scored)  # as the job counts the batch before scoring it
    for part in _chunks(history, chunk):
        totals.add_history(part)
    day_counts = dict(totals.history_days)
    for day, count in zip(*np.unique(batch.utc_values(scored["event_time"]).astype("datetime64[D]"), return_counts=True),
                          strict=True):
        day_counts[day] = day_counts.get(day, 0) + int(count)
    windows = drift.drift_windows_of_counts(day_counts, batch.as_of_day(AS_OF_END), rolling_days)
    rows = batch.DriftWindowRows(SPEC, windows, AS_OF_END, cap=cap)
    scored_before, new = KeySet(history[KEY].to_numpy()), set(scored[KEY])
    for part in _chunks(features.sample(frac=1.0, random_state=1), chunk):
        rows.add(part, part[KEY].isin(new).to_numpy(), scored_before)
    by_key = features.set_index(KEY)
    for part in _chunks(scored, chunk):
        # As the job does: each chunk's feature rows, in the order they were scored.
        totals.add_batch(part, SPEC, by_key.loc[part[KEY]].reset_index())
    found = batch.streamed_drift(SPEC, rows, totals, champion.drift_reference, AS_OF_END, rolling_days,
                                 monitoring.AlertRule())
    return batch.streamed_statistics(SPEC, totals, found, champion, monitoring.AlertRule())


def _same_slices(got: slices.SliceTable | None, want: slices.SliceTable | None) -> None:
    """The same slices, counts and labels exactly, figures up to the order of summation."""
    assert got is not None and want is not None
    assert (got.plan, got.notes, len(got.slices)) == (want.plan, want.notes, len(want.slices))
    for a, b in zip(got.slices, want.slices, strict=True):
        for name, value in vars(b).items():
            if isinstance(value, float):
                assert getattr(a, name) == pytest.approx(value, rel=1e-9), (b.name, name)
            else:
                assert getattr(a, name) == value, (b.name, name)


@pytest.mark.parametrize("rolling_days", [3, 30])
def test_chunked_statistics_equal_the_one_shot_statistics_on_the_same_rows(rolling_days: int) -> None:
    rng = np.random.default_rng(7)
    features = _features(np.arange(1, 1201), rng)
    reference = _features(np.arange(5001, 5301), rng).assign(origin="backfill")
    champion = Champion(reference)
    old, new = features.iloc[:700], features.iloc[700:]
    new = new[new["event_time"] < AS_OF_END]
    # History by two champions (version 1 and 2), some labels missing in the batch.
    history = pd.concat([_scored(old.iloc[:300], rng, 1), _scored(old.iloc[300:], rng, 2)], ignore_index=True)
    scored = _scored(new, rng, 2, unlabelled=0.3)
    one_shot = batch.batch_statistics(SPEC, scored, history, features, champion, AS_OF_END, rolling_days,
                                      monitoring.AlertRule(), new)
    for chunk in (37, 1000):
        streamed = _streamed(features, history, scored, champion, rolling_days, chunk)
        assert set(streamed.metrics) == set(one_shot.metrics)
        for name, value in one_shot.metrics.items():
            assert streamed.metrics[name] == pytest.approx(value, rel=1e-9, abs=1e-12, nan_ok=True), name
        assert streamed.tables == one_shot.tables
        assert streamed.latest == one_shot.latest
        assert (streamed.drift_basis, streamed.drift_window, streamed.drift_window_rolling, streamed.accuracy_basis) == (
            one_shot.drift_basis, one_shot.drift_window, one_shot.drift_window_rolling, one_shot.accuracy_basis)
        assert streamed.notes == one_shot.notes
        assert streamed.alerts.messages == one_shot.alerts.messages
        _same_slices(streamed.slices, one_shot.slices)
    assert one_shot.metrics[registry.DRIFT_ROWS_METRIC] > 0  # drift was computed, not skipped
    assert one_shot.metrics[registry.ESTIMATE_RECALIBRATION_ROWS_METRIC] > 0  # the estimate was recalibrated
    assert one_shot.slices is not None and one_shot.slices.worst is not None


def test_a_window_larger_than_its_cap_is_judged_on_a_sample_and_the_notes_say_so() -> None:
    rng = np.random.default_rng(3)
    features = _features(np.arange(1, 2001), rng, shift=15.0)  # older passengers: age drifted
    features = features[features["event_time"] < AS_OF_END]
    champion = Champion(_features(np.arange(5001, 5401), rng).assign(origin="backfill"))
    scored = _scored(features, rng, 2)
    empty = scored.iloc[:0]
    capped = _streamed(features, empty, scored, champion, 30, 250, cap=300)
    notes = [note for note in capped.notes if "uniform seeded sample" in note]
    rolling_rows = int(capped.metrics[registry.DRIFT_ROWS_ROLLING_METRIC])
    assert notes == [f"drift of the rolling window judged on a uniform seeded sample of 300 of its {rolling_rows:,} rows "
                     f"(at most {drift.MAX_DRIFT_ROWS:,} rows a window)"]
    assert rolling_rows == len(features)  # the metric counts the window, not the sample
    assert capped.metrics[registry.DRIFT_PADJ_PREFIX + "age"] < 0.01
    assert capped.alerts.drift
    again = _streamed(features, empty, scored, champion, 30, 250, cap=300)
    assert again.metrics == capped.metrics  # seeded: the same sample


def test_offering_rows_keeps_the_sample_adding_every_row_keeps_and_copies_few_once_it_is_full() -> None:
    rng = np.random.default_rng(21)
    frame = pd.DataFrame({"i": np.arange(20_000), "x": rng.normal(size=20_000)})
    mask = rng.uniform(size=20_000) < 0.7
    everything, offered = batch.DriftSample(500), batch.DriftSample(500)
    copied = 0
    for start in range(0, 20_000, 1000):
        part, chosen = frame.iloc[start:start + 1000], mask[start:start + 1000]
        priorities = rng.random(len(part))
        everything.add(part.loc[chosen, ["i", "x"]], priorities[chosen])
        copied += int((chosen & (priorities < offered.threshold)).sum())
        offered.offer(part, chosen, ["i", "x"], priorities)
    assert offered.seen == everything.seen == int(mask.sum())
    assert offered.sampled and offered.rows().equals(everything.rows())
    assert copied < 0.3 * mask.sum()  # 500 ln(14,000 / 1,000) + 1,000 expected: about 2,300 of 14,000


def test_a_drift_sample_is_uniform_and_bounded() -> None:
    kept = np.zeros(1000)
    for seed in range(200):
        sample = batch.DriftSample(100)
        draws = np.random.default_rng(seed)
        for start in range(0, 1000, 64):
            rows = pd.DataFrame({"i": np.arange(start, min(start + 64, 1000))})
            sample.add(rows, draws.random(len(rows)))
            assert sample._held <= 2 * 100 + 64
        chosen = sample.rows()["i"].to_numpy()
        assert len(chosen) == 100 == len(set(chosen)) and sample.seen == 1000 and sample.sampled
        kept[chosen] += 1
    # Each row is kept with probability 0.1: 20 times in 200 samples, none far off.
    assert kept.mean() == pytest.approx(20) and kept.min() > 5 and kept.max() < 40


def test_windows_from_day_counts_are_the_windows_of_every_row() -> None:
    rng = np.random.default_rng(5)
    for _ in range(50):
        days = np.datetime64("2024-03-10") - rng.integers(0, 40, rng.integers(0, 200)).astype("timedelta64[D]")
        as_of = np.datetime64("2024-03-10")
        lookback = int(rng.integers(1, 35))
        expected = drift.drift_windows(days, as_of, lookback)
        values, counts = np.unique(days, return_counts=True)
        found = drift.drift_windows_of_counts(dict(zip(values, counts.tolist(), strict=True)), as_of, lookback)
        if expected is None:
            assert found is None
        else:
            assert found is not None and found.recent_first_day == expected.recent_first_day
            assert found.rolling_first_day == expected.rolling_first_day


def test_the_rows_digest_ignores_order_and_chunks_but_not_values() -> None:
    table = pa.table({"k": [1, 2, 3, None], "s": ["a", None, "b", "a"], "x": [1.0, None, 2.5, 3.0],
                      "t": pa.array([1, 2, 3, 4], pa.timestamp("us", tz="UTC"))})

    def digest(*parts: pa.Table) -> str:
        found = RowsDigest(table.schema)
        for part in parts:
            for record_batch in part.to_batches():
                found.add(record_batch)
        return found.hexdigest(16)

    assert digest(table) == digest(table.slice(2), table.slice(0, 2)) == digest(table.take([3, 1, 0, 2]))
    assert digest(table) != digest(table.set_column(2, "x", pa.array([1.0, None, 2.5, 3.5])))
    assert digest(table) != digest(table.slice(1))
    assert digest(table) != digest(table.set_column(1, "s", pa.array(["a", "b", None, "a"])))


def test_a_key_set_answers_membership_of_a_chunk() -> None:
    keys = KeySet(np.array([30, 10, 20, 10]))
    assert len(keys) == 4  # a repeated key is held twice: membership is unchanged
    assert keys.contains(np.array([5, 10, 25, 30, 40])).tolist() == [False, True, False, True, False]
    assert KeySet(np.array([])).contains(np.array([1])).tolist() == [False]
    assert KeySet(np.array(["b", "a"], dtype=object)).contains(np.array(["a", "c"], dtype=object)).tolist() == [True, False]


def test_the_local_store_reads_in_filtered_batches_and_appends_a_stream_in_one_commit(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    store = LocalFeatureStore(tmp_path)
    group = store.get_or_create_feature_group(SPEC.name, 1, [KEY], "event_time", features=SPEC.store_schema())
    rows = _features(np.arange(1, 501), rng)
    group.insert(rows.iloc[:200])
    cut = pd.Timestamp(dt.datetime(2024, 3, 6), tz="UTC")
    where = (group.get_feature("event_time") < cut) & group.get_feature(KEY).isin(range(50, 150))
    read = pa.Table.from_batches(list(group.read_batches(where=where, batch_rows=16))).to_pandas()
    expected = group.read()
    expected = expected[where.mask(expected)].reset_index(drop=True)
    pd.testing.assert_frame_equal(read.sort_values(KEY).reset_index(drop=True), expected)
    assert all(b.num_rows <= 16 for b in group.read_batches(where=where, batch_rows=16))
    assert [b.schema.names for b in group.read_batches(columns=[KEY])][0] == [KEY]

    from serverless_ml.feature_store.base import arrow_schema, conform

    table = conform(rows.iloc[200:], group.features, group.primary_key, group.label)
    version = group.data_version()
    result = group.append_new(pa.RecordBatchReader.from_batches(arrow_schema(group.features), table.to_batches(max_chunksize=64)))
    assert (result.inserted, result.version) == (300, (version or 0) + 1)
    pd.testing.assert_frame_equal(group.read(), conform(rows, group.features, group.primary_key, group.label)
                                  .to_pandas().sort_values(KEY).reset_index(drop=True))


def test_staged_rows_land_in_one_commit_and_uncommitted_ones_leave_nothing(tmp_path: Path) -> None:
    from serverless_ml.feature_store.base import conform

    rng = np.random.default_rng(2)
    store = LocalFeatureStore(tmp_path)
    group = store.get_or_create_feature_group(SPEC.name, 1, [KEY], "event_time", features=SPEC.store_schema())
    rows = conform(_features(np.arange(1, 301), rng), group.features, group.primary_key, group.label)

    with group.stage_new() as stage:  # a job that fails before its commit: nothing lands, no file stays
        stage.write(rows.slice(0, 100))
    assert not group.exists() and not list(group.table_path.glob("*.parquet"))

    with group.stage_new() as stage:  # the group's first rows: the table is created by the commit
        stage.write(rows.slice(0, 100))
        assert not group.exists()  # staged files are not rows yet
        assert stage.commit().inserted == 100
    assert group.data_version() == 0 and len(group.read()) == 100

    left = group.table_path / "staged-killed-00000.parquet"  # a killed job's staged file
    left.write_bytes(b"not parquet")
    stage = group.stage_new()
    assert not left.exists()
    stage.write(rows.slice(100, 150))
    stage.write(rows.slice(250))
    assert len(group.read()) == 100  # not visible before the commit
    result = stage.commit()
    assert (result.inserted, result.version) == (200, 1)
    pd.testing.assert_frame_equal(group.read(), rows.to_pandas().sort_values(KEY).reset_index(drop=True))
    group.insert(rows.to_pandas().iloc[:5].assign(age=1.5))  # an upsert over staged files works as over any
    assert group.read()["age"].iloc[:5].tolist() == [1.5] * 5
