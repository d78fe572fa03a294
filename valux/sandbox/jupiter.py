"""A Jupiter-shaped swap service over the sandbox's pools, and the HTTP service hosting it.

Production code calls it with its real Jupiter client (aiohttp): the request parameters,
response fields and error shape are those of Jupiter's Swap API (``/swap/v1``, the
legacy v6 JSON), and the transaction it returns is a real v0 transaction for the ledger.

Contract:

- ``GET /swap/v1/quote?inputMint&outputMint&amount&slippageBps=50&swapMode=ExactIn``:
  SOL ⇄ test token only (one pool, one route step). Amounts are integer strings;
  ``otherAmountThreshold`` is ``outAmount·(1−slippage)`` (ExactIn, the minimum out) or
  ``inAmount·(1+slippage)`` (ExactOut, the maximum in); ``priceImpactPct`` is a decimal
  fraction string; ``routePlan`` has one step naming the pool (``ammKey``) and the fee.
  Unknown mints: 400 ``TOKEN_NOT_TRADABLE``; no pool between the two: 400
  ``COULD_NOT_FIND_ANY_ROUTE``.
- ``POST /swap/v1/swap {userPublicKey, quoteResponse, wrapAndUnwrapSol=true,
  dynamicComputeUnitLimit=false, prioritizationFeeLamports, computeUnitPriceMicroLamports,
  destinationTokenAccount}``: a base64 **v0** ``VersionedTransaction``, fee payer = the
  user: ``SetComputeUnitLimit``, ``SetComputeUnitPrice``, then the market's transfers
  (see :mod:`valux.sandbox.market`), **signed by the pool authority with the user's
  signature slot left empty** for the wallet to fill. Its blockhash is the ledger's
  ``confirmed`` one; ``lastValidBlockHeight`` says until when it can land.
- **Slippage is enforced here**, not on chain (plain transfers cannot check a minimum
  out): at ``/swap`` time the pool is re-quoted for the quote's fixed side; if the amount
  it would give now is worse than the quote allows within ``slippageBps`` the answer is
  HTTP 400 ``{"error": "Slippage tolerance exceeded: …", "errorCode":
  "SLIPPAGE_TOLERANCE_EXCEEDED"}`` (the name of Jupiter's on-chain error 6001).
  A ``quoteResponse`` whose mints, amounts or mode this service never quoted (the newest
  100,000 quotes are remembered) is refused with 400 ``INVALID_QUOTE``: on mainnet an
  altered quote fails on chain; here it must not be paid out.
  Otherwise the transaction transfers **exactly** the quote's ``inAmount`` and
  ``outAmount``, so a landed swap moves exactly what the quote said; it can still fail
  on chain (e.g. the user lacks funds), never fill at another price.
- Compute budget: ``dynamicComputeUnitLimit`` simulates the swap and sets the limit to
  the units used plus ``compute_unit_margin_pct``; otherwise 1,400,000. Priority fee:
  an integer ``prioritizationFeeLamports`` is the total priority fee in lamports;
  ``{"priorityLevelWithMaxLamports": {"priorityLevel", "maxLamports"}}`` takes the
  level's estimated µlamports/CU (``ServiceConfig.priority_levels``) times the limit,
  capped at ``maxLamports``; absent or ``"auto"`` = the ``medium`` level, uncapped. The
  answer's ``prioritizationFeeLamports`` is what the set price really costs
  (``ceil(price × limit / 1e6)``); ``simulationError`` reports a failed simulation.
- ``asLegacyTransaction`` and Jito tips are refused with 400 (not modelled).
- :class:`JupiterService` serves these routes plus :mod:`valux.sandbox.price_apis` and
  :mod:`valux.sandbox.control` on one loopback port, with the ``x-api-key`` check of
  :func:`valux.sandbox.web.api_key_middleware` on ``/swap/`` and ``/price/``.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections import OrderedDict
from typing import Any, Final, Self

from aiohttp import web
from solders.compute_budget import set_compute_unit_limit, set_compute_unit_price
from solders.hash import Hash
from solders.instruction import Instruction
from solders.message import MessageV0
from solders.null_signer import NullSigner
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from valux.sandbox import control, price_apis
from valux.sandbox.ledger import Commitment
from valux.sandbox.market import Market, MarketError, Quote, SwapMode
from valux.sandbox.spl import MAX_COMPUTE_UNITS
from valux.sandbox.txerror import error_message
from valux.sandbox.web import (
    CLOSING,
    EVM,
    MARKET,
    SETTINGS,
    ServiceConfig,
    api_key_middleware,
    error_response,
    read_json,
)

__all__ = ["AMM_LABEL", "QUOTES", "JupiterService", "QuoteBook", "quote_json", "routes"]

AMM_LABEL: Final = "Valux Sandbox CPMM"
_BPS: Final = 10_000

routes = web.RouteTableDef()

_QuoteKey = tuple[str, str, int, int, str]


class QuoteBook:
    """The quotes this service issued (the newest ``capacity``), so ``/swap`` can refuse a
    ``quoteResponse`` whose amounts were altered — on mainnet such a swap fails on chain
    (its minimum out is unreachable); here it must not pay out the altered amount."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._keys: OrderedDict[_QuoteKey, None] = OrderedDict()

    @staticmethod
    def key(quote: Quote) -> _QuoteKey:
        return (
            str(quote.input_mint),
            str(quote.output_mint),
            quote.in_amount,
            quote.out_amount,
            str(quote.mode),
        )

    def remember(self, quote: Quote) -> None:
        """Record an issued quote."""
        key = self.key(quote)
        self._keys[key] = None
        self._keys.move_to_end(key)
        while len(self._keys) > self.capacity:
            self._keys.popitem(last=False)

    def issued(self, quote: Quote) -> bool:
        """Whether a quote with these mints, amounts and mode was issued here."""
        return self.key(quote) in self._keys


