"""``sml ingest`` of a large file of live rows, against a plain pyarrow read and write of it.

Set-up (not timed): the Titanic backfill in a temporary store, and ``--rows`` new
Titanic-shaped raw rows (the real file's columns: ``PassengerId`` past the stored ids,
``Survived`` empty for about a third, names with titles, ages missing for about a fifth)
written as a CSV file and as a Parquet file, a ``--chunk`` of rows at a time, so the set-up
never holds them all. Then, per format, each in its own child process (peak RSS from
``os.wait4``), alternating which runs first:

* ``sml_ingest``: ``sml ingest --dataset titanic --source FILE --date 2024-02-01`` into a
  fresh copy of the backfilled store (validate, compare with the stored rows, write in
  one Delta commit), timed from its start to its exit (imports included);
* ``pyarrow``: the reference, ``pyarrow.csv.read_csv`` / ``pyarrow.parquet.read_table`` of
  the same file and ``deltalake.write_deltalake`` of that table into a new Delta table:
  no validation, every column typed by pyarrow, the whole table in memory.

Also ``sml ingest`` of a file a tenth the size (``--small-rows``, default ``--rows / 10``)
to show whether its peak RSS grows with the file, and of the same file twice (the second
run compares every row with the stored one and writes nothing). Goal (issue 17): ``sml
ingest`` in bounded memory; the bound this bench checks is 1 GiB (both runs), and the
RSS at a tenth of the rows is printed beside it. Prints seconds, rows per second, the ratio and the RSS; writes
``bench/results/ingest.json``.

    python -m bench ingest [--rows 1000000] [--formats csv,parquet]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import REPO_ROOT, resolve_data_dir, write_results

DEFAULT_ROWS = 1_000_000
GOAL_RSS_MIB = 1024
KEY_OFFSET = 10_000
SETUP_CHUNK = 500_000
DAY = "2024-02-01"
FORMATS = ("csv", "parquet")

_SURNAMES = ("Braund", "Cumings", "Heikkinen", "Futrelle", "Allen", "Moran", "McCarthy", "Palsson", "Johnson", "Nasser",
             "Sandstrom", "Bonnell", "Saundercock", "Andersson", "Vestrom", "Hewlett", "Rice", "Williams", "Vander Planke")
_TITLES = ("Mr", "Mrs", "Miss", "Master", "Dr", "Rev", "Mlle", "Col")
_GIVEN = ("Owen Harris", "John Bradley (Florence Briggs Thayer)", "Laina", "Jacques Heath (Lily May Peel)", "William Henry",
          "James", "Timothy J", "Gosta Leonard", "Oscar W (Elisabeth Vilhelmina Berg)", "Marguerite Rut", "Elizabeth")


def raw_chunks(rows: int, chunk: int = SETUP_CHUNK) -> Iterator[Any]:
    """The new raw rows as pyarrow tables of ``chunk`` rows (the same rows on every call):
    the real file's columns and types, keys from ``KEY_OFFSET + 1``."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    for index, start in enumerate(range(0, rows, chunk)):
        n = min(chunk, rows - start)
        rng = np.random.default_rng(index)
        sibsp = rng.choice(np.arange(9), size=n, p=[0.68, 0.23, 0.04, 0.02, 0.02, 0.005, 0.003, 0.001, 0.001])
        parch = rng.choice(np.arange(7), size=n, p=[0.76, 0.13, 0.09, 0.005, 0.005, 0.005, 0.005])
        age = np.round(rng.uniform(0.42, 80.0, size=n), 1)
        names = pc.binary_join_element_wise(
            pa.array(np.asarray(_SURNAMES, dtype=object)[rng.integers(0, len(_SURNAMES), n)]),
            pa.array(np.asarray(_TITLES, dtype=object)[rng.integers(0, len(_TITLES), n)]),
            pa.array(np.asarray(_GIVEN, dtype=object)[rng.integers(0, len(_GIVEN), n)]), ", ")
        names = pc.replace_substring_regex(names, r"^([^,]+), ([^,]+), ", r"\1, \2. ")
        survived = rng.integers(0, 2, size=n)
        yield pa.table({
            "PassengerId": pa.array(np.arange(KEY_OFFSET + start + 1, KEY_OFFSET + start + n + 1, dtype=np.int64)),
            "Survived": pa.array(survived, mask=rng.random(n) < 0.33),
            "Pclass": pa.array(rng.choice([1, 2, 3], size=n, p=[0.24, 0.21, 0.55])),
            "Name": names,
            "Sex": pa.array(np.asarray(("male", "female"), dtype=object)[rng.integers(0, 2, n)]),
            "Age": pa.array(age, mask=rng.random(n) < 0.2),
            "SibSp": pa.array(sibsp),
            "Parch": pa.array(parch),
            "Ticket": pa.array(np.char.add("A/5 ", rng.integers(1000, 99999, n).astype(str)).astype(object)),
            "Fare": pa.array(np.round(np.clip(rng.gamma(1.2, 27.0, size=n), 0.0, 1000.0), 4)),
            "Cabin": pa.array(np.asarray(("", "C85", "E46", "B28"), dtype=object)[rng.integers(0, 4, n)]),
            "Embarked": pa.array(np.asarray(("S", "C", "Q"), dtype=object)[rng.choice(3, size=n, p=[0.72, 0.19, 0.09])]),
        })


