"""The paired comparison of champion and challenger (:mod:`serverless_ml.inference.paired`)
against direct computations: McNemar's exact test against ``scipy.stats.binomtest``, the
interval's coverage on simulated pairs, the live promotion rule's edges."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from serverless_ml import defaults
from serverless_ml.inference import paired
from serverless_ml.training.promotion import decide_live_promotion

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("b", "c"), [(0, 0), (0, 1), (1, 0), (3, 3), (2, 9), (9, 2), (0, 10), (17, 40), (250, 310),
                                      (4000, 4100)])
def test_mcnemar_exact_is_the_binomial_test_of_the_discordant_pairs(b: int, c: int) -> None:
    result = paired.mcnemar_exact(b, c)
    if b + c == 0:
        assert result.p_value == result.p_value_better == 1.0
        return
    assert result.p_value == pytest.approx(binomtest(c, b + c, 0.5).pvalue, rel=1e-9, abs=1e-300)
    assert result.p_value_better == pytest.approx(binomtest(c, b + c, 0.5, alternative="greater").pvalue,
                                                  rel=1e-9, abs=1e-300)


def test_mcnemar_exact_refuses_negative_counts() -> None:
    with pytest.raises(ValueError, match="must be >= 0"):
        paired.mcnemar_exact(-1, 3)


def test_compare_paired_counts_the_four_kinds_of_rows() -> None:
    champion = np.array([1, 1, 1, 0, 0, 0, 0, 1, 1, 0], dtype=bool)
    challenger = np.array([1, 0, 1, 1, 1, 1, 0, 1, 0, 1], dtype=bool)
    out = paired.compare_paired(champion, challenger)
    assert (out.rows, out.both_correct, out.champion_only, out.challenger_only, out.both_wrong) == (10, 3, 2, 4, 1)
    assert out.champion_accuracy == pytest.approx(0.5) and out.challenger_accuracy == pytest.approx(0.7)
    assert out.difference == pytest.approx(0.2)
    assert out.ci_low < out.difference < out.ci_high
    assert out.p_value == pytest.approx(binomtest(4, 6, 0.5).pvalue)
    assert out.discordant == 6


def test_no_rows_give_no_figures() -> None:
    out = paired.compare_paired(np.array([], dtype=bool), np.array([], dtype=bool))
    assert out.rows == 0 and math.isnan(out.difference) and math.isnan(out.ci_low) and out.p_value == 1.0


def test_the_interval_covers_the_true_difference_about_95_percent_of_the_time() -> None:
    """Pairs drawn with known cell probabilities: the interval holds the true difference
    in close to 95 % of 2,000 samples, for a small and a larger sample."""
    rng = np.random.default_rng(0)
    cells = np.array([0.6, 0.1, 0.2, 0.1])  # both right, champion only, challenger only, both wrong
    truth = cells[2] - cells[1]
    for n in (40, 400):
        counts = rng.multinomial(n, cells, size=2000)
        hits = 0
        for _, b, c, _ in counts:
            _, low, high = paired.paired_difference_interval(n, int(b), int(c))
            hits += low <= truth <= high
        assert 0.93 <= hits / 2000 <= 0.975, (n, hits / 2000)


def test_the_interval_of_no_discordant_pairs_is_not_a_point() -> None:
    difference, low, high = paired.paired_difference_interval(30, 0, 0)
    assert difference == 0 and low < 0 < high


def test_paired_window_pairs_labelled_rows_of_the_window_by_key() -> None:
    times = pd.to_datetime(["2024-03-01 10:00", "2024-03-02 10:00", "2024-03-02 11:00", "2024-02-01 10:00", "2024-03-02 12:00"],
                           utc=True)
    champion = pd.DataFrame({"k": [1, 2, 3, 4, 5], "event_time": times, "prediction": [1, 0, 1, 1, 0],
                             "actual": pd.array([1, 1, 0, 1, None], dtype="Int64")})
    challenger = champion.assign(prediction=[1, 1, 1, 0, 0]).iloc[[0, 1, 3, 4]]  # key 3 not shadow-scored
    out = paired.paired_window(champion, challenger, "k", pd.Timestamp("2024-03-01", tz="UTC"),
                               pd.Timestamp("2024-03-03", tz="UTC"))
    # Key 3: no shadow row; key 4: outside the window; key 5: no label.
    assert (out.rows, out.both_correct, out.champion_only, out.challenger_only) == (2, 1, 0, 1)


def test_paired_rows_keep_the_champions_served_rows_and_the_challengers_shadow_rows() -> None:
    collector = paired.PairedRows("k", 1, 2, pd.Timestamp("2024-03-01", tz="UTC"), pd.Timestamp("2024-03-03", tz="UTC"))
    frame = pd.DataFrame({"k": [1, 1, 1, 2, 2], "event_time": pd.to_datetime(["2024-03-02"] * 5, utc=True),
                          "prediction": [0, 1, 1, 0, 1], "actual": [1, 1, 1, 1, 1]})
    served = np.array([True, False, True, True, False])
    versions = np.array([1, 2, 3, 1, 2])  # key 1 version 3: another version's served row, not paired
    collector.add(frame, served, versions)
    out = collector.comparison()
    assert (out.rows, out.challenger_only, out.champion_only) == (2, 2, 0)


@pytest.mark.parametrize(
    ("p", "discordant", "difference", "promote"),
    [
        (0.01, 20, 0.05, True),
        (0.01, defaults.LIVE_PROMOTE_MIN_DISCORDANT - 1, 0.05, False),  # too few discordant rows
        (defaults.LIVE_PROMOTE_ALPHA / 2, 40, 0.05, False),  # p at the first look's level: not below
        (defaults.LIVE_PROMOTE_ALPHA / 2 * 0.999, 40, 0.05, True),  # just below it
        (0.2, 40, 0.01, False),
        (0.01, 40, 0.0, False),
    ],
)
def test_decide_live_promotion(p: float, discordant: int, difference: float, promote: bool) -> None:
    decision = decide_live_promotion(p, discordant, difference, rows=100, window="2024-03-01..2024-03-30")
    assert decision.promote is promote
    assert "100 paired labelled rows (2024-03-01..2024-03-30)" in decision.reason


def test_the_shadow_does_not_score_the_rows_its_challenger_was_trained_on() -> None:
    from sklearn.dummy import DummyClassifier

    from serverless_ml.datasets import get_dataset
    from serverless_ml.feature_store.base import ORIGIN_COLUMN
    from serverless_ml.inference.batch import BatchTotals
    from serverless_ml.inference.scoring import ChunkScorer, KeySet, shadow_run_id
    from serverless_ml.pipelines.infer import Challenger, Shadow

    spec = get_dataset("titanic")
    end = pd.Timestamp("2024-03-02", tz="UTC")
    rows = pd.DataFrame({spec.primary_key: np.arange(1, 6), "event_time": pd.to_datetime(["2024-03-01"] * 5, utc=True),
                         spec.label: [0, 1, 0, 1, 1], ORIGIN_COLUMN: "synthetic"})
    model_input = pd.DataFrame({"x": np.zeros(5)})
    model = DummyClassifier(strategy="constant", constant=1).fit(model_input, [0, 1, 0, 1, 1])
    shadow = Shadow(Challenger(2, None, model, KeySet(np.array([1, 3]))), BatchTotals(list(spec.classes), 2, end, 30),
                    paired.PairedRows(spec.primary_key, 1, 2, end - pd.Timedelta(days=30), end),
                    ChunkScorer(model, spec, 2, end, shadow_run_id("r")))
    scored = shadow.score(rows, model_input)
    assert scored is not None and list(scored[spec.primary_key]) == [2, 4, 5]
    assert set(scored["run_id"]) == {"shadow:r"} and set(scored["model_version"]) == {2}
    assert shadow.skipped == 2 and shadow.totals.rows == 3
    assert int(np.trace(shadow.totals.matrices["batch"])) == 3  # keys 2, 4, 5 are all 1s
    assert shadow.score(rows.iloc[[0, 2]], model_input.iloc[[0, 2]]) is None and shadow.skipped == 4


def test_the_look_levels_spend_alpha_over_a_challengers_life() -> None:
    from serverless_ml.training.promotion import look_level

    levels = [look_level(0.05, k) for k in range(1, 200_001)]
    assert levels[0] == pytest.approx(0.025) and levels[1] == pytest.approx(0.05 / 6)
    assert all(a > b for a, b in zip(levels, levels[1:], strict=False))
    assert sum(levels) == pytest.approx(0.05, rel=1e-4) and sum(levels) < 0.05
    with pytest.raises(ValueError, match="look must be 1 or more"):
        look_level(0.05, 0)


def test_a_later_look_needs_stronger_evidence() -> None:
    first = decide_live_promotion(0.01, 40, 0.05, rows=100, look=1)
    third = decide_live_promotion(0.01, 40, 0.05, rows=100, look=3)
    assert first.promote and not third.promote
    assert "look 3: level 0.00417 of 0.05" in third.reason
    assert decide_live_promotion(0.004, 40, 0.05, rows=100, look=3).promote


def test_a_run_with_no_paired_labelled_rows_logs_no_test() -> None:
    """Found by a new user: a batch without labels logged McNemar p-values of 1 over 0 rows."""
    from serverless_ml import registry

    empty = paired.shadow_metrics(np.zeros((2, 2)), None, paired.compare_paired(np.array([], bool), np.array([], bool)))
    assert empty[registry.PAIRED_ROWS_METRIC] == 0
    assert registry.PAIRED_P_VALUE_METRIC not in empty and registry.PAIRED_P_VALUE_BETTER_METRIC not in empty
    some = paired.shadow_metrics(np.zeros((2, 2)), None, paired.compare_paired(np.array([True, False]),
                                                                                np.array([True, True])))
    assert some[registry.PAIRED_P_VALUE_BETTER_METRIC] == pytest.approx(0.5)
