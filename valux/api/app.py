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
   body carries only the request id. Every 4xx names the field, parameter or
   header it is about (``error.errors[].field``).
4. ``security`` — Host allowlist, Origin check, authentication and access rule
   of the route, rate limits (:mod:`valux.api.security` describes each).

Resources live in ``cleanup_ctx`` (the WebSocket hub's Redis subscriber; the
auth service's Redis client and, at start, the first admin's bootstrap);
``on_shutdown`` closes every WebSocket with 1001 before aiohttp waits for
handlers to finish. Every response carries the security headers, and CORS is
answered by aiohttp-cors for the allowlisted origins only.
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

from valux.api import (
    routes_agents,
    routes_auth,
    routes_market,
    routes_ops,
    routes_trading,
    routes_users,
    routes_wallets,
    ws,
)
from valux.api.auth_service import AUTH, BOOTSTRAP, AuthService, BootstrapAdmin
from valux.api.backend import Backend
from valux.api.errors import (
    RETRY_AFTER_S,
    ApiError,
    InternalError,
    ServiceUnavailable,
    from_aiohttp_error,
    from_valux_error,
)
from valux.api.http import json_response
from valux.api.keys import (
    BACKEND,
    CLIENT_IP,
    LONG_LIVED_PATHS,
    MAX_BODY_BYTES,
    METRICS,
    OPENAPI_DOC,
    PRINCIPAL,
    REQUEST_ID,
    REQUEST_TIMEOUT,
    ROUTE_TABLE,
)
from valux.api.metrics import ApiMetrics
from valux.api.openapi import build_openapi
from valux.api.routes import Access, Route
from valux.api.security import (
    AuthConfig,
    Principal,
    RedisGate,
    add_security_headers,
    check_host,
    check_origin,
    client_ip,
    setup_cors,
)
from valux.api.ws import HUB
from valux.auth.api_keys import Scope, check_scope
from valux.auth.errors import AdminRequired, AuthRequired, SessionRequired
from valux.errors import FieldError, Unavailable, ValuxError
from valux.hosting.peers import PEER_ERRORS

log = structlog.get_logger("valux.api")

REQUEST_ID_HEADER = "X-Request-Id"
_INCOMING_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

