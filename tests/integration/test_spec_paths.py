"""Messages about a spec file name it as the user typed it (issue 19, item 5): the hint to
run `sml features` first, and the schema-change error, which names the columns that
differ and the `version:` to give the spec; after the bump, features and training work."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from serverless_ml import cli

pytestmark = pytest.mark.integration

SPEC = ("name: tiny\n{version}source: {{path: tiny.csv}}\nlabel: kind\nprimary_key: id\nclasses: [a, b]\n"
        "features:\n{features}")
FEATURES = "  x: {type: double}\n  z: {type: double}\n"
CHANGED = "  x: {type: string}\n  w: {type: double, source_column: z}\n"


def _sml(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        cli.main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_hints_and_schema_errors_name_the_spec_path_as_typed(
    tmp_path: Path, tracking_uri: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    tree_digest,  # noqa: ANN001
) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    rng = np.random.default_rng(0)
    x, z = rng.normal(size=60).round(3), rng.normal(size=60).round(3)
    pd.DataFrame({"id": range(60), "x": x, "z": z, "kind": np.where(x + z > 0, "a", "b")}).to_csv(specs / "tiny.csv", index=False)
    spec = specs / "tiny.yaml"
    spec.write_text(SPEC.format(version="", features=FEATURES))
    store = tmp_path / "store"
    monkeypatch.setenv("SML_STORE_DIR", str(store))

    code, _, err = _sml(capsys, "train", "--dataset", "specs/tiny.yaml", "--trials", "1")
    assert code != 0
    assert err == "error: feature group 'tiny' version 1 is empty; run `sml features --dataset specs/tiny.yaml` first\n"
    assert _sml(capsys, "features", "--dataset", "specs/tiny.yaml")[0] == 0
    assert _sml(capsys, "train", "--dataset", "specs/tiny.yaml", "--trials", "1", "--folds", "2", "-q")[0] == 0
    assert _sml(capsys, "daily", "--dataset", "specs/tiny.yaml", "--rows", "20", "--date", "2026-01-05")[0] == 0
    code, out, err = _sml(capsys, "infer", "--dataset", "specs/tiny.yaml", "-q")
    assert code == 0, err
    from serverless_ml.feature_store.local import LocalFeatureStore

    scored_v1 = LocalFeatureStore(store).get_feature_group("tiny_predictions", 1).read()
    assert len(scored_v1) == 20

    spec.write_text(SPEC.format(version="", features=CHANGED))
    before = tree_digest(store)
    code, out, err = _sml(capsys, "features", "--dataset", "./specs/tiny.yaml")
    assert code != 0 and out == ""
    assert err == (
        "error: stored feature group 'tiny' version 1 has another schema than the spec ./specs/tiny.yaml "
        "(added w (double); removed z (double); type changed x: double -> string): "
        "bump `version:` in ./specs/tiny.yaml to 2\n"
    )
    assert tree_digest(store) == before

    # As told: a new group, and a training view of its own (the old view keeps version 1's query).
    spec.write_text(SPEC.format(version="version: 2\n", features=CHANGED))
    code, out, err = _sml(capsys, "features", "--dataset", "./specs/tiny.yaml")
    assert code == 0, err
    assert "tiny: 60 rows in, 60 inserted" in out
    code, out, err = _sml(capsys, "train", "--dataset", "./specs/tiny.yaml", "--trials", "1", "--folds", "2", "-q")
    assert code == 0, err
    assert "registered version 2 as challenger; promoted to champion" in out
    # Version 2's rows are scored into version 2's predictions table, though version 1's
    # champion scored the same keys before the bump.
    assert _sml(capsys, "daily", "--dataset", "./specs/tiny.yaml", "--rows", "20", "--date", "2026-01-05")[0] == 0
    code, out, err = _sml(capsys, "infer", "--dataset", "./specs/tiny.yaml", "-q")
    assert code == 0, err
    scored_v2 = LocalFeatureStore(store).get_feature_group("tiny_predictions", 2).read()
    assert set(scored_v2["model_version"]) == {2}
    assert len(scored_v2) == 20
    assert set(scored_v2["id"]) == set(scored_v1["id"])  # the same new keys, scored again for version 2
    assert LocalFeatureStore(store).get_feature_group("tiny_predictions", 1).read().equals(scored_v1)
