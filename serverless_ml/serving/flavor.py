"""The registered model's two flavors in one MLmodel: ``sklearn`` (the plain Pipeline, skops
format) and ``python_function``, which answers like the site's predictor.

``mlflow.sklearn.load_model`` gives the fitted Pipeline, as before: batch inference, the
site and ``sml simulate`` load it (``registry.load_version_model``) and score with it, so
their figures do not change. ``mlflow.pyfunc.load_model`` (and ``mlflow models serve``,
``spark_udf``) loads :class:`ServedModel` through this module's :func:`_load_pyfunc`: it
checks every row against the dataset's spec (:mod:`.schema`: types, ranges, categories,
missing only where nullable) and answers class names and per-class probabilities
(:func:`.schema.answer_frame`). A refused row raises an ``MlflowException``
(``INVALID_PARAMETER_VALUE``: ``mlflow models serve`` answers 400) naming the row, the field
and the values it accepts.

How: :func:`save_model` is the "flavor" that ``mlflow.models.Model.log`` calls. It saves
the sklearn flavor (``mlflow.sklearn.save_model``), writes the spec's serving rules next
to it (:data:`serverless_ml.registry.SERVING_SCHEMA_ARTIFACT`), copies the
``serverless_ml`` package's Python files (:data:`PACKAGE_FILES`, nothing else) into the
model's ``code/`` folder and points the pyfunc flavor's
loader here, so the model loads in any environment with the model's requirements (the
code travels with it). The sklearn flavor does not name ``code/``: loading the Pipeline
does not touch ``sys.path``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from serverless_ml.serving import schema as rules

CODE_FOLDER = "code"
PYFUNC_SCHEMA_KEY = "serving_schema"
"""The pyfunc flavor's key naming the schema file (read by :func:`_load_pyfunc`)."""
MAX_ERRORS_SHOWN = 5


class ServedModel:
    """The pyfunc implementation: validate, then the Pipeline's class probabilities."""

    def __init__(self, pipeline: Any, schema: rules.ServingSchema) -> None:
        self.pipeline, self.schema = pipeline, schema

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """``prediction``, ``probability`` and ``probability_<class>`` per row.

        Raises:
            MlflowException: a row outside the spec (``INVALID_PARAMETER_VALUE``).
        """
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        rows, errors = rules.validate_records(self.schema.fields, rules.frame_records(frame),
                                              passthrough=[c for c in frame.columns if c not in self.schema.feature_names])
        if errors:
            from mlflow.exceptions import MlflowException
            from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

            shown = "; ".join(e.describe() for e in errors[:MAX_ERRORS_SHOWN])
            more = f" (and {len(errors) - MAX_ERRORS_SHOWN} more)" if len(errors) > MAX_ERRORS_SHOWN else ""
            raise MlflowException(f"invalid input for model '{self.schema.dataset}': {shown}{more}",
                                  error_code=INVALID_PARAMETER_VALUE)
        model_rows = rules.model_frame(self.schema.fields, rows)
        proba = rules.class_probabilities(self.pipeline, self.schema.classes, model_rows)
        return rules.answer_frame(self.schema.class_names, proba)


def _load_pyfunc(path: str, model_config: Any = None) -> ServedModel:
    """Called by ``mlflow.pyfunc.load_model`` with the flavor's data path (the skops file)."""
    import mlflow
    from mlflow.models import Model

    root = os.path.dirname(path) if os.path.isfile(path) else path
    conf = Model.load(os.path.join(root, "MLmodel")).flavors["python_function"]
    schema = rules.ServingSchema.from_json(Path(root, conf[PYFUNC_SCHEMA_KEY]).read_text(encoding="utf-8"))
    return ServedModel(mlflow.sklearn.load_model(root), schema)


PACKAGE_FILES = ("*.py", "py.typed")
"""What of the ``serverless_ml`` folder travels with a model: its Python files and marker,
nothing else (a stray ``.env`` or configuration file next to the code is never uploaded)."""


def copy_package_code(package: Path, folder: Path) -> list[Path]:
    """Copy ``package``'s :data:`PACKAGE_FILES` (in every subfolder but ``__pycache__``)
    into ``folder/<package name>``; the files copied, relative to ``folder``."""
    copied = []
    for pattern in PACKAGE_FILES:
        for source in sorted(package.rglob(pattern)):
            relative = source.relative_to(package.parent)
            if "__pycache__" in relative.parts or not source.is_file() or any(p.startswith(".") for p in relative.parts):
                continue
            target = folder / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
            copied.append(relative)
    return copied


def save_model(path: str, mlflow_model: Any, sk_model: Any, serving_schema: rules.ServingSchema, **kwargs: Any) -> None:
    """Save ``sk_model`` with both flavors into ``path`` (``kwargs``: those of
    ``mlflow.sklearn.save_model``: signature, input example, skops trusted types,
    requirements...). The signature's outputs become the pyfunc's answer columns."""
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    from serverless_ml import registry

    mlflow.sklearn.save_model(sk_model, path, mlflow_model=mlflow_model, **kwargs)
    Path(path, registry.SERVING_SCHEMA_ARTIFACT).write_text(serving_schema.to_json(), encoding="utf-8")
    copy_package_code(Path(__file__).resolve().parents[1], Path(path, CODE_FOLDER))
    conf = mlflow_model.flavors["python_function"]
    conf["loader_module"] = __name__
    conf["code"] = CODE_FOLDER
    conf[PYFUNC_SCHEMA_KEY] = registry.SERVING_SCHEMA_ARTIFACT
    conf.pop("predict_fn", None)
    if mlflow_model.signature is not None:
        outputs = Schema([ColSpec("string", rules.PREDICTION_COLUMN), ColSpec("double", rules.PROBABILITY_COLUMN),
                          *(ColSpec("double", c) for c in rules.class_probability_columns(serving_schema.class_names))])
        mlflow_model.signature = ModelSignature(inputs=mlflow_model.signature.inputs, outputs=outputs)
    mlflow_model.save(os.path.join(path, "MLmodel"))
