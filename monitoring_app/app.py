"""The app factory: one Dash app per call, with its own settings, datasets and cache.

``create_app()`` builds the shell (dataset picker, navigation, refresh timer), registers
the pages (``use_pages=True``; each page module registers itself) and binds every
callback to this app. ``create_server()`` is the WSGI entry point for gunicorn; it reads
its configuration from the environment.
"""

from __future__ import annotations

import datetime as dt
import os
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import dash
from dash import Input, Output, dcc, html

from monitoring_app import ids
from monitoring_app.cache import DEFAULT_CACHE_TTL_S
from monitoring_app.data_access import SiteData
from monitoring_app.hardening import harden
from monitoring_app.options import SiteOptions
from monitoring_app.pages import PAGES
from monitoring_app.run_readers import sqlite_path
from monitoring_app.site import SITE_KEY, Site
from monitoring_app.tracking_access import apply_rest_client_timeouts
from serverless_ml import defaults, redaction, sqlite_exit, tracking
from serverless_ml.datasets import BUILTIN, DatasetSpec, get_dataset
from serverless_ml.errors import SpecError
from serverless_ml.settings import Settings, resolve_settings

DEFAULT_HOST = defaults.SITE_HOST
DEFAULT_PORT = defaults.SITE_PORT
DEFAULT_REFRESH_S = defaults.SITE_REFRESH_S
ENV_MLFLOW_UI_URL = "SML_MLFLOW_UI_URL"
ENV_DATASETS = "SML_DATASETS"
"""Spec files for :func:`create_server`, separated by ``os.pathsep`` (``:``)."""
TITLE = "serverless-ml monitoring"


def _specs(datasets: Sequence[str | Path | DatasetSpec]) -> dict[str, DatasetSpec]:
    """The built-ins, then the given specs (names must not clash)."""
    out = dict(BUILTIN)
    for item in datasets:
        spec = item if isinstance(item, DatasetSpec) else get_dataset(str(item))
        if spec.name in out and out[spec.name] is not spec:
            raise SpecError(f"dataset '{spec.name}' is given twice (or clashes with a built-in dataset)")
        out[spec.name] = spec
    return out


def create_app(
    settings: Settings | None = None,
    datasets: Sequence[str | Path | DatasetSpec] = (),
    *,
    mlflow_ui_url: str | None = None,
    refresh_s: float = DEFAULT_REFRESH_S,
    cache_ttl_s: float = DEFAULT_CACHE_TTL_S,
    clock: Callable[[], dt.datetime] | None = None,
    warm_up: bool = False,
) -> dash.Dash:
    """Build the monitoring site.

    Args:
        settings: Tracking URI and feature store (default: :func:`resolve_settings`, i.e.
            ``MLFLOW_TRACKING_URI``, ``SML_STORE_DIR``...).
        datasets: Spec files (or specs) shown besides the built-in datasets.
        mlflow_ui_url: Base URL of the MLflow UI for run links (default:
            ``$SML_MLFLOW_UI_URL``; none: no links).
        refresh_s: Seconds between the pages' refreshes.
        cache_ttl_s: Seconds a value read from MLflow or the store is reused unchecked.
        clock: The current time (default: now, UTC). "Days since retrain" does not use it:
            it is counted in batch dates.
        warm_up: Import MLflow and open the tracking store now rather than on the first
            request (seconds of start-up; a failure is logged, not raised).

    Returns:
        The Dash app; ``app.server`` is its Flask (WSGI) application. Debug is off.
    """
    SiteOptions(refresh_s=refresh_s)  # a bad period fails in one line, as `sml dashboard --refresh` does
    settings = settings or resolve_settings()
    # Download progress bars would fill the server log.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if settings.tracking_uri.startswith(("http://", "https://")):
        apply_rest_client_timeouts()
    # A tracking database that is down or damaged: an error within seconds, not minutes.
    tracking.bound_database_retries(settings.tracking_uri)
    database = sqlite_path(settings.tracking_uri)
    if database is not None:
        # The site holds its connections while it serves: when it stops, the commits it
        # saw in mlflow.db-wal go into mlflow.db (a copy of the file alone then has them).
        sqlite_exit.checkpoint_at_exit(database)
    mlflow_ui_url = mlflow_ui_url if mlflow_ui_url is not None else (os.environ.get(ENV_MLFLOW_UI_URL) or None)
    # The site's log never shows a password of the URIs it was given.
    redaction.remember(settings.tracking_uri, mlflow_ui_url)
    redaction.install_log_scrubber()
    specs = _specs(datasets)
    site = Site(
        settings=settings,
        datasets=specs,
        data=SiteData(settings, ttl_s=cache_ttl_s),
        default_dataset=defaults.DATASET if defaults.DATASET in specs else next(iter(specs)),
        refresh_s=refresh_s,
        mlflow_ui_url=mlflow_ui_url,
        clock=clock or (lambda: dt.datetime.now(dt.timezone.utc)),
    )
    app = dash.Dash(
        __name__,
        use_pages=True,
        pages_folder="",  # the pages register themselves below, bound to this app
        assets_folder=str(Path(__file__).parent / "assets"),
        include_assets_files=False,
        title=TITLE,
        # None: the tab's title stays put during callbacks (documented; dash annotates it `str`)
        update_title=None,  # type: ignore[arg-type]
        suppress_callback_exceptions=True,  # pages come and go; their ids live in monitoring_app.ids
        serve_locally=True,
    )
    app.server.config[SITE_KEY] = site
    harden(app)
    app.index_string = INDEX.replace("{%css_inline%}", STYLE)
    for module in PAGES:
        module.register(app)
    app.layout = lambda: shell(site)
    app.callback(
        Output(ids.URL, "search"),
        Output(ids.DATASET, "value"),
        *[Output(ids.nav(module.__name__.rsplit(".", 1)[-1]), "href") for module in PAGES],
        Input(ids.URL, "search"),
        Input(ids.DATASET, "value"),
    )(sync_dataset)
    app.callback(
        *[Output(ids.nav(module.__name__.rsplit(".", 1)[-1]), "className") for module in PAGES],
        Input(ids.URL, "pathname"),
    )(highlight_nav)
    if warm_up:
        site.data.warm_up()
    return app


