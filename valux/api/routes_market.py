"""Prices and the manual price feed: ``/api/v1/prices``, ``/api/v1/feeds/manual/ticks``."""

from __future__ import annotations

from aiohttp import web

from valux.api.errors import NotFoundError
from valux.api.http import json_response, read_body
from valux.api.keys import BACKEND
from valux.api.models import AcceptedOut, TicksIn
from valux.api.routes import OBJECT, Reply, Route
from valux.feeds.ticks import parse_ticks

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
    ticks = parse_ticks([t.model_dump() for t in body.ticks])
    accepted = await backend.push_manual_ticks(ticks)
    return json_response({"accepted": accepted}, status=202)


ROUTES = [
    Route("GET", "/api/v1/prices", prices, "getPrices", "Latest price per token", "prices",
          {200: Reply("Latest price per token with source and age.", schema=OBJECT)}),
    Route("POST", "/api/v1/feeds/manual/ticks", push_manual_ticks, "pushManualTicks",
          "Push price ticks into the manual feed", "prices",
          {202: Reply("The ticks were handed to the manual feed.", model=AcceptedOut)},
          body=TicksIn, errors=(404,),
          description="Served only when `feeds.manual.enabled` is true "
                      "(`VALUX_FEEDS__MANUAL__ENABLED=true`); otherwise 404 "
                      "`MANUAL_FEED_DISABLED`. `ts` defaults to the server's clock; "
                      "millisecond timestamps are refused."),
]  # fmt: skip
