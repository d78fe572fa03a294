"""Jupiter Price v3, DexScreener and Pyth Hermes shaped price endpoints over the pools.

Every price here is derived at request time from the pools' reserves and the market's
SOL/USD price, so the endpoints follow swaps and ``/control/price`` at once.

Contract:

- ``GET /price/v3?ids=<mint>,<mint>`` (≤ 50 ids; behind the Jupiter API key): an object
  keyed by mint, ``{"usdPrice": number, "blockId": slot, "decimals", "priceChange24h":
  percent since the sandbox started, "createdAt": ISO-8601 UTC, "liquidity": USD}``.
  Unknown mints are omitted, as Jupiter omits tokens without a reliable price. The SOL
  mint answers the market's SOL/USD price.
- ``GET /latest/dex/tokens/{a,b,…}`` (≤ 30 addresses): ``{"schemaVersion": "1.0.0",
  "pairs": [...] | null}``, one pair per pool holding a named token (the SOL mint names
  every pool); base = the test token, quote = wrapped SOL; prices as strings.
  ``txns`` and ``volume`` are zero: the sandbox does not index swaps.
- ``GET /v2/updates/price/latest?ids[]=<hex>&…`` (Hermes): ``{"binary": {"encoding",
  "data"}, "parsed": [{"id" (no 0x), "price": {"price", "conf", "expo",
  "publish_time"}, "ema_price": {…}, "metadata": {…}}]}``; ``value = int(price) ×
  10**expo``. Unknown ids are a 404 ``Price ids not found: …`` unless
  ``ignore_invalid_price_ids=true``. The SOL/USD feed has mainnet's id; test tokens
  have ids derived from their symbol (:func:`pyth_feed_ids`). ``binary.data`` is a
  placeholder, not a Wormhole-signed update: it cannot be posted on chain.
- ``GET /v2/updates/price/stream`` (same query): Server-Sent Events, one ``data:`` line
  with the ``/latest`` JSON every ``pyth_stream_interval_s``, until the client leaves or
  the service stops.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import time
from decimal import Decimal
from typing import Any, Final

from aiohttp import web
from solders.pubkey import Pubkey

from valux.sandbox.market import SOL_DECIMALS, Market, Pool
from valux.sandbox.spl import NATIVE_MINT
from valux.sandbox.web import CLOSING, MARKET, SETTINGS, error_response

__all__ = ["PYTH_SOL_USD_FEED", "decimal_text", "pyth_feed_ids", "routes"]

PYTH_SOL_USD_FEED: Final = "ef0d8b6fda2ceba41da15d4095d1da392a0d2f8ed0c6c7bc0f4cfac8c280b56d"
"""Mainnet Pyth's SOL/USD feed id (the sandbox serves its own prices under it)."""
MAX_PRICE_IDS: Final = 50
MAX_DEX_ADDRESSES: Final = 30
CONFIDENCE: Final = Decimal("0.0005")
"""Pyth ``conf`` as a fraction of the price."""

routes = web.RouteTableDef()


