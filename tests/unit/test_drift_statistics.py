"""The drift statistics and the alert rule as pure functions: the multiple-testing
correction against scipy's, the window, calibration under no drift, power under a shift,
effect sizes, small-sample categories, and the Wilson-based accuracy alert."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from serverless_ml.datasets.spec import DatasetSpec, FeatureSpec
from serverless_ml.inference import drift
from serverless_ml.inference.monitoring import AlertRule, evaluate_alerts, wilson_interval

pytestmark = pytest.mark.unit

SPEC = DatasetSpec(
    name="toy",
    description="",
    transform=lambda raw: raw,
    raw_columns=("id", "x", "n", "c", "y"),
    label="y",
    label_type="string",
    classes=("a", "b"),
    primary_key="id",
    features=(
        FeatureSpec("x", "double", nullable=True),
        FeatureSpec("n", "bigint"),
        FeatureSpec("c", "string", categories=("p", "q", "r", "rare")),
    ),
)


def frame(rng: np.random.Generator, rows: int, shift: float = 0.0, missing: float = 0.1, q_share: float = 0.3) -> pd.DataFrame:
    x = rng.normal(10 + shift, 2, rows)
    x[rng.random(rows) < missing] = np.nan
    c = rng.choice(["p", "q", "r", "rare"], rows, p=[0.98 - q_share, q_share, 0.0, 0.02])
    return pd.DataFrame({"x": x, "n": rng.poisson(3, rows), "c": c})


def test_benjamini_hochberg_matches_scipy() -> None:
    p = np.random.default_rng(0).uniform(size=40) ** 3
    assert np.allclose(drift.benjamini_hochberg(p), stats.false_discovery_control(p))
    assert drift.benjamini_hochberg([]).size == 0


def test_weighted_benjamini_hochberg_divides_by_weights_averaging_one() -> None:
    """Weights are normalised to average 1: equal weights change nothing, and the
    recent/rolling weights judge a recent p-value at 1.5 times the level of a plain BH."""
    p = np.random.default_rng(2).uniform(size=20) ** 3
    assert np.allclose(drift.benjamini_hochberg(p, [7.0] * 20), drift.benjamini_hochberg(p))
    weights = [1.5] * 10 + [0.5] * 10
    assert np.allclose(drift.benjamini_hochberg(p, weights), stats.false_discovery_control(np.minimum(p / np.array(weights), 1.0)))
    assert np.allclose(drift.benjamini_hochberg(p, [3.0] * 10 + [1.0] * 10), drift.benjamini_hochberg(p, weights))
    with pytest.raises(ValueError):
        drift.benjamini_hochberg(p, [0.0] * 20)
    with pytest.raises(ValueError):
        drift.benjamini_hochberg(p, [1.0] * 19)


def test_window_weights_favour_the_recent_window_and_a_lone_window_weighs_one() -> None:
    """The same shifted rows get a smaller adjusted p-value judged as the recent window
    than as the rolling window; a window judged alone gets the plain BH."""
    rng = np.random.default_rng(4)
    ref = drift.DriftReference(frame(rng, 600), SPEC)
    shifted, clean = frame(rng, 30, shift=1.2), frame(rng, 300)
    as_recent = {r.feature: r for r in ref.compare_windows([("recent", shifted), ("rolling", clean)], 0.01)}
    as_rolling = {r.feature: r for r in ref.compare_windows([("recent", clean), ("rolling", shifted)], 0.01)}
    assert as_recent["x"].window == "recent" and as_rolling["x"].window == "rolling"
    assert as_recent["x"].p_value == pytest.approx(as_rolling["x"].p_value)
    assert as_recent["x"].p_adjusted < as_rolling["x"].p_adjusted
    alone = ref.compare_windows([("recent", shifted)], 0.01)
    assert np.allclose([r.p_adjusted for r in alone], drift.benjamini_hochberg([r.p_value for r in alone]))


def test_no_drift_keeps_its_false_alarm_rate() -> None:
    """Under no drift the per-feature p-values are close to valid (the chi-squared
    approximation on 30 rows is a little liberal at 0.05, not at the rule's levels)."""
    rng = np.random.default_rng(1)
    reference = drift.DriftReference(frame(rng, 600), SPEC)
    p_values = np.array([[r.p_value for r in reference.compare(frame(rng, 30), 0.05)] for _ in range(400)])
    assert (p_values < 0.05).mean(axis=0).max() <= 0.1
    assert (p_values < 0.01).mean(axis=0).max() <= 0.02
    alarms = [any(r.drifted for r in reference.compare(frame(rng, 30), 0.001, 0.1)) for _ in range(400)]
    assert sum(alarms) <= 2


def test_a_one_std_shift_on_30_rows_is_found() -> None:
    rng = np.random.default_rng(2)
    reference = drift.DriftReference(frame(rng, 600), SPEC)
    found = [reference.compare(frame(rng, 30, shift=2.0), 0.001, 0.1)[0].drifted for _ in range(100)]
    assert np.mean(found) >= 0.8  # python -m bench drift measures it per dataset


def test_effect_sizes() -> None:
    rng = np.random.default_rng(3)
    ref = frame(rng, 5000, missing=0.0)
    reference = drift.DriftReference(ref, SPEC)
    moved = reference.compare(frame(rng, 5000, shift=1.0, missing=0.0, q_share=0.5), 0.001, 0.1)
    by_name = {r.feature: r for r in moved}
    assert by_name["x"].effect_name == "wasserstein_std"
    assert by_name["x"].effect == pytest.approx(0.5, abs=0.05)  # 1.0 over a std of 2
    assert by_name["c"].effect_name == "total_variation"
    assert by_name["c"].effect == pytest.approx(0.2, abs=0.03)  # q's share moved 20 points
    assert by_name["x"].drifted and by_name["c"].drifted and not by_name["n"].drifted


def test_a_significant_but_trivial_shift_is_not_drift() -> None:
    """100,000 rows make a 0.03-std shift significant; the effect size keeps it quiet."""
    rng = np.random.default_rng(4)
    reference = drift.DriftReference(frame(rng, 100_000, missing=0.0), SPEC)
    result = reference.compare(frame(rng, 100_000, shift=0.06, missing=0.0), 0.001, 0.1)[0]
    assert result.p_adjusted < 0.001
    assert result.effect < 0.1 and not result.drifted


def test_missing_share_change_is_drift() -> None:
    rng = np.random.default_rng(5)
    reference = drift.DriftReference(frame(rng, 1000, missing=0.05), SPEC)
    result = reference.compare(frame(rng, 200, missing=0.5), 0.001, 0.1)[0]
    assert "missing" in result.test and result.effect_name == "missing_share"
    assert result.effect == pytest.approx(0.45, abs=0.08) and result.drifted


def test_a_window_with_no_value_of_a_mostly_missing_feature_is_judged_on_its_missing_share() -> None:
    """Found by a user trial: a feature with values in 3 of 640 training rows drifted (p 0,
    effect 1) on every day that had none of them; Fisher's test on those counts says p 1."""
    rng = np.random.default_rng(8)
    sparse = frame(rng, 640, missing=0.0)
    sparse.loc[3:, "x"] = np.nan
    reference = drift.DriftReference(sparse, SPEC)
    day = frame(rng, 40, missing=1.0)
    result = reference.compare(day, 0.001, 0.1)[0]
    assert result.p_value == pytest.approx(stats.fisher_exact([[637, 3], [40, 0]]).pvalue)
    assert result.effect == pytest.approx(3 / 640) and result.effect_name == "missing_share"
    assert not result.drifted
    # A feature that always had values and now has none has drifted, by all of its rows.
    full = drift.DriftReference(frame(rng, 640, missing=0.0), SPEC).compare(day, 0.001, 0.1)[0]
    assert full.drifted and full.effect == 1.0 and full.p_value < 1e-10
    # And one never seen in training that now has values.
    empty = frame(rng, 640, missing=0.0)
    empty["x"] = np.nan
    seen = drift.DriftReference(empty, SPEC).compare(frame(rng, 40, missing=0.0), 0.001, 0.1)[0]
    assert seen.drifted and seen.effect == 1.0


def test_rare_categories_are_pooled_for_small_windows() -> None:
    """Two rows of a 2 % category in a 30-row window are not evidence of drift."""
    table = drift.pooled_table({"p": 400, "q": 180, "rare": 12}, {"p": 18, "q": 10, "rare": 2})
    assert table.shape == (2, 2)  # rare (expected 0.7 in 30 rows) pooled with the next-rarest, q
    assert table[:, 1].tolist() == [192, 12]
    rng = np.random.default_rng(6)
    reference = drift.DriftReference(frame(rng, 600), SPEC)
    current = frame(rng, 30)
    current.loc[:2, "c"] = "rare"
    assert not reference.compare(current, 0.001, 0.1)[2].drifted


HEAVY = DatasetSpec(
    name="heavy", description="", transform=lambda raw: raw, raw_columns=("id", "amount", "city", "y"), label="y",
    label_type="string", classes=("a", "b"), primary_key="id",
    features=(FeatureSpec("amount", "double"), FeatureSpec("city", "string")),
)
AMOUNT = DatasetSpec(
    name="amount", description="", transform=lambda raw: raw, raw_columns=("id", "amount", "y"), label="y",
    label_type="string", classes=("a", "b"), primary_key="id", features=(FeatureSpec("amount", "double"),),
)
CITIES = [f"city {i}" for i in range(200)]
CITY_SHARES = 1 / np.arange(1, 201) ** 0.8 / np.sum(1 / np.arange(1, 201) ** 0.8)


def heavy_frame(rng: np.random.Generator, rows: int, scale: float = 1.0, reversed_cities: bool = False) -> pd.DataFrame:
    """Lognormal amounts with 0.5 % of huge ones (1e8-1e10), and 200 cities of falling shares."""
    amount = rng.lognormal(4, 1, rows) * scale
    huge = rng.random(rows) < 0.005
    amount[huge] = rng.uniform(1e8, 1e10, int(huge.sum()))
    shares = CITY_SHARES[::-1] if reversed_cities else CITY_SHARES
    return pd.DataFrame({"amount": amount, "city": rng.choice(CITIES, rows, p=shares)})


def test_a_shift_of_the_bulk_of_a_heavy_tailed_feature_is_drift() -> None:
    """Found by a user trial: with 0.5 % of huge values making the standard deviation, every
    other value tripled gave p about 1e-15 and an effect of 0.06: never drift, and the more
    rows the smaller. The effect now also measures the bulk (1st-99th percentile)."""
    rng = np.random.default_rng(11)
    reference = drift.DriftReference(heavy_frame(rng, 2000), AMOUNT)
    for rows in (30, 200, 1000):
        found = [reference.compare(heavy_frame(rng, rows, scale=3.0), 0.01, 0.1)[0] for _ in range(20)]
        assert all(r.drifted for r in found), (rows, [round(r.effect, 3) for r in found])
        assert min(r.effect for r in found) > 0.5
    # No change: p-values still gate (0.5 % of 1,000 clean windows drifted when measured).
    clean = [reference.compare(heavy_frame(rng, 200), 0.01, 0.1)[0].drifted for _ in range(100)]
    assert sum(clean) <= 4
    # On a normal feature the bulk adds nothing: the effect is still the shift in stds.
    normal = drift.DriftReference(frame(rng, 5000, missing=0.0), SPEC)
    assert normal.compare(frame(rng, 5000, shift=1.0, missing=0.0), 0.001, 0.1)[0].effect == pytest.approx(0.5, abs=0.05)


def test_a_category_with_many_rare_values_is_tested_by_permutation() -> None:
    """Found by a user trial: 200 cities, none expected 5 times in a 30-row window, were all
    pooled into one column and a reversal of their shares got p = 1.0. The permutation test
    of the unpooled table finds it; under no change its p-values stay valid."""
    rng = np.random.default_rng(12)
    reference = drift.DriftReference(heavy_frame(rng, 2000), HEAVY)
    shifted = [reference.compare(heavy_frame(rng, 30, reversed_cities=True), 0.01, 0.1)[1] for _ in range(20)]
    assert all(r.drifted for r in shifted), [r.p_value for r in shifted]
    clean = np.array([reference.compare(heavy_frame(rng, 30), 0.01, 0.1)[1].p_value for _ in range(200)])
    assert (clean < 0.05).mean() <= 0.08 and (clean < 0.01).mean() <= 0.02
    # The permutation p-value of one table, against an exact enumeration's: Fisher's test
    # of a 2 x 2 table is the same permutation distribution (the chi-squared statistic is
    # monotone in the corner cell there, two-sided as Fisher's "minlike" is not: compare loosely).
    table = np.array([[40.0, 10.0], [3.0, 7.0]])
    assert drift.permutation_p_value(table) == pytest.approx(stats.fisher_exact(table).pvalue, abs=0.01)
    assert drift.permutation_p_value(table) == drift.permutation_p_value(table)  # seeded


def test_window_pools_the_newest_days_until_it_is_big_enough() -> None:
    days = np.array(["2024-01-01"] * 10 + ["2024-01-02"] * 10 + ["2024-01-03"] * 10 + ["2024-01-04"] * 10, dtype="datetime64[D]")
    as_of = np.datetime64("2024-01-04")
    assert drift.window_start(days, as_of, target_rows=30) == np.datetime64("2024-01-02")
    assert drift.window_start(days, as_of, target_rows=10) == np.datetime64("2024-01-04")
    assert drift.window_start(days, np.datetime64("2024-01-02"), target_rows=30) is None  # 20 rows < MIN_ROWS
    # The lookback bounds it: with 2 days allowed only 20 rows are reachable.
    assert drift.window_start(days, as_of, target_rows=30, lookback_days=2) is None
    # Fewer than the target but at least the minimum: the whole lookback.
    assert drift.window_start(days, as_of, target_rows=100, lookback_days=30) == np.datetime64("2024-01-01")
    # Later days never enter a window of an earlier batch.
    assert drift.window_start(days, np.datetime64("2024-01-03"), target_rows=30) == np.datetime64("2024-01-01")


def test_wilson_based_accuracy_alert() -> None:
    rule = AlertRule(accuracy_drop=0.1)
    # The case: 6 of 10 right against a holdout of 0.827 (floor 0.727) is noise.
    assert not evaluate_alerts(rule, 0.827, 6, 10, 6, 10, None, []).accuracy
    _low, high = wilson_interval(60, 100)
    assert high < 0.727
    alerts = evaluate_alerts(rule, 0.827, 60, 100, 60, 100, None, [])
    assert alerts.accuracy and "95 % interval" in alerts.messages[0]
    # The rolling window can carry an alert that no single small batch can.
    assert evaluate_alerts(rule, 0.827, 6, 10, 300, 500, None, []).accuracy


def test_drift_alert_needs_a_drifted_feature_and_the_share() -> None:
    rule = AlertRule(drift_share=0.0)
    assert evaluate_alerts(rule, None, 0, 0, 0, 0, 0.1, ["x"], "2024-01-02..2024-01-04").drift
    assert "over 2024-01-02..2024-01-04" in evaluate_alerts(rule, None, 0, 0, 0, 0, 0.1, ["x"], "2024-01-02..2024-01-04").messages[0]
    assert not evaluate_alerts(rule, None, 0, 0, 0, 0, 0.0, [], "").drift
    assert not evaluate_alerts(AlertRule(drift_share=0.5), None, 0, 0, 0, 0, 1 / 3, ["x"], "").drift