def write_files(folder: Path, rows: int, formats: tuple[str, ...]) -> dict[str, Path]:
    """The rows as ``live.csv`` / ``live.parquet`` in ``folder``, written a chunk at a time."""
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    paths = {fmt: folder / f"live-{rows}.{fmt}" for fmt in formats}
    writers: dict[str, Any] = {}
    try:
        for table in raw_chunks(rows):
            if not writers:  # opened once: a second writer would truncate the file under the first
                if "csv" in formats:
                    writers["csv"] = pcsv.CSVWriter(paths["csv"], table.schema,
                                                    write_options=pcsv.WriteOptions(quoting_style="needed"))
                if "parquet" in formats:
                    writers["parquet"] = pq.ParquetWriter(paths["parquet"], table.schema)
            for writer in writers.values():
                writer.write_table(table)
    finally:
        for writer in writers.values():
            writer.close()
    return paths


REFERENCE = """
import sys
import pyarrow.csv, pyarrow.parquet
from deltalake import write_deltalake
source, target = sys.argv[1], sys.argv[2]
table = pyarrow.parquet.read_table(source) if source.endswith(".parquet") else pyarrow.csv.read_csv(source)
write_deltalake(target, table, mode="error")
print(table.num_rows)
"""


def _child(command: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Run ``command``: its wall seconds, its own peak RSS in MiB, its output."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{output}")
    return wall, usage.ru_maxrss / 1024, output


def _sml_ingest(source: Path, backfilled: Path, work: Path, rows: int, again: bool = False) -> tuple[float, float]:
    """``sml ingest`` of ``source`` into a fresh copy of the backfilled store; with
    ``again``, then once more (every row stored already: all compared, nothing written),
    that second run's figures."""
    store = work / "store"
    shutil.rmtree(store, ignore_errors=True)
    shutil.copytree(backfilled, store)
    env = {**os.environ, "SML_STORE_DIR": str(store), "SML_STATE_DIR": str(work / "state")}
    command = [str(Path(sys.executable).parent / "sml"), "ingest", "--dataset", "titanic", "--source", str(source),
               "--date", DAY]
    wall, rss, output = _child(command, env)
    if f"{rows} rows in, {rows} inserted" not in output:
        raise SystemExit(f"sml ingest did not insert {rows} rows:\n{output}")
    if again:
        wall, rss, output = _child(command, env)
        if f"{rows} rows in, 0 inserted" not in output or "nothing written" not in output:
            raise SystemExit(f"sml ingest of the same file again wrote rows:\n{output}")
    return wall, rss


def _reference(source: Path, work: Path, rows: int) -> tuple[float, float]:
    target = work / "reference"
    shutil.rmtree(target, ignore_errors=True)
    wall, rss, output = _child([sys.executable, "-c", REFERENCE, str(source), str(target)], dict(os.environ))
    if output.strip() != str(rows):
        raise SystemExit(f"the reference read {output.strip()} rows, expected {rows}")
    return wall, rss


