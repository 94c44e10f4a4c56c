"""`sml features` and `sml daily` end to end: subprocesses writing real Delta tables.

Built-in Titanic from the course's CSV, and a spec-only dataset (scikit-learn's wine
data written as a CSV, described by a YAML or a TOML spec) that needs no code.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from serverless_ml.feature_store.local import LocalFeatureStore

pytestmark = pytest.mark.integration

DAY = "2024-02-01"


def _summary(stdout: str) -> dict[str, int]:
    match = re.search(r"(\d+) rows in, (\d+) inserted, (\d+) updated, (\d+) unchanged; table version (\d+)", stdout)
    assert match, stdout
    return dict(zip(["rows", "inserted", "updated", "unchanged", "version"], map(int, match.groups()), strict=True))


def _ok(result) -> str:
    returncode, stdout, stderr = result
    assert returncode == 0, stderr
    assert stderr == "", "a successful run prints nothing on stderr"
    return stdout


def test_features_and_daily_twice_change_nothing_the_second_time(run_cli, store_dir: Path, tree_digest, data_dir: Path) -> None:
    first = _ok(run_cli("features", "--dataset", "titanic"))
    assert f"source: {data_dir / 'titanic.csv'}" in first
    assert _summary(first) == {"rows": 891, "inserted": 891, "updated": 0, "unchanged": 0, "version": 0}
    # The CSV's columns the built-in spec does not read are named (as `sml ingest` names them).
    assert "note: column(s) 'Ticket', 'Cabin' not read: not in the spec (key, features, label)" in first
    after_features = tree_digest(store_dir)

    again = _ok(run_cli("features", "--dataset", "titanic"))
    assert _summary(again) == {"rows": 891, "inserted": 0, "updated": 0, "unchanged": 891, "version": 0}
    assert tree_digest(store_dir) == after_features, "a re-run writes no byte"

    daily = _ok(run_cli("daily", "--dataset", "titanic", "--date", DAY, "--rows", "25", "--seed", "3"))
    assert daily.startswith(f"{DAY}: titanic: ")
    assert _summary(daily) == {"rows": 25, "inserted": 25, "updated": 0, "unchanged": 0, "version": 1}
    after_daily = tree_digest(store_dir)

    daily_again = _ok(run_cli("daily", "--dataset", "titanic", "--date", DAY, "--rows", "25", "--seed", "3"))
    assert _summary(daily_again) == {"rows": 25, "inserted": 0, "updated": 0, "unchanged": 25, "version": 1}
    assert tree_digest(store_dir) == after_daily

    table = LocalFeatureStore(store_dir).get_feature_group("titanic", 1).read()
    assert table["origin"].value_counts().to_dict() == {"backfill": 891, "synthetic": 25}
    synthetic = table[table["origin"] == "synthetic"]
    assert set(synthetic["event_time"]) == {pd.Timestamp(DAY, tz="UTC")}
    assert set(table.loc[table["origin"] == "backfill", "event_time"]) == {pd.Timestamp("2024-01-01", tz="UTC")}
    assert table["passenger_id"].is_unique
    # Version 0 is still the backfill alone.
    assert len(LocalFeatureStore(store_dir).get_feature_group("titanic", 1).read(version=0)) == 891


WINE_FEATURES = {
    "alcohol": ("alcohol", "double", 10, 16),
    "malic_acid": ("malic_acid", "double", 0, 7),
    "ash": ("ash", "double", 1, 4),
    "alcalinity_of_ash": ("alcalinity_of_ash", "double", 5, 35),
    "magnesium": ("magnesium", "bigint", 50, 200),
    "total_phenols": ("total_phenols", "double", 0, 5),
    "flavanoids": ("flavanoids", "double", 0, 6),
    "nonflavanoid_phenols": ("nonflavanoid_phenols", "double", 0, 1),
    "proanthocyanins": ("proanthocyanins", "double", 0, 4),
    "color_intensity": ("color_intensity", "double", 1, 14),
    "hue": ("hue", "double", 0, 2),
    "od280_od315": ("od280/od315_of_diluted_wines", "double", 1, 4.5),
    "proline": ("proline", "bigint", 200, 1800),
}


def _write_wine(folder: Path, fmt: str) -> Path:
    from sklearn.datasets import load_wine

    frame = load_wine(as_frame=True).frame
    frame["cultivar"] = [f"class_{int(t)}" for t in frame.pop("target")]
    frame[["magnesium", "proline"]] = frame[["magnesium", "proline"]].astype("int64")
    (folder / "data").mkdir()
    frame.to_csv(folder / "data" / "wine.csv", index=False)
    if fmt == "yaml":
        lines = [
            "name: wine",
            "description: Wine cultivars from chemical analysis",
            "source: {path: ../data/wine.csv}",
            "label: cultivar",
            "classes: [class_0, class_1, class_2]",
            "primary_key: null",
            "synthetic: {jitter: 0.1}",
            "features:",
        ]
        for name, (column, type_, low, high) in WINE_FEATURES.items():
            lines.append(f'  {name}: {{type: {type_}, min: {low}, max: {high}, source_column: "{column}"}}')
    else:
        lines = [
            'name = "wine"',
            'description = "Wine cultivars from chemical analysis"',
            'source = {path = "../data/wine.csv"}',
            'label = "cultivar"',
            'classes = ["class_0", "class_1", "class_2"]',
            "[synthetic]",
            "jitter = 0.1",
        ]
        for name, (column, type_, low, high) in WINE_FEATURES.items():
            lines += [f"[features.{name}]", f'type = "{type_}"', f"min = {low}", f"max = {high}", f'source_column = "{column}"']
    spec_path = folder / "specs" / f"wine.{fmt}"
    spec_path.parent.mkdir()
    spec_path.write_text("\n".join(lines) + "\n")
    return spec_path


@pytest.mark.parametrize("fmt", ["yaml", "toml"])
def test_a_spec_only_dataset_needs_no_code(run_cli, tmp_path: Path, store_dir: Path, fmt: str) -> None:
    spec_path = _write_wine(tmp_path, fmt)
    relative = str(spec_path.relative_to(tmp_path))  # the CLI runs in tmp_path
    out = _ok(run_cli("features", "--dataset", relative))
    # source.path is relative to the spec file, not to the working directory.
    assert f"source: {tmp_path / 'data' / 'wine.csv'}" in out
    assert _summary(out) == {"rows": 178, "inserted": 178, "updated": 0, "unchanged": 0, "version": 0}

    out = _ok(run_cli("daily", "--dataset", relative, "--date", DAY, "--rows", "40", "--seed", "1", "--drift", "alcohol+1"))
    assert _summary(out) == {"rows": 40, "inserted": 40, "updated": 0, "unchanged": 0, "version": 1}

    group = LocalFeatureStore(store_dir).get_feature_group("wine", 1)
    table = group.read()
    assert list(table.columns) == ["row_id", "event_time", *WINE_FEATURES, "cultivar", "origin"]
    assert [(f.name, f.type) for f in group.features][-3:] == [("proline", "bigint"), ("cultivar", "string"), ("origin", "string")]
    assert table["origin"].value_counts().to_dict() == {"backfill": 178, "synthetic": 40}
    real = table[table["origin"] == "backfill"]
    synthetic = table[table["origin"] == "synthetic"]
    assert real["row_id"].tolist() == list(range(1, 179))
    assert real["cultivar"].value_counts().to_dict() == {"class_1": 71, "class_0": 59, "class_2": 48}
    assert set(synthetic["cultivar"]) <= {"class_0", "class_1", "class_2"}
    assert set(synthetic["event_time"]) == {pd.Timestamp(DAY, tz="UTC")}
    assert not set(synthetic["row_id"]) & set(real["row_id"])
    for name, (_, _, low, high) in WINE_FEATURES.items():
        assert table[name].between(low, high).all(), name
    # Drift moved alcohol up, within the schema's maximum.
    assert synthetic["alcohol"].mean() > real["alcohol"].mean() + 0.5
    assert synthetic["alcohol"].max() <= 16
    assert (synthetic["magnesium"] % 1 == 0).all()
