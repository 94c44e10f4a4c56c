"""The Titanic passenger list: who survived.

Keeps what predicts survival (class, sex, age, fare, port, family aboard and the title in
the name) as raw values: a missing age stays missing. Imputation and encoding belong to
the model pipeline, so training and serving cannot disagree.
"""

from __future__ import annotations

import pandas as pd

from serverless_ml.datasets.spec import DatasetSpec, FeatureSpec, SyntheticSpec

SOURCE_URL = "https://raw.githubusercontent.com/ID2223KTH/id2223kth.github.io/master/assignments/lab1/titanic.csv"
TITLES = ("Mr", "Mrs", "Miss", "Master", "Rare")
_TITLE_ALIASES = {"Mlle": "Miss", "Ms": "Miss", "Mme": "Mrs"}
PORTS = ("S", "C", "Q")


def parse_title(names: pd.Series) -> pd.Series:
    """The honorific in ``"Surname, Title. Given names"``, folded into :data:`TITLES`.

    French and abbreviated forms map to their English equivalents; every other title
    (Dr, Rev, Col, Countess, ...) is ``Rare``, as is a name without a title.
    """
    raw = names.astype("string").str.extract(r",\s*([^.,]+?)\s*\.", expand=False).str.strip()
    folded = raw.replace(_TITLE_ALIASES)
    return folded.where(folded.isin(TITLES), "Rare").astype(object)


def transform(raw: pd.DataFrame) -> pd.DataFrame:
    """Raw Kaggle rows to feature rows (same index)."""
    out = pd.DataFrame(index=raw.index)
    out["passenger_id"] = raw["PassengerId"]
    out["pclass"] = raw["Pclass"]
    out["sex"] = raw["Sex"]
    out["age"] = raw["Age"]
    out["fare"] = raw["Fare"]
    out["embarked"] = raw["Embarked"]
    out["sibsp"] = raw["SibSp"]
    out["parch"] = raw["Parch"]
    out["title"] = parse_title(raw["Name"])
    out["family_size"] = pd.to_numeric(raw["SibSp"], errors="coerce") + pd.to_numeric(raw["Parch"], errors="coerce") + 1
    return out


def derive(rows: pd.DataFrame) -> pd.DataFrame:
    """Recompute family size from its parts (after the generator shifted them)."""
    return rows.assign(family_size=rows["sibsp"] + rows["parch"] + 1)


SPEC = DatasetSpec(
    name="titanic",
    description="Titanic passengers: class, sex, age, fare, port, family and title; survived or not",
    source_url=SOURCE_URL,
    raw_columns=("PassengerId", "Survived", "Pclass", "Name", "Sex", "Age", "SibSp", "Parch", "Fare", "Embarked"),
    label="survived",
    label_source="Survived",
    label_type="bigint",
    classes=(0, 1),
    class_names=("died", "survived"),
    primary_key="passenger_id",
    primary_key_source="PassengerId",
    features=(
        FeatureSpec("pclass", "bigint", "Pclass", min=1, max=3, description="ticket class (1 = first)"),
        FeatureSpec("sex", "string", "Sex", categories=("male", "female")),
        FeatureSpec("age", "double", "Age", min=0.0, max=100.0, nullable=True, description="age in years; missing stays missing"),
        FeatureSpec("fare", "double", "Fare", min=0.0, max=1000.0, description="ticket fare (GBP)"),
        FeatureSpec("embarked", "string", "Embarked", categories=PORTS, nullable=True, description="port: Southampton, Cherbourg, Queenstown"),
        FeatureSpec("sibsp", "bigint", "SibSp", min=0, max=10, description="siblings and spouses aboard"),
        FeatureSpec("parch", "bigint", "Parch", min=0, max=10, description="parents and children aboard"),
        FeatureSpec("title", "string", "Name", categories=TITLES, description="title parsed from the name"),
        FeatureSpec("family_size", "bigint", None, min=1, max=21, description="sibsp + parch + 1"),
    ),
    transform=transform,
    synthetic=SyntheticSpec(jitter=0.1, jitter_features=("age", "fare")),
    derive=derive,
)
