"""Control endpoints of the sandbox: fund wallets, move prices, shape the network.

Not part of any real API: these are what a test or a user trying live mode calls to set
the scene. They live under ``/control`` on the service port and need no API key.

Contract (JSON bodies; numbers may be JSON numbers or decimal strings, read as
``Decimal``, never as floats):

- ``POST /control/fund {"address", "amount", "token"?}``: without ``token`` (or with
  ``"SOL"``) airdrop ``amount`` SOL (whole SOL, up to 9 decimals); with a test token
  (symbol or mint) mint ``amount`` whole tokens to the address's associated token
  account, creating it. Answers ``{"signature", "account", "mint", "amount" (base units,
  string), "balance" (base units, string)}``. Lands at once, in a real transaction.
- ``POST /control/price {"token", "price"}``: move ``token``'s pool to ``price`` USD per
  whole token by minting into / burning from its token vault; ``"SOL"`` sets the SOL/USD
  price every USD figure derives from. Answers the token's new state.
- On a sandbox with an EVM (``valux sandbox`` without ``--no-evm``), an ``address`` of
  ``0x`` + 40 hex digits is an EVM account: ``fund`` gives it ETH (no ``token``, or
  ``"ETH"``) or a token of ``evm_tokens`` (symbol or address; WETH and USDC from the
  faucet's reserve, the test ERC-20s minted), answering ``{"address", "token",
  "balance"}`` (whole units, string); and a ``price`` for a token of ``evm_tokens`` moves
  its pools against ``quote`` (default ``WETH``) to ``price`` quote per token by a real
  swap from the faucet, answering ``{"token", "quote", "price"}``.
- ``POST /control/network {"slot_ms"?, "landing_delay_slots"?, "drop_rate"?,
  "skip_rate"?, "advance"?}``: change the ledger's network knobs at run time
  (``slot_ms: null`` stops the clock) and/or produce ``advance`` (≤ 10,000) slots now.
- ``GET /control/state``: slot, block height, network knobs, SOL/USD and every pool.
- Errors: 400 ``{"error", "errorCode"}``; an unknown token is 404 ``TOKEN_NOT_FOUND``.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from aiohttp import web
from solders.pubkey import Pubkey

from valux.sandbox.ledger import LedgerError
from valux.sandbox.market import SOL_DECIMALS, Market, MarketError, Pool
from valux.sandbox.price_apis import decimal_text
from valux.sandbox.web import EVM, MARKET, error_response, read_json

__all__ = ["pool_state", "routes"]

routes = web.RouteTableDef()

MAX_ADVANCE = 10_000
"""Most slots one ``/control/network`` call may produce (the loop is busy meanwhile)."""


def _decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | str | Decimal):
        return None
    try:
        number = Decimal(value)
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _market_error(exc: MarketError) -> web.Response:
    status = 404 if exc.code == "TOKEN_NOT_FOUND" else 400
    return error_response(status, exc.message, exc.code)


def pool_state(market: Market, pool: Pool) -> dict[str, Any]:
    """One pool as ``/control/state`` reports it (amounts in base units, as strings)."""
    reserves = market.reserves(pool)
    return {
        "symbol": pool.symbol,
        "mint": str(pool.mint),
        "decimals": pool.decimals,
        "pool": str(pool.address),
        "sol_vault": str(pool.sol_vault),
        "token_vault": str(pool.token_vault),
        "sol_reserve": str(reserves.sol),
        "token_reserve": str(reserves.token),
        "price_sol": decimal_text(market.price_sol(pool)),
        "price_usd": decimal_text(market.price_usd(pool)),
    }


@routes.post("/control/fund")
async def fund(request: web.Request) -> web.Response:
    """Airdrop SOL or mint a test token to an address (see the module contract)."""
    market = request.app[MARKET]
    body = await read_json(request)
    if _EVM_ADDRESS.fullmatch(str(body.get("address", ""))):
        return await _fund_evm(request, body)
    try:
        owner = Pubkey.from_string(str(body.get("address", "")))
    except ValueError:
        return error_response(400, "address must be a base-58 public key", "INVALID_REQUEST")
    amount = _decimal(body.get("amount"))
    if amount is None:
        return error_response(400, "amount must be a number", "INVALID_REQUEST")
    token = body.get("token")
    if token is not None and not isinstance(token, str):
        return error_response(400, "token must be a symbol or a mint", "INVALID_REQUEST")
    try:
        funding = market.fund(owner, amount, token)
    except MarketError as exc:
        return _market_error(exc)
    except LedgerError as exc:
        return error_response(400, exc.message, "TRANSACTION_FAILED")
    return web.json_response(
        {
            "signature": funding.signature,
            "account": str(funding.account),
            "mint": str(funding.mint),
            "amount": str(funding.amount),
            "balance": str(funding.balance),
        }
    )


@routes.post("/control/price")
async def set_price(request: web.Request) -> web.Response:
    """Move a pool (or SOL/USD) to a USD price (see the module contract)."""
    market = request.app[MARKET]
    body = await read_json(request)
    token, price = body.get("token"), _decimal(body.get("price"))
    if not isinstance(token, str) or price is None:
        return error_response(
            400, "token (string) and price (number) are required", "INVALID_REQUEST"
        )
    evm = request.app[EVM]
    if evm is not None and _is_evm_token(evm, token):
        return await _price_evm(evm, token, price, body.get("quote", "WETH"))
    try:
        market.set_price(token, price)
        if token.upper() == "SOL":
            return web.json_response({"symbol": "SOL", "price_usd": decimal_text(market.sol_usd)})
        return web.json_response(pool_state(market, market.resolve(token)))
    except MarketError as exc:
        return _market_error(exc)


_EVM_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


def _is_evm_token(evm: Any, token: str) -> bool:
    tokens = evm.tokens
    return token in tokens or token.lower() in {a.lower() for a in tokens.values()}


async def _fund_evm(request: web.Request, body: dict[str, Any]) -> web.Response:
    evm: Any = request.app[EVM]
    if evm is None:
        return error_response(
            400, "this sandbox runs no EVM (started with --no-evm)", "EVM_NOT_RUNNING"
        )
    amount = _decimal(body.get("amount"))
    if amount is None or amount <= 0:
        return error_response(400, "amount must be a number > 0", "INVALID_REQUEST")
    token = body.get("token")
    if token is not None and not isinstance(token, str):
        return error_response(400, "token must be a symbol or an address", "INVALID_REQUEST")
    if token is not None and token.upper() == "ETH":
        token = None
    if token is not None and not _is_evm_token(evm, token):
        return error_response(404, f"unknown EVM token {token!r}", "TOKEN_NOT_FOUND")
    address = str(body["address"])
    try:
        await evm.fund(address, amount, token)
        balance = await evm.balance(address, token)
    except Exception as exc:  # a node error: say what failed
        return error_response(400, f"funding failed: {exc}", "TRANSACTION_FAILED")
    return web.json_response(
        {"address": address, "token": token or "ETH", "balance": decimal_text(balance)}
    )


async def _price_evm(evm: Any, token: str, price: Decimal, quote: Any) -> web.Response:
    if not isinstance(quote, str) or not _is_evm_token(evm, quote):
        return error_response(400, "quote must be a token of evm_tokens", "INVALID_REQUEST")
    if price <= 0:
        return error_response(400, "price must be > 0", "INVALID_REQUEST")
    try:
        await evm.set_price(token, price, quote)
        now = await evm.price(token, quote)
    except Exception as exc:
        return error_response(400, f"moving the pool failed: {exc}", "TRANSACTION_FAILED")
    return web.json_response({"token": token, "quote": quote, "price": decimal_text(now)})


@routes.post("/control/network")
async def network(request: web.Request) -> web.Response:
    """Change the ledger's network knobs and/or advance slots (see the module contract)."""
    ledger = request.app[MARKET].ledger
    body = await read_json(request)
    try:
        if "slot_ms" in body:
            value = body["slot_ms"]
            ledger.slot_ms = None if value is None else float(value)
        if "landing_delay_slots" in body:
            ledger.landing_delay_slots = int(body["landing_delay_slots"])
        if "drop_rate" in body:
            ledger.drop_rate = float(body["drop_rate"])
        if "skip_rate" in body:
            ledger.skip_rate = float(body["skip_rate"])
        if "advance" in body:
            slots = int(body["advance"])
            if not 0 <= slots <= MAX_ADVANCE:
                raise ValueError(f"advance must be within 0..{MAX_ADVANCE} slots")
            ledger.advance(slots)
    except (TypeError, ValueError) as exc:
        return error_response(400, str(exc), "INVALID_REQUEST")
    return web.json_response(_network_state(request.app[MARKET]))


def _network_state(market: Market) -> dict[str, Any]:
    ledger = market.ledger
    return {
        "slot": ledger.slot,
        "block_height": ledger.block_height,
        "slot_ms": ledger.slot_ms,
        "landing_delay_slots": ledger.landing_delay_slots,
        "drop_rate": ledger.drop_rate,
        "skip_rate": ledger.skip_rate,
        "pending": ledger.pending_count(),
    }


@routes.get("/control/state")
async def state(request: web.Request) -> web.Response:
    """Everything a test might want to look at in one answer."""
    market = request.app[MARKET]
    return web.json_response(
        {
            **_network_state(market),
            "sol_usd": decimal_text(market.sol_usd),
            "sol_decimals": SOL_DECIMALS,
            "fee_bps": market.fee_bps,
            "pools": [pool_state(market, pool) for pool in market.pools.values()],
        }
    )
