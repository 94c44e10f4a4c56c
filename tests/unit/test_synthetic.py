"""The daily generator, measured against the real rows it learns from.

Stated tolerances: class shares within 0.03 (absolute) of the real prior, the share of
missing ages within 0.03; drift moves the mean by the stated amount within 0.5 (the
shift is exact except where clipping at the schema range bites).
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier

from serverless_ml.datasets import iris, titanic
from serverless_ml.datasets.sources import load_source
from serverless_ml.datasets.spec import DatasetSpec
from serverless_ml.datasets.spec import SyntheticSpec
from serverless_ml.datasets.synthetic import (
    MAX_ROWS_PER_DAY,
    MAX_SEED,
    check_generated,
    generate_rows,
    jitter_locally,
    parse_drift,
    resolution,
    synthetic_keys,
)
from serverless_ml.inference.drift import DriftReference
from serverless_ml.datasets.validation import build_feature_rows
from serverless_ml.errors import SmlError

pytestmark = pytest.mark.unit

DAY = dt.date(2024, 2, 1)
SHARE_TOLERANCE = 0.03
TITANIC_ROWS = 5000
IRIS_ROWS = 3000


def _real(spec: DatasetSpec, data_dir) -> pd.DataFrame:
    return build_feature_rows(load_source(spec, data_dir=data_dir), spec, origin="backfill", event_time=spec.backfill_event_time)


@pytest.fixture(scope="module")
def real_titanic(data_dir) -> pd.DataFrame:
    return _real(titanic.SPEC, data_dir)


@pytest.fixture(scope="module")
def real_iris(data_dir) -> pd.DataFrame:
    return _real(iris.SPEC, data_dir)


@pytest.fixture(scope="module")
def synthetic_titanic(real_titanic: pd.DataFrame) -> pd.DataFrame:
    return generate_rows(real_titanic, titanic.SPEC, DAY, TITANIC_ROWS, seed=7)


@pytest.fixture(scope="module")
def synthetic_iris(real_iris: pd.DataFrame) -> pd.DataFrame:
    return generate_rows(real_iris, iris.SPEC, DAY, IRIS_ROWS, seed=7)


@pytest.fixture
def pair(request: pytest.FixtureRequest) -> tuple[DatasetSpec, pd.DataFrame, pd.DataFrame]:
    name = request.param
    spec = {"titanic": titanic.SPEC, "iris": iris.SPEC}[name]
    return spec, request.getfixturevalue(f"real_{name}"), request.getfixturevalue(f"synthetic_{name}")


both = pytest.mark.parametrize("pair", ["titanic", "iris"], indirect=True)


@both
def test_layout_keys_and_provenance(pair) -> None:
    spec, real, syn = pair
    assert list(syn.columns) == spec.store_columns
    assert syn.dtypes.to_dict() == real.dtypes.to_dict(), "the generator writes the group's own types"
    assert syn[spec.primary_key].is_unique
    assert not set(syn[spec.primary_key]) & set(real[spec.primary_key]), "synthetic keys never overwrite real rows"
    assert (syn["origin"] == "synthetic").all()
    assert syn["event_time"].unique().tolist() == [pd.Timestamp(DAY, tz="UTC")]


@both
def test_class_balance_follows_the_real_prior(pair) -> None:
    spec, real, syn = pair
    prior = real[spec.label].value_counts(normalize=True)
    shares = syn[spec.label].value_counts(normalize=True).reindex(prior.index, fill_value=0.0)
    assert set(syn[spec.label]) <= set(spec.classes)
    np.testing.assert_allclose(shares.to_numpy(), prior.to_numpy(), atol=SHARE_TOLERANCE)


@both
def test_features_stay_within_each_class_observed_values(pair) -> None:
    spec, real, syn = pair
    for cls in spec.classes:
        real_c, syn_c = real[real[spec.label] == cls], syn[syn[spec.label] == cls]
        assert len(syn_c) > 0
        for feature in spec.features:
            if feature.is_numeric:
                values = syn_c[feature.name].dropna()
                assert values.min() >= real_c[feature.name].min(), (cls, feature.name)
                assert values.max() <= real_c[feature.name].max(), (cls, feature.name)
            else:
                assert set(syn_c[feature.name].dropna()) <= set(real_c[feature.name].dropna()), (cls, feature.name)
            if not feature.nullable:
                assert syn_c[feature.name].notna().all(), (cls, feature.name)


@both
def test_jittered_features_keep_the_real_resolution(pair) -> None:
    spec, real, syn = pair
    jittered = spec.synthetic.jitter_features or [f.name for f in spec.features if f.type == "double"]
    for name in jittered:
        decimals = resolution(real[name].astype(float).to_numpy())
        assert decimals is not None and decimals <= 4, name
        values = syn[name].dropna().astype(float)
        # On the real values' own grid (Iris: 1 decimal; Titanic fares: 4), never coarser.
        assert np.allclose(values, values.round(decimals), atol=1e-9), name
        assert abs(values.mean() - real[name].mean()) < 0.1 * real[name].std(), name
        assert values.nunique() >= 0.5 * min(real[name].nunique(), len(values)), name


def test_resolution_of_pools() -> None:
    assert resolution(np.array([1.0, 2.0, np.nan])) == 0
    assert resolution(np.array([0.9912, 0.9987, 1.0])) == 4
    assert resolution(np.array([5.1, 4.9])) == 1
    assert resolution(np.random.default_rng(0).normal(size=50)) is None


def test_fine_resolution_is_not_rounded_away() -> None:
    """A density of 0.99xx: rounding to 2 decimals collapsed ~1,000 real values to 4."""
    rng = np.random.default_rng(1)
    pool = np.round(rng.uniform(0.9871, 1.0039, 1000), 5)
    out = jitter_locally(pool[:500].copy(), pool, 0.1, rng)
    assert len(np.unique(out)) > 300
    assert np.allclose(out, np.round(out, 5))


def test_jittered_whole_numbers_stay_whole(real_titanic: pd.DataFrame) -> None:
    spec = dataclasses.replace(titanic.SPEC, synthetic=SyntheticSpec(jitter=0.5, jitter_features=("age", "sibsp")))
    rows = generate_rows(real_titanic, spec, DAY, 500, seed=1)
    assert rows["sibsp"].dtype == real_titanic["sibsp"].dtype
    assert (rows["sibsp"] == rows["sibsp"].round()).all()


@both
def test_clean_synthetic_rows_do_not_drift_under_the_projects_own_tests(pair) -> None:
    """The monitoring's drift tests cannot tell clean synthetic rows from real ones."""
    spec, real, syn = pair
    results = DriftReference(real, spec).compare(syn.iloc[:1000], p_threshold=0.001, min_effect=0.1)
    assert not [r.feature for r in results if r.drifted]