QUOTES: Final = web.AppKey("quotes", QuoteBook)


class _BadRequest(Exception):
    def __init__(self, message: str, code: str = "INVALID_REQUEST") -> None:
        super().__init__(message, code)
        self.message = message
        self.code = code


def _int_field(value: Any, name: str, *, minimum: int = 0, maximum: int = 2**64 - 1) -> int:
    if isinstance(value, bool):
        raise _BadRequest(f"{name} must be an integer")
    try:
        number = int(value) if isinstance(value, int | str) else None
    except ValueError:
        number = None
    if number is None or not minimum <= number <= maximum:
        raise _BadRequest(f"{name} must be an integer within {minimum}..{maximum}")
    return number


def _mint(value: Any, name: str) -> Pubkey:
    try:
        return Pubkey.from_string(str(value))
    except ValueError:
        raise _BadRequest(f"{name} is not a valid public key") from None


def _threshold(quote: Quote, slippage_bps: int) -> int:
    if quote.mode is SwapMode.EXACT_IN:
        return quote.out_amount * (_BPS - slippage_bps) // _BPS
    return quote.in_amount * (_BPS + slippage_bps) // _BPS


def quote_json(quote: Quote, slippage_bps: int, context_slot: int, took: float) -> dict[str, Any]:
    """A quote as Jupiter's ``/quote`` answers it."""
    return {
        "inputMint": str(quote.input_mint),
        "inAmount": str(quote.in_amount),
        "outputMint": str(quote.output_mint),
        "outAmount": str(quote.out_amount),
        "otherAmountThreshold": str(_threshold(quote, slippage_bps)),
        "swapMode": str(quote.mode),
        "slippageBps": slippage_bps,
        "platformFee": None,
        "priceImpactPct": price_apis.decimal_text(quote.price_impact, 8),
        "routePlan": [
            {
                "swapInfo": {
                    "ammKey": str(quote.pool.address),
                    "label": AMM_LABEL,
                    "inputMint": str(quote.input_mint),
                    "outputMint": str(quote.output_mint),
                    "inAmount": str(quote.in_amount),
                    "outAmount": str(quote.out_amount),
                    "feeAmount": str(quote.fee_amount),
                    "feeMint": str(quote.input_mint),
                },
                "percent": 100,
                "bps": _BPS,
            }
        ],
        "contextSlot": context_slot,
        "timeTaken": took,
    }


@routes.get("/swap/v1/quote")
async def get_quote(request: web.Request) -> web.Response:
    """Jupiter ``/quote`` (see the module contract)."""
    started = time.perf_counter()
    market = request.app[MARKET]
    query = request.query
    try:
        input_mint = _mint(query.get("inputMint"), "inputMint")
        output_mint = _mint(query.get("outputMint"), "outputMint")
        amount = _int_field(query.get("amount"), "amount", minimum=1)
        slippage = _int_field(query.get("slippageBps", "50"), "slippageBps")
        if slippage >= _BPS:
            raise _BadRequest("slippageBps must be below 10000")
        mode_text = query.get("swapMode", "ExactIn")
        if mode_text not in ("ExactIn", "ExactOut"):
            raise _BadRequest("swapMode must be ExactIn or ExactOut")
        quote = market.quote(input_mint, output_mint, amount, SwapMode(mode_text))
    except _BadRequest as exc:
        return error_response(400, exc.message, exc.code)
    except MarketError as exc:
        return error_response(400, exc.message, exc.code)
    request.app[QUOTES].remember(quote)
    took = time.perf_counter() - started
    return web.json_response(quote_json(quote, slippage, market.ledger.slot, took))


