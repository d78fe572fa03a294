"""What every venue (paper, Jupiter, Uniswap) offers the Wallet, and how it fails.

Contract (DESIGN.md, "Exactly once"):

- An order is an :class:`OrderIntent` whose ``intent_id`` the caller chose and
  journaled *before* calling the venue.
- :meth:`Venue.submit` is idempotent by ``intent_id``: submitting an id the
  venue has seen returns the outcome of the first attempt and never executes
  twice.
- ``submit`` may answer :attr:`OrderState.UNKNOWN` (e.g. a timeout after the
  order was sent). The caller must then ask :meth:`Venue.status` — never
  resubmit blindly. ``status`` answers :attr:`OrderState.NOT_FOUND` for an id the
  venue never saw, :attr:`OrderState.PENDING` while it is in flight, and the
  recorded outcome afterwards.
- Money is ``Decimal``. In an :class:`OrderStatus`:
  ``base_amount`` is the tokens bought (BUY) or sold (SELL);
  ``quote_amount`` is the quote *debited* for a BUY (fees included — the
  intent's whole ``amount``) or *credited* for a SELL (net of all fees);
  ``price`` is the execution price in quote per token, fees excluded;
  ``fee`` is the venue/protocol fee and ``network_fee`` the chain fee, both in
  the quote asset. A FAILED, PENDING, UNKNOWN or NOT_FOUND status moves nothing:
  every amount is zero.
- Errors: a venue *raises* only when it could not act on the call at all —
  :class:`VenueUnavailable` (transient: nothing happened, may be retried after
  a :meth:`Venue.status` lookup) or :class:`OrderRejected` (the order is
  refused as given; retrying the same intent cannot succeed). An order the
  venue accepted and then failed is answered as a FAILED status, not raised.
  :func:`should_retry` tells the two apart for any exception.
- Exceptions pickle across Ray: every constructor argument reaches
  ``__reduce__``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Protocol, runtime_checkable

from valux.errors import Unavailable, ValuxError

__all__ = [
    "Fill",
    "OrderIntent",
    "OrderRejected",
    "OrderState",
    "OrderStatus",
    "Quote",
    "Side",
    "Venue",
    "VenueError",
    "VenueUnavailable",
    "should_retry",
]

_ZERO = Decimal(0)


class Side(StrEnum):
    """Direction of an order, seen from the token: BUY spends quote, SELL receives it."""

    BUY = "buy"
    SELL = "sell"


class OrderState(StrEnum):
    """Where an order attempt stands, as far as the venue says."""

    PENDING = "pending"
    """Sent and not finished yet."""
    FILLED = "filled"
    """Executed; the amounts are final."""
    FAILED = "failed"
    """Not executed and never will be; nothing moved. ``reason`` says why."""
    UNKNOWN = "unknown"
    """The call ended without an answer (timeout); ask :meth:`Venue.status`."""
    NOT_FOUND = "not_found"
    """The venue has no record of this intent id."""

    @property
    def is_final(self) -> bool:
        """FILLED or FAILED: the outcome will not change."""
        return self in (OrderState.FILLED, OrderState.FAILED)


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderIntent:
    """One buy or sell, identified by an id chosen (and journaled) before sending.

    ``amount`` is the quote to spend, all fees included, for a BUY, and the
    token amount to sell for a SELL. ``reference_price`` (quote per token) is a
    hint, e.g. the tick that triggered an exit. Keyword-only: several fields are
    strings, and swapping them positionally would be a silent bug.
    """

    intent_id: str
    wallet_id: str
    side: Side
    token: str
    quote_asset: str
    amount: Decimal
    reference_price: float | None = None
    reference_ts: float | None = None
    """When ``reference_price`` was seen (market time in a backtest)."""
    created_at: float

    def __post_init__(self) -> None:
        if not isinstance(self.amount, Decimal):
            raise TypeError(f"amount must be a Decimal, got {type(self.amount).__name__}")
        if not self.intent_id:
            raise ValueError("intent_id must not be empty")
        object.__setattr__(self, "side", Side(self.side))


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderStatus:
    """What a venue says about one intent (see the module docstring for the fields)."""

    intent_id: str
    state: OrderState
    base_amount: Decimal = _ZERO
    quote_amount: Decimal = _ZERO
    price: Decimal = _ZERO
    fee: Decimal = _ZERO
    network_fee: Decimal = _ZERO
    reason: str | None = None
    ts: float
    tx_id: str | None = None
    """The venue's own reference for the attempt (Solana signature, EVM tx hash)."""

    @classmethod
    def failed(cls, intent_id: str, reason: str, ts: float | None = None) -> OrderStatus:
        """A FAILED status; ``ts`` defaults to now."""
        return cls(intent_id=intent_id, state=OrderState.FAILED, reason=reason, ts=_now(ts))

    @classmethod
    def unknown(cls, intent_id: str, reason: str, ts: float | None = None) -> OrderStatus:
        """An UNKNOWN status (the caller must query ``status`` later); ``ts`` defaults to now."""
        return cls(intent_id=intent_id, state=OrderState.UNKNOWN, reason=reason, ts=_now(ts))

    @classmethod
    def pending(cls, intent_id: str, ts: float | None = None) -> OrderStatus:
        """A PENDING status; ``ts`` defaults to now."""
        return cls(intent_id=intent_id, state=OrderState.PENDING, ts=_now(ts))

    @classmethod
    def not_found(cls, intent_id: str, ts: float | None = None) -> OrderStatus:
        """A NOT_FOUND status; ``ts`` defaults to now."""
        return cls(intent_id=intent_id, state=OrderState.NOT_FOUND, ts=_now(ts))