def run(rows: int, small_rows: int, formats: tuple[str, ...], data_dir: Path) -> dict[str, Any]:
    from serverless_ml.datasets import titanic
    from serverless_ml.datasets.sources import load_source
    from serverless_ml.feature_store.local import LocalFeatureStore
    from serverless_ml.pipelines.features import backfill

    results: dict[str, Any] = {"rows": rows, "small_rows": small_rows, "goal_rss_mib": GOAL_RSS_MIB, "cpus": os.cpu_count(),
                               "load_average_1min": os.getloadavg()[0], "formats": {}}
    with tempfile.TemporaryDirectory(prefix="sml-bench-ingest-") as tmp:
        folder = Path(tmp)
        backfilled = folder / "backfilled"
        backfill(titanic.SPEC, LocalFeatureStore(backfilled), load_source(titanic.SPEC, None, data_dir))
        files, small = write_files(folder, rows, formats), write_files(folder, small_rows, formats)
        for index, fmt in enumerate(formats):
            entry: dict[str, Any] = {"file_bytes": files[fmt].stat().st_size}
            order = ("ours", "reference") if index % 2 == 0 else ("reference", "ours")
            for which in order:
                if which == "ours":
                    entry["sml_ingest_s"], entry["sml_ingest_rss_mib"] = _sml_ingest(files[fmt], backfilled, folder, rows)
                else:
                    entry["pyarrow_s"], entry["pyarrow_rss_mib"] = _reference(files[fmt], folder, rows)
            _, entry["sml_ingest_small_rss_mib"] = _sml_ingest(small[fmt], backfilled, folder, small_rows)
            entry["sml_ingest_again_s"], entry["sml_ingest_again_rss_mib"] = _sml_ingest(
                files[fmt], backfilled, folder, rows, again=True)
            entry["ratio"] = entry["sml_ingest_s"] / entry["pyarrow_s"]
            entry["rss_bounded"] = max(entry["sml_ingest_rss_mib"], entry["sml_ingest_again_rss_mib"]) <= GOAL_RSS_MIB
            results["formats"][fmt] = entry
    results["pass"] = all(e["rss_bounded"] for e in results["formats"].values())
    return results


def report(results: dict[str, Any]) -> None:
    rows, small = results["rows"], results["small_rows"]
    print(f"ingest: {rows:,} live Titanic rows, sml ingest vs pyarrow read + deltalake write "
          f"({results['cpus']} CPUs, load {results['load_average_1min']:.1f})")
    for fmt, e in results["formats"].items():
        print(f"  {fmt:8s} ({e['file_bytes'] / 2**20:,.0f} MiB): sml ingest {e['sml_ingest_s']:7.1f} s "
              f"({rows / e['sml_ingest_s']:,.0f} rows/s), pyarrow {e['pyarrow_s']:6.1f} s "
              f"({rows / e['pyarrow_s']:,.0f} rows/s): {e['ratio']:.1f}x")
        print(f"  {'':8s} peak RSS: sml ingest {e['sml_ingest_rss_mib']:,.0f} MiB ({small:,} rows: "
              f"{e['sml_ingest_small_rss_mib']:,.0f} MiB; goal <= {results['goal_rss_mib']} MiB: "
              f"{'met' if e['rss_bounded'] else 'NOT met'}), pyarrow {e['pyarrow_rss_mib']:,.0f} MiB")
        print(f"  {'':8s} the same file again (every row compared, nothing written): {e['sml_ingest_again_s']:.1f} s, "
              f"peak RSS {e['sml_ingest_again_rss_mib']:,.0f} MiB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench ingest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help=f"rows in the file (default {DEFAULT_ROWS:,})")
    parser.add_argument("--small-rows", type=int, default=0, help="rows of the smaller file (default a tenth of --rows)")
    parser.add_argument("--formats", default=",".join(FORMATS), help="csv, parquet or both (default both)")
    args = parser.parse_args(argv)
    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    if not formats or set(formats) - set(FORMATS) or args.rows < 10:
        parser.error("--formats takes csv and/or parquet; --rows at least 10")
    results = run(args.rows, args.small_rows or max(args.rows // 10, 1), formats, resolve_data_dir())
    report(results)
    write_results("ingest", results)
    return 0 if results["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
