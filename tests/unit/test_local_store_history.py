"""Older versions of a local feature group stay readable after an append or a staged
commit cleans up what killed jobs left: a data file that an update rewrote is no longer
in the latest version but is still an older version's (time travel reads it), and only a
file no commit ever named is removed."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from serverless_ml.datasets import titanic
from serverless_ml.feature_store.base import arrow_schema, conform
from serverless_ml.feature_store.local import LocalFeatureStore
from test_streamed_inference import _features

pytestmark = pytest.mark.unit

SPEC = titanic.SPEC


def _group(tmp_path):  # noqa: ANN001, ANN202
    store = LocalFeatureStore(tmp_path)
    group = store.get_or_create_feature_group(SPEC.name, 1, [SPEC.primary_key], "event_time", features=SPEC.store_schema())
    rows = conform(_features(np.arange(1, 301), np.random.default_rng(2)), group.features, group.primary_key, group.label)
    group.insert(rows.slice(0, 100).to_pandas())
    return group, rows


def test_an_append_keeps_the_files_of_older_versions_and_removes_a_killed_appends(tmp_path) -> None:  # noqa: ANN001
    group, rows = _group(tmp_path)
    schema = arrow_schema(group.features)
    group.append_if(pa.RecordBatchReader.from_batches(schema, rows.slice(100, 100).to_batches()), lambda: True)
    appended = group.data_version()
    group.insert(rows.slice(100, 3).to_pandas().assign(survived=1))  # `sml labels`: rewrites the appended file
    orphan = group.table_path / "appended-killed-00000.parquet"
    orphan.write_bytes(b"left by a killed append")
    group.append_if(pa.RecordBatchReader.from_batches(schema, rows.slice(200, 100).to_batches()), lambda: True)
    assert len(group.read(version=appended)) == 200
    assert len(group.read()) == 300
    assert not orphan.exists()


def test_a_staged_commit_keeps_the_files_of_older_versions(tmp_path) -> None:  # noqa: ANN001
    group, rows = _group(tmp_path)
    with group.stage_new() as staged:
        staged.write(rows.slice(100, 100))
        staged.commit()
    committed = group.data_version()
    group.insert(rows.slice(100, 5).to_pandas().assign(age=1.5))  # rewrites the staged file
    orphan = group.table_path / "staged-killed-00000.parquet"
    orphan.write_bytes(b"left by a killed job")
    group.stage_new().discard()
    assert len(group.read(version=committed)) == 200
    assert not orphan.exists()