def test_titanic_combinations_stay_plausible(synthetic_titanic: pd.DataFrame, real_titanic: pd.DataFrame) -> None:
    syn = synthetic_titanic
    assert set(syn.loc[syn["title"].isin(["Mrs", "Miss"]), "sex"]) == {"female"}
    assert set(syn.loc[syn["title"].isin(["Mr", "Master"]), "sex"]) == {"male"}
    assert (syn["family_size"] == syn["sibsp"] + syn["parch"] + 1).all()
    assert syn["pclass"].isin([1, 2, 3]).all()
    # Masters are boys (real ones are at most 12): jitter nudges ages by about a year or
    # two, never into adulthood.
    assert syn.loc[syn["title"] == "Master", "age"].dropna().max() < 18
    missing_age = syn["age"].isna().mean()
    assert abs(missing_age - real_titanic["age"].isna().mean()) < SHARE_TOLERANCE, "missing ages stay missing at the real rate"


def test_same_seed_and_date_give_the_same_rows(real_titanic: pd.DataFrame, real_iris: pd.DataFrame) -> None:
    for spec, real in ((titanic.SPEC, real_titanic), (iris.SPEC, real_iris)):
        first = generate_rows(real, spec, DAY, 200, seed=3)
        again = generate_rows(real.sample(frac=1.0, random_state=0).sort_values(spec.primary_key), spec, DAY, 200, seed=3)
        pd.testing.assert_frame_equal(first, again)


