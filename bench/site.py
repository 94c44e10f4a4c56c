"""Monitoring site: the Overview page over ten years of daily batches vs. a naive read.

Builds a temporary SQLite tracking database holding 3,650 finished monitoring runs of
``titanic`` (one a day from 2015-01-01), each with the metrics, tags and params batch
inference logs (about 60 metrics and 18 tags a run; values drawn at random, with drift
episodes, alerts and a retrain every year), and the registered model with its
``champion``. The runs are written in bulk through MLflow's own table definitions (the
tracking API takes ~0.2 s a run); the naive read below checks that MLflow reads them
back whole.

Times, through the site's WSGI application (Flask's test client: server time, JSON
encoding included, no network or browser):

* ``first_load``: a freshly started site (``create_app(warm_up=True)``, as ``sml
  dashboard`` and gunicorn start it) serving its first Overview: the index page, the
  layout, the callback graph, the page (router callback) and the dataset-picker
  callback, on an empty cache. Goal: <= 1 s.
* each Overview callback, ``--calls`` times (p50, p95; goal p95 <= 300 ms): the refresh
  tick when nothing changed, the refresh tick after a new run was logged (the run is
  written between calls, untimed), the time-window switch, and the dataset picker;
* ``naive``: ``mlflow.search_runs(experiment_names=["titanic-monitoring"])``, what a
  page would do without the data-access module (one repetition by default: it takes
  about a minute).

Prints each figure with its goal, and the ratio naive / first load; writes the same to
``bench/results/site.json``.

    python -m bench site [--days 3650] [--calls 40] [--naive-repeats 1] [--seed 0]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench import write_results
from serverless_ml import registry

DEFAULT_DAYS = 3650
DEFAULT_CALLS = 40
DEFAULT_SEED = 0
START = dt.date(2015, 1, 1)
ROWS_PER_DAY = 10
RETRAIN_EVERY_DAYS = 365
GOALS = {"first_load_s": 1.0, "callback_p95_s": 0.3}


# --- the long history ------------------------------------------------------------------------


def _run_values(spec: Any, day: int, rng: np.random.Generator, version: int, holdout: float,
                window: list[tuple[int, int]]) -> tuple[dict[str, float], dict[str, str]]:
    """One batch's metrics and tags, shaped like those batch inference logs."""
    from serverless_ml.inference.monitoring import wilson_interval
    from serverless_ml.training.evaluation import class_metric_keys

    keys = class_metric_keys(spec.classes, spec.class_names)
    drifting = (day % 400) in range(200, 230)
    p = 0.68 if drifting else 0.82
    rows = ROWS_PER_DAY
    correct = int(rng.binomial(rows, p))
    window.append((correct, rows))
    del window[:-30]
    rolling_correct, rolling_rows = sum(c for c, _ in window), sum(n for _, n in window)
    low, high = wilson_interval(correct, rows)
    metrics: dict[str, float] = {
        registry.ROWS_SCORED_METRIC: rows, registry.ROWS_LABELLED_METRIC: rows, registry.BATCH_ACCURACY_METRIC: correct / rows,
        registry.BATCH_ACCURACY_CI_LOW_METRIC: low, registry.BATCH_ACCURACY_CI_HIGH_METRIC: high,
        registry.ROLLING_ROWS_METRIC: rolling_rows, registry.ROLLING_ACCURACY_METRIC: rolling_correct / rolling_rows,
        registry.CUMULATIVE_ROWS_METRIC: rows * (day % RETRAIN_EVERY_DAYS + 1), registry.CUMULATIVE_ACCURACY_METRIC: p + rng.normal(0, 0.01),
        registry.CHAMPION_HOLDOUT_ACCURACY_METRIC: holdout, registry.LATEST_PROBABILITY_METRIC: float(rng.uniform(0.5, 1.0)),
        registry.DRIFT_ROWS_METRIC: rolling_rows, registry.DRIFT_SHARE_METRIC: 0.0,
    }
    drifted = []
    for feature in spec.feature_names:
        shifted = drifting and feature in ("age", "fare")
        p_value = float(rng.uniform(0, 1e-4) if shifted else rng.uniform(0.01, 1))
        metrics[registry.DRIFT_P_PREFIX + feature] = p_value
        metrics[registry.DRIFT_PADJ_PREFIX + feature] = min(1.0, p_value * len(spec.feature_names))
        metrics[registry.DRIFT_EFFECT_PREFIX + feature] = float(rng.uniform(0.3, 1.5) if shifted else rng.uniform(0, 0.08))
        metrics[registry.DRIFT_PSI_PREFIX + feature] = float(rng.uniform(0.3, 1.2) if shifted else rng.uniform(0, 0.1))
        if shifted:
            drifted.append(feature)
    metrics[registry.DRIFT_SHARE_METRIC] = len(drifted) / len(spec.feature_names)
    for prefix in ("batch", "rolling"):
        for name in ("precision", "recall", "f1"):
            metrics[f"{prefix}_{name}"] = float(rng.uniform(0.6, 0.9))
            for key in keys:
                metrics[f"{prefix}_{name}_{key}"] = float(rng.uniform(0.6, 0.9))
        for key in keys:
            metrics[f"{prefix}_support_{key}"] = float(rng.integers(1, rows))
    for key in keys:
        metrics[registry.class_metric(registry.PREDICTED_SHARE_STEM, key)] = 0.5
        metrics[registry.class_metric(registry.TRAINING_SHARE_STEM, key)] = 0.5
    accuracy_alert = rolling_correct / rolling_rows < holdout - 0.1
    drift_alert = bool(drifted)
    metrics[registry.ALERT_ACCURACY], metrics[registry.ALERT_DRIFT] = float(accuracy_alert), float(drift_alert)
    alerts = []
    if accuracy_alert:
        alerts.append(f"accuracy alert: rolling accuracy {rolling_correct / rolling_rows:.3f} is below {holdout - 0.1:.3f}")
    if drift_alert:
        alerts.append(f"drift alert: {len(drifted)} feature(s) drifted ({', '.join(drifted)})")
    as_of = (START + dt.timedelta(days=day)).isoformat()
    prediction, actual = int(rng.integers(0, 2)), int(rng.integers(0, 2))
    tags = {
        "dataset": spec.name, registry.MODEL_VERSION_TAG: str(version), registry.AS_OF_TAG: as_of, registry.DATA_VERSION_TAG: str(day + 1),
        registry.DRIFT_BASIS_TAG: "batch", registry.ALERT_TAG: str(accuracy_alert or drift_alert).lower(),
        registry.ALERT_ACCURACY: str(accuracy_alert).lower(), registry.ALERT_DRIFT: str(drift_alert).lower(),
        registry.ALERTS_TAG: registry.MESSAGE_SEPARATOR.join(alerts), registry.NOT_COMPUTED_TAG: "",
        registry.LATEST_KEY_TAG: f"{as_of.replace('-', '')}{rows - 1:08d}",
        registry.LATEST_PREDICTION_TAG: str(prediction), registry.LATEST_ACTUAL_TAG: str(actual),
        "mlflow.runName": f"{spec.name}-batch-{as_of}", "mlflow.user": "bench", "mlflow.source.type": "LOCAL",
        "mlflow.source.name": "bench/site.py",
        "mlflow.note.content": f"Batch of {rows} {spec.name} rows up to {as_of}, scored by champion version {version}.",
    }
    return metrics, tags


