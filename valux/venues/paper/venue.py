"""A paper venue: realistic fills against a price source, with injectable trouble.

The fill model (all arithmetic in ``Decimal``, 34 significant digits; floats
only enter as the mid price and the slippage coefficient, converted through
their shortest decimal form):

- **Mid price**: ``await price_source(token)``; if that has no price (``None``
  or not a finite number > 0), the intent's ``reference_price``; if neither,
  the order FAILS with ``"no price for token X"``. If the price source
  *raises*, the call raises :class:`~valux.venues.base.VenueUnavailable` and
  nothing is recorded (a retry is safe).
- **Price impact** grows linearly with size, the small-order approximation of
  a constant-product pool holding ``depth_quote`` of quote::

      impact = slippage_bps_per_unit / 10_000 × notional / depth_quote

  so with ``slippage_bps_per_unit = 10_000`` an order of 1 % of the depth moves
  the price 1 %. ``notional`` is the quote actually swapped (BUY, after fees)
  or ``tokens × mid`` (SELL). Buys fill at ``mid × (1 + impact)``, sells at
  ``mid × (1 − impact)``; a sell with ``impact ≥ 1`` would drain the pool and
  FAILS.
- **BUY** of ``amount`` quote: ``network_fee`` first, then the protocol fee
  ``fee = (amount − network_fee) × fee_bps / 10_000`` on what is left, and the
  rest (``swap``) buys ``floor(swap / price)`` tokens at ``token_decimals``.
  ``quote_amount`` is the whole ``amount``; the flooring dust stays with the
  venue, as on a real DEX.
- **SELL** of ``amount`` tokens: the amount is floored to ``token_decimals``
  (``base_amount`` reports what was actually sold), ``gross = tokens × price``,
  ``fee = gross × fee_bps / 10_000``, and ``quote_amount = gross − fee −
  network_fee`` is credited.
- With ``quote_decimals`` set, fees round *up* and sell proceeds round *down*
  to that many decimals (the venue never gives away dust); with ``None`` (the
  default) quote amounts are exact.
- ``network_fee`` is charged in the quote asset, once per filled order. A
  FAILED order moves nothing — not even the network fee (a simplification: on
  chain a failed transaction still pays it).
- The venue keeps no balances: the Wallet checks funds before submitting.

Behaviour of the calls:

- Every call (``quote``, ``submit``, ``status``) first waits ``latency_ms``
  through the injected ``sleep``.
- ``submit`` is idempotent by ``intent_id``: the first call starts one
  execution; concurrent duplicates wait for the same execution and later ones
  get the recorded outcome, so an intent can never fill twice. The execution
  runs shielded — a caller that is cancelled or times out does not stop an
  order that is already on its way (the order still lands, as on a real venue).
- ``failure_rate``: the probability that an otherwise valid order FAILS with
  ``"simulated venue failure"``.
- ``unknown_rate``: the probability that, *after* the outcome was recorded,
  the first ``submit`` answers UNKNOWN instead — a timeout after the order
  landed. ``status`` (and any later ``submit`` of the same id) reveals the
  recorded outcome.
- ``status``: the recorded outcome, PENDING while the first submit is in flight,
  NOT_FOUND for an id never submitted.
- Outcomes are kept in memory for the life of the venue (it is for paper
  trading and backtests, not for months of uptime).
- Randomness comes only from the ``rng`` passed in, two draws per new intent,
  so a seeded ``random.Random`` makes a run reproducible.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import (
    ROUND_DOWN,
    ROUND_HALF_EVEN,
    ROUND_UP,
    Context,
    Decimal,
    DivisionByZero,
    InvalidOperation,
    Overflow,
    localcontext,
)
from typing import Protocol

from valux.errors import ConfigurationError
from valux.venues.base import (
    OrderIntent,
    OrderRejected,
    OrderState,
    OrderStatus,
    Quote,
    Side,
    VenueUnavailable,
    decimal_from_float,
)

__all__ = ["DECIMAL_CONTEXT", "PaperVenue", "PriceSource"]

PriceSource = Callable[[str], Awaitable[float | None]]
Sleep = Callable[[float], Awaitable[None]]

DECIMAL_CONTEXT = Context(
    prec=34, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation, DivisionByZero, Overflow]
)
"""The context every paper-venue computation runs in (decimal128 precision)."""

_BPS = Decimal(10_000)
_ONE = Decimal(1)


@dataclass(frozen=True, slots=True)
class _Execution:
    base_amount: Decimal
    quote_amount: Decimal
    price: Decimal
    fee: Decimal
    network_fee: Decimal
    impact: Decimal


class PaperVenue:
    """Simulated venue with realistic fills (see the module docstring for the model)."""

    def __init__(
        self,
        price_source: PriceSource,
        *,
        fee_bps: int,
        slippage_bps_per_unit: float,
        depth_quote: Decimal,
        latency_ms: float,
        failure_rate: float,
        unknown_rate: float,
        network_fee: Decimal,
        token_decimals: int = 9,
        rng: random.Random,
        quote_decimals: int | None = None,
        name: str = "paper",
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        ledger: OrderLedger | None = None,
    ) -> None:
        problems: list[str] = []

        def number(value: object) -> bool:
            return (
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and math.isfinite(value)
            )

        if not isinstance(fee_bps, int) or isinstance(fee_bps, bool) or not 0 <= fee_bps < 10_000:
            problems.append(f"fee_bps must be an int in [0, 10000), got {fee_bps!r}")
        if not number(slippage_bps_per_unit) or slippage_bps_per_unit < 0:
            problems.append(
                f"slippage_bps_per_unit must be a finite number ≥ 0, got {slippage_bps_per_unit!r}"
            )
        if not isinstance(depth_quote, Decimal) or not depth_quote.is_finite() or depth_quote <= 0:
            problems.append(f"depth_quote must be a finite Decimal > 0, got {depth_quote!r}")
        if not number(latency_ms) or latency_ms < 0:
            problems.append(f"latency_ms must be a finite number ≥ 0, got {latency_ms!r}")
        for label, rate in (("failure_rate", failure_rate), ("unknown_rate", unknown_rate)):
            if not number(rate) or not 0 <= rate <= 1:
                problems.append(f"{label} must be a number in [0, 1], got {rate!r}")
        if not isinstance(network_fee, Decimal) or not network_fee.is_finite() or network_fee < 0:
            problems.append(f"network_fee must be a finite Decimal ≥ 0, got {network_fee!r}")
        for label, places in (
            ("token_decimals", token_decimals),
            ("quote_decimals", quote_decimals),
        ):
            if places is None and label == "quote_decimals":
                continue
            if not isinstance(places, int) or isinstance(places, bool) or not 0 <= places <= 18:
                problems.append(f"{label} must be an int in [0, 18], got {places!r}")
        if problems:
            raise ConfigurationError("invalid paper venue settings: " + "; ".join(problems))

        self.name = name
        self.fee_bps = fee_bps
        self.slippage_bps_per_unit = slippage_bps_per_unit
        self.depth_quote = depth_quote
        self.latency_ms = latency_ms
        self.failure_rate = failure_rate
        self.unknown_rate = unknown_rate
        self.network_fee = network_fee
        self.token_decimals = token_decimals
        self.quote_decimals = quote_decimals
        self._price_source = price_source
        self._rng = rng
        self._sleep = sleep
        self._clock = clock
        self._fee_rate = Decimal(fee_bps) / _BPS
        self._impact_per_unit = decimal_from_float(slippage_bps_per_unit) / _BPS
        self._token_unit = Decimal(1).scaleb(-token_decimals)
        self._quote_unit = None if quote_decimals is None else Decimal(1).scaleb(-quote_decimals)
        self._outcomes: dict[str, OrderStatus] = {}
        self._ledger = ledger
        self._inflight: dict[str, asyncio.Future[tuple[OrderStatus, bool]]] = {}
        self._sequence = 0
        #: An intent created after this instance started can only have been seen by it,
        #: so its in-memory record is complete and the durable ledger need not be asked
        #: (which keeps the venue trading while valux's own database is unreachable).
        self._born = time.time()

    # ------------------------------------------------------------------ calls

    async def quote(
        self,
        side: Side,
        token: str,
        amount: Decimal,
        *,
        reference_price: float | None = None,
    ) -> Quote:
        """What an order would do at the current price; places nothing.

        Raises:
            VenueUnavailable: no price for ``token`` (or the price source failed).
            OrderRejected: ``amount`` is not a finite Decimal > 0, or the order
                cannot execute (too small for the fees, too large for the depth).
        """
        await self._wait()
        side = Side(side)
        if reason := _amount_problem(amount):
            raise OrderRejected(reason, self.name)
        mid = await self._mid(token, reference_price)
        if mid is None:
            raise VenueUnavailable(f"no price for token {token}", self.name)
        execution = self._execute(side, amount, mid)
        if isinstance(execution, str):
            raise OrderRejected(execution, self.name)
        return Quote(
            side=side,
            token=token,
            amount=amount,
            price=execution.price,
            price_impact=float(execution.impact),
            fee=execution.fee,
            network_fee=execution.network_fee,
            base_amount=execution.base_amount,
            quote_amount=execution.quote_amount,
            ts=self._clock(),
        )

    async def submit(self, intent: OrderIntent) -> OrderStatus:
        """Execute ``intent`` once; a repeated id returns the recorded outcome.

        Raises:
            VenueUnavailable: the price source failed; nothing was recorded.
        """
        recorded = await self.recorded_for(intent)
        if recorded is not None:
            await self._wait()
            return recorded
        future = self._inflight.get(intent.intent_id)
        if future is not None:
            outcome, _ = await asyncio.shield(future)
            return outcome
        future = asyncio.ensure_future(self._land(intent))
        self._inflight[intent.intent_id] = future
        future.add_done_callback(lambda done: self._landed(intent.intent_id, done))
        outcome, timed_out = await asyncio.shield(future)
        if timed_out:
            return OrderStatus.unknown(
                intent.intent_id,
                "no answer from the venue in time (simulated); query status()",
                self._clock(),
            )
        return outcome

    async def status(self, intent_id: str) -> OrderStatus:
        """The recorded outcome of ``intent_id``; PENDING in flight; NOT_FOUND if unseen."""
        await self._wait()
        recorded = await self._recorded(intent_id)
        if recorded is not None:
            return recorded
        if intent_id in self._inflight:
            return OrderStatus.pending(intent_id, self._clock())
        return OrderStatus.not_found(intent_id, self._clock())

    # -------------------------------------------------------------- internals

    async def recorded_for(self, intent: OrderIntent) -> OrderStatus | None:
        """The recorded outcome of ``intent``, without the simulated latency; None if it
        has none yet. The durable ledger is asked only for an intent older than this
        instance: a newer one can only have been seen here, so memory is complete (and
        the venue keeps trading while the ledger's database is unreachable)."""
        if intent.created_at >= self._born:
            return self._outcomes.get(intent.intent_id)
        return await self._recorded(intent.intent_id)

    async def _recorded(self, intent_id: str) -> OrderStatus | None:
        """The outcome from memory, else from the durable ledger (the venue restarted)."""
        recorded = self._outcomes.get(intent_id)
        if recorded is None and self._ledger is not None:
            recorded = await self._ledger.load(intent_id)
            if recorded is not None:
                self._outcomes[intent_id] = recorded
        return recorded

    async def _wait(self) -> None:
        if self.latency_ms > 0:
            await self._sleep(self.latency_ms / 1000.0)

    def _landed(self, intent_id: str, future: asyncio.Future[tuple[OrderStatus, bool]]) -> None:
        self._inflight.pop(intent_id, None)
        if not future.cancelled():
            future.exception()  # mark retrieved: the submitter may have gone away

    async def _land(self, intent: OrderIntent) -> tuple[OrderStatus, bool]:
        """Run one order to its recorded outcome; also say whether its answer is 'lost'."""
        await self._wait()
        fail_roll, unknown_roll = self._rng.random(), self._rng.random()
        reason = _amount_problem(intent.amount)
        execution: _Execution | str | None = None
        if reason is None:
            mid = await self._mid(intent.token, intent.reference_price)  # may raise: no record
            if mid is None:
                reason = f"no price for token {intent.token}"
            elif fail_roll < self.failure_rate:
                reason = "simulated venue failure"
            else:
                execution = self._execute(intent.side, intent.amount, mid)
                if isinstance(execution, str):
                    reason = execution
        self._sequence += 1
        ts, tx_id = self._clock(), f"{self.name}-{self._sequence}"
        if isinstance(execution, _Execution):
            outcome = OrderStatus(
                intent_id=intent.intent_id,
                state=OrderState.FILLED,
                base_amount=execution.base_amount,
                quote_amount=execution.quote_amount,
                price=execution.price,
                fee=execution.fee,
                network_fee=execution.network_fee,
                ts=ts,
                tx_id=tx_id,
            )
        else:
            outcome = OrderStatus(
                intent_id=intent.intent_id,
                state=OrderState.FAILED,
                reason=reason or "failed",
                ts=ts,
                tx_id=tx_id,
            )
        if self._ledger is not None:  # the exchange's own durable record, written first
            await self._ledger.record(intent, outcome)
        self._outcomes[intent.intent_id] = outcome
        return outcome, unknown_roll < self.unknown_rate

    async def _mid(self, token: str, reference_price: float | None) -> Decimal | None:
        try:
            price = await self._price_source(token)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise VenueUnavailable(
                f"price source failed for token {token}: {exc!r}", self.name
            ) from exc
        for candidate in (price, reference_price):
            if (
                isinstance(candidate, int | float)
                and not isinstance(candidate, bool)
                and math.isfinite(candidate)
                and candidate > 0
            ):
                return decimal_from_float(candidate)
        return None

    def _execute(self, side: Side, amount: Decimal, mid: Decimal) -> _Execution | str:
        """The fill of ``amount`` at ``mid``, or why there is none (pure arithmetic)."""
        try:
            with localcontext(DECIMAL_CONTEXT):
                if side is Side.BUY:
                    return self._buy(amount, mid)
                return self._sell(amount, mid)
        except (InvalidOperation, Overflow, DivisionByZero) as exc:
            return f"amount {amount} is out of range for this venue ({type(exc).__name__})"

    def _fee(self, gross: Decimal) -> Decimal:
        fee = gross * self._fee_rate
        if self._quote_unit is not None:
            fee = fee.quantize(self._quote_unit, rounding=ROUND_UP)
        return fee

    def _buy(self, amount: Decimal, mid: Decimal) -> _Execution | str:
        network_fee = self.network_fee
        available = amount - network_fee
        if available <= 0:
            return f"amount {amount} does not cover the network fee {network_fee}"
        fee = self._fee(available)
        swap = available - fee
        if swap <= 0:
            return f"amount {amount} does not cover the fees ({fee} + {network_fee})"
        impact = self._impact_per_unit * swap / self.depth_quote
        price = mid * (_ONE + impact)
        base = (swap / price).quantize(self._token_unit, rounding=ROUND_DOWN)
        if base <= 0:
            return f"amount {amount} buys less than one base unit of the token"
        return _Execution(_tidy(base), amount, _tidy(price), _tidy(fee), network_fee, impact)

    def _sell(self, amount: Decimal, mid: Decimal) -> _Execution | str:
        network_fee = self.network_fee
        base = amount.quantize(self._token_unit, rounding=ROUND_DOWN)
        if base <= 0:
            return f"amount {amount} is less than one base unit of the token"
        impact = self._impact_per_unit * base * mid / self.depth_quote
        if impact >= 1:
            return f"order too large for the venue's depth (price impact {float(impact):.0%})"
        price = mid * (_ONE - impact)
        gross = base * price
        fee = self._fee(gross)
        net = gross - fee - network_fee
        if self._quote_unit is not None:
            net = net.quantize(self._quote_unit, rounding=ROUND_DOWN)
        if net <= 0:
            return f"proceeds {gross} do not cover the fees ({fee} + {network_fee})"
        return _Execution(_tidy(base), _tidy(net), _tidy(price), _tidy(fee), network_fee, impact)


class OrderLedger(Protocol):
    """Where a paper venue keeps its outcomes durably, as a real exchange would.

    Without one the venue forgets everything when its process dies; with one, a
    restarted wallet can ask the venue about an intent sent before the crash and
    get the true answer (filled / failed) instead of NOT_FOUND.
    """

    async def load(self, intent_id: str) -> OrderStatus | None: ...

    async def record(self, intent: OrderIntent, status: OrderStatus) -> None: ...


def _tidy(value: Decimal) -> Decimal:
    """``value`` without trailing zeros and without an exponent (``100``, not ``1E+2``)."""
    normal = value.normalize()
    exponent = normal.as_tuple().exponent
    if isinstance(exponent, int) and exponent > 0:
        return normal.quantize(_ONE)
    return normal


def _amount_problem(amount: object) -> str | None:
    if not isinstance(amount, Decimal) or not amount.is_finite() or amount <= 0:
        return f"amount must be a finite Decimal > 0, got {amount!r}"
    return None
