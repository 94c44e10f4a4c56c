"""Dataset specs: the built-in ``iris`` and ``titanic``, and spec files for any CSV."""

from __future__ import annotations

from pathlib import Path

from serverless_ml.datasets import iris, titanic
from serverless_ml.datasets.spec import EVENT_TIME_COLUMN, DatasetSpec, FeatureSpec, load_spec_file
from serverless_ml.errors import SpecError

BUILTIN: dict[str, DatasetSpec] = {iris.SPEC.name: iris.SPEC, titanic.SPEC.name: titanic.SPEC}

__all__ = ["BUILTIN", "EVENT_TIME_COLUMN", "DatasetSpec", "FeatureSpec", "get_dataset", "load_spec_file"]


def get_dataset(name_or_path: str) -> DatasetSpec:
    """A built-in dataset by name, or a spec file by path (``.yaml``, ``.yml``, ``.toml``)."""
    if name_or_path in BUILTIN:
        return BUILTIN[name_or_path]
    if Path(name_or_path).suffix.lower() in (".yaml", ".yml", ".toml") or "/" in name_or_path:
        return load_spec_file(name_or_path)
    raise SpecError(
        f"unknown dataset '{name_or_path}' (built-in: {', '.join(sorted(BUILTIN))}; "
        "or give the path of a .yaml/.toml spec file)"
    )
