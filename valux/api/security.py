"""Who may call what, and the browser-safety checks every request passes.

:class:`AuthConfig` is everything the API needs to authenticate (built from
the ``auth`` and ``api`` settings by :meth:`AuthConfig.from_settings`, or
:meth:`AuthConfig.for_tests`). :class:`Principal` is the authenticated caller.

The security middleware (:func:`valux.api.app.security_middleware`) runs, for every
request, in this order:

1. **Host allowlist** (``api.allowed_hosts``): a ``Host`` naming another host is
   400 ``HOST_NOT_ALLOWED`` (DNS rebinding). ``/health/live`` and
   ``/health/ready`` answer any host, for probes.
2. **Origin check** on every state-changing request (anything but GET, HEAD,
   OPTIONS) and on the WebSocket handshake: an ``Origin`` header must be in
   ``api.cors_origins`` or be the API's own origin, else 403
   ``ORIGIN_NOT_ALLOWED``. Requests without ``Origin`` (curl, scripts, servers)
   pass: only browsers send it, and they always do cross-origin.
3. **Authentication** per the route's :class:`~valux.api.routes.Access`:
   ``Authorization: Bearer <access token>`` (a JWT), an API key (``X-API-Key:
   vx_...`` or ``Authorization: Bearer vx_...``), or for ``/ws`` also the
   subprotocol ``bearer.<access token>`` (browsers cannot set headers on a
   WebSocket). Missing or invalid: 401 with ``WWW-Authenticate: Bearer``.
   Admin routes need the ``admin`` role (and an API key the ``admin`` scope):
   403. API keys need ``read`` for GET and ``trade`` for everything else.
4. **Rate limits** (sliding windows in Redis, shared by every API process): the
   auth routes per client address (Redis down: 503 naming Redis), the signal
   routes per address and per user (Redis down: not limited — trading never
   depends on Redis). Over the limit: 429 with ``Retry-After``.

Bearer tokens, never cookies: a browser never attaches them on its own, so a
foreign page cannot make a request in the user's name (no CSRF). Every
response carries the security headers of :data:`SECURITY_HEADERS`. CORS
(preflight and response headers) is aiohttp-cors, configured from the same
``api.cors_origins`` allowlist by :func:`setup_cors`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import aiohttp_cors
import structlog
from aiohttp import hdrs, web
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from valux.api.routes import Route
from valux.auth._redis import redis_errors
from valux.auth.api_keys import Scope
from valux.auth.errors import (
    HostNotAllowed,
    OriginNotAllowed,
    RateLimited,
    RedisUnavailable,
)
from valux.auth.nonces import NonceStore
from valux.auth.passwords import (
    DEFAULT_PARAMS,
    FAST_INSECURE_PARAMS,
    Argon2Params,
    LockoutPolicy,
)
from valux.auth.ratelimit import RateLimiter
from valux.auth.tokens import (
    ACCESS_TOKEN_LIFETIME,
    REFRESH_TOKEN_LIFETIME,
    Role,
    load_or_create_signing_key,
)
from valux.errors import FieldError

if TYPE_CHECKING:
    from valux.config.settings import Settings

__all__ = [
    "HEALTH_PROBES",
    "SAFE_METHODS",
    "SECURITY_HEADERS",
    "AuthConfig",
    "Principal",
    "RedisGate",
    "add_security_headers",
    "check_host",
    "check_origin",
    "client_ip",
    "host_allowed",
    "origin_allowed",
    "session_scopes",
    "setup_cors",
]

log = structlog.get_logger("valux.api.security")

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
HEALTH_PROBES = frozenset({"/health/live", "/health/ready"})

SECURITY_HEADERS: dict[str, str] = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "interest-cohort=()",
}
"""Sent on every response (plus ``Cache-Control: no-store`` unless a handler set one, and
``Strict-Transport-Security`` over HTTPS)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthConfig:
    """Everything the API needs to authenticate callers and to protect browsers."""

    signing_key: bytes
    access_ttl: timedelta = ACCESS_TOKEN_LIFETIME
    refresh_ttl: timedelta = REFRESH_TOKEN_LIFETIME
    open_registration: bool = True
    wallet_signup: bool = True
    admin_email: str = "admin@localhost"
    lockout: LockoutPolicy = field(default_factory=LockoutPolicy)
    password_params: Argon2Params = DEFAULT_PARAMS
    allowed_hosts: tuple[str, ...] = ("127.0.0.1", "localhost", "::1")
    cors_origins: tuple[str, ...] = ()
    trust_forwarded_for: bool = False
    signin_domains: tuple[str, ...] = ()
    siwe_chain_ids: tuple[int, ...] = (1, 42161)
    siws_chains: tuple[str, ...] = ("mainnet", "devnet")
    nonce_ttl_s: int = 300
    webhook_window_s: int = 300
    rate_window_s: float = 60.0
    auth_per_ip: int = 60
    auth_per_account: int = 10
    signals_per_ip: int = 6000
    signals_per_user: int = 3000
    manual_feed_max_skew_s: float = 5.0
    redis_prefix: str = "valux:"
    """Prefix of every Redis key the API writes (nonces, rate windows, revoked tokens)."""

    @classmethod
    def from_settings(cls, settings: Settings) -> AuthConfig:
        """From the ``auth`` and ``api`` settings; reads (or creates) the key file."""
        auth, api = settings.auth, settings.api
        key_file = auth.key_file or Path(settings.data_dir) / "auth" / "jwt.key"
        return cls(
            signing_key=load_or_create_signing_key(key_file),
            access_ttl=timedelta(seconds=auth.access_token_ttl_s),
            refresh_ttl=timedelta(days=auth.refresh_token_ttl_days),
            open_registration=auth.open_registration,
            wallet_signup=auth.wallet_signup,
            admin_email=auth.admin_email,
            lockout=LockoutPolicy(
                max_failures=auth.max_failed_logins,
                window=timedelta(minutes=auth.lockout_minutes),
                lock_for=timedelta(minutes=auth.lockout_minutes),
            ),
            password_params=Argon2Params(
                time_cost=auth.password_time_cost,
                memory_kib=auth.password_memory_kib,
                parallelism=auth.password_parallelism,
            ),
            allowed_hosts=_with_bind_host(api.allowed_hosts, api.host),
            cors_origins=api.cors_origins,
            trust_forwarded_for=api.trust_forwarded_for,
            signin_domains=auth.signin_domains,
            siwe_chain_ids=auth.siwe_chain_ids,
            siws_chains=auth.siws_chains,
            nonce_ttl_s=auth.nonce_ttl_s,
            webhook_window_s=auth.webhook_window_s,
            rate_window_s=auth.rate_limit_window_s,
            auth_per_ip=auth.auth_per_ip,
            auth_per_account=auth.auth_per_account,
            signals_per_ip=auth.signals_per_ip,
            signals_per_user=auth.signals_per_user,
            manual_feed_max_skew_s=api.manual_feed_max_skew_s,
            redis_prefix=f"valux:{settings.ray.namespace}:",
        )

    @classmethod
    def for_tests(cls, **overrides: Any) -> AuthConfig:
        """A random key, the cheapest argon2 and a Redis prefix of its own (tests only)."""
        values: dict[str, Any] = {
            "signing_key": os.urandom(64),
            "password_params": FAST_INSECURE_PARAMS,
            "redis_prefix": f"valux-test:{secrets.token_hex(6)}:",
        }
        values.update(overrides)
        return cls(**values)


