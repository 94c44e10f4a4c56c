"""One module per page. Each has ``PATH``, ``TITLE``, a ``layout(dataset=None, **query)``
function (data is read per request) and ``register(app)``, which registers the page with
``dash.register_page`` and its callbacks with ``app.callback``.

Callbacks are bound to the app the factory builds rather than declared with the global
``dash.callback``: Dash hands global callbacks to whichever app serves its first request,
which breaks a factory that tests call once per test.
"""

from __future__ import annotations

from monitoring_app.pages import confusion, data, drift, models, overview, predict, predictions, slices

PAGES = (overview, confusion, slices, predictions, drift, models, data, predict)
"""Page modules, in navigation order."""
