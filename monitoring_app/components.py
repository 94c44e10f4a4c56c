"""Pieces shared by the pages: notices instead of tracebacks, headline cards, class badges,
simple tables, labelled controls, the page frame with its per-page state store, and the
steps every page's layout and callbacks take to find their dataset."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import dash
from dash import dcc, html

from monitoring_app import analysis
from monitoring_app.tracking_access import TrackingUnavailable
from monitoring_app.icons import class_icon_uri
from monitoring_app.site import Site, UnknownDataset, current_site
from serverless_ml.datasets.spec import DatasetSpec
from serverless_ml.errors import NotFoundError, SmlError

log = logging.getLogger(__name__)
GRAPH_CONFIG: dcc.Graph.Config = {"displaylogo": False, "responsive": True}


def notice(message: str, kind: str = "info") -> html.Div:
    """A one-line message in place of content (``info``: nothing to show yet; ``error``:
    something failed). The message is text: React escapes it."""
    return html.Div(message, className=f"notice notice-{kind}", role="alert" if kind == "error" else "status")


def problem_notice(exc: BaseException) -> html.Div:
    """The notice for an exception raised while reading data: expected failures in their
    own words, anything else as one line (the traceback goes to the server log only)."""
    if isinstance(exc, TrackingUnavailable):
        return notice(f"{exc} - check that the tracking server or database is running and MLFLOW_TRACKING_URI points at it.", "error")
    if isinstance(exc, NotFoundError):
        return notice(str(exc), "info")
    if isinstance(exc, (SmlError, UnknownDataset)):
        return notice(str(exc).strip("'\""), "error")
    log.exception("page failed")
    return notice(f"this part of the page failed ({type(exc).__name__}); the server log has the details", "error")


def guarded(render: Callable[[], Any]) -> Any:
    """``render()``, or a notice when it raises."""
    try:
        return render()
    except dash.exceptions.PreventUpdate:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure becomes a notice, never a traceback
        return problem_notice(exc)


def triggered_id() -> Any:
    """The id of the input that fired the running callback (``None`` outside a callback,
    e.g. when a test calls it directly and says what fired with ``trigger=``)."""
    try:
        return dash.ctx.triggered_id
    except Exception:  # noqa: BLE001 - no callback context
        return None


def token(value: object) -> str:
    """A signature as a string that survives a round trip through a ``dcc.Store``."""
    return json.dumps(value, default=str)


def register_page(module: str, path: str, title: str, order: int, layout: Callable[..., Any]) -> None:
    """Register a page module with Dash: its path, its name in the navigation (``order``
    places it) and the browser title ``<title> - serverless-ml``."""
    dash.register_page(module, path=path, name=title, title=f"{title} - serverless-ml", order=order, layout=layout)


def page(title: str, *children: Any, state_id: str | None = None, state: dict[str, Any] | None = None) -> html.Div:
    """A page: its title, a ``dcc.Store`` with the page's state (dataset and the data
    signature it shows), then its content."""
    parts: list[Any] = [html.H2(title)]
    if state_id is not None:
        parts.append(dcc.Store(id=state_id, data=state or {}))
    parts.extend(children)
    return html.Div(parts, className="page")


def resolve_dataset(site: Site, dataset: str | None) -> tuple[DatasetSpec | None, html.Div | None]:
    """The page's dataset, or a notice saying the URL names an unknown one."""
    try:
        return site.spec(dataset), None
    except UnknownDataset as exc:
        return None, notice(str(exc).strip("'\""), "error")


def page_dataset(dataset: str | None) -> tuple[Site, DatasetSpec | None, html.Div | None]:
    """The site serving the request and the dataset a page's URL (or state) names, or the
    notice saying the name is unknown."""
    site = current_site()
    spec, problem = resolve_dataset(site, dataset)
    return site, spec, problem


def dataset_page(
    title: str, dataset: str | None, state_id: str, content: Callable[[Site, DatasetSpec, dict[str, Any]], Any]
) -> html.Div:
    """A page whose content reads data: ``content(site, spec, state)`` under the title (a
    notice when it fails), and the page's state ``{"dataset": name}``, to which
    ``content`` may add (say, the signature of the data it shows)."""
    site, spec, problem = page_dataset(dataset)
    if spec is None:
        return page(title, problem)
    state: dict[str, Any] = {"dataset": spec.name}
    return page(title, html.Div(guarded(lambda: content(site, spec, state))), state_id=state_id, state=state)


