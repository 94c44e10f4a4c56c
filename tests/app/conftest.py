"""Browser tests: the monitoring site (and the MLflow UI) in a real headless Chromium.

Playwright drives Debian's ``/usr/bin/chromium`` (``make test`` installs it when missing;
``playwright install`` is never needed). The browser may only talk to 127.0.0.1: every
other request is refused and recorded, and a test that caused one fails.

One trained world is built per session (Titanic with a drift episode and a retrain,
Iris whose last batch is live rows awaiting their labels, and a spec-only dataset whose
categories hold HTML), in a template folder; tests
that write (a new monitoring run) work on their own copy. Screenshots go to
``test-output/screenshots/``; with ``SML_DOCS_SCREENSHOTS=1`` the Titanic ones are also
copied to ``docs/`` for the README.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import shutil
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest

from serverless_ml.datasets import DatasetSpec, get_dataset
from serverless_ml.datasets.sources import load_source
from serverless_ml.datasets.synthetic import parse_drift
from serverless_ml.feature_store.local import LocalFeatureStore
from serverless_ml.pipelines.features import add_daily_rows, backfill
from serverless_ml.pipelines.infer import InferOptions, infer
from serverless_ml.pipelines.train import TrainOptions, train
from serverless_ml.settings import Settings, resolve_settings
from worlds import copy_database, insert_live_rows

REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO_ROOT / "test-output" / "screenshots"
DOCS = REPO_ROOT / "docs"
LOCAL_HOSTS = ("127.0.0.1", "localhost")
START = dt.date(2024, 3, 1)
TITANIC_DAYS, TITANIC_ROWS, DRIFT_DAY, RETRAIN_DAY = 6, 30, 3, 4
IRIS_DAYS, IRIS_ROWS = 4, 15
IRIS_LIVE_DAY = IRIS_DAYS - 1
"""The Iris batch of live rows whose labels have not arrived (estimated, not realized)."""
SHAPES_COLOURS = ("<b>red</b>", "<img src=x onerror=window.__pwned=1>", "blue & green")


def day(i: int) -> dt.date:
    return START + dt.timedelta(days=i)


def noon(when: dt.date) -> dt.datetime:
    return dt.datetime.combine(when, dt.time(12), tzinfo=dt.timezone.utc)


def score_day(
    spec: DatasetSpec, store: LocalFeatureStore, settings: Settings, i: int, rows: int, drift: str = "", live: bool = False
) -> str:
    """Rows for day ``i`` (``live``: live rows without their labels) and the
    batch-inference run that scores them; returns its id."""
    if live:
        insert_live_rows(spec, store, day(i), rows)
    else:
        add_daily_rows(spec, store, day(i), n=rows, seed=0, drift=parse_drift(drift, spec))
    report = infer(spec, store, settings, InferOptions(as_of=day(i), figures=False), noon(day(i)))
    mlflow.set_tracking_uri(None)
    assert report.run_id is not None
    return report.run_id


def write_shapes_dataset(folder: Path) -> Path:
    """A spec-only dataset (a YAML spec and its CSV) whose categories hold HTML."""
    rng = np.random.default_rng(0)
    n = 160
    kind = np.where(np.arange(n) % 2 == 0, "triangle", "square")
    width = np.clip(np.where(kind == "triangle", rng.normal(3, 1, n), rng.normal(6.5, 1, n)), 0, 10).round(2)
    sides = np.where(kind == "triangle", 3, 4) + rng.integers(0, 2, n)
    colour = rng.choice(np.array(SHAPES_COLOURS, dtype=object), n)
    colour[rng.random(n) < 0.1] = None
    pd.DataFrame({"width": width, "sides": sides, "colour": colour, "kind": kind}).to_csv(folder / "shapes.csv", index=False)
    categories = ", ".join(f"'{c}'" for c in SHAPES_COLOURS)
    (folder / "shapes.yaml").write_text(
        "name: shapes\n"
        "description: Shapes <i>drawn</i> by hand & measured\n"
        "source: {path: shapes.csv}\n"
        "label: kind\n"
        "classes: [triangle, square]\n"
        "primary_key: null\n"
        "features:\n"
        "  width: {type: double, min: 0, max: 10, description: 'width (cm)'}\n"
        "  sides: {type: bigint, min: 3, max: 8}\n"
        f"  colour: {{type: string, categories: [{categories}], nullable: true}}\n",
        encoding="utf-8",
    )
    return folder / "shapes.yaml"


def promote_copy(tracking_uri: str, name: str) -> None:
    """A retrain, as the registry sees it, in a second instead of a training run: a new
    version of the champion's model files, with its tags, promoted to ``champion``."""
    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    champion = client.get_model_version_by_alias(name, "champion")
    version = client.create_model_version(name, champion.source, run_id=champion.run_id, tags=champion.tags)
    client.set_model_version_tag(name, version.version, "promoted_at", dt.datetime.now(dt.timezone.utc).isoformat())
    client.set_registered_model_alias(name, "champion", version.version)
    client.set_registered_model_alias(name, "challenger", version.version)


@dataclasses.dataclass(frozen=True)
class World:
    """A folder with a feature store, a tracking database and a spec file."""

    folder: Path
    shapes_spec: Path

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.folder / 'mlflow.db'}"

    @property
    def settings(self) -> Settings:
        return resolve_settings(store_dir=self.folder / "store", tracking_uri=self.tracking_uri)

    def copy_to(self, target: Path) -> World:
        shutil.copytree(self.folder / "store", target / "store")
        copy_database(self.folder / "mlflow.db", target / "mlflow.db")
        return World(target, self.shapes_spec)


