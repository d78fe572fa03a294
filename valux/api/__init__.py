"""The HTTP API (aiohttp): routes, validation, errors, OpenAPI, WebSocket fan-out, metrics.

The API talks to the engine only through :class:`valux.api.backend.Backend`;
:func:`valux.api.app.create_app` builds the application.
"""

from valux.api.app import create_app
from valux.api.backend import Backend

__all__ = ["Backend", "create_app"]
