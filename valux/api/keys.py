"""Typed application and request keys (``web.AppKey`` / ``web.RequestKey``).

Kept in their own module so handlers, middlewares and the app factory can share
them without importing each other. (The hub's key, ``HUB``, lives in
:mod:`valux.api.ws` beside the hub; ``AUTH`` and ``BOOTSTRAP`` in
:mod:`valux.api.auth_service` beside the service.)
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from valux.api.backend import Backend
from valux.api.metrics import ApiMetrics
from valux.api.routes import Route
from valux.api.security import Principal

BACKEND = web.AppKey[Backend]("backend")
"""The engine behind the API."""

METRICS = web.AppKey("api_metrics", ApiMetrics)
"""The API process's own Prometheus registry and instruments."""

MAX_BODY_BYTES = web.AppKey("max_body_bytes", int)
"""Largest accepted request body; larger ones get 413."""

REQUEST_TIMEOUT = web.AppKey("request_timeout", float)
"""Seconds a request may take (backend call included) before it gets 503."""

OPENAPI_DOC = web.AppKey("openapi_doc", dict[str, Any])
"""The OpenAPI document, built once from the route table."""

LONG_LIVED_PATHS = web.AppKey("long_lived_paths", frozenset[str])
"""Route paths exempt from the request timeout and latency histogram (``/ws``)."""

REQUEST_ID = web.RequestKey("request_id", str)
"""The request's id, echoed in ``X-Request-Id`` and in error bodies."""

ROUTE_TABLE = web.AppKey("route_table", dict[str, Route])
"""Every served route by its operation id (the aiohttp route name): its access rule."""

PRINCIPAL = web.RequestKey("principal", Principal)
"""The authenticated caller (absent on public routes)."""

CLIENT_IP = web.RequestKey("client_ip", str)
"""The client address used for rate limits and the audit log."""
