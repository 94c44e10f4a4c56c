"""The Iris transform and scikit-learn's bundled copy (the offline fallback source)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from serverless_ml.datasets import iris
from serverless_ml.datasets.sources import load_source, read_csv_file
from serverless_ml.datasets.validation import build_feature_rows

pytestmark = pytest.mark.unit


def test_transform_numbers_rows_and_keeps_measurements() -> None:
    raw = pd.DataFrame(
        {
            "sepal_length": [5.1, 7.0],
            "sepal_width": [3.5, 3.2],
            "petal_length": [1.4, 4.7],
            "petal_width": [0.2, 1.4],
            "variety": ["Setosa", "Versicolor"],
        },
        index=[40, 41],
    )
    out = iris.transform(raw)
    assert list(out.index) == [40, 41]
    assert out["iris_id"].tolist() == [1, 2]
    assert list(out.columns) == ["iris_id", *iris.MEASUREMENTS]
    pd.testing.assert_frame_equal(out[list(iris.MEASUREMENTS)], raw[list(iris.MEASUREMENTS)])


def test_sklearn_copy_matches_the_course_csv(data_dir) -> None:
    from_csv = read_csv_file(data_dir / "iris.csv")
    bundled = iris.load_sklearn_copy()
    assert list(bundled.columns) == list(from_csv.columns) == [*iris.MEASUREMENTS, "variety"]
    # The file's fields arrive as text (validation types them per the spec).
    from_csv = from_csv.astype({name: float for name in iris.MEASUREMENTS})
    assert bundled.dtypes.to_dict() == from_csv.dtypes.to_dict()
    assert bundled["variety"].value_counts().to_dict() == from_csv["variety"].value_counts().to_dict()
    # The same 150 flowers in the same order.
    pd.testing.assert_frame_equal(bundled.reset_index(drop=True), from_csv, check_exact=False, atol=1e-9)


def test_sklearn_copy_is_the_fallback_source_and_validates() -> None:
    source = load_source(iris.SPEC, source=None, data_dir=None)
    assert source.location == "scikit-learn bundled copy"
    assert not source.is_file
    rows = build_feature_rows(source, iris.SPEC, origin="backfill", event_time="2024-01-01")
    assert list(rows.columns) == iris.SPEC.store_columns
    assert rows["iris_id"].tolist() == list(range(1, 151))
    assert rows["variety"].value_counts().to_dict() == {"Setosa": 50, "Versicolor": 50, "Virginica": 50}
    for feature in iris.SPEC.features:
        assert rows[feature.name].between(feature.min, feature.max).all()


def test_data_dir_wins_over_the_bundled_copy(data_dir) -> None:
    source = load_source(iris.SPEC, source=None, data_dir=data_dir)
    assert source.location == str(data_dir / "iris.csv")
    assert source.is_file
    rows = build_feature_rows(source, iris.SPEC, origin="backfill", event_time="2024-01-01")
    assert len(rows) == 150
    assert not np.isnan(rows[list(iris.MEASUREMENTS)].to_numpy()).any()
