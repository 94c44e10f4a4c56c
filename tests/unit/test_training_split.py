"""The holdout and folds of training, adapted to the smallest class unless the user set them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from serverless_ml import defaults
from serverless_ml.datasets import get_dataset
from serverless_ml.errors import DataValidationError
from serverless_ml.pipelines.train import check_training_rows
from serverless_ml.datasets import split

pytestmark = pytest.mark.unit

IRIS = get_dataset("iris")


def _labels(counts: dict[str, int]) -> pd.Series:
    return pd.Series([cls for cls, n in counts.items() for _ in range(n)])


def test_a_class_of_three_rows_trains_with_one_held_out_and_two_folds() -> None:
    y = _labels({"Setosa": 3, "Versicolor": 40, "Virginica": 40})
    plan = check_training_rows(IRIS, y, defaults.TRAIN_HOLDOUT, defaults.TRAIN_FOLDS)
    assert (plan.folds, plan.holdout_rows["Setosa"], plan.smallest_class, plan.smallest_train_rows) == (2, 1, "Setosa", 2)
    assert plan.adapted and plan.folds_auto and plan.holdout_auto
    assert plan.describe() == ("split: holdout 17 rows (20% of each class, at least 1) [default], 2-fold CV "
                               "[default 5 lowered: class 'Setosa' has 2 training rows]")
    train_idx, hold_idx = split.split_holdout(y, plan, seed=1)
    assert sorted(y.iloc[hold_idx].value_counts().to_dict().items()) == [("Setosa", 1), ("Versicolor", 8), ("Virginica", 8)]
    assert len(set(train_idx) | set(hold_idx)) == len(y) and not set(train_idx) & set(hold_idx)


def test_a_class_of_two_rows_is_refused_naming_it_its_rows_and_the_options() -> None:
    y = _labels({"Setosa": 2, "Versicolor": 40, "Virginica": 40})
    with pytest.raises(DataValidationError) as caught:
        check_training_rows(IRIS, y, defaults.TRAIN_HOLDOUT, defaults.TRAIN_FOLDS)
    assert str(caught.value) == (
        "dataset 'iris': class 'Setosa' has 2 rows; need at least 3 (1 held out, 2 for 2-fold CV): "
        "add rows of that class, or drop it or merge it into another class (in the source data and the spec's `classes`)"
    )
    assert "\n" not in str(caught.value)
    # With options given: what they need (found by a user trial: it said 3, then 3 rows were refused asking for 6).
    with pytest.raises(DataValidationError) as caught:
        split.plan_split({"Setosa": 2, "Versicolor": 40}, 0.2, 5, "iris")
    assert str(caught.value).startswith(
        "dataset 'iris': class 'Setosa' has 2 rows; need at least 6 for --folds 5 --holdout 0.2 (never fewer than 3: "
        "1 held out, 2 for 2-fold CV): add rows")
    with pytest.raises(DataValidationError, match=r"has 3 rows; need at least 6 for --folds 5 --holdout 0\.2"):
        split.plan_split({"Setosa": 3, "Versicolor": 40}, 0.2, 5, "iris")


@pytest.mark.parametrize(("rows", "folds"), [(3, 2), (4, 3), (5, 4), (7, 5), (500, 5)])
def test_default_folds_follow_the_smallest_class(rows: int, folds: int) -> None:
    plan = split.plan_split({"rare": rows, "common": 500}, 0, 0, "d")
    assert plan.folds == folds
    assert plan.adapted == (folds < defaults.TRAIN_AUTO_FOLDS)


def test_folds_the_user_gave_are_kept_or_refused_never_changed() -> None:
    assert split.plan_split({"rare": 5, "common": 500}, 0, 3, "d").folds == 3
    assert not split.plan_split({"rare": 5, "common": 500}, 0, 3, "d").adapted
    with pytest.raises(DataValidationError) as caught:
        split.plan_split({"rare": 5, "common": 500}, 0, 5, "d")
    assert str(caught.value) == (
        "dataset 'd': class 'rare' has 5 rows; need at least 6 for --folds 5 (each class held out and in every fold; "
        "1 held out leaves 4 for 5-fold CV): use --folds 4 or fewer, or leave --folds 5 out to adapt to the smallest class"
    )
    with pytest.raises(DataValidationError, match=r"need at least 4 for --holdout 0.5 .*use a smaller --holdout"):
        split.plan_split({"rare": 3, "common": 500}, 0.5, 0, "d")


@pytest.mark.parametrize(("folds", "holdout"), [(0, 0), (5, 0.2), (2, 0.2), (3, 0.3), (10, 0.1), (5, 0), (0, 0.5)])
def test_rows_needed_per_class_is_exactly_what_the_split_accepts(folds: int, holdout: float) -> None:
    needed = split.rows_needed_per_class(folds, holdout)
    split.plan_split({"rare": needed, "common": 200}, holdout, folds, "d")
    with pytest.raises(DataValidationError, match=f"need at least {needed}"):
        split.plan_split({"rare": needed - 1, "common": 200}, holdout, folds, "d")


def test_the_holdout_is_stratified_seeded_and_about_the_share_asked() -> None:
    y = pd.Series(np.repeat(["a", "b", "c"], [700, 290, 10]))
    plan = split.plan_split(y.value_counts().to_dict(), 0, 0, "d")
    first = split.split_holdout(y, plan, seed=3)
    assert [list(v) for v in first] == [list(v) for v in split.split_holdout(y, plan, seed=3)]
    assert list(first[1]) != list(split.split_holdout(y, plan, seed=4)[1])
    held = y.iloc[first[1]].value_counts()
    assert held.to_dict() == {"a": 140, "b": 58, "c": 2}


def test_a_workers_summary_says_its_split_once() -> None:
    """A worker prints no split line of its own while it starts: its summary holds it."""
    from serverless_ml.pipelines.train import WorkerReport

    y = _labels({"Setosa": 3, "Versicolor": 40, "Virginica": 40})
    line = check_training_rows(IRIS, y, defaults.TRAIN_HOLDOUT, defaults.TRAIN_FOLDS).describe()
    report = WorkerReport(run_id="r", experiment_id="1", dataset="iris", study_name="s", sampler_seed=43,
                          trials_this_worker=2, trials_total=4, best_trial=None, best_value=None, split=line)
    lines = report.summary().splitlines()
    assert lines[1] == line and sum(text.startswith("split: ") for text in lines) == 1
