"""Signals, positions and trades: ``/api/v1/signals``, ``/positions``, ``/trades``."""

from __future__ import annotations

from aiohttp import web

from valux.api.http import json_response, path_id, read_body, read_query
from valux.api.keys import BACKEND
from valux.api.models import PositionsQuery, SignalIn, SignalResultOut, TradesQuery
from valux.api.routes import ARRAY_OF_OBJECTS, OBJECT, Reply, Route

POSITION = Reply("The position.", schema=OBJECT)


async def post_signal(request: web.Request) -> web.Response:
    signal = await read_body(request, SignalIn)
    result = await request.app[BACKEND].post_signal(signal)
    return json_response(result, status=200 if result.get("duplicate") else 201)


async def get_signal(request: web.Request) -> web.Response:
    return json_response(await request.app[BACKEND].get_signal(path_id(request)))


async def list_positions(request: web.Request) -> web.Response:
    q = read_query(request, PositionsQuery)
    positions = await request.app[BACKEND].list_positions(
        agent_id=q.agent, status=q.status, limit=q.limit, offset=q.offset
    )
    return json_response(positions)


async def get_position(request: web.Request) -> web.Response:
    return json_response(await request.app[BACKEND].get_position(path_id(request)))


async def close_position(request: web.Request) -> web.Response:
    return json_response(await request.app[BACKEND].close_position(path_id(request)))


async def list_trades(request: web.Request) -> web.Response:
    q = read_query(request, TradesQuery)
    trades = await request.app[BACKEND].list_trades(
        agent_id=q.agent, limit=q.limit, offset=q.offset
    )
    return json_response(trades)


ROUTES = [
    Route("POST", "/api/v1/signals", post_signal, "postSignal",
          "Submit a trading signal (idempotent by id)", "signals",
          {201: Reply("First time: what each agent did.", model=SignalResultOut),
           200: Reply("A repeat of a known id: the first result, duplicate=true.",
                      model=SignalResultOut)},
          body=SignalIn,
          description="Fans the signal out to the eligible agents in parallel. Posting the "
                      "same id again returns the first result with `duplicate: true`."),
    Route("GET", "/api/v1/signals/{id}", get_signal, "getSignal", "Get a signal's result",
          "signals", {200: Reply("The stored result.", model=SignalResultOut)}),
    Route("GET", "/api/v1/positions", list_positions, "listPositions", "List positions",
          "positions", {200: Reply("Positions, newest first.", schema=ARRAY_OF_OBJECTS)},
          query=PositionsQuery),
    Route("GET", "/api/v1/positions/{id}", get_position, "getPosition", "Get a position",
          "positions", {200: POSITION}),
    Route("POST", "/api/v1/positions/{id}/close", close_position, "closePosition",
          "Sell a whole position now", "positions", {200: POSITION}, errors=(409,)),
    Route("GET", "/api/v1/trades", list_trades, "listTrades", "List trades (fills)", "trades",
          {200: Reply("Trades, newest first.", schema=ARRAY_OF_OBJECTS)}, query=TradesQuery),
]  # fmt: skip
