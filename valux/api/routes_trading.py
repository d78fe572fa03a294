"""Signals, positions and trades: ``/api/v1/signals``, ``/positions``, ``/trades``."""

from __future__ import annotations

from aiohttp import web

from valux.api.http import json_response, owner, path_id, read_body, read_query
from valux.api.keys import BACKEND, REQUEST_ID
from valux.api.models import PositionsQuery, SignalIn, SignalResultOut, TradesQuery
from valux.api.routes import ARRAY_OF_OBJECTS, OBJECT, Reply, Route

POSITION = Reply("The position.", schema=OBJECT)


RETRY_AFTER_S = 2


async def post_signal(request: web.Request) -> web.Response:
    """201 the first time, 200 for a repeat; 202 while a buy is still in flight; 503 with
    ``Retry-After`` when some agent could not decide now (posting again decides it)."""
    signal = await read_body(request, SignalIn)
    return await answer_signal(request, signal, owner(request))


async def answer_signal(request: web.Request, signal: SignalIn, user_id: str) -> web.Response:
    """Send ``signal`` to ``user_id``'s agents and answer as ``POST /api/v1/signals`` does."""
    result = await request.app[BACKEND].post_signal(signal, owner=user_id)
    statuses = {o.get("status") for o in result.get("outcomes", [])}
    if "refused" in statuses:
        reasons = sorted({o["reason"] for o in result["outcomes"] if o.get("status") == "refused"})
        body = {
            "error": {
                "code": "UNAVAILABLE",
                "message": "some agents could not decide this signal now; post it again: "
                + "; ".join(reasons),
                "request_id": request.get(REQUEST_ID),
            },
            **result,
        }
        return json_response(body, status=503, headers={"Retry-After": str(RETRY_AFTER_S)})
    if "pending" in statuses:
        location = f"/api/v1/signals/{signal.id}"
        return json_response(result, status=202, headers={"Location": location})
    return json_response(result, status=200 if result.get("duplicate") else 201)


async def get_signal(request: web.Request) -> web.Response:
    return json_response(
        await request.app[BACKEND].get_signal(path_id(request), owner=owner(request))
    )


async def list_positions(request: web.Request) -> web.Response:
    q = read_query(request, PositionsQuery)
    positions = await request.app[BACKEND].list_positions(
        agent_id=q.agent, status=q.status, limit=q.limit, offset=q.offset, owner=owner(request)
    )
    return json_response(positions)


async def get_position(request: web.Request) -> web.Response:
    return json_response(
        await request.app[BACKEND].get_position(path_id(request), owner=owner(request))
    )


async def close_position(request: web.Request) -> web.Response:
    return json_response(
        await request.app[BACKEND].close_position(path_id(request), owner=owner(request))
    )


async def list_trades(request: web.Request) -> web.Response:
    q = read_query(request, TradesQuery)
    trades = await request.app[BACKEND].list_trades(
        agent_id=q.agent, limit=q.limit, offset=q.offset, owner=owner(request)
    )
    return json_response(trades)


ROUTES = [
    Route("POST", "/api/v1/signals", post_signal, "postSignal",
          "Submit a trading signal (idempotent by id)", "signals",
          {201: Reply("First time: what each agent did.", model=SignalResultOut),
           200: Reply("A repeat of a known id: the first result, duplicate=true.",
                      model=SignalResultOut),
           202: Reply("A buy is still in flight (outcome `pending`); `Location` shows how "
                      "it ends.", model=SignalResultOut),
           503: Reply("Some agents could not decide now (outcome `refused`: the journal or "
                      "an actor is unreachable); `Retry-After` says when to post again.",
                      model=SignalResultOut)},
          body=SignalIn, rate_limit="signals",
          description="Fans the signal out to the caller's agents (or those of `agents` that "
                      "are the caller's) in parallel. Signal ids are per user. Every "
                      "agent's outcome is "
                      "recorded in PostgreSQL: posting the same id again returns the first "
                      "result with `duplicate: true` and never reaches an agent that decided "
                      "it; an agent that could not decide the first time decides it now."),
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
