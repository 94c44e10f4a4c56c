"""Predict: a form generated from the dataset spec that returns the champion's class and
probabilities. Works for any dataset, built-in or from a spec file.

Number inputs show the schema's range and categories are dropdowns. The browser's own
range check is not used: an out-of-range number would reach the server as "empty", and
a nullable feature would then be predicted as missing instead of refused. The server
checks every value against the schema and answers with a message under the field.

Reads ``models:/<dataset>@champion`` (loaded once per version) and, for the starting
values, the feature group's real rows when there are any.
"""

from __future__ import annotations

from typing import Any

import dash
from dash import ALL, Input, Output, State, dcc, html

from monitoring_app import analysis, figures, forms, ids
from monitoring_app.components import (
    GRAPH_CONFIG, class_badge, fmt, notice, page, page_dataset, problem_notice, register_page,
)
from serverless_ml.datasets.spec import DatasetSpec, FeatureSpec
from serverless_ml.errors import NotFoundError

PATH = "/predict"
TITLE = "Predict"


def register(app: dash.Dash) -> None:
    register_page(__name__, PATH, TITLE, order=6, layout=layout)
    app.callback(
        Output(ids.PREDICT_RESULT, "children"),
        Output({"type": ids.PREDICT_ERROR, "feature": ALL}, "children"),
        Input(ids.PREDICT_SUBMIT, "n_clicks"),
        State({"type": ids.PREDICT_INPUT, "feature": ALL}, "value"),
        State(ids.PREDICT_STATE, "data"),
        prevent_initial_call=True,
    )(predict)


def field(feature: FeatureSpec, value: Any) -> html.Div:
    """One labelled input of the form, with room for its message."""
    if feature.is_numeric:
        hint = forms.range_text(feature) + ("; empty means missing" if feature.nullable else "")
        control: Any = dcc.Input(
            id=ids.predict_input(feature.name), type="number", value=value, step="any", debounce=False,
            placeholder=forms.range_text(feature), className="input",
        )
    elif feature.categories:
        hint = "one of the listed values" + ("; or missing" if feature.nullable else "")
        control = dcc.Dropdown(id=ids.predict_input(feature.name), options=forms.category_options(feature),
                               value=value, clearable=False, className="dropdown")
    else:
        hint = "text" + ("; empty means missing" if feature.nullable else "")
        control = dcc.Input(id=ids.predict_input(feature.name), type="text", value=value or "", className="input")
    return html.Div([
        html.Label(feature.name, className="field-label"),
        control,
        html.Div(f"{feature.description + '; ' if feature.description else ''}{hint}", className="field-hint"),
        html.Div(id=ids.predict_error(feature.name), className="field-error", role="alert"),
    ], className="field")


def layout(dataset: str | None = None, **_: Any) -> html.Div:
    site, spec, problem = page_dataset(dataset)
    if spec is None:
        return page(TITLE, problem)
    try:
        rows = site.data.feature_rows(spec)
    except Exception:  # noqa: BLE001 - the form works without data: defaults come from the schema
        rows = None
    try:
        champion = site.data.champion(spec)
        about: Any = (notice(f"no champion for {spec.name} yet: train one with `sml train`") if champion is None else
                      html.Div(f"The champion, version {champion.version} (holdout accuracy "
                               f"{fmt(champion.holdout_accuracy)}), answers.", className="muted"))
    except Exception as exc:  # noqa: BLE001 - shown as a notice; the form still renders
        about = problem_notice(exc)
    values = forms.default_values(spec, rows)
    live_region: dict[str, Any] = {"aria-live": "polite"}  # (a splat: the name is not a Python identifier)
    return page(
        TITLE,
        about,
        html.Div([field(f, values.get(f.name)) for f in spec.features], className="form"),
        html.Button("Predict", id=ids.PREDICT_SUBMIT, n_clicks=0, className="button"),
        html.Div(id=ids.PREDICT_RESULT, className="result", **live_region),
        state_id=ids.PREDICT_STATE, state={"dataset": spec.name},
    )


def predict(n_clicks: int | None, values: list[Any], state: dict[str, Any] | None) -> tuple[Any, list[str]]:
    """Validate the form against the schema; when it is valid, the champion's answer.

    ``values`` come in the order of the form's inputs, which is the spec's feature order.
    """
    # A forged request may hold anything: never an exception, always as many messages as
    # the request has message outputs.
    values = values if isinstance(values, list) else []
    slots = _message_slots(len(values))
    site, spec, problem = page_dataset(state.get("dataset") if isinstance(state, dict) else None)
    if spec is None:
        return problem, [""] * slots
    names = spec.feature_names
    if len(values) != len(names) or slots != len(names):
        return notice("the form does not match the dataset; reload the page", "error"), [""] * slots
    result = forms.validate_form(spec, dict(zip(names, values, strict=True)))
    messages = [result.errors.get(name, "") for name in names]
    if not result.ok:
        return notice(f"{len(result.errors)} value(s) outside the schema: see the messages under the fields", "error"), messages
    try:
        version, model = site.data.champion_model(spec)
        frame = forms.model_input(spec, result.row or {})
        probabilities = forms.class_probabilities(model, spec, frame)
    except NotFoundError as exc:
        return notice(str(exc)), messages
    except Exception as exc:  # noqa: BLE001 - a message, never a traceback
        return problem_notice(exc), messages
    return answer(spec, probabilities, version.version), messages


def _message_slots(default: int) -> int:
    """How many per-field messages the callback request asks for (``default`` outside a
    request, e.g. when called directly)."""
    try:
        outputs = dash.callback_context.outputs_list
    except Exception:  # noqa: BLE001 - no callback context
        return default
    if isinstance(outputs, list) and len(outputs) == 2 and isinstance(outputs[1], list):
        return len(outputs[1])
    return default


def answer(spec: DatasetSpec, probabilities: list[float], version: int) -> html.Div:
    best = max(range(len(probabilities)), key=probabilities.__getitem__)
    cls = spec.classes[best]
    data_class: dict[str, Any] = {"data-class": analysis.class_label(cls, spec)}
    return html.Div([
        html.Div([html.Span("The champion (version %d) says " % version),
                  class_badge(spec, cls, 64),
                  html.Span(f" with probability {probabilities[best]:.1%}", id=ids.PREDICT_PROBABILITY)],
                 className="answer", id=ids.PREDICT_ANSWER, **data_class),
        dcc.Graph(figure=figures.probability_figure(probabilities, spec), config=GRAPH_CONFIG, id=ids.PREDICT_PROBABILITIES),
    ])
