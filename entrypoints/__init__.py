"""Thin scripts behind the MLproject entry points: each hands its arguments to ``sml``.

They run as ``python -m entrypoints.<name>`` from the project directory, so the
``serverless_ml`` package is importable without installing it (as in an environment that
``mlflow run`` builds from conda.yaml).
"""
