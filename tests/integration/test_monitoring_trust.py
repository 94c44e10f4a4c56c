"""Monitoring on data it was not tuned to: clean and drifted 30-day simulations of a
built-in dataset (Iris) and of a dataset scikit-learn bundles (wine cultivars, written as
CSV + spec by ``bench.datasets``), through the real store, training and tracking database.

Clean: no drift alert and no accuracy alert on any day. Drifted: a numeric feature moved
by one of its standard deviations from day 16 raises a drift alert naming it within three
days, and none before. (``python -m bench drift`` measures the rates over many seeds.)
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from bench.datasets import write_dataset
from serverless_ml import defaults
from serverless_ml.datasets import DatasetSpec, get_dataset
from serverless_ml.datasets.synthetic import parse_drift
from serverless_ml.pipelines.simulate import SimulateOptions, simulate
from serverless_ml.registry import monitoring_experiment
from worlds import build_trained_world, copy_world

pytestmark = pytest.mark.integration

END = dt.date(2024, 6, 30)
DAYS = 30
SHIFT_FROM = 16


@pytest.fixture(scope="module", params=["iris", "wine"])
def trained(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, mlflow_template_db: Path,
            data_dir: Path) -> tuple[DatasetSpec, Path]:
    folder = tmp_path_factory.mktemp(f"trust-{request.param}")
    spec = get_dataset(request.param if request.param == "iris" else str(write_dataset(request.param, folder / "data")))
    build_trained_world(folder, spec, mlflow_template_db, data_dir)
    return spec, folder


def _runs(spec: DatasetSpec) -> pd.DataFrame:
    return mlflow.search_runs(experiment_names=[monitoring_experiment(spec.name)]).set_index("tags.as_of").sort_index()


def _shift(spec: DatasetSpec, data_dir: Path) -> tuple[str, str]:
    """The first double feature and its ``+1 std`` drift item (std over the real rows)."""
    from serverless_ml.datasets.sources import load_source

    feature = next(f.name for f in spec.features if f.type == "double")
    raw = load_source(spec, None, data_dir).frame
    column = next(f.source_column for f in spec.features if f.name == feature) or feature
    std = pd.to_numeric(raw[column]).std()
    return feature, f"{feature}+{std:.6g}"


def test_thirty_clean_days_raise_no_alert(trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    spec, template = trained
    monkeypatch.chdir(tmp_path)
    store, settings = copy_world(template, tmp_path, monkeypatch)
    report = simulate(spec, store, settings, SimulateOptions(days=DAYS, end_date=END, rows=10))
    runs = _runs(spec)
    assert len(runs) == DAYS and report.alert_days == []
    assert (runs["tags.alert"] == "false").all(), runs.loc[runs["tags.alert"] != "false", "tags.alerts"].tolist()
    computed = runs["metrics.drift_share"].notna()
    assert computed.sum() >= DAYS - 3, "drift is computed once 30 rows are in the window"
    assert not computed.iloc[:2].any(), "not on the first days' 10 and 20 rows"


def test_a_one_std_shift_is_found_within_three_days(trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
                                                    data_dir: Path) -> None:
    spec, template = trained
    monkeypatch.chdir(tmp_path)
    store, settings = copy_world(template, tmp_path, monkeypatch)
    feature, item = _shift(spec, data_dir)
    options = SimulateOptions(days=DAYS, end_date=END, rows=10, drift=parse_drift(item, spec), drift_from=SHIFT_FROM)
    simulate(spec, store, settings, options)
    runs = _runs(spec)
    index = {options.day(i).isoformat(): i for i in range(1, DAYS + 1)}
    drift_days = sorted(index[d] for d in runs.index[runs["tags.alert_drift"] == "true"])
    assert drift_days and min(drift_days) >= SHIFT_FROM, drift_days
    assert min(drift_days) <= SHIFT_FROM + 2, f"first drift alert on day {min(drift_days)}"
    first = runs.loc[options.day(min(drift_days)).isoformat()]
    assert feature in first["tags.alerts"]
    assert first[f"metrics.drift_padj_{feature}"] < defaults.INFER_DRIFT_P_VALUE and first[f"metrics.drift_effect_{feature}"] >= 0.1