def _with_bind_host(allowed: tuple[str, ...], bind: str) -> tuple[str, ...]:
    """The allowlist plus the address the API binds to, when that is one address (a client
    that reaches the API by it names it in ``Host``); 0.0.0.0 / :: add nothing."""
    host = bind.strip().strip("[]").lower()
    if not host or host in ("0.0.0.0", "::") or host in allowed:
        return allowed
    return (*allowed, host)


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller of a request.

    ``via`` says how: an access token (a login session), an API key, or a signed
    webhook. ``scopes`` are what the credential allows (a session: all its role has).
    """

    user_id: str
    role: Role
    via: Literal["token", "api_key", "webhook"]
    scopes: frozenset[Scope]
    credential_id: str | None = None
    """The access token's ``jti``, the API key's prefix or the webhook's id."""
    expires_at: datetime | None = None

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN and Scope.ADMIN in self.scopes


def session_scopes(role: Role) -> frozenset[Scope]:
    """A login session may do everything its role may."""
    if role is Role.ADMIN:
        return frozenset(Scope)
    return frozenset({Scope.READ, Scope.TRADE})


# ----------------------------------------------------------------- host and origin


def _hostname(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):  # [::1]:8080
        end = host.find("]")
        return host[1:end] if end > 0 else host
    if host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    return host.rstrip(".")


