"""Concurrent access to one feature group from several processes.

A reader never sees a partial batch (every write is one Delta commit), and writers that
upsert overlapping keys at the same time end with each key once (writes take a lock).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from serverless_ml.feature_store import Feature
from serverless_ml.feature_store.local import LocalFeatureGroup, LocalFeatureStore

pytestmark = pytest.mark.integration

BATCH = 40
SCHEMA = [Feature("id", "bigint"), Feature("event_time", "timestamp"), Feature("x", "double"), Feature("writer", "string")]

# A writer process: waits for the file GO, then upserts batches of ids. With --touch it
# also rewrites the previous batch in each commit (a Delta merge that rewrites files,
# not only an append).
WRITER = r"""
import sys, time
from pathlib import Path
import pandas as pd
from serverless_ml.feature_store import Feature
from serverless_ml.feature_store.local import LocalFeatureStore

root, go, name, first, batches, size, touch = sys.argv[1:8]
first, batches, size, touch = int(first), int(batches), int(size), touch == "touch"
schema = [Feature("id", "bigint"), Feature("event_time", "timestamp"), Feature("x", "double"), Feature("writer", "string")]
print("ready", flush=True)
while not Path(go).exists():
    time.sleep(0.01)
for k in range(batches):
    start = first + k * size
    ids = list(range(start - size if touch and k else start, start + size))
    df = pd.DataFrame({
        "id": pd.Series(ids, dtype="int64"),
        "event_time": pd.Series(pd.Timestamp("2024-01-01", tz="UTC"), index=range(len(ids))).astype("datetime64[us, UTC]"),
        "x": [float(i * 1000 + k) for i in ids],
        "writer": name,
    })
    group = LocalFeatureStore(root).get_or_create_feature_group("events", 1, ["id"], "event_time", features=schema)
    group.insert(df)
print("done", flush=True)
"""


def start_writer(store_dir: Path, go: Path, name: str, first: int, batches: int, touch: bool = False) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(store_dir), str(go), name, str(first), str(batches), str(BATCH), "touch" if touch else "append"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
    return proc


def open_group(store_dir: Path) -> LocalFeatureGroup:
    return LocalFeatureStore(store_dir).get_or_create_feature_group("events", 1, ["id"], "event_time", features=SCHEMA)


def test_readers_see_only_whole_batches_while_a_writer_commits(store_dir: Path, tmp_path: Path) -> None:
    batches = 15
    group = open_group(store_dir)
    group.insert(
        pd.DataFrame(
            {
                "id": pd.Series(range(BATCH), dtype="int64"),
                "event_time": pd.Series(pd.Timestamp("2024-01-01", tz="UTC"), index=range(BATCH)).astype("datetime64[us, UTC]"),
                "x": [0.0] * BATCH,
                "writer": "setup",
            }
        )
    )
    go = tmp_path / "go"
    writer = start_writer(store_dir, go, "w", first=BATCH, batches=batches, touch=True)
    go.touch()
    seen_counts: set[int] = set()
    seen_versions: set[int] = set()
    reads = 0
    deadline = time.monotonic() + 120
    while writer.poll() is None and time.monotonic() < deadline:
        df = open_group(store_dir).read()
        reads += 1
        assert len(df) % BATCH == 0, f"read {reads} saw {len(df)} rows: part of a batch"
        assert df["id"].is_unique, f"read {reads} saw a key twice"
        assert df["id"].tolist() == list(range(len(df))), "whole batches, in order"
        seen_counts.add(len(df))
        version = open_group(store_dir).data_version()
        assert version is not None
        seen_versions.add(version)
    out, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, err
    assert out.strip() == "done"
    final = open_group(store_dir).read()
    assert len(final) == BATCH * (batches + 1)
    assert group.data_version() == batches
    # The reads overlapped the writes (otherwise this test proves nothing).
    assert len(seen_counts) >= 3, f"{reads} reads saw only {sorted(seen_counts)}"


def test_two_writers_upserting_overlapping_keys_leave_no_duplicates(store_dir: Path, tmp_path: Path) -> None:
    go = tmp_path / "go"
    batches = 6
    # Both start on an empty store (both may try to create the table) and cover
    # overlapping key ranges: a from 0, b from 3 batches later.
    a = start_writer(store_dir, go, "a", first=0, batches=batches)
    b = start_writer(store_dir, go, "b", first=3 * BATCH, batches=batches)
    go.touch()
    for proc in (a, b):
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    table = open_group(store_dir).read()
    expected_ids = list(range(0, (3 + batches) * BATCH))
    assert table["id"].is_unique
    assert table["id"].tolist() == expected_ids
    overlap = table[table["id"].between(3 * BATCH, batches * BATCH - 1)]
    assert set(overlap["writer"]) <= {"a", "b"} and len(overlap) == (batches - 3) * BATCH
    # Every commit was a whole batch from one writer: 2 * batches commits, minus batches
    # that found their rows already stored with the same values (none here: values differ
    # by writer and batch), so versions 0 .. 2*batches-1.
    assert open_group(store_dir).data_version() == 2 * batches - 1
