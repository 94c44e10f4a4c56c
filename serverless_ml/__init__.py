"""serverless-ml: a production ML loop on tabular data.

Features live in a feature store (an embedded Delta Lake store by default, Hopsworks when
configured), models are tuned with Optuna and registered in MLflow, and daily batches are
scored and logged as monitoring runs. Importing the package has no side effects: every
set-up step (tracking URI, store directory) is a function the caller invokes.
"""

__version__ = "0.1.0"