def host_allowed(host: str | None, allowed: tuple[str, ...]) -> bool:
    """Does the ``Host`` header name an allowed host (port ignored)?"""
    if "*" in allowed:
        return True
    if not host:
        return False
    name = _hostname(host)
    for entry in allowed:
        entry = entry.strip("[]")
        if entry.startswith("."):
            if name == entry[1:] or name.endswith(entry):
                return True
        elif name == entry:
            return True
    return False


def origin_allowed(origin: str, request: web.BaseRequest, allowed: tuple[str, ...]) -> bool:
    """Is ``origin`` allowlisted, or the API's own (same-origin page)?"""
    origin = origin.strip().lower().rstrip("/")
    if origin in allowed:
        return True
    return origin == f"{request.scheme}://{request.host}".lower()


def client_ip(request: web.BaseRequest, trust_forwarded_for: bool) -> str:
    """The client's address: the peer, or the first ``X-Forwarded-For`` entry if trusted."""
    if trust_forwarded_for:
        forwarded = request.headers.get("X-Forwarded-For", "")
        first = forwarded.split(",")[0].strip()
        if first:
            return first[:64]
    return request.remote or "unknown"


def check_host(request: web.Request, config: AuthConfig) -> None:
    if request.path in HEALTH_PROBES:
        return
    if not host_allowed(request.headers.get(hdrs.HOST), config.allowed_hosts):
        raise HostNotAllowed(
            "the Host header names a host this API does not serve; add it to "
            "api.allowed_hosts if it is yours",
            [FieldError("Host", "not in api.allowed_hosts")],
        )


def check_origin(request: web.Request, config: AuthConfig, *, websocket: bool) -> None:
    if request.method in SAFE_METHODS and not websocket:
        return
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is None:
        return
    if not origin_allowed(origin, request, config.cors_origins):
        raise OriginNotAllowed(
            f"requests from the page origin {origin[:100]!r} may not change state here; "
            "add it to api.cors_origins if it is your frontend"
        )


# ------------------------------------------------------------------------- redis