def _requote(market: Market, quotes: QuoteBook, body: dict[str, Any]) -> tuple[Quote, int]:
    """The quote the swap must honour, checked against the pool now."""
    raw = body.get("quoteResponse")
    if not isinstance(raw, dict):
        raise _BadRequest("quoteResponse is required")
    input_mint = _mint(raw.get("inputMint"), "quoteResponse.inputMint")
    output_mint = _mint(raw.get("outputMint"), "quoteResponse.outputMint")
    in_amount = _int_field(raw.get("inAmount"), "quoteResponse.inAmount", minimum=1)
    out_amount = _int_field(raw.get("outAmount"), "quoteResponse.outAmount", minimum=1)
    slippage = _int_field(raw.get("slippageBps", 50), "quoteResponse.slippageBps")
    if slippage >= _BPS:
        raise _BadRequest("slippageBps must be below 10000")
    mode_text = raw.get("swapMode", "ExactIn")
    if mode_text not in ("ExactIn", "ExactOut"):
        raise _BadRequest("quoteResponse.swapMode must be ExactIn or ExactOut")
    mode = SwapMode(mode_text)
    fixed = in_amount if mode is SwapMode.EXACT_IN else out_amount
    now = market.quote(input_mint, output_mint, fixed, mode)
    quoted = Quote(
        pool=now.pool,
        mode=mode,
        input_mint=input_mint,
        output_mint=output_mint,
        in_amount=in_amount,
        out_amount=out_amount,
        fee_amount=in_amount * market.fee_bps // _BPS,
        price_impact=now.price_impact,
    )
    if not quotes.issued(quoted):
        raise _BadRequest(
            "quoteResponse was not issued by this service or its amounts were changed; "
            "pass the /quote answer verbatim",
            "INVALID_QUOTE",
        )
    threshold = _threshold(quoted, slippage)
    if mode is SwapMode.EXACT_IN and now.out_amount < threshold:
        raise _BadRequest(
            f"Slippage tolerance exceeded: the pool now gives {now.out_amount} for "
            f"{in_amount}, below the minimum {threshold}",
            "SLIPPAGE_TOLERANCE_EXCEEDED",
        )
    if mode is SwapMode.EXACT_OUT and now.in_amount > threshold:
        raise _BadRequest(
            f"Slippage tolerance exceeded: the pool now needs {now.in_amount} for "
            f"{out_amount}, above the maximum {threshold}",
            "SLIPPAGE_TOLERANCE_EXCEEDED",
        )
    return quoted, slippage


