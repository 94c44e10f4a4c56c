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


MESSY = """Customer ID,Body mass (g),flipper-length.mm,2nd reading,Größe,zip,Approved?,Plan
{rows}"""


def _messy_csv(path: Path) -> None:
    import numpy as np

    rng = np.random.default_rng(7)
    lines = []
    for i in range(120):
        mass = "" if i % 17 == 0 else str(int(rng.integers(3000, 5000)))
        reading = f"{rng.normal(0.6, 0.2):.3f}"
        size = f"{rng.normal(1.75, 0.1):.2f}"
        zip_code = ("02134", "02135", "10001")[i % 3]
        plan = ("basic", "premium", "")[i % 3] if i % 5 else "basic"
        approved = "Yes" if (mass and int(mass) > 4000) or float(reading) > 0.8 else "No"
        lines.append(f"C{i:04d},{mass},{180 + i % 20},{reading},{size},{zip_code},{approved},{plan}")
    path.write_text(MESSY.format(rows="\n".join(lines)) + "\n", encoding="utf-8")


@pytest.mark.parametrize("dataset", ["messy", "breast_cancer", "digits_features", "mixed_synthetic"])
def test_drafted_specs_load_unedited_and_train(dataset: str, tracking_uri: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Messy names, a Yes/No label, an id key, zip codes with leading zeros and gaps (a CSV
    written here), and three of scikit-learn's bundled sets: drafted, backfilled, trained."""
    from serverless_ml import cli
    from serverless_ml.datasets.spec import load_spec_file

    data = tmp_path / "data"
    data.mkdir()
    if dataset == "messy":
        _messy_csv(data / "messy.csv")
        label = "Approved?"
    else:
        write_dataset(dataset, data)
        label = {"breast_cancer": "diagnosis", "digits_features": "digit", "mixed_synthetic": "outcome"}[dataset]
    draft = draft_spec(data / f"{dataset}.csv", label, name=f"drafted_{dataset}", spec_dir=data)
    (data / "drafted.yaml").write_text(draft.text, encoding="utf-8")
    spec = load_spec_file(data / "drafted.yaml")
    if dataset == "messy":
        assert spec.primary_key == "customer_id" and spec.classes == ("No", "Yes") and spec.positive_class == "Yes"
        assert spec.feature("zip").categories == ("02134", "02135", "10001")
        assert spec.feature("body_mass_g").nullable
    monkeypatch.setenv("SML_STORE_DIR", str(tmp_path / "store"))
    for args in (("features",), ("train", "--trials", "1", "--folds", "2", "-q")):
        capsys.readouterr()
        try:
            cli.main([*args[:1], "--dataset", str(data / "drafted.yaml"), *args[1:]])
        except SystemExit as exc:
            assert not exc.code, capsys.readouterr().err
    assert "registered version 1 as challenger; promoted to champion" in capsys.readouterr().out


def test_classes_one_column_name_apart_are_scored(run_cli, tracking_uri: str, tmp_path: Path, store_dir: Path) -> None:  # noqa: ANN001
    """Found by a user trial: classes ``a b``, ``a_b`` and ``A_B`` trained, then every
    ``sml infer`` failed with a traceback (Delta: duplicate column ``proba_a_b``)."""
    import numpy as np
    import pandas as pd

    from serverless_ml.inference.scoring import probability_columns

    rng = np.random.default_rng(3)
    kind = rng.integers(0, 3, 240)
    x = rng.normal(size=(240, 2)) + kind[:, None] * 2.0
    classes = ["A_B", "a b", "a_b"]
    pd.DataFrame({"u": x[:, 0].round(3), "v": x[:, 1].round(3),
                  "kind": np.asarray(classes, dtype=object)[kind]}).to_csv(tmp_path / "clash.csv", index=False)
    draft = draft_spec(tmp_path / "clash.csv", "kind", name="clash", spec_dir=tmp_path)
    (tmp_path / "clash.yaml").write_text(draft.text, encoding="utf-8")
    assert probability_columns(classes) == ["proba_a_b", "proba_a_b_2", "proba_a_b_3"]
    for args in (("features",), ("train", "--trials", "1", "--folds", "2", "-q"), ("daily", "--rows", "12"),
                 ("infer",)):
        code, _, err = run_cli(args[0], "--dataset", "clash.yaml", *args[1:])
        assert code == 0 and "Traceback" not in err, (args, err)
    scored = LocalFeatureStore(store_dir).get_feature_group("clash_predictions", 1).read()
    assert len(scored) == 12
    proba = scored[["proba_a_b", "proba_a_b_2", "proba_a_b_3"]].to_numpy()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    best = np.asarray(classes, dtype=object)[proba.argmax(axis=1)]
    assert (best == scored["prediction"].to_numpy()).all()
