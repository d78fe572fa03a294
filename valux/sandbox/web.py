"""HTTP plumbing shared by the sandbox's service routes: settings, app keys, errors, API key.

Contract:

- :class:`ServiceConfig` holds what the HTTP services need beyond the market: the
  Jupiter API key (``None`` = no key required), the priority-fee estimates per level and
  the Pyth stream cadence.
- Route modules read the market, the settings and the closing flag from the application
  through the typed keys :data:`MARKET`, :data:`SETTINGS` and :data:`CLOSING`.
- Errors are answered as Jupiter answers them: HTTP 4xx with
  ``{"error": "<text>", "errorCode": "<CODE>"}`` (:func:`error_response`).
- :func:`api_key_middleware` refuses requests under the protected path prefixes
  (Jupiter's ``/swap/`` and ``/price/``) without the configured ``x-api-key`` header:
  HTTP 401 ``{"error": "Unauthorized", "errorCode": "UNAUTHORIZED"}``. The key is
  compared in constant time.
- :func:`read_json` decodes a request body with JSON numbers as ``Decimal`` (money never
  passes through a float) and answers 400 for anything that is not a JSON object.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Final

from aiohttp import web

from valux.sandbox.market import Market

__all__ = [
    "CLOSING",
    "EVM",
    "MARKET",
    "PROTECTED_PREFIXES",
    "SETTINGS",
    "ServiceConfig",
    "api_key_middleware",
    "error_response",
    "read_json",
]

PROTECTED_PREFIXES: Final = ("/swap/", "/price/")

_DEFAULT_LEVELS: Final = MappingProxyType({"medium": 10_000, "high": 50_000, "veryHigh": 200_000})


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceConfig:
    """Settings of the Jupiter-shaped service and the price APIs next to it."""

    api_key: str | None = None
    """Required ``x-api-key`` for ``/swap/`` and ``/price/``; ``None`` = open."""
    priority_levels: Mapping[str, int] = field(default_factory=lambda: _DEFAULT_LEVELS)
    """Estimated compute-unit price (µlamports/CU) per ``priorityLevel``."""
    default_compute_unit_limit: int = 1_400_000
    """``computeUnitLimit`` without ``dynamicComputeUnitLimit`` (Jupiter's default)."""
    compute_unit_margin_pct: int = 20
    """Head-room added to the simulated units under ``dynamicComputeUnitLimit``."""
    pyth_stream_interval_s: float = 0.4
    """Seconds between two events of the Hermes price stream."""

    def __post_init__(self) -> None:
        if self.api_key == "":
            raise ValueError("api_key must be None (open) or a non-empty string")
        if "medium" not in self.priority_levels:
            raise ValueError("priority_levels needs at least 'medium' (the 'auto' level)")
        if not self.pyth_stream_interval_s > 0:
            raise ValueError("pyth_stream_interval_s must be > 0")


MARKET: Final = web.AppKey("market", Market)
SETTINGS: Final = web.AppKey("settings", ServiceConfig)
CLOSING: Final = web.AppKey("closing", asyncio.Event)
EVM: Final = web.AppKey("evm", object)
"""The EVM half of the sandbox (an EvmSandbox), or None."""
"""Set when the service stops, so long-lived streams end at once."""


def error_response(status: int, message: str, code: str) -> web.Response:
    """A Jupiter-style error answer."""
    return web.json_response({"error": message, "errorCode": code}, status=status)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def api_key_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse protected paths without the configured ``x-api-key``."""
    expected = request.app[SETTINGS].api_key
    if expected is not None and request.path.startswith(PROTECTED_PREFIXES):
        given = request.headers.get("x-api-key", "")
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return error_response(401, "Unauthorized", "UNAUTHORIZED")
    return await handler(request)


async def read_json(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object with Decimal numbers; 400 otherwise."""
    try:
        body = json.loads(await request.read(), parse_float=Decimal)
    except ValueError:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "body is not JSON", "errorCode": "INVALID_REQUEST"}),
            content_type="application/json",
        ) from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "body must be an object", "errorCode": "INVALID_REQUEST"}),
            content_type="application/json",
        )
    return body
