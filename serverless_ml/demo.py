"""The demo behind ``make demo``: backfill Iris and Titanic into the embedded store and add
a few days of synthetic rows, then print what was written.

Reads the same settings as ``sml`` (``SML_STORE_DIR``, ``SML_DATA_DIR``). Later stages
(training, batch inference, the site) join the demo as they land.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys

from serverless_ml.datasets import BUILTIN
from serverless_ml.datasets.sources import load_source
from serverless_ml.errors import SmlError
from serverless_ml.feature_store import ORIGIN_COLUMN, open_feature_store
from serverless_ml.pipelines.features import add_daily_rows, backfill, existing_feature_group
from serverless_ml.settings import resolve_settings


def run_demo(days: int, rows: int, today: dt.date) -> None:
    """Backfill every built-in dataset and add ``days`` days of ``rows`` synthetic rows."""
    settings = resolve_settings()
    store = open_feature_store(settings)
    print(f"feature store: {settings.store_dir}")
    for name, spec in BUILTIN.items():
        source = load_source(spec, None, settings.data_dir, settings.cache_dir)
        print(f"[{name}] backfill from {source.location}")
        print("  " + backfill(spec, store, source).summary())
        for offset in range(days, 0, -1):
            day = today - dt.timedelta(days=offset)
            report = add_daily_rows(spec, store, day, rows, seed=0)
            print(f"  daily {day}: {report.summary()}")
        table = existing_feature_group(spec, store).read()
        counts = table[ORIGIN_COLUMN].value_counts().to_dict()
        print(f"  {name} now holds {len(table)} rows: {counts}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--rows", type=int, default=10)
    args = parser.parse_args(argv)
    try:
        run_demo(args.days, args.rows, dt.datetime.now(dt.timezone.utc).date())
    except SmlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