def create_server() -> Any:
    """The WSGI application for gunicorn (``'monitoring_app:create_server()'``).

    Reads ``MLFLOW_TRACKING_URI``, ``SML_STORE_DIR``, ``SML_FEATURE_STORE``,
    ``SML_MLFLOW_UI_URL`` and ``SML_DATASETS`` (spec files separated by ``:``).
    """
    extra = [p for p in os.environ.get(ENV_DATASETS, "").split(os.pathsep) if p.strip()]
    return create_app(datasets=extra, warm_up=True).server


def nav_href(path: str, dataset: str) -> str:
    return f"{path}?{urllib.parse.urlencode({'dataset': dataset})}"


def shell(site: Site) -> html.Div:
    """What surrounds every page: header with the dataset picker and navigation, the page,
    the refresh timer and a footer naming the (redacted) sources."""
    options = [{"label": f"{name}" + (" (spec file)" if spec.spec_path else ""), "value": name}
               for name, spec in site.datasets.items()]
    nav = [
        dcc.Link(module.TITLE, href=nav_href(module.PATH, site.default_dataset),
                 id=ids.nav(module.__name__.rsplit(".", 1)[-1]), className="nav-link")
        for module in PAGES
    ]
    return html.Div([
        dcc.Location(id=ids.URL, refresh="callback-nav"),
        dcc.Interval(id=ids.REFRESH, interval=int(site.refresh_s * 1000)),
        html.Header([
            html.Div([html.Span("serverless-ml", className="brand"), html.Span(" monitoring", className="brand-sub")]),
            html.Div([html.Label("Dataset", className="control-label"),
                      dcc.Dropdown(id=ids.DATASET, options=options, value=None, clearable=False,
                                   searchable=False, className="dropdown dataset-picker")], className="picker"),
        ], className="header"),
        html.Nav(nav, className="nav"),
        html.Main(dash.page_container, className="main"),
        html.Footer([
            f"Tracking: {site.data.tracking_label}. Feature store: {site.settings.feature_store}"
            f" ({site.settings.store_dir}). Refreshes every {site.refresh_s:g} s.",
            *([f" MLflow UI: {site.mlflow_ui_label}."] if site.mlflow_ui_label else []),
        ], className="footer"),
    ], className="shell")