class RedisGate:
    """The API's use of Redis: login nonces, rate-limit windows, revoked access tokens.

    Fail-closed operations (login nonces, the auth routes' limits) raise
    :class:`~valux.auth.errors.RedisUnavailable` when Redis is down; fail-open ones
    (the signal routes' limits, the revoked-token check) let the request through,
    and after a failure skip Redis for :attr:`RETRY_S` so a dead Redis does not add
    its connect timeout to every trading request. With no Redis URL at all (unit
    tests), limits are off and wallet sign-in is unavailable.
    """

    RETRY_S = 5.0

    def __init__(self, url: str | None, *, prefix: str, nonce_ttl_s: int) -> None:
        self.url = url
        self.prefix = prefix
        self.nonce_ttl_s = nonce_ttl_s
        self.client: Redis | None = None
        self.nonces: NonceStore | None = None
        self.limiter: RateLimiter | None = None
        self._down_until = 0.0

    async def start(self) -> None:
        if self.url is None or self.client is not None:
            return
        tcp = not self.url.startswith("unix:")
        self.client = Redis.from_url(
            self.url,
            socket_connect_timeout=1.0,
            socket_timeout=1.0,
            retry=Retry(NoBackoff(), 0),
            **({"socket_keepalive": True} if tcp else {}),
        )
        self.nonces = NonceStore(self.client, prefix=self.prefix + "nonce:", ttl_s=self.nonce_ttl_s)
        self.limiter = RateLimiter(self.client, prefix=self.prefix + "rl:")

    async def stop(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.aclose()
            self.client = None

    def _skip(self) -> bool:
        return time.monotonic() < self._down_until

    def _failed(self, exc: RedisUnavailable) -> None:
        if not self._skip():
            log.warning("redis_unavailable", error=exc.message, retry_in_s=self.RETRY_S)
        self._down_until = time.monotonic() + self.RETRY_S

    def _require_nonces(self) -> NonceStore:
        if self.nonces is None:
            raise RedisUnavailable(
                "Redis is not configured, so wallet sign-in (which keeps its nonces there) "
                "is unavailable"
            )
        return self.nonces

    async def limit(self, key: str, limit: int, window_s: float, *, fail_open: bool) -> None:
        """Count one request under ``key``; ``RateLimited`` over ``limit`` per window."""
        if self.limiter is None or (fail_open and self._skip()):
            return
        try:
            decision = await self.limiter.hit(key, limit, window_s)
        except RedisUnavailable as exc:
            self._failed(exc)
            if fail_open:
                return
            raise
        if not decision.allowed:
            raise RateLimited(
                f"too many requests; at most {limit} per {window_s:g} s — retry in "
                f"{decision.retry_after_header} s",
                int(decision.retry_after_header),
            )

    async def issue_nonce(self) -> str:
        nonces = self._require_nonces()
        try:
            return await nonces.issue()
        except RedisUnavailable as exc:
            self._failed(exc)
            raise

    async def consume_nonce(self, nonce: str) -> None:
        nonces = self._require_nonces()
        try:
            await nonces.consume(nonce)
        except RedisUnavailable as exc:
            self._failed(exc)
            raise

    async def revoke_access(self, jti: str, ttl_s: int) -> None:
        """Remember a logged-out access token until it would have expired (best effort)."""
        if self.client is None or ttl_s <= 0:
            return
        try:
            with redis_errors(self.client, "token revocation"):
                await self.client.set(self.prefix + "revoked:" + jti, "1", ex=ttl_s)
        except RedisUnavailable as exc:
            self._failed(exc)

    async def access_revoked(self, jti: str) -> bool:
        """Was this access token logged out? (Redis down: assume not; it expires soon.)"""
        if self.client is None or self._skip():
            return False
        try:
            with redis_errors(self.client, "token revocation"):
                return bool(await self.client.exists(self.prefix + "revoked:" + jti))
        except RedisUnavailable as exc:
            self._failed(exc)
            return False


# ------------------------------------------------------------------------- CORS


CORS_ALLOW_HEADERS = (
    "Authorization",
    "Content-Type",
    "X-API-Key",
    "X-Request-Id",
    "X-Valux-Signature",
)
CORS_EXPOSE_HEADERS = ("X-Request-Id", "Location", "Retry-After", "WWW-Authenticate")


def setup_cors(app: web.Application, routes: tuple[Route, ...], origins: tuple[str, ...]) -> None:
    """CORS via aiohttp-cors for every route except the WebSocket, allowlisted origins only
    (no credentials: bearer tokens travel in headers, never cookies)."""
    options = aiohttp_cors.ResourceOptions(  # type: ignore[no-untyped-call]  # unannotated
        allow_credentials=False,
        expose_headers=CORS_EXPOSE_HEADERS,
        allow_headers=CORS_ALLOW_HEADERS,
        max_age=600,
    )
    cors = aiohttp_cors.setup(app, defaults={origin: options for origin in origins})
    streams = {r.path for r in routes if r.long_lived}
    for route in list(app.router.routes()):
        resource = route.resource
        if resource is None or resource.canonical in streams:
            continue
        if route.method in (hdrs.METH_HEAD, hdrs.METH_OPTIONS):
            continue
        cors.add(route)


async def add_security_headers(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """``on_response_prepare``: the security headers on every response."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers.setdefault("Cache-Control", "no-store")
    if request.secure:
        response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
