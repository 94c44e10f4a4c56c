"""A spec drafted by ``sml spec draft`` works unedited through ``sml features`` and
``sml train`` (issue 19): the bundled wine CSV (bench/datasets.py), drafted, backfilled into
a real Delta table and tuned with two trials into a real MLflow tracking database."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.datasets import write_dataset
from serverless_ml.datasets.draft import draft_spec
from serverless_ml.feature_store.local import LocalFeatureStore

pytestmark = pytest.mark.integration


def test_a_drafted_spec_backfills_and_trains(run_cli, tracking_uri: str, tmp_path: Path, store_dir: Path) -> None:  # noqa: ANN001
    write_dataset("wine", tmp_path / "data")
    # The draft itself runs in this process (the CLI's --output is covered by the unit tests).
    draft = draft_spec(tmp_path / "data" / "wine.csv", "cultivar", name="drafted_wine", spec_dir=tmp_path / "data")
    assert draft.warnings == ()
    (tmp_path / "data" / "drafted_wine.yaml").write_text(draft.text, encoding="utf-8")
    code, out, err = run_cli("features", "--dataset", "data/drafted_wine.yaml")
    assert code == 0, err
    assert f"source: {(tmp_path / 'data' / 'wine.csv').resolve()}" in out
    rows = LocalFeatureStore(store_dir).get_feature_group("drafted_wine", 1).read()
    assert len(rows) == 178 and set(rows["cultivar"]) == {"class_0", "class_1", "class_2"}
    code, out, err = run_cli("train", "--dataset", "data/drafted_wine.yaml", "--trials", "2", "--folds", "2", "-q")
    assert code == 0, err
    assert "best trial #" in out