def dataset_callback(state: dict[str, Any] | None, draw: Callable[[Site, DatasetSpec], Any]) -> Any:
    """A callback's output for the dataset the page's state names: ``draw(site, spec)``,
    or a notice when the dataset is unknown or drawing fails."""
    site, spec, problem = page_dataset((state or {}).get("dataset"))
    if spec is None:
        return problem
    return guarded(lambda: draw(site, spec))


def feature_callback(
    feature: str | None, state: dict[str, Any] | None, draw: Callable[[Site, DatasetSpec, str], Any]
) -> Any:
    """:func:`dataset_callback` for one feature of the dataset: ``draw(site, spec,
    feature)``; nothing changes (PreventUpdate) when ``feature`` is not one of it."""

    def checked(site: Site, spec: DatasetSpec) -> Any:
        if not feature or feature not in spec.feature_names:
            raise dash.exceptions.PreventUpdate
        return draw(site, spec, feature)

    return dataset_callback(state, checked)


def refresh_target(state: dict[str, Any] | None) -> tuple[Site, DatasetSpec, dict[str, Any]]:
    """For a refresh callback: the site, the dataset the page's state names and a copy of
    the state to update; nothing changes (PreventUpdate) when the dataset is unknown."""
    state = dict(state or {})
    site, spec, _ = page_dataset(state.get("dataset"))
    if spec is None:
        raise dash.exceptions.PreventUpdate
    return site, spec, state


@contextlib.contextmanager
def kept_on_failure() -> Iterator[None]:
    """Around a refresh callback's reads: when one fails the page keeps what it shows
    (PreventUpdate) and the next tick tries again."""
    try:
        yield
    except dash.exceptions.PreventUpdate:
        raise
    except Exception:  # noqa: BLE001 - the page keeps what it shows; the next tick tries again
        raise dash.exceptions.PreventUpdate from None


def control(label: str, widget: Any) -> html.Div:
    """A row of controls: ``label`` and the dropdown or radio items it names."""
    return html.Div([html.Span(f"{label} ", className="control-label"), widget], className="controls")


def feature_picker(component_id: str, spec: DatasetSpec, value: str) -> html.Div:
    """A control choosing one of the dataset's features."""
    return control("Feature", dcc.Dropdown(id=component_id, options=[{"label": f, "value": f} for f in spec.feature_names],
                                           value=value, clearable=False, className="dropdown"))


def card(label: str, value: Any, detail: str | None = None, card_id: str | None = None, class_name: str = "") -> html.Div:
    children = [html.Div(label, className="card-label"), html.Div(value, className="card-value")]
    if detail:
        children.append(html.Div(detail, className="card-detail"))
    attributes: dict[str, Any] = {"id": card_id} if card_id else {}
    return html.Div(children, className=f"card {class_name}".strip(), **attributes)


def class_badge(spec: DatasetSpec, value: Any, size: int = 40) -> html.Span:
    """A class's icon (drawn by the site) and name; an unknown value says so."""
    if value is None:
        return html.Span("not known yet", className="badge badge-unknown")
    name = analysis.class_label(value, spec)
    return html.Span(
        [html.Img(src=class_icon_uri(spec, value), alt=name, width=size, height=size, className="class-icon"),
         html.Span(name, className="badge-name")],
        className="badge",
    )


def simple_table(rows: Iterable[dict[str, Any]], columns: Sequence[str], table_id: str | None = None) -> html.Table:
    """An HTML table of text cells (values that are components are kept as they are)."""
    head = html.Thead(html.Tr([html.Th(c) for c in columns]))
    body = html.Tbody([
        html.Tr([html.Td(_cell(row.get(c))) for c in columns]) for row in rows
    ])
    attributes: dict[str, Any] = {"id": table_id} if table_id else {}
    return html.Table([head, body], className="table", **attributes)


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (str, int)):
        return str(value)
    return value


def link_or_text(text: str, url: str | None) -> Any:
    """A link to the MLflow UI when it is configured, else the plain text."""
    if url:
        return html.A(text, href=url, target="_blank", rel="noopener noreferrer")
    return html.Code(text)


def fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None or value != value else format(value, spec)