def sync_dataset(search: str | None, picked: str | None, trigger: str | None = None) -> tuple[Any, ...]:
    """Keep the URL's ``?dataset=`` and the picker in step, and the navigation links on the
    URL's dataset. Choosing a dataset navigates to the same page for that dataset."""
    from monitoring_app.components import triggered_id
    from monitoring_app.site import current_site

    site = current_site()
    params = urllib.parse.parse_qs((search or "").lstrip("?"))
    in_url = params["dataset"][0] if params.get("dataset") else None
    if (trigger or triggered_id()) == ids.DATASET and picked and picked != in_url:
        return ("?" + urllib.parse.urlencode({"dataset": picked}), dash.no_update,
                *[nav_href(m.PATH, picked) for m in PAGES])
    dataset = in_url or site.default_dataset
    known = dataset in site.datasets
    hrefs = [nav_href(m.PATH, dataset if known else site.default_dataset) for m in PAGES]
    return dash.no_update, (dataset if known else None), *hrefs


NAV_CLASS = "nav-link"
NAV_ACTIVE_CLASS = "nav-link nav-link-active"


def highlight_nav(pathname: str | None) -> list[str]:
    """The navigation links' classes: the link of the page shown is marked as active."""
    path = "/" + (pathname if isinstance(pathname, str) else "").strip("/")
    return [NAV_ACTIVE_CLASS if module.PATH == path else NAV_CLASS for module in PAGES]


INDEX = """<!DOCTYPE html>
<html lang="en">
    <head>
        {%metas%}
        <title>{%title%}</title>
        {%favicon%}
        {%css%}
        <style>{%css_inline%}</style>
    </head>
    <body>
        {%app_entry%}
        <footer>
            {%config%}
            {%scripts%}
            {%renderer%}
        </footer>
    </body>
</html>"""