def _priority(
    settings: ServiceConfig, spec: Any, limit: int, explicit_price: Any
) -> tuple[int, int]:
    """``(µlamports per CU, estimated µlamports per CU)`` for the request."""
    levels = settings.priority_levels
    if explicit_price is not None:
        price = _int_field(explicit_price, "computeUnitPriceMicroLamports")
        return price, price
    if spec is None or spec == "auto":
        estimate = levels["medium"]
        return estimate, estimate
    if isinstance(spec, int | str) and not isinstance(spec, bool):
        lamports = _int_field(spec, "prioritizationFeeLamports")
        return lamports * 1_000_000 // limit, lamports * 1_000_000 // limit
    if isinstance(spec, dict) and isinstance(spec.get("priorityLevelWithMaxLamports"), dict):
        options = spec["priorityLevelWithMaxLamports"]
        level = options.get("priorityLevel", "medium")
        if level not in levels:
            raise _BadRequest(f"unknown priorityLevel {level!r}; known: {sorted(levels)}")
        cap = _int_field(options.get("maxLamports"), "maxLamports")
        estimate = levels[level]
        lamports = min(-(-estimate * limit // 1_000_000), cap)
        return lamports * 1_000_000 // limit, estimate
    if isinstance(spec, dict) and "jitoTipLamports" in spec:
        raise _BadRequest("jitoTipLamports is not supported by the sandbox")
    raise _BadRequest("prioritizationFeeLamports must be an integer, 'auto' or an object")


def _build(
    market: Market,
    user: Pubkey,
    ixs: list[Instruction],
    limit: int,
    price: int,
    blockhash: Hash,
) -> VersionedTransaction:
    budget = [set_compute_unit_limit(limit), set_compute_unit_price(price)]
    message = MessageV0.try_compile(user, budget + ixs, [], blockhash)
    return VersionedTransaction(message, [NullSigner(user), market.authority])


@routes.post("/swap/v1/swap")
async def post_swap(request: web.Request) -> web.Response:
    """Jupiter ``/swap`` (see the module contract)."""
    market = request.app[MARKET]
    settings = request.app[SETTINGS]
    body = await read_json(request)
    try:
        user = _mint(body.get("userPublicKey"), "userPublicKey")
        if body.get("asLegacyTransaction"):
            raise _BadRequest("asLegacyTransaction is not supported by the sandbox")
        quote, _slippage = _requote(market, request.app[QUOTES], body)
        destination = body.get("destinationTokenAccount")
        ixs = market.swap_instructions(
            user,
            quote,
            wrap_unwrap=body.get("wrapAndUnwrapSol", True) is not False,
            destination=_mint(destination, "destinationTokenAccount") if destination else None,
        )
        blockhash, last_valid = market.ledger.latest_blockhash(Commitment.CONFIRMED)
        limit = min(settings.default_compute_unit_limit, MAX_COMPUTE_UNITS)
        simulation_error: dict[str, str] | None = None
        if body.get("dynamicComputeUnitLimit"):
            draft = _build(market, user, ixs, MAX_COMPUTE_UNITS, 0, blockhash)
            simulation = market.ledger.simulate(draft)
            if simulation.err is None:
                margin = simulation.units_consumed * settings.compute_unit_margin_pct // 100
                limit = min(simulation.units_consumed + margin, MAX_COMPUTE_UNITS)
            else:
                simulation_error = {
                    "errorCode": "TRANSACTION_SIMULATION_FAILED",
                    "error": error_message(simulation.err),
                }
        price, estimate = _priority(
            settings,
            body.get("prioritizationFeeLamports"),
            limit,
            body.get("computeUnitPriceMicroLamports"),
        )
        tx = _build(market, user, ixs, limit, price, blockhash)
    except _BadRequest as exc:
        return error_response(400, exc.message, exc.code)
    except MarketError as exc:
        return error_response(400, exc.message, exc.code)
    return web.json_response(
        {
            "swapTransaction": base64.b64encode(bytes(tx)).decode(),
            "lastValidBlockHeight": last_valid,
            "prioritizationFeeLamports": -(-price * limit // 1_000_000),
            "computeUnitLimit": limit,
            "prioritizationType": {
                "computeBudget": {"microLamports": price, "estimatedMicroLamports": estimate}
            },
            "dynamicSlippageReport": None,
            "simulationError": simulation_error,
        }
    )


class JupiterService:
    """The sandbox's HTTP services (Jupiter swap + price APIs + control) on one port.

    Use as ``async with JupiterService(market, ServiceConfig()) as svc: svc.url`` or with
    ``start``/``stop``. It serves the market; it does not run the ledger's clock.
    """

    def __init__(
        self,
        market: Market,
        settings: ServiceConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.market = market
        self.settings = settings or ServiceConfig()
        self.host = host
        self.port = port
        self._closing = asyncio.Event()
        self.quotes = QuoteBook()
        self._runner: web.AppRunner | None = None
        self._url: str | None = None
        self.evm: Any = None
        """The EVM half (an :class:`~valux.sandbox.evm.EvmSandbox`) the control routes
        serve 0x addresses with, when the sandbox runs one."""

    def make_app(self) -> web.Application:
        """The aiohttp application with every route of the service."""
        app = web.Application(middlewares=[api_key_middleware])
        app[MARKET] = self.market
        app[SETTINGS] = self.settings
        app[CLOSING] = self._closing
        app[QUOTES] = self.quotes
        app[EVM] = self.evm
        app.add_routes(routes)
        app.add_routes(price_apis.routes)
        app.add_routes(control.routes)
        return app

    async def start(self) -> str:
        """Listen and return the base URL."""
        if self._runner is not None:
            assert self._url is not None
            return self._url
        self._closing.clear()
        runner = web.AppRunner(self.make_app(), access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        await web.TCPSite(runner, self.host, self.port).start()
        self._runner = runner
        host, port = runner.addresses[0][:2]
        self._url = f"http://{host}:{port}"
        return self._url

    async def stop(self) -> None:
        """End open streams and stop listening (idempotent)."""
        self._closing.set()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    @property
    def url(self) -> str:
        """The base URL (``/swap/v1/quote`` etc. hang below it); only after :meth:`start`."""
        if self._url is None:
            raise RuntimeError("the service is not started")
        return self._url

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()