def write_history(tracking_uri: str, days: int, seed: int, first_day: int = 0) -> list[str]:
    """Write ``days`` finished monitoring runs of titanic (from ``START + first_day``) in
    bulk through MLflow's table definitions; returns their run ids."""
    import mlflow
    import sqlalchemy as sa
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlParam, SqlRun, SqlTag

    from serverless_ml.datasets.titanic import SPEC

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    name = f"{SPEC.name}-monitoring"
    experiment = client.get_experiment_by_name(name)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
    location = client.get_experiment(experiment_id).artifact_location
    rng = np.random.default_rng(seed + first_day)
    runs, metrics, latest, tags, params = [], [], [], [], []
    window: list[tuple[int, int]] = []
    ids = []
    for day in range(first_day, first_day + days):
        version = day // RETRAIN_EVERY_DAYS + 1
        holdout = 0.82 + 0.003 * (version % 5)
        values, labels = _run_values(SPEC, day, rng, version, holdout, window)
        run_id = uuid.uuid4().hex
        ids.append(run_id)
        as_of = dt.datetime.combine(START + dt.timedelta(days=day), dt.time(6), tzinfo=dt.timezone.utc)
        start = int(as_of.timestamp() * 1000)
        runs.append({
            "run_uuid": run_id, "name": labels["mlflow.runName"], "source_type": "LOCAL", "source_name": "bench/site.py",
            "entry_point_name": "", "user_id": "bench", "status": "FINISHED", "start_time": start, "end_time": start + 900,
            "source_version": "", "lifecycle_stage": "active", "artifact_uri": f"{location}/{run_id}/artifacts",
            "experiment_id": int(experiment_id),
        })
        stamp = int((as_of + dt.timedelta(hours=18)).timestamp() * 1000)
        for key, value in values.items():
            row = {"key": key, "value": float(value), "timestamp": stamp, "step": 0, "is_nan": False, "run_uuid": run_id}
            latest.append(row)
            metrics.append(row)
        tags += [{"key": k, "value": v, "run_uuid": run_id} for k, v in labels.items()]
        params += [{"key": k, "value": v, "run_uuid": run_id} for k, v in
                   ((registry.ROLLING_DAYS_PARAM, "30"), (registry.ACCURACY_DROP_PARAM, "0.1"), (registry.DRIFT_P_VALUE_PARAM, "0.01"),
                    (registry.DRIFT_MIN_EFFECT_PARAM, "0.1"), (registry.DRIFT_SHARE_THRESHOLD_PARAM, "0.0"))]
    engine = sa.create_engine(tracking_uri)
    with engine.begin() as conn:
        conn.execute(sa.insert(SqlRun.__table__), runs)
        conn.execute(sa.insert(SqlTag.__table__), tags)
        conn.execute(sa.insert(SqlParam.__table__), params)
        conn.execute(sa.insert(SqlLatestMetric.__table__), latest)
        conn.execute(sa.insert(SqlMetric.__table__), [{**m, "step": 0} for m in metrics])
    engine.dispose()
    return ids


