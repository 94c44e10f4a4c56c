"""The registered model answers like the site: its pyfunc flavor checks rows against the
spec and returns class names and probabilities equal to the Predict page's; its sklearn
flavor still loads the plain Pipeline that batch inference and the site score with."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from sklearn.pipeline import Pipeline

from monitoring_app import forms
from serverless_ml import registry
from serverless_ml.datasets import DatasetSpec
from serverless_ml.serving import schema
from worlds import IRIS, TITANIC, build_trained_world, copy_world, trained_template  # noqa: F401 - fixtures

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def iris_template(tmp_path_factory: pytest.TempPathFactory, mlflow_template_db: Path, data_dir: Path) -> Path:
    folder = tmp_path_factory.mktemp("iris_trained")
    build_trained_world(folder, IRIS, mlflow_template_db, data_dir)
    return folder


@pytest.fixture(params=["titanic", "iris"])
def served(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[DatasetSpec, pd.DataFrame]:
    """A copy of the dataset's trained world (current) and some of its stored rows."""
    spec = TITANIC if request.param == "titanic" else IRIS
    template = request.getfixturevalue("trained_template" if spec is TITANIC else "iris_template")
    monkeypatch.chdir(tmp_path)
    store, _ = copy_world(template, tmp_path, monkeypatch)
    rows = store.get_feature_group(spec.name, spec.version).read()
    rows = rows.sample(n=40, random_state=3).reset_index(drop=True)
    return spec, rows


def predictor_answer(spec: DatasetSpec, model: Pipeline, rows: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    """What the Predict page answers for each row (its own functions, one row at a time)."""
    names, probabilities = [], []
    for record in schema.frame_records(rows[spec.feature_names]):
        result = forms.validate_form(spec, record)
        assert result.ok, result.errors
        proba = forms.class_probabilities(model, spec, forms.model_input(spec, result.row or {}))
        best = max(range(len(proba)), key=proba.__getitem__)
        names.append(spec.class_name(spec.classes[best]))
        probabilities.append(proba)
    return names, np.array(probabilities)


def test_pyfunc_answers_equal_the_predictor(served: tuple[DatasetSpec, pd.DataFrame]) -> None:
    spec, rows = served
    uri = f"models:/{spec.name}@{registry.CHAMPION}"
    pipeline = registry.load_version_model(spec.name, 1)
    expected_names, expected_proba = predictor_answer(spec, pipeline, rows)

    answer = mlflow.pyfunc.load_model(uri).predict(rows[spec.feature_names])

    columns = [f"probability_{spec.class_name(c)}" for c in spec.classes]
    assert list(answer.columns) == ["prediction", "probability", *columns]
    assert answer["prediction"].tolist() == expected_names
    np.testing.assert_allclose(answer[columns].to_numpy(), expected_proba, rtol=0, atol=1e-12)
    np.testing.assert_allclose(answer["probability"].to_numpy(), expected_proba.max(axis=1), rtol=0, atol=1e-12)
    # Class names, not codes: Titanic's 0/1 are died/survived.
    assert set(answer["prediction"]) <= {spec.class_name(c) for c in spec.classes}
    if spec is TITANIC:
        assert set(answer["prediction"]) <= {"died", "survived"}


def test_the_sklearn_flavor_is_the_plain_pipeline(served: tuple[DatasetSpec, pd.DataFrame]) -> None:
    spec, rows = served
    uri = f"models:/{spec.name}/1"
    pipeline = mlflow.sklearn.load_model(uri)
    assert isinstance(pipeline, Pipeline)
    info = mlflow.models.get_model_info(uri)
    assert {"sklearn", "python_function"} <= set(info.flavors)
    assert info.flavors["sklearn"]["serialization_format"] == "skops"
    assert not info.flavors["sklearn"].get("code")  # loading the Pipeline leaves sys.path alone
    assert info.flavors["python_function"]["loader_module"] == "serverless_ml.serving.flavor"
    # The pipeline batch inference scores with: class values, as stored.
    predicted = pipeline.predict(rows[spec.feature_names].pipe(_model_input, spec))
    assert set(predicted) <= set(spec.classes)


def _model_input(frame: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    from serverless_ml.training.model import as_model_input

    return as_model_input(frame, spec)


def test_invalid_rows_are_refused_naming_the_field_and_allowed_values(trained_template: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    copy_world(trained_template, tmp_path, monkeypatch)
    model = mlflow.pyfunc.load_model(f"models:/titanic@{registry.CHAMPION}")
    good = {"pclass": 3, "sex": "male", "age": 22.0, "fare": 7.25, "embarked": "S", "sibsp": 1, "parch": 0,
            "title": "Mr", "family_size": 2}
    assert model.predict(pd.DataFrame([good]))["prediction"].iloc[0] in {"died", "survived"}
    for field, value, allowed in (("pclass", 7, "1 to 3"), ("sex", "alien", "'male', 'female'"),
                                  ("fare", -3.0, "0 to 1000")):
        with pytest.raises(MlflowException) as caught:
            model.predict(pd.DataFrame([good, {**good, field: value}]))
        message = caught.value.message
        assert f"rows[1]: field '{field}'" in message and allowed in message, message
        assert caught.value.error_code == "INVALID_PARAMETER_VALUE"
    # A required value missing (age is nullable, sex is not).
    assert model.predict(pd.DataFrame([{**good, "age": None}]))["prediction"].iloc[0] in {"died", "survived"}
    with pytest.raises(MlflowException, match="field 'sex': required"):
        model.predict(pd.DataFrame([{**good, "sex": None}]))
