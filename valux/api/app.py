"""The aiohttp application: :func:`create_app`.

Middlewares, outermost first:

1. ``request_id`` — takes a well-formed incoming ``X-Request-Id`` or makes one;
   an ``on_response_prepare`` hook puts it on *every* response (errors and the
   WebSocket upgrade included).
2. ``metrics`` — counts and times each request by route template.
3. ``errors`` — the one place exceptions become HTTP: :class:`ApiError` and
   aiohttp's own HTTP errors are rendered as JSON error bodies, ``ValuxError`` s
   are mapped by :func:`~valux.api.errors.from_valux_error`, a request that
   exceeds the request timeout becomes 503, and anything else a logged 500 whose
   body carries only the request id.

Resources live in ``cleanup_ctx`` (the WebSocket hub's Redis subscriber);
``on_shutdown`` closes every WebSocket with 1001 before aiohttp waits for
handlers to finish.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterable

import structlog
import structlog.contextvars
from aiohttp import web
from aiohttp.typedefs import Handler

from valux.api import routes_agents, routes_market, routes_ops, routes_trading, ws
from valux.api.backend import Backend
from valux.api.errors import (
    ApiError,
    InternalError,
    ServiceUnavailable,
    from_aiohttp_error,
    from_valux_error,
)
from valux.api.http import json_response
from valux.api.keys import (
    BACKEND,
    LONG_LIVED_PATHS,
    MAX_BODY_BYTES,
    METRICS,
    OPENAPI_DOC,
    REQUEST_ID,
    REQUEST_TIMEOUT,
)
from valux.api.metrics import ApiMetrics
from valux.api.openapi import build_openapi
from valux.api.routes import Route
from valux.api.ws import HUB
from valux.errors import ValuxError

log = structlog.get_logger("valux.api")

REQUEST_ID_HEADER = "X-Request-Id"
_INCOMING_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

ROUTES: tuple[Route, ...] = (
    *routes_ops.ROUTES,
    *routes_agents.ROUTES,
    *routes_trading.ROUTES,
    *routes_market.ROUTES,
    *ws.ROUTES,
)
"""Every route the API serves; the OpenAPI document is built from this table."""


def _route_label(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    request_id = incoming if _INCOMING_ID.match(incoming) else uuid.uuid4().hex
    request[REQUEST_ID] = request_id
    # Every log line emitted while serving this request (backend included) carries the id.
    with structlog.contextvars.bound_contextvars(request_id=request_id):
        return await handler(request)


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        route = _route_label(request)
        long_lived = route in request.app[LONG_LIVED_PATHS]
        request.app[METRICS].observe(
            method=request.method,
            route=route,
            status=status,
            seconds=None if long_lived else time.perf_counter() - started,
        )


def _render(request: web.Request, error: ApiError) -> web.Response:
    return json_response(
        error.error_body(request.get(REQUEST_ID)),
        status=error.status_code,
        headers=error.extra_headers or None,
    )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    timeout: float | None = request.app[REQUEST_TIMEOUT]
    if _route_label(request) in request.app[LONG_LIVED_PATHS]:
        timeout = None
    try:
        async with asyncio.timeout(timeout) as deadline:
            return await handler(request)
    except ApiError as exc:
        return _render(request, exc)
    except ValuxError as exc:
        return _render(request, from_valux_error(exc))
    except web.HTTPException as exc:
        if exc.status_code < 400:
            raise  # redirects and the like are answers, not errors
        return _render(request, from_aiohttp_error(exc))
    except TimeoutError:
        if not deadline.expired():
            return _unexpected(request)
        log.warning(
            "request_timeout",
            request_id=request.get(REQUEST_ID),
            route=_route_label(request),
            timeout=timeout,
        )
        return _render(request, ServiceUnavailable(f"the request took longer than {timeout:g}s"))
    except asyncio.CancelledError:
        raise
    except Exception:
        return _unexpected(request)


def _unexpected(request: web.Request) -> web.Response:
    log.exception(
        "unhandled_error",
        request_id=request.get(REQUEST_ID),
        method=request.method,
        route=_route_label(request),
    )
    return _render(request, InternalError("internal error"))


async def _set_request_id_header(request: web.BaseRequest, response: web.StreamResponse) -> None:
    rid = request.get(REQUEST_ID) if isinstance(request, web.Request) else None
    response.headers[REQUEST_ID_HEADER] = rid or uuid.uuid4().hex


def create_app(
    backend: Backend,
    *,
    redis_url: str | None,
    max_body_bytes: int = 1_048_576,
    request_timeout: float = 30.0,
    ws_channel_prefix: str = "valux",
    ws_queue_size: int = 256,
    ws_send_timeout: float = 5.0,
    ws_backoff_initial: float = 0.2,
    ws_backoff_max: float = 10.0,
    routes: Iterable[Route] = ROUTES,
) -> web.Application:
    """Build the API application over ``backend``.

    Args:
        backend: the engine (see :class:`~valux.api.backend.Backend`).
        redis_url: where the actors publish events for ``/ws``; ``None`` turns
            the fan-out off (``/ws`` still accepts clients, nothing is streamed).
        max_body_bytes: larger request bodies get 413.
        request_timeout: seconds before a request (backend call included) gets 503.
        ws_channel_prefix: channels are ``{prefix}:prices|positions|trades``.
        ws_queue_size: per-client send queue; a client whose queue overflows is
            disconnected with 1008.
        ws_send_timeout: a single send blocked longer than this disconnects too.
        ws_backoff_initial, ws_backoff_max: Redis reconnect backoff (seconds).
        routes: the route table (tests only; defaults to :data:`ROUTES`).
    """
    routes = tuple(routes)
    app = web.Application(
        client_max_size=max_body_bytes,
        middlewares=[request_id_middleware, metrics_middleware, error_middleware],
    )
    app[BACKEND] = backend
    app[MAX_BODY_BYTES] = max_body_bytes
    app[REQUEST_TIMEOUT] = request_timeout
    app[LONG_LIVED_PATHS] = frozenset(r.path for r in routes if r.long_lived)
    app[OPENAPI_DOC] = build_openapi(routes)
    metrics = ApiMetrics()
    app[METRICS] = metrics
    hub = ws.WsHub(
        redis_url,
        channel_prefix=ws_channel_prefix,
        queue_size=ws_queue_size,
        send_timeout=ws_send_timeout,
        backoff_initial=ws_backoff_initial,
        backoff_max=ws_backoff_max,
    )
    app[HUB] = hub
    metrics.watch_hub(hub)

    for r in routes:
        if r.method == "GET" and not r.long_lived:
            # HEAD too, for load balancers' probes (not documented separately).
            app.router.add_get(r.path, r.handler, name=r.operation_id, allow_head=True)
        else:
            app.router.add_route(r.method, r.path, r.handler, name=r.operation_id)

    app.cleanup_ctx.append(_hub_ctx)
    app.on_shutdown.append(_close_websockets)
    app.on_response_prepare.append(_set_request_id_header)
    return app


async def _hub_ctx(app: web.Application) -> AsyncIterator[None]:
    hub = app[HUB]
    await hub.start()
    try:
        yield
    finally:
        await hub.stop()


async def _close_websockets(app: web.Application) -> None:
    await app[HUB].close_all()