ROUTES: tuple[Route, ...] = (
    *routes_ops.ROUTES,
    *routes_auth.ROUTES,
    *routes_users.ROUTES,
    *routes_agents.ROUTES,
    *routes_wallets.ROUTES,
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


def _route(request: web.Request) -> Route | None:
    name = getattr(request.match_info.route, "name", None)
    return request.app[ROUTE_TABLE].get(name) if name else None


def _name_the_field(request: web.Request, error: ApiError) -> ApiError:
    """Every 4xx names what it is about: the route's path parameter (404, 409), else the
    body or the path."""
    if error.errors or not 400 <= error.status_code < 500:
        return error
    route = _route(request)
    if route is not None and route.path_params:
        field = route.path_params[-1]
    elif route is not None and route.body is not None:
        field = "body"
    else:
        field = "path"
    error.errors = [FieldError(field, error.message)]
    return error


def _render(request: web.Request, error: ApiError) -> web.Response:
    error = _name_the_field(request, error)
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
    except PEER_ERRORS as exc:  # an actor is restarting: say so, and when to try again
        log.warning("actor_unavailable", route=_route_label(request), error=repr(exc))
        return _render(
            request,
            ServiceUnavailable(
                f"an actor is restarting ({type(exc).__name__}); try again shortly",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            ),
        )
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


def authorize(route: Route, principal: Principal | None, method: str) -> None:
    """Raise unless ``principal`` may call ``route`` (see :class:`~valux.api.routes.Access`)."""
    if route.access in (Access.PUBLIC, Access.WEBHOOK):
        return
    if principal is None:
        raise AuthRequired(
            "this route needs Authorization: Bearer <access token> (POST /api/v1/auth/login) "
            "or X-API-Key"
        )
    if route.access is Access.SESSION and principal.via != "token":
        raise SessionRequired("manage credentials with a login session, not an API key")
    if route.access is Access.ADMIN:
        if not principal.is_admin:
            raise AdminRequired("this is a system route: only an admin may call it")
        return
    check_scope(principal.scopes, Scope.READ if method in ("GET", "HEAD") else Scope.TRADE)


@web.middleware
async def security_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    auth = request.app[AUTH]
    config = auth.config
    request[CLIENT_IP] = client_ip(request, config.trust_forwarded_for)
    check_host(request, config)
    route = _route(request)
    if route is None or request.method == "OPTIONS":  # unknown route, or a CORS preflight
        check_origin(request, config, websocket=False)
        return await handler(request)
    check_origin(request, config, websocket=route.long_lived)
    principal: Principal | None = None
    if route.access not in (Access.PUBLIC, Access.WEBHOOK):
        principal = await auth.authenticate(request)
        authorize(route, principal, request.method)
        assert principal is not None
        request[PRINCIPAL] = principal
    if route.rate_limit == "auth":
        await auth.limit_auth(request[CLIENT_IP])
    elif route.rate_limit == "signals" and route.access is not Access.WEBHOOK:
        # (a webhook's owner is known only once its signature is checked, in the handler)
        await auth.limit_signals(
            request[CLIENT_IP], None if principal is None else principal.user_id
        )
    if principal is None:
        return await handler(request)
    with structlog.contextvars.bound_contextvars(user_id=principal.user_id):
        return await handler(request)


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
    auth: AuthConfig | None = None,
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
        auth: how to authenticate; defaults to ``backend.auth_config``.
    """
    routes = tuple(routes)
    names = [r.operation_id for r in routes]
    if len(set(names)) != len(names):
        raise ValueError("every route needs an operation id of its own")
    config = auth if auth is not None else backend.auth_config
    app = web.Application(
        client_max_size=max_body_bytes,
        middlewares=[
            request_id_middleware,
            metrics_middleware,
            error_middleware,
            security_middleware,
        ],
    )
    app[BACKEND] = backend
    app[ROUTE_TABLE] = {r.operation_id: r for r in routes}
    app[AUTH] = AuthService(
        config,
        backend.users,
        RedisGate(redis_url, prefix=config.redis_prefix, nonce_ttl_s=config.nonce_ttl_s),
    )
    app[BOOTSTRAP] = BootstrapAdmin()
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
    hub.owner_of = backend.agent_owner
    app[HUB] = hub
    metrics.watch_hub(hub)

    for r in routes:
        if r.method == "GET" and not r.long_lived:
            # HEAD too, for load balancers' probes (not documented separately).
            app.router.add_get(r.path, r.handler, name=r.operation_id, allow_head=True)
        else:
            app.router.add_route(r.method, r.path, r.handler, name=r.operation_id)

    if config.cors_origins:  # no allowlist: no preflight to answer, browsers stay same-origin
        setup_cors(app, routes, config.cors_origins)
    app.cleanup_ctx.append(_auth_ctx)
    app.cleanup_ctx.append(_hub_ctx)
    app.on_shutdown.append(_close_websockets)
    app.on_response_prepare.append(_set_request_id_header)
    app.on_response_prepare.append(add_security_headers)
    return app


async def _auth_ctx(app: web.Application) -> AsyncIterator[None]:
    auth = app[AUTH]
    await auth.redis.start()
    try:
        await bootstrap_when_reachable(auth, app[BOOTSTRAP])
        yield
    finally:
        await auth.redis.stop()


BOOTSTRAP_WAIT_S = 120.0
"""How long start-up waits for PostgreSQL to bootstrap the first admin (as for the pool)."""


async def bootstrap_when_reachable(
    auth: AuthService,
    holder: BootstrapAdmin,
    *,
    wait_s: float = BOOTSTRAP_WAIT_S,
    retry_every_s: float = 1.0,
) -> None:
    """The first admin's bootstrap, tried again while PostgreSQL is unreachable: a database
    blip during start-up must not end the API process (a chaos run's API exited on one and
    stayed down until the next restart)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            await auth.bootstrap_admin(holder)
            return
        except Unavailable as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("admin_bootstrap_retrying", error=str(exc))
            await asyncio.sleep(retry_every_s)


def bootstrap_credentials(app: web.Application) -> tuple[str, str] | None:
    """``(email, one-time password)`` of the admin this start created, once; else None."""
    return app[BOOTSTRAP].take()


async def _hub_ctx(app: web.Application) -> AsyncIterator[None]:
    hub = app[HUB]
    await hub.start()
    try:
        yield
    finally:
        await hub.stop()


async def _close_websockets(app: web.Application) -> None:
    await app[HUB].close_all()
