"""The Iris dataset: four flower measurements, three varieties."""

from __future__ import annotations

import pandas as pd

from serverless_ml.datasets.spec import DatasetSpec, FeatureSpec, SyntheticSpec

SOURCE_URL = "https://raw.githubusercontent.com/ID2223KTH/id2223kth.github.io/master/assignments/lab1/iris.csv"
VARIETIES = ("Setosa", "Versicolor", "Virginica")
MEASUREMENTS = ("sepal_length", "sepal_width", "petal_length", "petal_width")


def load_sklearn_copy() -> pd.DataFrame:
    """The raw frame from scikit-learn's bundled copy, shaped like the course's CSV."""
    from sklearn.datasets import load_iris

    bunch = load_iris(as_frame=True)
    frame = bunch.frame.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    frame["variety"] = [VARIETIES[int(i)] for i in frame.pop("target")]
    return frame[[*MEASUREMENTS, "variety"]]


def transform(raw: pd.DataFrame) -> pd.DataFrame:
    """Raw CSV rows to feature rows: a row number as key, measurements in cm, variety."""
    out = pd.DataFrame(index=raw.index)
    out["iris_id"] = pd.RangeIndex(1, len(raw) + 1)
    for column in MEASUREMENTS:
        out[column] = raw[column]
    return out


SPEC = DatasetSpec(
    name="iris",
    description="Iris flowers: sepal and petal measurements (cm) and variety",
    source_url=SOURCE_URL,
    raw_columns=(*MEASUREMENTS, "variety"),
    label="variety",
    label_type="string",
    classes=VARIETIES,
    primary_key="iris_id",
    features=tuple(
        FeatureSpec(name, "double", source_column=name, min=0.0, max=10.0, description=f"{name.replace('_', ' ')} (cm)")
        for name in MEASUREMENTS
    ),
    transform=transform,
    synthetic=SyntheticSpec(jitter=0.3),
    sklearn_loader=load_sklearn_copy,
    # Petal length x width separates Versicolor from Virginica better than either alone.
    # Measured with `python -m bench train --only quality --other-seeds 1,2,3,4,5,6,7`:
    # the chosen pipeline's 5x5 CV accuracy averaged over the 8 seeds rose from 0.9462
    # to 0.9580, lowest seed 0.9520. Titanic's numeric features multiplied averaged lower
    # over the same seeds in an exploratory run, so its spec leaves the products off.
    numeric_products=True,
)
