"""Class icons drawn by the site (SVG), so nothing is fetched from the internet.

Iris varieties get a flower whose petals and colour differ per variety; Titanic's two
classes a lifebuoy and a wave; any other dataset a coloured disc with the class's
initial. Icons are returned as ``data:`` URIs for an ``<img>``.
"""

from __future__ import annotations

import base64
import math
from typing import Any
from xml.sax.saxutils import escape

from serverless_ml.datasets.spec import DatasetSpec

SIZE = 64
PALETTE = ("#2563eb", "#ea580c", "#16a34a", "#9333ea", "#db2777", "#0891b2", "#ca8a04", "#4b5563")
_IRIS = {  # variety -> (petal colour, petal length, petal width, petals)
    "Setosa": ("#6366f1", 14, 7, 5),
    "Versicolor": ("#a855f7", 19, 8, 6),
    "Virginica": ("#be185d", 24, 9, 6),
}


def _svg(body: str, label: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{SIZE}" height="{SIZE}" viewBox="0 0 {SIZE} {SIZE}" '
        f'role="img"><title>{escape(label)}</title>{body}</svg>'
    )


def _flower(colour: str, length: float, width: float, petals: int, label: str) -> str:
    centre = SIZE / 2
    parts = []
    for i in range(petals):
        angle = 360 * i / petals
        parts.append(
            f'<ellipse cx="{centre}" cy="{centre - length / 2 - 3:.1f}" rx="{width}" ry="{length / 2 + 3:.1f}" '
            f'fill="{colour}" fill-opacity="0.85" transform="rotate({angle:.1f} {centre} {centre})"/>'
        )
    parts.append(f'<circle cx="{centre}" cy="{centre}" r="6" fill="#facc15" stroke="#a16207" stroke-width="1"/>')
    return _svg("".join(parts), label)


def _lifebuoy(label: str) -> str:
    c, outer, inner = SIZE / 2, 26, 13
    segments = []
    for i in range(4):
        start, end = math.radians(90 * i - 45 + 90), math.radians(90 * i + 45 + 90)
        colour = "#dc2626" if i % 2 == 0 else "#ffffff"
        x1, y1 = c + outer * math.cos(start), c + outer * math.sin(start)
        x2, y2 = c + outer * math.cos(end), c + outer * math.sin(end)
        x3, y3 = c + inner * math.cos(end), c + inner * math.sin(end)
        x4, y4 = c + inner * math.cos(start), c + inner * math.sin(start)
        segments.append(
            f'<path d="M{x1:.1f},{y1:.1f} A{outer},{outer} 0 0 1 {x2:.1f},{y2:.1f} L{x3:.1f},{y3:.1f} '
            f'A{inner},{inner} 0 0 0 {x4:.1f},{y4:.1f} Z" fill="{colour}" stroke="#7f1d1d" stroke-width="1"/>'
        )
    return _svg("".join(segments), label)


def _wave(label: str) -> str:
    body = (
        '<circle cx="32" cy="32" r="29" fill="#1e3a8a"/>'
        '<path d="M8,36 q6,-6 12,0 t12,0 t12,0 t12,0" fill="none" stroke="#93c5fd" stroke-width="3"/>'
        '<path d="M8,46 q6,-6 12,0 t12,0 t12,0 t12,0" fill="none" stroke="#60a5fa" stroke-width="3"/>'
        '<path d="M26,14 l12,0 l-2,10 l-8,0 z" fill="#e5e7eb"/>'
    )
    return _svg(body, label)


def _disc(colour: str, text: str, label: str) -> str:
    initial = escape(text[:1].upper() or "?")
    body = (
        f'<circle cx="32" cy="32" r="29" fill="{colour}"/>'
        f'<text x="32" y="42" text-anchor="middle" font-family="sans-serif" font-size="28" '
        f'font-weight="bold" fill="#ffffff">{initial}</text>'
    )
    return _svg(body, label)


def class_icon_svg(spec: DatasetSpec, value: Any) -> str:
    """The SVG icon of one class of ``spec`` (an unknown value gets a grey disc)."""
    classes = list(spec.classes)
    if value not in classes:
        return _disc("#9ca3af", "?", f"unknown class {value}")
    name = spec.class_name(value)
    if spec.name == "iris" and name in _IRIS:
        colour, length, width, petals = _IRIS[name]
        return _flower(colour, length, width, petals, name)
    if spec.name == "titanic":
        return _lifebuoy(name) if name == "survived" else _wave(name)
    return _disc(PALETTE[classes.index(value) % len(PALETTE)], name, name)


def class_icon_uri(spec: DatasetSpec, value: Any) -> str:
    """:func:`class_icon_svg` as a ``data:image/svg+xml`` URI."""
    encoded = base64.b64encode(class_icon_svg(spec, value).encode("utf-8")).decode("ascii")
    return f"data:image/svg+xml;base64,{encoded}"