def test_another_date_or_seed_gives_other_rows(real_titanic: pd.DataFrame) -> None:
    base = generate_rows(real_titanic, titanic.SPEC, DAY, 200, seed=3)
    for other in (
        generate_rows(real_titanic, titanic.SPEC, DAY + dt.timedelta(days=1), 200, seed=3),
        generate_rows(real_titanic, titanic.SPEC, DAY, 200, seed=4),
    ):
        assert not set(other["passenger_id"]) & set(base["passenger_id"])
        values = ["fare", "age", "sex", "pclass", "survived"]
        differing = (other[values].reset_index(drop=True) != base[values].reset_index(drop=True)).any(axis=1).mean()
        assert differing > 0.5


def test_numeric_drift_shifts_the_mean_and_stays_in_range(real_titanic: pd.DataFrame, real_iris: pd.DataFrame) -> None:
    base = generate_rows(real_titanic, titanic.SPEC, DAY, 2000, seed=1)
    drifted = generate_rows(real_titanic, titanic.SPEC, DAY, 2000, seed=1, drift=parse_drift("age+15,fare*2", titanic.SPEC))
    assert drifted["age"].mean() - base["age"].mean() == pytest.approx(15, abs=0.5)
    assert drifted["age"].isna().sum() == base["age"].isna().sum()
    assert drifted["fare"].mean() / base["fare"].mean() == pytest.approx(2, abs=0.1)
    assert drifted["age"].max() <= 100 and drifted["fare"].max() <= 1000
    # Untouched features and labels are the same rows as without drift.
    pd.testing.assert_frame_equal(drifted.drop(columns=["age", "fare"]), base.drop(columns=["age", "fare"]))

    far = generate_rows(real_titanic, titanic.SPEC, DAY, 500, seed=1, drift=parse_drift("age+90", titanic.SPEC))
    assert far["age"].dropna().between(0, 100).all() and (far["age"].dropna() == 100).mean() > 0.5

    iris_base = generate_rows(real_iris, iris.SPEC, DAY, 1000, seed=1)
    iris_drift = generate_rows(real_iris, iris.SPEC, DAY, 1000, seed=1, drift=parse_drift("petal_length+1", iris.SPEC))
    assert iris_drift["petal_length"].mean() - iris_base["petal_length"].mean() == pytest.approx(1, abs=0.05)
    assert iris_drift["petal_length"].max() <= 10


def test_integer_drift_keeps_derived_features_consistent(real_titanic: pd.DataFrame) -> None:
    drifted = generate_rows(real_titanic, titanic.SPEC, DAY, 500, seed=2, drift=parse_drift("sibsp+2", titanic.SPEC))
    base = generate_rows(real_titanic, titanic.SPEC, DAY, 500, seed=2)
    assert drifted["sibsp"].dtype == np.int64
    assert (drifted["sibsp"] == (base["sibsp"] + 2).clip(upper=10)).all()
    assert (drifted["family_size"] == drifted["sibsp"] + drifted["parch"] + 1).all()


def test_categorical_drift_sets_the_category(real_titanic: pd.DataFrame) -> None:
    drifted = generate_rows(real_titanic, titanic.SPEC, DAY, 300, seed=5, drift=parse_drift("embarked=Q", titanic.SPEC))
    assert (drifted["embarked"] == "Q").all()
    assert (generate_rows(real_titanic, titanic.SPEC, DAY, 300, seed=5)["embarked"] != "Q").mean() > 0.5


def _titanic_matrix(rows: pd.DataFrame, columns: list[str] | None = None) -> pd.DataFrame:
    x = rows[titanic.SPEC.feature_names].copy()
    x["age"] = x["age"].fillna(-1)
    x = pd.get_dummies(x, columns=["sex", "embarked", "title"], dummy_na=True, dtype=float)
    return x if columns is None else x.reindex(columns=columns, fill_value=0.0)


