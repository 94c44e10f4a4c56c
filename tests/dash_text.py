"""What a reader sees in a Dash component tree, for tests that call layouts and callbacks
directly: ``from dash_text import text_of``; and a Dash callback request for tests that post
one to a running site (``OVERVIEW_CALLBACK``)."""

from __future__ import annotations

from typing import Any

import dash


# The Overview's first callback as a browser sends it (reliability tests post it to a
# running site).
OVERVIEW_CALLBACK = {
    "output": "..overview-body.children...overview-state.data..",
    "outputs": [{"id": "overview-body", "property": "children"}, {"id": "overview-state", "property": "data"}],
    "inputs": [{"id": "refresh", "property": "n_intervals", "value": None},
               {"id": "overview-window", "property": "value", "value": 30}],
    "state": [{"id": "overview-state", "property": "data", "value": None}],
    "changedPropIds": [],
}


def text_of(component: Any) -> str:
    """Every string in a component tree (children, and the labels of a component's
    ``options``), joined with spaces."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, str):
            found.append(node)
        elif isinstance(node, (list, tuple)):
            for child in node:
                walk(child)
        elif isinstance(node, dash.development.base_component.Component):
            walk(getattr(node, "children", None))
            options = getattr(node, "options", None)
            if isinstance(options, list):
                walk([o.get("label") for o in options if isinstance(o, dict)])

    walk(component)
    return " ".join(found)


def find(component: Any, component_id: Any) -> Any:
    """The component with ``component_id`` in a tree (or ``None``)."""
    if isinstance(component, (list, tuple)):
        for child in component:
            hit = find(child, component_id)
            if hit is not None:
                return hit
        return None
    if isinstance(component, dash.development.base_component.Component):
        if getattr(component, "id", None) == component_id:
            return component
        return find(getattr(component, "children", None), component_id)
    return None
