"""The estimate benchmark's pure parts (bench/estimate.py): the sampling-noise floor it
compares the estimate with, and the per-batch summary it judges the goal on."""

from __future__ import annotations

import numpy as np
import pytest

from bench.estimate import noise_floor, summarise

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("n", "accuracy"), [(100, 0.8), (100, 0.97), (500, 0.72), (137, 0.5)])
def test_the_floor_is_the_mean_gap_a_simulation_measures(n: int, accuracy: float) -> None:
    rng = np.random.default_rng([n, 3])
    draws = rng.binomial(n, accuracy, size=400_000) / n
    simulated = float(np.mean(np.abs(draws - accuracy)))
    # 400,000 draws: the simulated mean is within 0.5 % of the exact one.
    assert noise_floor(n, accuracy) == pytest.approx(simulated, rel=0.005)


def test_the_floor_at_the_edges() -> None:
    assert noise_floor(100, 1.0) == 0.0
    assert noise_floor(250, 0.0) == 0.0
    assert noise_floor(1, 0.5) == pytest.approx(0.5)  # one row: right or wrong, 0.5 away either way
    assert noise_floor(1, 0.9) == pytest.approx(0.9 * 0.1 + 0.1 * 0.9)
    # It shrinks as 1/sqrt(n): near sqrt(2 a (1 - a) / (pi n)) for large n.
    assert noise_floor(10_000, 0.8) == pytest.approx(np.sqrt(2 * 0.16 / (np.pi * 10_000)), rel=0.01)
    with pytest.raises(ValueError):
        noise_floor(0, 0.5)


def test_the_summary_is_the_direct_computation() -> None:
    rng = np.random.default_rng(5)
    days = []
    for day in range(30):
        realized, estimated = rng.uniform(0.6, 0.9), rng.uniform(0.6, 0.9)
        days.append({"labels_back": day >= 3, "realized": realized, "estimated": estimated, "low": estimated - 0.05, "high": estimated + 0.05,
                     "realized_uncalibrated": rng.uniform(0.6, 0.9), "estimated_uncalibrated": rng.uniform(0.6, 0.9),
                     "estimated_plain": rng.uniform(0.6, 0.9),
                     "true_accuracy": 0.75, "floor": noise_floor(100, 0.75), "naive": 0.8})
    got = summarise(days)
    realized = np.array([d["realized"] for d in days])
    estimated = np.array([d["estimated"] for d in days])
    mae = np.mean(np.abs(estimated - realized))
    assert got["estimate_mae"] == pytest.approx(mae)
    assert got["naive_mae"] == pytest.approx(np.mean(np.abs(0.8 - realized)))
    assert got["plain_mae"] == pytest.approx(np.mean(np.abs(np.array([d["estimated_plain"] for d in days]) - realized)))
    assert got["oracle_mae"] == pytest.approx(np.mean(np.abs(0.75 - realized)))
    assert got["coverage"] == pytest.approx(np.mean(np.abs(estimated - realized) <= 0.05))
    assert got["floor_ratio"] == pytest.approx(mae / noise_floor(100, 0.75))
    assert got["within_floor_goal"] == (mae <= 1.25 * noise_floor(100, 0.75))
    assert got["below_naive"] == (mae < got["naive_mae"])
    assert got["batches"] == 30
    # The first three batches were scored before any label was back; the rest after.
    floor = noise_floor(100, 0.75)
    assert got["waiting_ratio"] == pytest.approx(np.mean(np.abs(estimated - realized)[:3]) / floor)
    assert got["labels_back_ratio"] == pytest.approx(np.mean(np.abs(estimated - realized)[3:]) / floor)
    back_mae = np.mean(np.abs(estimated - realized)[3:])
    assert got["labels_back_goal"] == (back_mae <= 1.25 * floor and back_mae < np.mean(np.abs(0.8 - realized[3:])))


def test_a_summary_without_waiting_batches() -> None:
    days = [{"labels_back": True, "realized": 0.8, "estimated": 0.8, "low": 0.7, "high": 0.9,
             "realized_uncalibrated": 0.8, "estimated_uncalibrated": 0.8, "estimated_plain": 0.8,
             "true_accuracy": 0.8, "floor": noise_floor(100, 0.8), "naive": 0.7}] * 4
    got = summarise(days)
    assert np.isnan(got["waiting_ratio"])
    assert got["labels_back_ratio"] == 0.0
    assert got["labels_back_goal"]