def register_versions(tracking_uri: str, versions: int) -> None:
    """Versions 1..N of model ``titanic``; the newest is ``champion``."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    client.create_registered_model("titanic")
    for version in range(1, versions + 1):
        client.create_model_version("titanic", source=f"file:///nonexistent/model-{version}")
        client.set_model_version_tag("titanic", str(version), registry.HOLDOUT_ACCURACY_TAG, f"{0.82 + 0.003 * (version % 5):.6f}")
    client.set_registered_model_alias("titanic", registry.CHAMPION, str(versions))


# --- timing ----------------------------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


class FakeClock:
    """A monotonic clock the benchmark moves forward."""

    def __init__(self) -> None:
        self.now = time.monotonic()

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def __call__(self) -> float:
        return self.now


class DashClient:
    """Posts callback requests the way the browser does, from the app's callback map."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.http = app.server.test_client()

    def get(self, path: str) -> Any:
        response = self.http.get(path)
        assert response.status_code == 200, (path, response.status_code)
        return response

    def callback(self, output: str, inputs: dict[str, Any], states: dict[str, Any] | None = None,
                 changed: list[str] | None = None) -> Any:
        spec = self.app.callback_map[output]

        def entries(items: list[dict[str, str]], values: dict[str, Any]) -> list[dict[str, Any]]:
            return [{"id": i["id"], "property": i["property"], "value": values.get(f"{i['id']}.{i['property']}")}
                    for i in items]

        outputs = [{"id": o.split(".")[0].lstrip("."), "property": o.split(".")[-1]} for o in output.strip(".").split("...")]
        body = {
            "output": output, "outputs": outputs if len(outputs) > 1 else outputs[0],
            "inputs": entries(spec["inputs"], inputs), "state": entries(spec["state"], states or {}),
            "changedPropIds": changed or list(inputs),
        }
        response = self.http.post("/_dash-update-component", json=body)
        assert response.status_code in (200, 204), (output, response.status_code, response.data[:300])
        return response


CPU: list[float] = []
"""CPU seconds of each timed call, in order (the machine is shared: CPU time moves less
with other people's load than wall time)."""


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start, cpu = time.perf_counter(), time.process_time()
    value = fn()
    CPU.append(time.process_time() - cpu)
    return time.perf_counter() - start, value


