"""What a store and a tracking database hold, read for comparison by the crash-consistency
and idempotency suites: MLflow runs and the model registry straight from the SQLite file
(``sqlite3``: no MLflow client caches, works on a database a killed process left), and
content digests of the feature groups' rows.
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from serverless_ml.errors import NotFoundError
from serverless_ml.feature_store.local import LocalFeatureStore


@dataclass
class Run:
    run_id: str
    experiment: str
    status: str
    name: str
    metrics: dict[str, float]
    params: dict[str, str]
    tags: dict[str, str]


def read_runs(db: Path) -> list[Run]:
    """Every active run in the tracking database, oldest first."""
    if not db.exists():
        return []
    con = sqlite3.connect(db, timeout=30)
    try:
        rows = con.execute(
            "SELECT r.run_uuid, e.name, r.status, r.name FROM runs r JOIN experiments e "
            "ON e.experiment_id = r.experiment_id WHERE r.lifecycle_stage = 'active' ORDER BY r.start_time, r.run_uuid"
        ).fetchall()
        runs = []
        for run_id, experiment, status, name in rows:
            metrics = dict(con.execute("SELECT key, value FROM latest_metrics WHERE run_uuid = ?", (run_id,)).fetchall())
            params = dict(con.execute("SELECT key, value FROM params WHERE run_uuid = ?", (run_id,)).fetchall())
            tags = dict(con.execute("SELECT key, value FROM tags WHERE run_uuid = ?", (run_id,)).fetchall())
            runs.append(Run(run_id, experiment, status, name, metrics, params, tags))
        return runs
    finally:
        con.close()


def read_registry(db: Path) -> dict[str, Any]:
    """Registered models: their versions (status, source run, tags) and aliases."""
    if not db.exists():
        return {}
    con = sqlite3.connect(db, timeout=30)
    try:
        versions = {
            (name, int(version)): {"status": status, "run_id": run_id, "tags": {}}
            for name, version, status, run_id in con.execute("SELECT name, version, status, run_id FROM model_versions")
        }
        for key, value, name, version in con.execute("SELECT key, value, name, version FROM model_version_tags"):
            versions[(name, int(version))]["tags"][key] = value
        aliases = {(name, alias): int(version) for alias, version, name in
                   con.execute("SELECT alias, version, name FROM registered_model_aliases")}
        return {"versions": versions, "aliases": aliases}
    finally:
        con.close()


def frame_digest(frame: pd.DataFrame) -> str:
    """A digest of a frame's rows (in order) and column names."""
    hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()
    return hashlib.sha256(hashed + "\x00".join(frame.columns).encode()).hexdigest()


def table_digests(store_dir: Path, tables: list[str], drop: tuple[str, ...] = ()) -> dict[str, str | None]:
    """Each feature group's row digest (read through the store API, sorted by its key, the
    ``drop`` columns left out), or None when it does not exist."""
    store = LocalFeatureStore(store_dir)
    out: dict[str, str | None] = {}
    for table in tables:
        try:
            group = store.get_feature_group(table, 1)
        except NotFoundError:
            out[table] = None
            continue
        frame = group.read()
        out[table] = frame_digest(frame.drop(columns=[c for c in drop if c in frame.columns]))
    return out
