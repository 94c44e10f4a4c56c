"""Pieces shared by the pages: notices instead of tracebacks, headline cards, class badges,
simple tables, and the page frame with its per-page state store."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any

import dash
from dash import dcc, html

from monitoring_app import analysis
from monitoring_app.data_access import TrackingUnavailable
from monitoring_app.icons import class_icon_uri
from monitoring_app.site import Site, UnknownDataset
from serverless_ml.datasets.spec import DatasetSpec
from serverless_ml.errors import NotFoundError, SmlError

log = logging.getLogger(__name__)
GRAPH_CONFIG = {"displaylogo": False, "responsive": True}


def notice(message: str, kind: str = "info") -> html.Div:
    """A one-line message in place of content (``info``: nothing to show yet; ``error``:
    something failed). The message is text: React escapes it."""
    return html.Div(message, className=f"notice notice-{kind}", role="alert" if kind == "error" else "status")


def problem_notice(exc: BaseException) -> html.Div:
    """The notice for an exception raised while reading data: expected failures in their
    own words, anything else as one line (the traceback goes to the server log only)."""
    if isinstance(exc, TrackingUnavailable):
        return notice(f"{exc} - check that the tracking server is running and MLFLOW_TRACKING_URI points at it.", "error")
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


def token(value: Hashable) -> str:
    """A signature as a string that survives a round trip through a ``dcc.Store``."""
    return json.dumps(value, default=str)


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


def card(label: str, value: Any, detail: str | None = None, card_id: str | None = None) -> html.Div:
    children = [html.Div(label, className="card-label"), html.Div(value, className="card-value")]
    if detail:
        children.append(html.Div(detail, className="card-detail"))
    return html.Div(children, className="card", **({"id": card_id} if card_id else {}))


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
    return html.Table([head, body], className="table", **({"id": table_id} if table_id else {}))


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