def _now(ts: float | None) -> float:
    return time.time() if ts is None else ts


Fill = OrderStatus
"""A FILLED :class:`OrderStatus` is a fill; one type serves both."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Quote:
    """What an order of ``amount`` would do now (amounts as in :class:`OrderStatus`)."""

    side: Side
    token: str
    amount: Decimal
    price: Decimal
    """Expected execution price, quote per token, fees excluded."""
    price_impact: float
    """Expected move of the price against the order, as a fraction (0.01 = 1 %)."""
    fee: Decimal
    network_fee: Decimal
    base_amount: Decimal
    quote_amount: Decimal
    ts: float


@runtime_checkable
class Venue(Protocol):
    """The interface the Wallet trades through (see the module docstring)."""

    name: str

    async def quote(self, side: Side, token: str, amount: Decimal) -> Quote:
        """Price an order without placing it. Raises on no price or a bad amount."""
        ...

    async def submit(self, intent: OrderIntent) -> OrderStatus:
        """Place ``intent``; idempotent by ``intent_id``."""
        ...

    async def status(self, intent_id: str) -> OrderStatus:
        """What became of an earlier submit; NOT_FOUND if the venue never saw it."""
        ...


class VenueError(ValuxError):
    """Base of every error a venue raises on purpose; ``venue`` names it."""

    code = "VENUE_ERROR"

    def __init__(self, message: str, venue: str = "") -> None:
        super().__init__(message)
        self.venue = venue

    def __reduce__(self) -> tuple[type[VenueError], tuple[str, str]]:
        return (type(self), (self.message, self.venue))


class VenueUnavailable(VenueError):
    """The venue could not be reached or could not act now; nothing happened. Retryable."""

    code = "VENUE_UNAVAILABLE"


class OrderRejected(VenueError):
    """The venue refuses the order as given (bad amount, unknown token). Not retryable."""

    code = "ORDER_REJECTED"


def should_retry(exc: BaseException) -> bool:
    """Whether the call that raised ``exc`` may be tried again.

    True for transient trouble — :class:`VenueUnavailable`, valux's
    :class:`~valux.errors.Unavailable`, timeouts and connection errors. False
    for everything else, including :class:`OrderRejected` and unexpected bugs.
    A retried *submit* must still look up :meth:`Venue.status` first: a timeout
    does not prove the order did not land.
    """
    if isinstance(exc, VenueUnavailable | Unavailable):
        return True
    if isinstance(exc, VenueError):
        return False
    return isinstance(exc, TimeoutError | ConnectionError)


def finite_decimal(value: Decimal) -> bool:
    """``value`` is a finite Decimal (not NaN or infinity)."""
    return isinstance(value, Decimal) and value.is_finite()


def decimal_from_float(value: float) -> Decimal:
    """The shortest decimal that round-trips ``value`` (``0.1`` → ``Decimal('0.1')``)."""
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {value!r}")
    return Decimal(repr(float(value)))
