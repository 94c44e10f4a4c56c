"""Training on a CSV with a rare class: the default holdout and folds adapt to it, and a
class too small for any split is refused in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from serverless_ml.datasets import get_dataset
from serverless_ml.datasets.sources import load_source
from serverless_ml.feature_store.local import LocalFeatureStore
from serverless_ml.pipelines.features import backfill

pytestmark = pytest.mark.integration


def _rare_class_spec(folder: Path, rare_rows: int) -> Path:
    """60 rows of classes ``a`` and ``b`` and ``rare_rows`` of ``rare``, separable on ``x``."""
    rng = np.random.default_rng(0)
    kinds = ["a"] * 30 + ["b"] * 30 + ["rare"] * rare_rows
    centre = {"a": -5.0, "b": 0.0, "rare": 5.0}
    frame = pd.DataFrame({"x": [round(centre[k] + rng.normal(), 3) for k in kinds], "kind": kinds})
    frame.to_csv(folder / "rare.csv", index=False)
    spec = folder / "rare.yaml"
    spec.write_text("name: rare\nsource: {path: rare.csv}\nlabel: kind\nclasses: [a, b, rare]\n"
                    "features:\n  x: {type: double, min: -100, max: 100}\n")
    return spec


def test_a_class_of_three_rows_trains_with_adapted_folds_and_two_rows_are_refused(
    run_cli, tmp_path: Path, store_dir: Path, tracking_uri: str  # noqa: ANN001
) -> None:
    ok_dir, bad_dir = tmp_path / "three", tmp_path / "two"
    ok_dir.mkdir()
    bad_dir.mkdir()
    spec_path = _rare_class_spec(ok_dir, 3)
    spec = get_dataset(str(spec_path))
    backfill(spec, LocalFeatureStore(store_dir), load_source(spec))
    code, out, err = run_cli("train", "--dataset", str(spec_path), "--trials", "2", "--quiet",
                             env={"MLFLOW_TRACKING_URI": tracking_uri})
    assert code == 0, err
    chosen = ("split: holdout 13 rows (20% of each class, at least 1) [default], "
              "2-fold CV [default 5 lowered: class 'rare' has 2 training rows]")
    assert out.count("split: ") == 1 and out.count(chosen) == 1  # in the summary only
    client = MlflowClient(tracking_uri=tracking_uri)
    run = client.search_runs([client.get_experiment_by_name("rare-training").experiment_id],
                             "tags.`sml.role` = 'tune'")[0]
    assert (run.data.params["cv_folds"], run.data.params["cv_folds_auto"], run.data.params["split"]) == ("2", "true", chosen)
    assert run.data.metrics["test_support_rare"] == 1
    # The same run again trains nothing: one line, no split.
    code, out, err = run_cli("train", "--dataset", str(spec_path), "--trials", "2", "--quiet",
                             env={"MLFLOW_TRACKING_URI": tracking_uri})
    assert (code, out) == (0, "champion version 1 was trained on the same data, seed and search: kept; "
                              "use --promote always to register anew\n"), err

    spec_path = _rare_class_spec(bad_dir, 2)
    other_store = tmp_path / "store2"
    backfill(get_dataset(str(spec_path)), LocalFeatureStore(other_store), load_source(get_dataset(str(spec_path))))
    files = sorted(p.relative_to(other_store) for p in other_store.rglob("*"))
    code, out, err = run_cli("train", "--dataset", str(spec_path), "--trials", "2", "--quiet", store_dir=other_store,
                             env={"MLFLOW_TRACKING_URI": tracking_uri})
    assert code != 0
    assert err.strip().splitlines() == [
        "error: dataset 'rare': class 'rare' has 2 rows; need at least 3 (1 held out, 2 for 2-fold CV): "
        "add rows of that class, or drop it or merge it into another class (in the source data and the spec's `classes`)"
    ]
    assert [str(v.version) for v in client.search_model_versions("name = 'rare'")] == ["1"]  # nothing more registered
    # Nothing written in the store either (found by a user trial: the training feature view was).
    assert sorted(p.relative_to(other_store) for p in other_store.rglob("*")) == files
