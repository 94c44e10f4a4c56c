"""``--drift`` parsing and application."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from serverless_ml.datasets import iris, titanic
from serverless_ml.datasets.synthetic import Drift, apply_drift, parse_drift
from serverless_ml.errors import SmlError

pytestmark = pytest.mark.unit


def test_parse_drift_items() -> None:
    assert parse_drift("age+15,fare*2,embarked=Q", titanic.SPEC) == (
        Drift("age", "+", 15.0),
        Drift("fare", "*", 2.0),
        Drift("embarked", "=", "Q"),
    )
    assert parse_drift(" age + -2.5 , sex = female ", titanic.SPEC) == (Drift("age", "+", -2.5), Drift("sex", "=", "female"))
    assert parse_drift("petal_width*0.5", iris.SPEC) == (Drift("petal_width", "*", 0.5),)
    assert str(Drift("age", "+", 15.0)) == "age+15.0"


@pytest.mark.parametrize("text", ["", "   ", None])
def test_no_drift(text: str | None) -> None:
    assert parse_drift(text, titanic.SPEC) == ()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("age", "must look like feature+N"),
        ("age-3", "must look like feature+N"),
        ("age+", "must look like feature+N"),
        ("age+x", "'x' is not a number"),
        ("age+inf", "not a finite number"),
        ("age+nan", "not a finite number"),
        ("age=30", "numeric feature 'age' takes + or *"),
        ("sex+1", "categorical feature 'sex' takes =CATEGORY"),
        ("embarked=X", "'X' is not one of S, C, Q"),
        ("height+1", "has no feature 'height'"),
        ("age+1,,fare*2", "must look like feature+N"),
    ],
)
def test_parse_drift_errors(text: str, expected: str) -> None:
    with pytest.raises(SmlError) as info:
        parse_drift(text, titanic.SPEC)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_apply_drift_stays_in_the_schema_range() -> None:
    ages = pd.Series([1.0, 50.0, np.nan, 95.0])
    assert apply_drift(ages, Drift("age", "+", 10.0), titanic.SPEC).tolist()[:2] == [11.0, 60.0]
    shifted = apply_drift(ages, Drift("age", "+", 10.0), titanic.SPEC)
    assert np.isnan(shifted.iloc[2]), "a missing age stays missing"
    assert shifted.iloc[3] == 100.0, "clipped at the schema maximum"
    assert apply_drift(ages, Drift("age", "*", -1.0), titanic.SPEC).dropna().tolist() == [0.0, 0.0, 0.0]


def test_apply_drift_keeps_integers_whole() -> None:
    sibsp = pd.Series([0, 3, 9], dtype="int64")
    out = apply_drift(sibsp, Drift("sibsp", "+", 1.6), titanic.SPEC)
    assert out.dtype == np.int64
    assert out.tolist() == [2, 5, 10]


def test_apply_drift_sets_a_category() -> None:
    out = apply_drift(pd.Series(["S", None, "C"]), Drift("embarked", "=", "Q"), titanic.SPEC)
    assert out.tolist() == ["Q", "Q", "Q"]
