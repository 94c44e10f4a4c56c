"""MLproject entry point `main`: `sml main` with the entry point's parameters.

Click validates every parameter (MLflow does not check int or float types) and a bad
one exits non-zero with a one-line error.
"""

from __future__ import annotations

from entrypoints import run

if __name__ == "__main__":
    run("main")