def run(days: int, calls: int, naive_repeats: int, seed: int) -> dict[str, Any]:
    import mlflow

    from monitoring_app import ids
    from monitoring_app.app import create_app
    from serverless_ml.settings import resolve_settings

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    results: dict[str, Any] = {
        "benchmark": "site", "days": days, "calls": calls, "seed": seed,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    with tempfile.TemporaryDirectory(prefix="bench-site-") as tmp:
        folder = Path(tmp)
        cwd = os.getcwd()
        os.chdir(folder)  # MLflow's default artifact root lands here
        try:
            uri = f"sqlite:///{folder / 'mlflow.db'}"
            built, _ = _timed(lambda: (mlflow.MlflowClient(tracking_uri=uri).search_experiments(),
                                       write_history(uri, days, seed), register_versions(uri, days // RETRAIN_EVERY_DAYS + 1)))
            results["build_s"] = built
            print(f"  built {days} monitoring runs in {built:.1f} s")
            settings = resolve_settings(store_dir=folder / "store", tracking_uri=uri)

            # Our first load: a started site (warm), an empty cache.
            startup, app = _timed(lambda: create_app(settings, refresh_s=30, warm_up=True))
            results["startup_s"] = startup
            client = DashClient(app)
            overview_output = f"..{ids.OVERVIEW_BODY}.children...{ids.OVERVIEW_STATE}.data.."
            sync = next(k for k in app.callback_map if k.startswith(f"..{ids.URL}.search"))
            search = "?dataset=titanic"

            def router() -> str:  # Dash adds the pages' router at the first request
                return next(k for k in app.callback_map if "_pages_content" in k)

            steps = {
                "index": lambda: client.get(f"/{search}"),
                "layout": lambda: client.get("/_dash-layout"),
                "dependencies": lambda: client.get("/_dash-dependencies"),
                "page": lambda: client.callback(router(), {"_pages_location.pathname": "/", "_pages_location.search": search}),
                "dataset_picker": lambda: client.callback(sync, {f"{ids.URL}.search": search, f"{ids.DATASET}.value": None}),
            }
            first, first_cpu = {}, 0.0
            for name, step in steps.items():
                first[name], response = _timed(step)
                first_cpu += CPU[-1]
                if name == "page":
                    page_json = response.get_json()
            results["first_load"] = {"total_s": sum(first.values()), "cpu_s": first_cpu, "steps_s": first}
            state = page_json["response"]["_pages_content"]["children"]["props"]["children"]
            store = next(c for c in state if isinstance(c, dict) and c.get("props", {}).get("id") == ids.OVERVIEW_STATE)
            overview_state = store["props"]["data"]
            assert overview_state["signature"], "the Overview did not load its data"

            # Callbacks. Refresh ticks come every refresh interval (30 s), longer than the
            # cache's time-to-live: the site's clock is moved past it before each tick.
            data = app.server.config["SML_SITE"].data
            clock = FakeClock()
            data.cache.monotonic = clock
            timings: dict[str, list[float]] = {"refresh_unchanged": [], "refresh_new_run": [], "window": [], "dataset_picker": []}
            cpu: dict[str, list[float]] = {name: [] for name in timings}
            windows = ["30d", "90d", "1y", "all"]
            for i in range(calls):
                inputs = {f"{ids.REFRESH}.n_intervals": i + 1, f"{ids.OVERVIEW_WINDOW}.value": "all"}
                states = {f"{ids.OVERVIEW_STATE}.data": overview_state}
                clock.advance(30.0)
                t, response = _timed(lambda inputs=inputs, states=states: client.callback(overview_output, inputs, states,
                                                                                     [f"{ids.REFRESH}.n_intervals"]))
                assert response.status_code == 204, "an unchanged refresh must not redraw"
                timings["refresh_unchanged"].append(t)
                cpu["refresh_unchanged"].append(CPU[-1])

                write_history(uri, 1, seed, first_day=days + i)  # a new batch arrives (untimed)
                clock.advance(30.0)
                t, response = _timed(lambda inputs=inputs, states=states: client.callback(overview_output, inputs, states,
                                                                                     [f"{ids.REFRESH}.n_intervals"]))
                assert response.status_code == 200
                overview_state = response.get_json()["response"][ids.OVERVIEW_STATE]["data"]
                timings["refresh_new_run"].append(t)
                cpu["refresh_new_run"].append(CPU[-1])

                window_inputs = {**inputs, f"{ids.OVERVIEW_WINDOW}.value": windows[i % len(windows)]}
                t, _ = _timed(lambda window_inputs=window_inputs, states=states: client.callback(
                    overview_output, window_inputs, states, [f"{ids.OVERVIEW_WINDOW}.value"]))
                timings["window"].append(t)
                cpu["window"].append(CPU[-1])

                picked = ("iris", "titanic")[i % 2]
                t, _ = _timed(lambda picked=picked: client.callback(sync, {f"{ids.URL}.search": search, f"{ids.DATASET}.value": picked},
                                                      changed=[f"{ids.DATASET}.value"]))
                timings["dataset_picker"].append(t)
                cpu["dataset_picker"].append(CPU[-1])
            results["callbacks"] = {
                name: {"p50_s": _percentile(v, 50), "p95_s": _percentile(v, 95), "max_s": max(v), "n": len(v),
                       "cpu_p95_s": _percentile(cpu[name], 95)}
                for name, v in timings.items()
            }
            results["cache"] = dict(data.stats)
            data.close()

            # The naive read (the history as built: days runs, plus the ones added above).
            naive, naive_cpu, frame = [], 0.0, None
            # This history's database, whatever an earlier benchmark of the same `python -m
            # bench` process left as MLflow's global URI (it read another database before).
            mlflow.set_tracking_uri(uri)
            for _ in range(naive_repeats):
                t, frame = _timed(lambda: mlflow.search_runs(experiment_names=["titanic-monitoring"]))
                naive.append(t)
                naive_cpu = CPU[-1]
            if frame is not None:
                results["naive"] = {"median_s": statistics.median(naive), "cpu_s": naive_cpu, "runs": len(frame),
                                    "columns": frame.shape[1], "all_s": naive}
                assert len(frame) == days + calls, "MLflow does not read back the runs written"
        finally:
            os.chdir(cwd)
            shutil.rmtree(folder / "mlruns", ignore_errors=True)
    if "naive" in results:
        results["ratio_naive_to_first_load"] = results["naive"]["median_s"] / results["first_load"]["total_s"]
        results["ratio_naive_to_first_load_cpu"] = results["naive"]["cpu_s"] / results["first_load"]["cpu_s"]
    results["load_average"] = os.getloadavg()
    return results


def report(results: dict[str, Any]) -> str:
    def verdict(value: float, goal: float) -> str:
        return "PASS" if value <= goal else "MISS"

    first = results["first_load"]["total_s"]
    lines = [
        f"site: Overview over {results['days']:,} monitoring runs (titanic), {results['calls']} calls per callback",
        f"  start-up (create_app, warm_up=True)   {results['startup_s']:8.3f} s   (once per process)",
        f"  first load, server time              {first:8.3f} s   goal <= {GOALS['first_load_s']:.1f} s   {verdict(first, GOALS['first_load_s'])}"
        f"   (CPU {results['first_load']['cpu_s']:.3f} s)",
        "    " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in results["first_load"]["steps_s"].items()),
    ]
    for name, stats in results["callbacks"].items():
        lines.append(
            f"  callback {name:<22}      p50 {stats['p50_s'] * 1000:6.1f} ms  p95 {stats['p95_s'] * 1000:6.1f} ms"
            f"   goal p95 <= {GOALS['callback_p95_s'] * 1000:.0f} ms   {verdict(stats['p95_s'], GOALS['callback_p95_s'])}"
            f"   (CPU p95 {stats['cpu_p95_s'] * 1000:.0f} ms)"
        )
    naive = results.get("naive")
    if naive:
        lines += [
            f"  naive mlflow.search_runs (all runs)  {naive['median_s']:8.3f} s   ({naive['runs']:,} runs x {naive['columns']} columns)",
            f"  ratio naive / first load             {results['ratio_naive_to_first_load']:8.1f} x"
            f"   (CPU: {results['ratio_naive_to_first_load_cpu']:.1f} x)",
        ]
    lines.append(f"  load average during the run: {', '.join(f'{v:.1f}' for v in results['load_average'])} "
                 f"on {results['machine']['cpus']} CPUs")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench site", description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=DEFAULT_DAYS, help="monitoring runs, one a day (default: %(default)s)")
    parser.add_argument("--calls", type=int, default=DEFAULT_CALLS, help="calls per callback (default: %(default)s)")
    parser.add_argument("--naive-repeats", type=int, default=1, help="repetitions of the naive read; 0 skips it (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the synthetic history (default: %(default)s)")
    args = parser.parse_args(argv)
    results = run(args.days, args.calls, args.naive_repeats, args.seed)
    print(report(results))
    write_results("site", results)
    missed = results["first_load"]["total_s"] > GOALS["first_load_s"] or any(
        s["p95_s"] > GOALS["callback_p95_s"] for s in results["callbacks"].values()
    )
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
