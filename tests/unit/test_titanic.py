"""The Titanic transform: titles parsed from names, family size, missing ages kept."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from serverless_ml.datasets import titanic
from serverless_ml.datasets.sources import load_source
from serverless_ml.datasets.validation import build_feature_rows

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("name", "title"),
    [
        ("Braund, Mr. Owen Harris", "Mr"),
        ("Cumings, Mrs. John Bradley (Florence Briggs Thayer)", "Mrs"),
        ("Heikkinen, Miss. Laina", "Miss"),
        ("Palsson, Master. Gosta Leonard", "Master"),
        ("Sagesser, Mlle. Emma", "Miss"),
        ("Aubart, Mme. Leontine Pauline", "Mrs"),
        ("O'Dwyer, Ms. Ellen", "Miss"),
        ("Rothes, the Countess. of (Lucy Noel Martha Dyer-Edwards)", "Rare"),
        ("Uruchurtu, Don. Manuel E", "Rare"),
        ("Byles, Rev. Thomas Roussel Davids", "Rare"),
        ("Crosby, Capt. Edward Gifford", "Rare"),
        ("Reuchlin, Jonkheer. John George", "Rare"),
        ("Minahan, Dr. William Edward", "Rare"),
        ("Duff Gordon, Sir. Cosmo Edmund", "Rare"),
        ("Nobody Without A Title", "Rare"),
        ("Smith,  Mr .  John", "Mr"),
    ],
)
def test_parse_title_folds_titles(name: str, title: str) -> None:
    assert titanic.parse_title(pd.Series([name])).tolist() == [title]


def test_parse_title_missing_name_is_rare() -> None:
    assert titanic.parse_title(pd.Series([None, "Kelly, Mr. James"])).tolist() == ["Rare", "Mr"]


def _raw(**overrides: list[object]) -> pd.DataFrame:
    base: dict[str, list[object]] = {
        "PassengerId": [1, 2, 3],
        "Survived": [0, 1, 1],
        "Pclass": [3, 1, 3],
        "Name": ["Braund, Mr. Owen Harris", "Sagesser, Mlle. Emma", "Rothes, the Countess. of (Lucy)"],
        "Sex": ["male", "female", "female"],
        "Age": [22.0, np.nan, 33.0],
        "SibSp": [1, 0, 2],
        "Parch": [0, 0, 3],
        "Ticket": ["A/5 21171", "PC 17477", "110152"],
        "Fare": [7.25, 69.3, 86.5],
        "Cabin": [None, "B35", "B77"],
        "Embarked": ["S", "C", None],
    }
    base.update(overrides)
    return pd.DataFrame(base, index=[10, 11, 12])


def test_transform_keeps_raw_values_and_derives_title_and_family_size() -> None:
    out = titanic.transform(_raw())
    assert list(out.index) == [10, 11, 12], "same index as the raw frame, so errors can name raw rows"
    assert out["passenger_id"].tolist() == [1, 2, 3]
    assert out["title"].tolist() == ["Mr", "Miss", "Rare"]
    assert out["family_size"].tolist() == [2, 1, 6]
    assert out["sex"].tolist() == ["male", "female", "female"]
    assert out["fare"].tolist() == [7.25, 69.3, 86.5]
    assert out.loc[12, "embarked"] is None or pd.isna(out.loc[12, "embarked"])
    assert set(out.columns) == {"passenger_id", *titanic.SPEC.feature_names}


def test_missing_age_stays_missing_through_validation(data_dir) -> None:
    source = load_source(titanic.SPEC, data_dir=data_dir)
    # Fields arrive as text; an empty one is a missing age.
    raw_missing = int((source.frame["Age"] == "").sum())
    rows = build_feature_rows(source, titanic.SPEC, origin="backfill", event_time="2024-01-01")
    assert raw_missing > 100, "the course's Titanic CSV has 177 missing ages"
    assert int(rows["age"].isna().sum()) == raw_missing
    assert rows["age"].dtype == np.float64
    # Not imputed: the known ages are the raw ones, nothing else.
    known = [float(age) for age in source.frame["Age"] if age]
    np.testing.assert_array_equal(rows["age"].dropna().to_numpy(), known)


def test_backfill_rows_of_the_real_csv(data_dir) -> None:
    source = load_source(titanic.SPEC, data_dir=data_dir)
    rows = build_feature_rows(source, titanic.SPEC, origin="backfill", event_time="2024-01-01")
    raw = source.frame
    assert list(rows.columns) == titanic.SPEC.store_columns
    assert len(rows) == len(raw) == 891
    assert rows["passenger_id"].is_unique
    assert set(rows["title"]) == set(titanic.TITLES)
    np.testing.assert_array_equal(rows["family_size"], raw["SibSp"].astype(int) + raw["Parch"].astype(int) + 1)
    np.testing.assert_array_equal(rows["survived"], raw["Survived"].astype(int))
    # Title follows the name, so the obvious pairs hold on real data.
    assert set(rows.loc[rows["title"].isin(["Mrs", "Miss"]), "sex"]) == {"female"}
    assert set(rows.loc[rows["title"].isin(["Mr", "Master"]), "sex"]) == {"male"}
    counts = rows["title"].value_counts()
    assert counts["Mr"] > counts["Miss"] > counts["Mrs"] > counts["Master"] > counts["Rare"] > 0
    assert (rows["origin"] == "backfill").all()
    assert rows["event_time"].dt.tz is not None
    assert rows["event_time"].unique().tolist() == [pd.Timestamp("2024-01-01", tz="UTC")]
    assert rows["embarked"].isna().sum() == (raw["Embarked"] == "").sum() == 2
    assert math.isclose(rows["fare"].sum(), raw["Fare"].astype(float).sum())


def test_derive_recomputes_family_size() -> None:
    rows = pd.DataFrame({"sibsp": [0, 3], "parch": [2, 0], "family_size": [99, 99]})
    assert titanic.derive(rows)["family_size"].tolist() == [3, 4]