STYLE = """
body { margin: 0; font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #111827;
       background: #f9fafb; }
.shell { max-width: 1280px; margin: 0 auto; padding: 0 16px 24px; }
.header { display: flex; justify-content: space-between; align-items: center; padding: 14px 0 8px; gap: 16px; }
.brand { font-weight: 700; font-size: 1.3rem; } .brand-sub { color: #6b7280; font-size: 1.3rem; }
.picker { display: flex; align-items: center; gap: 8px; min-width: 260px; }
.dataset-picker { min-width: 200px; }
.nav { display: flex; flex-wrap: wrap; gap: 4px; border-bottom: 1px solid #e5e7eb; padding-bottom: 8px; }
.nav-link { padding: 6px 10px; border-radius: 6px; color: #1f2937; text-decoration: none; }
.nav-link:hover { background: #e5e7eb; }
.nav-link-active { background: #dbeafe; color: #1e3a8a; font-weight: 600; box-shadow: inset 0 -2px 0 #1d4ed8; }
.nav-link-active:hover { background: #bfdbfe; }
.main { padding-top: 8px; min-height: 60vh; }
.page h2 { margin: 8px 0 12px; font-size: 1.4rem; }
.page h3 { margin: 16px 0 8px; font-size: 1.1rem; }
.controls { display: flex; align-items: center; gap: 8px; margin: 8px 0; flex-wrap: wrap; }
.control-label { color: #4b5563; font-size: 0.9rem; }
.controls label { margin-right: 12px; }
.dropdown { min-width: 220px; } .dropdown-wide { min-width: 520px; }
.cards { display: flex; gap: 12px; flex-wrap: wrap; margin-bottom: 12px; }
.card { background: #fff; border: 1px solid #e5e7eb; border-radius: 8px; padding: 10px 14px; min-width: 150px;
        flex: 1 1 0; }
.card-wide { flex-grow: 1.5; }
.card-label { color: #6b7280; font-size: 0.8rem; text-transform: uppercase; letter-spacing: 0.03em; }
.card-value { font-size: 1.5rem; font-weight: 600; margin: 2px 0; }
.card-detail, .muted { color: #6b7280; font-size: 0.9rem; }
.row { display: flex; gap: 12px; flex-wrap: wrap; align-items: flex-start; }
.graph-main { flex: 3 1 600px; min-width: 0; background: #fff; border: 1px solid #e5e7eb; border-radius: 8px; }
.graph-half { flex: 1 1 480px; min-width: 0; background: #fff; border: 1px solid #e5e7eb; border-radius: 8px; }
.graph-wide { background: #fff; border: 1px solid #e5e7eb; border-radius: 8px; }
.alerts { margin: 10px 0 4px; }
.alerts h3 { margin: 4px 0 6px; }
.alert-list { list-style: none; margin: 0; padding: 0; background: #fff; border: 1px solid #e5e7eb; border-radius: 8px;
              max-height: 320px; overflow-y: auto; }
.alert-list li { display: flex; gap: 10px; align-items: baseline; padding: 6px 10px; border-top: 1px solid #f3f4f6;
                 font-size: 0.9rem; }
.alert-list li:first-child { border-top: 0; }
.alert-date { font-variant-numeric: tabular-nums; color: #374151; white-space: nowrap; }
.alert-kind { border-radius: 10px; padding: 0 8px; font-size: 0.8rem; font-weight: 600; white-space: nowrap; }
.alert-kind-accuracy { background: #fee2e2; color: #991b1b; }
.alert-kind-drift { background: #fef3c7; color: #92400e; }
.alert-kind-other { background: #e5e7eb; color: #374151; }
.export { display: flex; align-items: center; gap: 12px; margin: 8px 0; }
.graph-third { flex: 1 1 340px; min-width: 0; background: #fff; border: 1px solid #e5e7eb; border-radius: 8px; }
.side { flex: 1 1 260px; }
.latest { flex: 1 1 260px; background: #fff; border: 1px solid #e5e7eb; border-radius: 8px; padding: 12px; }
.latest h3 { margin-top: 0; }
.latest-pair { display: flex; gap: 24px; margin: 12px 0; }
.latest-side { display: flex; flex-direction: column; gap: 4px; }
.badge { display: inline-flex; align-items: center; gap: 8px; font-weight: 600; }
.badge-unknown { color: #6b7280; font-weight: 400; }
.verdict { font-weight: 600; } .verdict-correct { color: #15803d; } .verdict-wrong { color: #b91c1c; }
.verdict-label { color: #6b7280; }
.notice { padding: 12px 14px; border-radius: 8px; margin: 8px 0; }
.notice-info { background: #eff6ff; border: 1px solid #bfdbfe; color: #1e3a8a; }
.notice-error { background: #fef2f2; border: 1px solid #fecaca; color: #991b1b; }
.table { border-collapse: collapse; background: #fff; font-size: 0.9rem; }
.table th, .table td { border: 1px solid #e5e7eb; padding: 6px 10px; text-align: left; vertical-align: top; }
.table th { background: #f3f4f6; }
.table-wrap { overflow-x: auto; }
.alias { display: inline-block; padding: 1px 8px; margin-right: 4px; border-radius: 10px; background: #e5e7eb;
         font-size: 0.8rem; }
.alias-champion { background: #fef3c7; color: #92400e; } .alias-challenger { background: #e0e7ff; color: #3730a3; }
.form { display: grid; grid-template-columns: repeat(auto-fill, minmax(240px, 1fr)); gap: 12px; margin: 12px 0; }
.field { background: #fff; border: 1px solid #e5e7eb; border-radius: 8px; padding: 10px; }
.field-label { font-weight: 600; display: block; margin-bottom: 4px; }
.field-hint { color: #6b7280; font-size: 0.8rem; margin-top: 4px; }
.field-error { color: #b91c1c; font-size: 0.85rem; margin-top: 4px; min-height: 1em; }
.input { width: 100%; box-sizing: border-box; padding: 6px 8px; border: 1px solid #d1d5db; border-radius: 6px; }
.button { background: #2563eb; color: #fff; border: 0; border-radius: 6px; padding: 8px 18px; font-size: 1rem;
          cursor: pointer; }
.button-secondary { background: #fff; color: #1f2937; border: 1px solid #d1d5db; font-size: 0.9rem; padding: 6px 12px; }
.result { margin-top: 12px; }
.answer { display: flex; align-items: center; gap: 8px; font-size: 1.1rem; }
.footer { margin-top: 24px; color: #6b7280; font-size: 0.8rem; border-top: 1px solid #e5e7eb; padding-top: 8px; }
"""