@pytest.fixture(scope="session")
def site_world(tmp_path_factory: pytest.TempPathFactory, mlflow_template_db: Path, data_dir: Path) -> World:
    """Titanic: six days of batches with a drift episode on day 3 and a new champion
    (version 2) from day 4; Iris: four days, the last of live rows awaiting their labels;
    shapes: trained, never scored."""
    folder = tmp_path_factory.mktemp("site_world")
    shutil.copyfile(mlflow_template_db, folder / "mlflow.db")
    shapes_path = write_shapes_dataset(folder)
    world = World(folder, shapes_path)
    store = LocalFeatureStore(folder / "store")
    settings = world.settings
    quick = TrainOptions(trials=2, seed=1, folds=2, quiet=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setenv("MLFLOW_TRACKING_URI", settings.tracking_uri)
        titanic, iris, shapes = get_dataset("titanic"), get_dataset("iris"), get_dataset(str(shapes_path))
        for spec in (titanic, iris):
            backfill(spec, store, load_source(spec, None, data_dir))
        backfill(shapes, store, load_source(shapes, str(folder / "shapes.csv")))
        train(titanic, store, settings, quick)
        for i in range(TITANIC_DAYS):
            if i == RETRAIN_DAY:
                promote_copy(settings.tracking_uri, "titanic")
            score_day(titanic, store, settings, i, TITANIC_ROWS, drift="age+30,fare*4" if i == DRIFT_DAY else "")
        train(iris, store, settings, quick)
        for i in range(IRIS_DAYS):
            score_day(iris, store, settings, i, IRIS_ROWS, live=i == IRIS_LIVE_DAY)
        train(shapes, store, settings, dataclasses.replace(quick, trials=1))
    mlflow.set_tracking_uri(None)
    return world


class PageProblems:
    """What went wrong in the browser: console errors, uncaught exceptions, failed
    requests and requests that tried to leave this machine."""

    def __init__(self) -> None:
        self.console: list[str] = []
        self.exceptions: list[str] = []
        self.failed: list[str] = []
        self.external: list[str] = []

    def all(self) -> list[str]:
        return [*self.console, *self.exceptions, *self.failed, *self.external]


@pytest.fixture
def own_site_world(site_world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    """A copy of :func:`site_world` for a test that writes to it (scores a new batch), the
    working directory and ``MLFLOW_TRACKING_URI`` set to it."""
    world = site_world.copy_to(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", world.tracking_uri)
    return world


@pytest.fixture(scope="module")
def browser_context(browser: Any) -> Iterator[Any]:
    """One browser context per test module (1280x900), so its HTTP cache serves Dash's
    and plotly's scripts after the first page."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    yield context
    context.close()


@pytest.fixture
def page(browser_context: Any) -> Iterator[tuple[Any, PageProblems]]:
    """A fresh browser page and the problems it records."""
    problems = PageProblems()
    tab = browser_context.new_page()

    def local(url: str) -> bool:
        return url.startswith(("data:", "blob:", "about:")) or urllib.parse.urlsplit(url).hostname in LOCAL_HOSTS

    tab.on("request", lambda r: None if local(r.url) else problems.external.append(r.url))
    tab.on("console", lambda m: problems.console.append(f"{m.type}: {m.text}") if m.type == "error" else None)
    tab.on("pageerror", lambda e: problems.exceptions.append(str(e)))
    # A request the page's own navigation cancels (net::ERR_ABORTED) is not a failure.
    tab.on("requestfailed", lambda r: problems.failed.append(f"{r.url}: {r.failure}")
           if local(r.url) and "ERR_ABORTED" not in str(r.failure) else None)
    tab.set_default_timeout(30_000)
    yield tab, problems
    tab.close()


@pytest.fixture(scope="session")
def serve() -> Iterator[Callable[[Any], str]]:
    """``serve(app)`` runs a Dash app's WSGI server on a free port in a thread; returns
    its base URL. Servers stop at the end of the session."""
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    servers = []

    def start(app: Any) -> str:
        server = make_server("127.0.0.1", 0, app.server, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for server in servers:
        server.shutdown()


def settle_page(tab: Any) -> None:
    """Wait until Dash has rendered the page and answered its callbacks."""
    tab.wait_for_load_state("networkidle")
    tab.wait_for_function("() => !document.querySelector('[data-dash-is-loading=\"true\"]')")
    tab.wait_for_load_state("networkidle")


def save_screenshot(tab: Any, name: str, docs: bool = False) -> Path:
    """Save a full-page screenshot under test-output/ (and to docs/ when asked for)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    tab.screenshot(path=str(path), full_page=True)
    if docs and os.environ.get("SML_DOCS_SCREENSHOTS") == "1":
        DOCS.mkdir(exist_ok=True)
        shutil.copyfile(path, DOCS / f"site-{name}.png")
    return path


@pytest.fixture(scope="session")
def settle() -> Callable[[Any], None]:
    """:func:`settle_page`, for tests (test modules do not import conftest)."""
    return settle_page


@pytest.fixture(scope="session")
def screenshot() -> Callable[..., Path]:
    """:func:`save_screenshot`, for tests."""
    return save_screenshot


@pytest.fixture(scope="session")
def world_dates() -> dict[str, Any]:
    """The shape of :func:`site_world`'s history, for tests."""
    return {"start": START, "titanic_days": TITANIC_DAYS, "titanic_rows": TITANIC_ROWS, "drift_day": DRIFT_DAY,
            "retrain_day": RETRAIN_DAY, "iris_days": IRIS_DAYS, "iris_rows": IRIS_ROWS, "score_day": score_day,
            "iris_live_day": IRIS_LIVE_DAY,
            "day": day, "shapes_colours": SHAPES_COLOURS}
