"""Prices and the manual price feed: ``/api/v1/prices``, ``/api/v1/feeds/manual/ticks``."""

from __future__ import annotations

import time
from dataclasses import replace

from aiohttp import web

from valux.api.auth_service import AUTH
from valux.api.errors import NotFoundError
from valux.api.http import json_response, read_body
from valux.api.keys import BACKEND
from valux.api.models import AcceptedOut, TicksIn
from valux.api.routes import OBJECT, Access, Reply, Route
from valux.feeds.ticks import Tick, parse_ticks

MANUAL_FEED_DISABLED = (
    "the manual price feed is disabled; enable it with the setting "
    "feeds.manual.enabled = true (environment: VALUX_FEEDS__MANUAL__ENABLED=true) and restart"
)


async def prices(request: web.Request) -> web.Response:
    return json_response(await request.app[BACKEND].prices())


async def push_manual_ticks(request: web.Request) -> web.Response:
    backend = request.app[BACKEND]
    if not backend.manual_feed_enabled:
        raise NotFoundError(MANUAL_FEED_DISABLED, code="MANUAL_FEED_DISABLED")
    body = await read_body(request, TicksIn)
    now = time.time()
    skew = request.app[AUTH].config.manual_feed_max_skew_s
    ticks = [
        clamped(t, now, skew)
        for t in parse_ticks([t.model_dump() for t in body.ticks], now=lambda: now)
    ]
    accepted = await backend.push_manual_ticks(ticks)
    return json_response({"accepted": accepted}, status=202)


def clamped(tick: Tick, now: float, skew_s: float) -> Tick:
    """The tick with ``ts`` clamped to ``now ± skew_s``: a caller may not move the rules'
    clock (stale-trade timers, breaker days) by pushing odd timestamps."""
    ts = min(max(tick.ts, now - skew_s), now + skew_s)
    return tick if ts == tick.ts else replace(tick, ts=ts)


ROUTES = [
    Route("GET", "/api/v1/prices", prices, "getPrices", "Latest price per token", "prices",
          {200: Reply("Latest price per token with source and age.", schema=OBJECT)}),
    Route("POST", "/api/v1/feeds/manual/ticks", push_manual_ticks, "pushManualTicks",
          "Push price ticks into the manual feed", "prices",
          {202: Reply("The ticks were handed to the manual feed.", model=AcceptedOut)},
          body=TicksIn, errors=(404,), access=Access.ADMIN,
          description="Admins only. Served only when `feeds.manual.enabled` is true "
                      "(`VALUX_FEEDS__MANUAL__ENABLED=true`); otherwise 404 "
                      "`MANUAL_FEED_DISABLED`. `ts` defaults to the server's clock and is "
                      "clamped to now ± `api.manual_feed_max_skew_s` (5 s)."),
]  # fmt: skip