def test_a_model_of_the_real_rows_scores_well_on_synthetic_rows(
    real_titanic: pd.DataFrame, synthetic_titanic: pd.DataFrame, real_iris: pd.DataFrame, synthetic_iris: pd.DataFrame
) -> None:
    """Labels follow the features as in the real data (random labels would score ~0.5)."""
    x_real = _titanic_matrix(real_titanic)
    model = RandomForestClassifier(n_estimators=100, max_depth=6, random_state=0, n_jobs=1)
    model.fit(x_real, real_titanic["survived"])
    titanic_score = model.score(_titanic_matrix(synthetic_titanic, list(x_real.columns)), synthetic_titanic["survived"])
    assert titanic_score > 0.75

    features = list(iris.MEASUREMENTS)
    model = RandomForestClassifier(n_estimators=100, random_state=0, n_jobs=1).fit(real_iris[features], real_iris["variety"])
    assert model.score(synthetic_iris[features], synthetic_iris["variety"]) > 0.9


def test_generate_rows_refuses_bad_arguments(real_titanic: pd.DataFrame) -> None:
    for n in (0, -1, MAX_ROWS_PER_DAY + 1):
        with pytest.raises(SmlError, match="--rows must be between 1 and 10000"):
            generate_rows(real_titanic, titanic.SPEC, DAY, n, seed=0)
    for seed in (-1, MAX_SEED + 1):
        with pytest.raises(SmlError, match="--seed must be between 0 and 9999"):
            generate_rows(real_titanic, titanic.SPEC, DAY, 10, seed=seed)
    with pytest.raises(SmlError, match="no real rows"):
        generate_rows(real_titanic.iloc[0:0], titanic.SPEC, DAY, 10, seed=0)


def test_synthetic_keys_never_collide_across_seeds_and_dates() -> None:
    keys = [
        set(synthetic_keys(titanic.SPEC, day, seed, MAX_ROWS_PER_DAY))
        for day in (DAY, DAY + dt.timedelta(days=1))
        for seed in (0, 1, MAX_SEED)
    ]
    assert sum(len(k) for k in keys) == len(set().union(*keys)) == 6 * MAX_ROWS_PER_DAY
    assert synthetic_keys(titanic.SPEC, DAY, 12, 3).tolist() == [2024020100120000, 2024020100120001, 2024020100120002]


def test_generated_rows_never_hold_a_missing_value_the_schema_forbids(real_titanic: pd.DataFrame) -> None:
    """The last check before writing: a NaN jitter once wrote non-nullable features as null."""
    rows = generate_rows(real_titanic, titanic.SPEC, DAY, 50, seed=0)
    check_generated(rows, titanic.SPEC, DAY)  # good rows pass
    rows.loc[rows.index[3], "age"] = np.nan  # nullable: fine
    check_generated(rows, titanic.SPEC, DAY)
    rows.loc[rows.index[3], "fare"] = np.nan
    expected = r"titanic: synthetic rows for 2024-02-01 would hold a missing value in 'fare' \(row 4\), which is not nullable"
    with pytest.raises(SmlError, match=expected + "; nothing was written"):
        check_generated(rows, titanic.SPEC, DAY)
    rows.loc[rows.index[3], "fare"] = np.inf
    with pytest.raises(SmlError, match="would hold an infinite value in 'fare'"):
        check_generated(rows, titanic.SPEC, DAY)
    # A jitter that slipped past the spec (NaN) is caught by the generator itself.
    bad = dataclasses.replace(titanic.SPEC, synthetic=SyntheticSpec(jitter=0.1, jitter_features=("fare",)))
    object.__setattr__(bad.synthetic, "jitter", float("nan"))
    with pytest.raises(SmlError, match="would hold a missing value in 'fare'"):
        generate_rows(real_titanic, bad, DAY, 50, seed=0)
