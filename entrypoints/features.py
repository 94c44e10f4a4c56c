"""MLproject entry point `features`: `sml features` with the entry point's parameters.

Click validates every parameter (MLflow does not check int or float types) and a bad
one exits non-zero with a one-line error.
"""

from __future__ import annotations

import sys

from serverless_ml.cli import main

if __name__ == "__main__":
    main(["features", *sys.argv[1:]])
