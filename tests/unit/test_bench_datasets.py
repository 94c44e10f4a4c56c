"""The bundled benchmark datasets (bench/datasets.py) pass the project's own spec and row
validation, and are written byte for byte the same on every call."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.datasets import BUNDLED, GRADE_ROWS, MIXED_ROWS, RARE_SYNTHETIC_ROWS, write_dataset
from serverless_ml.datasets import load_spec_file
from serverless_ml.datasets.sources import load_source
from serverless_ml.datasets.validation import build_feature_rows

pytestmark = pytest.mark.unit

ROWS = {"breast_cancer": 569, "wine": 178, "digits_features": 1797, "mixed_synthetic": MIXED_ROWS,
        "graded_synthetic": 6500, "rare_synthetic": 20_000}


@pytest.mark.parametrize("name", BUNDLED)
def test_each_dataset_loads_through_its_spec(tmp_path: Path, name: str) -> None:
    spec_path = write_dataset(name, tmp_path)
    assert spec_path == tmp_path / f"{name}.yaml"
    spec = load_spec_file(spec_path)
    source = load_source(spec)  # the spec's source.path, relative to the spec file
    assert source.location == str((tmp_path / f"{name}.csv").resolve())
    rows = build_feature_rows(source, spec, "backfill", spec.backfill_event_time)
    assert len(rows) == ROWS[name]
    assert set(rows[spec.label]) == set(spec.classes)


def test_declared_types_cover_the_mixed_case(tmp_path: Path) -> None:
    spec = load_spec_file(write_dataset("mixed_synthetic", tmp_path))
    types = [f.type for f in spec.features]
    assert types.count("double") == 6 and types.count("string") == 2 and types.count("bigint") == 1
    rows = build_feature_rows(load_source(spec), spec, "backfill", spec.backfill_event_time)
    for feature in spec.features:
        share_missing = rows[feature.name].isna().mean()
        assert (0.05 < share_missing < 0.15) if feature.nullable else share_missing == 0, feature.name
    assert load_spec_file(write_dataset("digits_features", tmp_path)).label_type == "bigint"
    assert load_spec_file(write_dataset("breast_cancer", tmp_path)).classes == ("malignant", "benign")


def test_writing_is_deterministic(tmp_path: Path) -> None:
    for name in BUNDLED:
        first = write_dataset(name, tmp_path / "a")
        second = write_dataset(name, tmp_path / "b")
        assert first.read_bytes() == second.read_bytes()
        assert first.with_suffix(".csv").read_bytes() == second.with_suffix(".csv").read_bytes()


def test_an_unknown_name_is_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown bundled dataset 'iris' .*breast_cancer"):
        write_dataset("iris", tmp_path)


@pytest.mark.parametrize(("name", "counts", "features"), [
    ("graded_synthetic", GRADE_ROWS, 12), ("rare_synthetic", RARE_SYNTHETIC_ROWS, 10),
])
def test_generated_sets_have_exactly_their_class_sizes(tmp_path: Path, name: str, counts: dict, features: int) -> None:
    spec = load_spec_file(write_dataset(name, tmp_path))
    rows = build_feature_rows(load_source(spec), spec, "backfill", spec.backfill_event_time)
    assert rows[spec.label].value_counts().to_dict() == counts
    assert len(spec.features) == features and list(spec.classes) == list(counts)
