"""An aiohttp client for Jupiter's Swap API v1 (``/swap/v1/quote``, ``/swap/v1/swap``).

Contract:

- **Where.** ``base_url`` defaults to mainnet's ``https://api.jup.ag``; the sandbox's
  ``jupiter_url`` works unchanged. Every request carries the ``x-api-key`` header when
  a key is given (Jupiter requires one on ``api.jup.ag``). The key never appears in a
  ``repr``, an error message or a log line.
- **Quote.** :meth:`JupiterClient.quote` asks ``GET /swap/v1/quote`` with integer base
  units and returns a :class:`JupiterQuote`: the parsed amounts (ints), the price
  impact (a ``Decimal`` *fraction*: Jupiter's ``priceImpactPct`` is ``0.01`` for 1 %
  despite its name, as the sandbox serves it) and the raw answer, which ``/swap`` must
  receive verbatim (JSON is parsed with Python's defaults so it re-serialises
  unchanged; every amount in it is a string).
- **Swap.** :meth:`JupiterClient.swap` posts ``{userPublicKey, quoteResponse,
  wrapAndUnwrapSol: true, dynamicComputeUnitLimit: true, dynamicSlippage: false,
  asLegacyTransaction: false, prioritizationFeeLamports: {priorityLevelWithMaxLamports:
  {maxLamports, priorityLevel}}}`` — the priority fee is Jupiter's estimate for the
  level, *capped* at ``maxLamports`` — and returns a :class:`JupiterSwap` (the base64
  v0 transaction, ``lastValidBlockHeight``, the priority fee and compute-unit limit it
  set, and ``simulationError``).
- **Errors and retries** (:mod:`valux.venues.jupiter.errors`): a connection error,
  timeout (``timeout_s`` per request), 5xx or 429 is retried up to ``max_attempts``
  requests in all, waiting :class:`~valux.feeds.http_source.Backoff` between them — at
  least the server's ``Retry-After`` on a 429 — then raised as
  :class:`~.errors.JupiterUnavailable`. Both calls are safe to repeat: a quote or a
  swap *build* moves nothing. A 4xx is raised at once as :class:`~.errors.JupiterRejected`
  with Jupiter's ``errorCode`` (``SLIPPAGE_TOLERANCE_EXCEEDED`` as
  :class:`~.errors.SlippageExceeded`); a 2xx whose body is not the expected JSON is
  :class:`~.errors.JupiterUnavailable` (nothing was done with it).
- The client owns its ``aiohttp.ClientSession`` unless one is passed in; ``close()``
  (or ``async with``) closes only a session it made. ``sleep`` and ``clock`` are
  injectable so backoff is tested without waiting.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Self

import aiohttp

from valux.feeds.http_source import Backoff, check_base_url, parse_retry_after
from valux.venues.jupiter.errors import (
    JupiterRejected,
    JupiterUnavailable,
    SlippageExceeded,
    should_retry,
)

__all__ = [
    "MAINNET_URL",
    "PRIORITY_LEVELS",
    "JupiterClient",
    "JupiterQuote",
    "JupiterSwap",
    "should_retry",
]

MAINNET_URL: Final = "https://api.jup.ag"
PRIORITY_LEVELS: Final = ("medium", "high", "veryHigh")
"""``priorityLevel`` values Jupiter accepts in ``priorityLevelWithMaxLamports``."""
_SLIPPAGE_CODES: Final = frozenset({"SLIPPAGE_TOLERANCE_EXCEEDED", "SLIPPAGE_EXCEEDED"})
_EXCERPT: Final = 300


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name} is not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise ValueError(f"{name} is not an integer: {value!r}")


def _decimal(value: Any, name: str) -> Decimal:
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{name} is not a number")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"{name} is not a number: {value!r}") from None
    if not number.is_finite():
        raise ValueError(f"{name} is not finite")
    return number


@dataclass(frozen=True, slots=True, kw_only=True)
class JupiterQuote:
    """A ``/quote`` answer: parsed amounts (base units) and the raw JSON for ``/swap``."""

    input_mint: str
    output_mint: str
    in_amount: int
    out_amount: int
    other_amount_threshold: int
    """ExactIn: the minimum out within ``slippage_bps``; ExactOut: the maximum in."""
    swap_mode: str
    slippage_bps: int
    price_impact: Decimal
    """``priceImpactPct`` as a fraction (0.01 = 1 %)."""
    platform_fee_amount: int = 0
    """The platform fee, in base units of the mint it is taken in (0 without one)."""
    platform_fee_bps: int = 0
    labels: tuple[str, ...] = ()
    raw: Mapping[str, Any] = field(repr=False)

    @classmethod
    def parse(cls, body: Any) -> JupiterQuote:
        """A quote from ``/quote``'s JSON; :class:`ValueError` when a field is missing."""
        if not isinstance(body, dict):
            raise ValueError("the quote is not a JSON object")
        fee = body.get("platformFee")
        fee_amount = fee_bps = 0
        if isinstance(fee, dict):
            fee_amount = _int(fee.get("amount", 0) or 0, "platformFee.amount")
            fee_bps = _int(fee.get("feeBps", 0) or 0, "platformFee.feeBps")
        labels: list[str] = []
        for step in body.get("routePlan") or []:
            info = step.get("swapInfo") if isinstance(step, dict) else None
            if isinstance(info, dict) and isinstance(info.get("label"), str):
                labels.append(info["label"])
        return cls(
            input_mint=str(body["inputMint"]),
            output_mint=str(body["outputMint"]),
            in_amount=_int(body["inAmount"], "inAmount"),
            out_amount=_int(body["outAmount"], "outAmount"),
            other_amount_threshold=_int(body["otherAmountThreshold"], "otherAmountThreshold"),
            swap_mode=str(body.get("swapMode", "ExactIn")),
            slippage_bps=_int(body.get("slippageBps", 0), "slippageBps"),
            price_impact=max(
                _decimal(body.get("priceImpactPct", "0"), "priceImpactPct"), Decimal(0)
            ),
            platform_fee_amount=fee_amount,
            platform_fee_bps=fee_bps,
            labels=tuple(labels),
            raw=body,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class JupiterSwap:
    """A ``/swap`` answer: the transaction to sign and what it will cost."""

    swap_transaction: str
    """Base64 of a v0 ``VersionedTransaction``, fee payer = the user, user slot unsigned."""
    last_valid_block_height: int
    prioritization_fee_lamports: int
    compute_unit_limit: int
    simulation_error: Mapping[str, Any] | None
    raw: Mapping[str, Any] = field(repr=False)

    @classmethod
    def parse(cls, body: Any) -> JupiterSwap:
        """A swap from ``/swap``'s JSON; :class:`ValueError` when a field is missing."""
        if not isinstance(body, dict):
            raise ValueError("the swap answer is not a JSON object")
        tx = body.get("swapTransaction")
        if not isinstance(tx, str) or not tx:
            raise ValueError("swapTransaction is missing")
        simulation = body.get("simulationError")
        return cls(
            swap_transaction=tx,
            last_valid_block_height=_int(body["lastValidBlockHeight"], "lastValidBlockHeight"),
            prioritization_fee_lamports=_int(
                body.get("prioritizationFeeLamports", 0) or 0, "prioritizationFeeLamports"
            ),
            compute_unit_limit=_int(body.get("computeUnitLimit", 0) or 0, "computeUnitLimit"),
            simulation_error=simulation if isinstance(simulation, dict) else None,
            raw=body,
        )


class JupiterClient:
    """Jupiter's Swap API v1 over aiohttp (see the module contract)."""

    def __init__(
        self,
        base_url: str = MAINNET_URL,
        *,
        api_key: str | None = None,
        session: aiohttp.ClientSession | None = None,
        timeout_s: float = 10.0,
        max_attempts: int = 4,
        backoff: Backoff | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        problem = check_base_url(base_url)
        if problem is not None:
            raise ValueError(f"base_url {problem}")
        if not timeout_s > 0:
            raise ValueError("timeout_s must be > 0")
        if max_attempts < 1:
            raise ValueError("max_attempts must be ≥ 1")
        if api_key == "":
            raise ValueError("api_key must be None or a non-empty string")
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._session = session
        self._owns_session = session is None
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.backoff = backoff or Backoff(initial_s=0.25, max_s=8.0)
        self.sleep = sleep
        self.clock = clock
        self.requests = 0
        """HTTP requests made (retries included), for diagnostics."""

    @classmethod
    def for_sandbox(cls, description: Mapping[str, Any], **options: Any) -> JupiterClient:
        """A client for ``valux sandbox``'s service (its ``sandbox.json`` keys
        ``jupiter_url`` and ``jupiter_api_key``)."""
        options.setdefault("api_key", description.get("jupiter_api_key") or None)
        return cls(str(description["jupiter_url"]), **options)

    def __repr__(self) -> str:
        key = "set" if self._api_key else "none"
        return f"JupiterClient(base_url={self.base_url!r}, api_key={key})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session if this client made it."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self._api_key:
            headers["x-api-key"] = self._api_key
        return headers

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
            self._owns_session = True
        return self._session

    # -- the two calls ---------------------------------------------------------------

    async def quote(
        self,
        *,
        input_mint: str,
        output_mint: str,
        amount: int,
        slippage_bps: int,
        swap_mode: str = "ExactIn",
        extra: Mapping[str, str] | None = None,
    ) -> JupiterQuote:
        """``GET /swap/v1/quote`` for ``amount`` base units (module contract)."""
        if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
            raise ValueError(f"amount must be a positive integer of base units, got {amount!r}")
        if not 0 <= slippage_bps < 10_000:
            raise ValueError(f"slippage_bps must be within [0, 10000), got {slippage_bps}")
        params = {
            "inputMint": input_mint,
            "outputMint": output_mint,
            "amount": str(amount),
            "slippageBps": str(slippage_bps),
            "swapMode": swap_mode,
        }
        params.update(extra or {})
        body = await self._request("GET", "/swap/v1/quote", params=params)
        try:
            return JupiterQuote.parse(body)
        except (KeyError, ValueError, TypeError) as exc:
            raise JupiterUnavailable(f"jupiter: an unreadable quote: {exc}") from exc

    async def swap(
        self,
        *,
        user_public_key: str,
        quote: JupiterQuote,
        max_priority_fee_lamports: int,
        priority_level: str = "veryHigh",
        extra: Mapping[str, Any] | None = None,
    ) -> JupiterSwap:
        """``POST /swap/v1/swap`` for ``quote`` (module contract)."""
        if priority_level not in PRIORITY_LEVELS:
            raise ValueError(f"priority_level must be one of {PRIORITY_LEVELS}")
        if max_priority_fee_lamports < 0:
            raise ValueError("max_priority_fee_lamports must be ≥ 0")
        payload: dict[str, Any] = {
            "userPublicKey": user_public_key,
            "quoteResponse": dict(quote.raw),
            "wrapAndUnwrapSol": True,
            "dynamicComputeUnitLimit": True,
            "dynamicSlippage": False,
            "asLegacyTransaction": False,
            "prioritizationFeeLamports": {
                "priorityLevelWithMaxLamports": {
                    "maxLamports": max_priority_fee_lamports,
                    "priorityLevel": priority_level,
                }
            },
        }
        payload.update(extra or {})
        body = await self._request("POST", "/swap/v1/swap", json_body=payload)
        try:
            return JupiterSwap.parse(body)
        except (KeyError, ValueError, TypeError) as exc:
            raise JupiterUnavailable(f"jupiter: an unreadable swap answer: {exc}") from exc

    # -- HTTP -----------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
    ) -> Any:
        failures = 0
        while True:
            try:
                return await self._once(method, path, params, json_body)
            except JupiterUnavailable as exc:
                failures += 1
                if failures >= self.max_attempts:
                    raise
                await self.sleep(self.backoff.delay(failures, exc.retry_after_s))

    async def _once(
        self, method: str, path: str, params: Mapping[str, str] | None, json_body: Any
    ) -> Any:
        url = self.base_url + path
        self.requests += 1
        try:
            async with self._http().request(
                method,
                url,
                params=dict(params) if params else None,
                json=json_body,
                headers=self._headers(),
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            ) as response:
                status = response.status
                raw = await response.read()
                retry_after = response.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as exc:
            detail = str(exc) or type(exc).__name__
            raise JupiterUnavailable(f"jupiter: {method} {path}: {detail}") from exc
        if 200 <= status <= 299:
            try:
                return json.loads(raw)
            except (ValueError, UnicodeDecodeError) as exc:
                raise JupiterUnavailable(
                    f"jupiter: {method} {path}: the body is not JSON", status=status
                ) from exc
        raise self._status_error(method, path, status, raw, retry_after)

    def _status_error(
        self, method: str, path: str, status: int, raw: bytes, retry_after: str | None
    ) -> JupiterUnavailable | JupiterRejected:
        message, code = _error_fields(raw)
        where = f"jupiter: {method} {path}: HTTP {status}"
        if status == 429:
            wait = parse_retry_after(retry_after, self.clock())
            return JupiterUnavailable(
                f"{where} (rate limited): {message}", status=status, retry_after_s=wait
            )
        if status >= 500:
            return JupiterUnavailable(f"{where}: {message}", status=status)
        if code in _SLIPPAGE_CODES or "slippage" in message.lower():
            return SlippageExceeded(
                f"{where}: {message}",
                error_code=code or "SLIPPAGE_TOLERANCE_EXCEEDED",
                status=status,
            )
        return JupiterRejected(
            f"{where}: {code + ': ' if code else ''}{message}", error_code=code, status=status
        )


def _error_fields(raw: bytes) -> tuple[str, str]:
    """``(error text, errorCode)`` of a Jupiter error body (either may be empty)."""
    text = raw[:_EXCERPT].decode("utf-8", "replace").strip()
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return text or "(empty body)", ""
    if not isinstance(body, dict):
        return text, ""
    message = body.get("error") or body.get("message") or text
    code = body.get("errorCode") or body.get("code") or ""
    return str(message)[:_EXCERPT], str(code)