def decimal_text(value: Decimal, significant: int = 12) -> str:
    """``value`` as a plain decimal string with at most ``significant`` digits."""
    if value == 0:
        return "0"
    exponent = value.adjusted() - significant + 1
    rounded = value.quantize(Decimal(1).scaleb(exponent)) if exponent < 0 else value
    text = format(rounded, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def pyth_feed_ids(market: Market) -> dict[str, str]:
    """``{symbol: feed id}``: mainnet's SOL/USD id, derived ids for the test tokens."""
    ids = {"SOL": PYTH_SOL_USD_FEED}
    for symbol in market.pools:
        ids[symbol] = hashlib.sha256(f"valux-sandbox:pyth:{symbol}".encode()).hexdigest()
    return ids


def _created_at(market: Market) -> str:
    return market.created_at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ------------------------------------------------------------------ Jupiter Price v3


@routes.get("/price/v3")
async def jupiter_price(request: web.Request) -> web.Response:
    """Jupiter Price API v3 (see the module contract)."""
    market = request.app[MARKET]
    ids = [i.strip() for i in request.query.get("ids", "").split(",") if i.strip()]
    if not ids:
        return error_response(400, "Query parameter ids is required", "INVALID_REQUEST")
    if len(ids) > MAX_PRICE_IDS:
        return error_response(400, f"At most {MAX_PRICE_IDS} ids", "INVALID_REQUEST")
    slot = market.ledger.slot
    out: dict[str, Any] = {}
    for mint_text in dict.fromkeys(ids):
        try:
            mint = Pubkey.from_string(mint_text)
        except ValueError:
            continue
        if mint == NATIVE_MINT:
            total_sol = sum(
                (Decimal(market.reserves(p).sol) for p in market.pools.values()), Decimal(0)
            )
            price, decimals = market.sol_usd, SOL_DECIMALS
            liquidity = total_sol / (Decimal(10) ** SOL_DECIMALS) * market.sol_usd
            change = market.change_pct(None)
        else:
            pool = market.pool_by_mint(mint)
            if pool is None or market.price_usd(pool) == 0:
                continue
            price, decimals = market.price_usd(pool), pool.decimals
            liquidity, change = market.liquidity_usd(pool), market.change_pct(pool)
        out[mint_text] = {
            "usdPrice": float(price),
            "blockId": slot,
            "decimals": decimals,
            "priceChange24h": float(change),
            "createdAt": _created_at(market),
            "liquidity": float(liquidity),
        }
    return web.json_response(out)


# ------------------------------------------------------------------ DexScreener


def _pair(market: Market, pool: Pool, base_url: str) -> dict[str, Any]:
    reserves = market.reserves(pool)
    price_native = market.price_sol(pool)
    price_usd = market.price_usd(pool)
    change = float(market.change_pct(pool))
    supply = Decimal(market.supply(pool)) / (Decimal(10) ** pool.decimals)
    zero_counts = {"buys": 0, "sells": 0}
    return {
        "chainId": "solana",
        "dexId": "valux-sandbox",
        "url": f"{base_url}/latest/dex/pairs/solana/{pool.address}",
        "pairAddress": str(pool.address),
        "labels": ["CPMM"],
        "baseToken": {"address": str(pool.mint), "name": pool.name, "symbol": pool.symbol},
        "quoteToken": {"address": str(NATIVE_MINT), "name": "Wrapped SOL", "symbol": "SOL"},
        "priceNative": decimal_text(price_native),
        "priceUsd": decimal_text(price_usd),
        "txns": {k: dict(zero_counts) for k in ("m5", "h1", "h6", "h24")},
        "volume": {"h24": 0, "h6": 0, "h1": 0, "m5": 0},
        "priceChange": {"m5": change, "h1": change, "h6": change, "h24": change},
        "liquidity": {
            "usd": float(market.liquidity_usd(pool)),
            "base": float(Decimal(reserves.token) / (Decimal(10) ** pool.decimals)),
            "quote": float(Decimal(reserves.sol) / (Decimal(10) ** SOL_DECIMALS)),
        },
        "fdv": float(supply * price_usd),
        "marketCap": float(supply * price_usd),
        "pairCreatedAt": int(market.created_at.timestamp() * 1000),
    }


@routes.get("/latest/dex/tokens/{addresses}")
async def dexscreener_tokens(request: web.Request) -> web.Response:
    """DexScreener's token-pairs endpoint (see the module contract)."""
    market = request.app[MARKET]
    wanted = [a.strip() for a in request.match_info["addresses"].split(",") if a.strip()]
    pools: dict[str, Pool] = {}
    for address in wanted[:MAX_DEX_ADDRESSES]:
        if address == str(NATIVE_MINT):
            pools.update((p.symbol, p) for p in market.pools.values())
            continue
        try:
            pool = market.pool_by_mint(Pubkey.from_string(address))
        except ValueError:
            continue
        if pool is not None:
            pools[pool.symbol] = pool
    base_url = f"{request.scheme}://{request.host}"
    pairs = [_pair(market, pool, base_url) for pool in pools.values()]
    return web.json_response({"schemaVersion": "1.0.0", "pairs": pairs or None})


# ------------------------------------------------------------------ Pyth Hermes


def _pyth_price(value: Decimal, publish_time: int) -> dict[str, Any]:
    expo = -8 if value >= Decimal("0.01") else -10
    scale = Decimal(10) ** -expo
    return {
        "price": str(int(value * scale)),
        "conf": str(int(value * CONFIDENCE * scale)),
        "expo": expo,
        "publish_time": publish_time,
    }


def _requested_ids(request: web.Request) -> list[str]:
    raw = request.query.getall("ids[]", []) + request.query.getall("ids", [])
    return [i.lower().removeprefix("0x") for i in raw if i]


def _hermes_update(market: Market, ids: list[str], encoding: str) -> dict[str, Any]:
    feeds = {feed: symbol for symbol, feed in pyth_feed_ids(market).items()}
    now = int(time.time())
    parsed: list[dict[str, Any]] = []
    for feed in ids:
        symbol = feeds.get(feed)
        if symbol is None:
            continue
        value = market.sol_usd if symbol == "SOL" else market.price_usd(market.pools[symbol])
        price = _pyth_price(value, now)
        parsed.append(
            {
                "id": feed,
                "price": price,
                "ema_price": dict(price),
                "metadata": {
                    "slot": market.ledger.slot,
                    "proof_available_time": now,
                    "prev_publish_time": now - 1,
                },
            }
        )
    blob = b"PNAU" + json.dumps(parsed, separators=(",", ":")).encode()
    data = blob.hex() if encoding == "hex" else base64.b64encode(blob).decode()
    return {"binary": {"encoding": encoding, "data": [data]}, "parsed": parsed}


def _hermes_query(request: web.Request) -> tuple[list[str], str, bool] | web.Response:
    market = request.app[MARKET]
    ids = _requested_ids(request)
    if not ids:
        return web.Response(status=400, text="Missing query parameter ids[]")
    encoding = request.query.get("encoding", "hex")
    if encoding not in ("hex", "base64"):
        return web.Response(status=400, text=f"Invalid encoding {encoding}")
    known = set(pyth_feed_ids(market).values())
    unknown = [i for i in ids if i not in known]
    if unknown and request.query.get("ignore_invalid_price_ids", "false") != "true":
        return web.Response(status=404, text=f"Price ids not found: {', '.join(unknown)}")
    parsed = request.query.get("parsed", "true") != "false"
    return [i for i in ids if i in known], encoding, parsed


@routes.get("/v2/updates/price/latest")
async def hermes_latest(request: web.Request) -> web.Response:
    """Pyth Hermes' latest price updates (see the module contract)."""
    query = _hermes_query(request)
    if isinstance(query, web.Response):
        return query
    ids, encoding, parsed = query
    update = _hermes_update(request.app[MARKET], ids, encoding)
    if not parsed:
        del update["parsed"]
    return web.json_response(update)


@routes.get("/v2/updates/price/stream")
async def hermes_stream(request: web.Request) -> web.StreamResponse:
    """Pyth Hermes' Server-Sent-Events stream of the same updates."""
    query = _hermes_query(request)
    if isinstance(query, web.Response):
        return query
    ids, encoding, parsed = query
    interval = request.app[SETTINGS].pyth_stream_interval_s
    closing = request.app[CLOSING]
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    with contextlib.suppress(ConnectionError):
        while not closing.is_set():
            update = _hermes_update(request.app[MARKET], ids, encoding)
            if not parsed:
                del update["parsed"]
            await response.write(f"data: {json.dumps(update)}\n\n".encode())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(closing.wait(), interval)
    return response
