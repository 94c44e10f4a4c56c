"""Re-running with the same arguments writes nothing, also when a `bigint` or boolean
column has missing values: Arrow gives such a column two pandas forms (``int64``/``float64``,
``bool``/``object``) depending on whether the rows at hand have a gap, and new rows without
one were once all "changed" against stored rows with one (a new user's `sml daily` twice,
and so `sml main` twice in a day, was refused)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from serverless_ml.feature_store.base import Feature
from serverless_ml.feature_store.local import LocalFeatureStore

pytestmark = pytest.mark.integration

SPEC = """name: loans_gap
source: {path: loans_gap.csv}
label: approved
primary_key: app_id
classes: ["No", "Yes"]
features:
  credit_score: {type: bigint, nullable: true, min: 300, max: 900}
  income: {type: double}
"""


def test_daily_twice_with_a_nullable_bigint_feature_changes_nothing(run_cli, tmp_path: Path, store_dir: Path,
                                                                     tree_digest) -> None:  # noqa: ANN001
    rng = np.random.default_rng(0)
    score = rng.integers(300, 900, size=200).astype(float)
    score[[3, 150]] = np.nan  # two gaps in 200 rows: a day's 10 rows rarely draw one
    frame = pd.DataFrame({"app_id": range(1, 201), "credit_score": pd.array(score).astype("Int64"),
                          "income": rng.normal(50, 10, size=200).round(2),
                          "approved": np.where(rng.random(200) > 0.5, "Yes", "No")})
    frame.to_csv(tmp_path / "loans_gap.csv", index=False)
    (tmp_path / "loans_gap.yaml").write_text(SPEC)
    assert run_cli("features", "--dataset", "loans_gap.yaml")[0] == 0
    for seed in range(4):  # days whose rows have no gap, and (likely) one whose rows have one
        args = ("daily", "--dataset", "loans_gap.yaml", "--date", f"2024-02-0{seed + 1}", "--rows", "10",
                "--seed", str(seed))
        code, out, err = run_cli(*args)
        assert code == 0, err
        before = tree_digest(store_dir)
        code, out, err = run_cli(*args)
        assert code == 0, err
        assert "0 inserted, 0 updated, 10 unchanged" in out
        assert tree_digest(store_dir) == before


def test_rows_without_a_gap_compare_equal_to_stored_rows_with_one(tmp_path: Path) -> None:
    group = LocalFeatureStore(tmp_path).get_or_create_feature_group(
        name="gaps", version=1, primary_key=["id"], event_time="event_time",
        features=[Feature("id", "bigint"), Feature("event_time", "timestamp"), Feature("n", "bigint"),
                  Feature("flag", "boolean"), Feature("x", "double")],
    )
    when = pd.Timestamp("2024-01-01", tz="UTC")
    stored = pd.DataFrame({"id": [1, 2, 3], "event_time": [when] * 3, "n": pd.array([5, 7, None], dtype="Int64"),
                           "flag": pd.array([True, False, None], dtype="boolean"), "x": [0.5, 1.5, 2.5]})
    group.insert(stored)
    same = stored.iloc[:2].astype({"n": "int64", "flag": "bool"})
    comparison = group.compare(same)
    assert not comparison.is_new.any() and not comparison.is_changed.any()
    other = same.assign(n=[5, 8], flag=[True, True])
    assert group.compare(other).is_changed.tolist() == [False, True]
