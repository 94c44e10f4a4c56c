"""``python -m bench`` runs every benchmark; ``python -m bench NAME [options]`` runs one.

Options after the name go to that benchmark (``python -m bench backfill --help``).
"""

from __future__ import annotations

import importlib
import sys

from bench import BENCHMARKS


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print(__doc__.strip())
        print(f"\nbenchmarks: {', '.join(BENCHMARKS)}")
        return 0
    if args and not args[0].startswith("-"):
        name, rest = args[0], args[1:]
        if name not in BENCHMARKS:
            print(f"error: unknown benchmark '{name}' (expected one of {', '.join(BENCHMARKS)})", file=sys.stderr)
            return 2
        return importlib.import_module(f"bench.{name}").main(rest)
    if args:
        print("error: options need a benchmark name first, e.g. `python -m bench backfill --rows 100000`", file=sys.stderr)
        return 2
    status = 0
    for name in BENCHMARKS:
        status = max(status, importlib.import_module(f"bench.{name}").main([]))
    return status


if __name__ == "__main__":
    sys.exit(main())
