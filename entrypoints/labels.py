"""MLproject entry point `labels`: `sml labels` with the entry point's parameters.

Click checks each parameter's type and the job's options its value, as for `sml` itself
(MLflow checks neither int nor float types); a bad one exits non-zero with a one-line error.
"""

from __future__ import annotations

from entrypoints import run

if __name__ == "__main__":
    run("labels")
