"""The per-wallet spend policy, checked before anything is signed.

Contract:

- :class:`SpendPolicy` is frozen, keyword-only and rejects unknown fields. Amounts are
  ``Decimal`` in the policy's ``quote_asset``. The two money limits must be given
  (``None`` says "no limit" explicitly); every other rule is off when ``None``.
- :func:`check` is pure: it answers the first rule an order breaks as a
  :class:`PolicyViolation` (a stable code from :class:`ViolationCode` and a message with
  the numbers), or ``None``. :meth:`PolicyViolation.error` turns one into the
  :class:`SpendRefused` error a caller raises. Rules are checked in this order:

  ==============================  ========  ======  ==========================================
  code                            buy       sell    rule
  ==============================  ========  ======  ==========================================
  POLICY_QUOTE_ASSET              yes       no      the order is priced in the policy's asset
  POLICY_TOKEN_NOT_ALLOWED        yes       no      ``allowed_tokens`` (mints / addresses)
  POLICY_MAX_PER_ORDER            yes       no      ``amount ≤ max_per_order``
  POLICY_MAX_PER_DAY              yes       no      ``spent_today + amount ≤ max_per_day``
  POLICY_PRICE_IMPACT_UNKNOWN     yes       no      an impact cap needs a quoted impact
  POLICY_MAX_PRICE_IMPACT         yes       opt.    ``max_price_impact`` / ``max_exit_…``
  POLICY_MAX_PRIORITY_FEE         yes       yes     ``priority_fee ≤ max_priority_fee_…``
  POLICY_CONTRACT_NOT_ALLOWED     yes       yes     every contract called or approved
  ==============================  ========  ======  ==========================================

- **Sells are never blocked by the money limits or the token allowlist.** A sell is
  the exit of a position the wallet already holds — a stop loss, a take profit, a
  close; refusing it would leave the position unprotected, which is what the policy
  exists to prevent. A token taken off the allowlist can therefore still be sold.
  Price impact does not stop an exit either, unless ``max_exit_price_impact`` is set
  (a stop that must fire in a crash must not be held by the impact of that crash).
  The priority-fee cap and the contract allowlist do apply to sells: they protect
  against signing something that is not a plain swap (a fee drain, a call to an
  unknown contract), which no exit needs — a caller clamps its fee to the cap rather
  than being refused. For a sell the sold token itself counts as allowed (approving
  it to the router is part of selling it).
- Daily spend: only buys count, in the quote asset, per UTC day (:func:`utc_day`).
  :class:`DailySpend` is a plain value the wallet keeps (and journals): add a buy's
  amount when it is signed — a signed transaction may land — and
  :meth:`DailySpend.release` it if the buy provably failed. A new UTC day starts at zero.
- Addresses: EVM addresses (``0x`` + 40 hex) compare case-insensitively, so a
  checksummed and a lower-case spelling match; Solana mints compare exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from valux.errors import ValuxError
from valux.venues.base import OrderIntent, Side

__all__ = [
    "DailySpend",
    "PolicyViolation",
    "SpendPolicy",
    "SpendRefused",
    "ViolationCode",
    "check",
    "utc_day",
]

_ZERO = Decimal(0)


class ViolationCode(StrEnum):
    """Stable codes of the rules (the API returns them; alerts match on them)."""

    QUOTE_ASSET = "POLICY_QUOTE_ASSET"
    TOKEN_NOT_ALLOWED = "POLICY_TOKEN_NOT_ALLOWED"
    MAX_PER_ORDER = "POLICY_MAX_PER_ORDER"
    MAX_PER_DAY = "POLICY_MAX_PER_DAY"
    PRICE_IMPACT_UNKNOWN = "POLICY_PRICE_IMPACT_UNKNOWN"
    MAX_PRICE_IMPACT = "POLICY_MAX_PRICE_IMPACT"
    MAX_PRIORITY_FEE = "POLICY_MAX_PRIORITY_FEE"
    CONTRACT_NOT_ALLOWED = "POLICY_CONTRACT_NOT_ALLOWED"


class SpendRefused(ValuxError):
    """The spend policy refuses to sign; ``code`` is the violated rule's code."""

    code = "SPEND_REFUSED"

    def __init__(self, message: str, code: str = "SPEND_REFUSED") -> None:
        super().__init__(message)
        self.code = code

    def __reduce__(self) -> tuple[type[SpendRefused], tuple[str, str]]:
        return (type(self), (self.message, self.code))


@dataclass(frozen=True, slots=True)
class PolicyViolation:
    """One broken rule: its stable code and a message with the numbers."""

    code: ViolationCode
    message: str

    def error(self) -> SpendRefused:
        """The error to raise for this violation (carries the same code)."""
        return SpendRefused(self.message, self.code.value)


def _decimal_from_number(value: Any) -> Any:
    """Money from JSON: floats by their shortest repr (0.1 → Decimal('0.1')); no bools."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not an amount")
    if isinstance(value, float):
        return Decimal(repr(value))
    return value


class SpendPolicy(BaseModel):
    """What one wallet may sign (see the module docstring for how each rule applies)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    quote_asset: str = Field(min_length=1)
    """The asset the money limits are in (e.g. ``SOL``, ``USDC``)."""
    max_per_order: Decimal | None = Field(gt=0, allow_inf_nan=False)
    """Largest buy, in the quote asset, fees included; ``None`` = no limit (must be said)."""
    max_per_day: Decimal | None = Field(gt=0, allow_inf_nan=False)
    """Most quote spent on buys per UTC day; ``None`` = no limit (must be said)."""
    allowed_tokens: frozenset[str] | None = None
    """Token mints (Solana) or addresses (EVM) that may be bought; ``None`` = any."""
    max_price_impact: Decimal | None = Field(default=None, gt=0, le=1, allow_inf_nan=False)
    """Largest quoted price impact of a buy, as a fraction (0.02 = 2 %); ``None`` = any."""
    max_exit_price_impact: Decimal | None = Field(default=None, gt=0, le=1, allow_inf_nan=False)
    """The same for sells; ``None`` (the default) = exits run at any impact."""
    max_priority_fee_lamports: int | None = Field(default=None, ge=0)
    """Largest Solana priority fee of one transaction, in lamports; ``None`` = any."""
    allowed_contracts: frozenset[str] | None = None
    """EVM: every contract a transaction may call or approve (router, tokens); ``None`` = any."""

    _decimals = field_validator(
        "max_per_order", "max_per_day", "max_price_impact", "max_exit_price_impact", mode="before"
    )(_decimal_from_number)

    @field_validator("allowed_tokens", "allowed_contracts")
    @classmethod
    def _no_blank_addresses(cls, value: frozenset[str] | None) -> frozenset[str] | None:
        if value is not None and any(not a.strip() for a in value):
            raise ValueError("addresses must not be blank")
        return value


def check(
    policy: SpendPolicy,
    order: OrderIntent,
    *,
    spent_today: Decimal,
    price_impact: float | Decimal | None,
    priority_fee: int | None = None,
    contracts: str | Sequence[str] = (),
) -> PolicyViolation | None:
    """The first rule ``order`` breaks under ``policy``, or ``None`` if it may be signed.

    ``spent_today`` is the quote already spent on buys this UTC day
    (:meth:`DailySpend.spent_on`); ``price_impact`` the quoted impact as a fraction
    (``None`` if unknown); ``priority_fee`` the transaction's Solana priority fee in
    lamports (``None`` if it sets none); ``contracts`` every address the transaction
    calls or approves (EVM: the router, the token approved, the spender).
    """
    if not isinstance(spent_today, Decimal) or not spent_today.is_finite() or spent_today < 0:
        raise ValueError(f"spent_today must be a finite Decimal ≥ 0, got {spent_today!r}")
    buying = order.side is Side.BUY
    if buying:
        found = _check_buy_limits(policy, order, spent_today)
        if found is not None:
            return found
    cap = policy.max_price_impact if buying else policy.max_exit_price_impact
    if cap is not None:
        if price_impact is None:
            return PolicyViolation(
                ViolationCode.PRICE_IMPACT_UNKNOWN,
                f"the price impact of this {order.side.value} is unknown; the policy caps it "
                f"at {_pct(cap)}",
            )
        impact = price_impact if isinstance(price_impact, Decimal) else Decimal(repr(price_impact))
        if not impact.is_finite() or impact > cap:
            return PolicyViolation(
                ViolationCode.MAX_PRICE_IMPACT,
                f"price impact {_pct(impact)} of this {order.side.value} exceeds the policy's "
                f"{_pct(cap)}",
            )
    fee_cap = policy.max_priority_fee_lamports
    if fee_cap is not None and priority_fee is not None and priority_fee > fee_cap:
        return PolicyViolation(
            ViolationCode.MAX_PRIORITY_FEE,
            f"priority fee {priority_fee} lamports exceeds the policy's {fee_cap} lamports",
        )
    if policy.allowed_contracts is not None:
        allowed = {_norm(a) for a in policy.allowed_contracts}
        if not buying:
            allowed.add(_norm(order.token))
        called = (contracts,) if isinstance(contracts, str) else tuple(contracts)
        refused = [c for c in called if _norm(c) not in allowed]
        if refused:
            return PolicyViolation(
                ViolationCode.CONTRACT_NOT_ALLOWED,
                f"the transaction calls or approves {', '.join(refused)}, not in the "
                f"policy's allowed contracts",
            )
    return None


def _check_buy_limits(
    policy: SpendPolicy, order: OrderIntent, spent_today: Decimal
) -> PolicyViolation | None:
    if order.quote_asset != policy.quote_asset:
        return PolicyViolation(
            ViolationCode.QUOTE_ASSET,
            f"the order spends {order.quote_asset}, but the policy's limits are in "
            f"{policy.quote_asset}",
        )
    if policy.allowed_tokens is not None and _norm(order.token) not in {
        _norm(t) for t in policy.allowed_tokens
    }:
        return PolicyViolation(
            ViolationCode.TOKEN_NOT_ALLOWED,
            f"token {order.token} is not in the policy's allowed tokens",
        )
    unit = policy.quote_asset
    if policy.max_per_order is not None and order.amount > policy.max_per_order:
        return PolicyViolation(
            ViolationCode.MAX_PER_ORDER,
            f"buy of {order.amount} {unit} exceeds the policy's {policy.max_per_order} {unit} "
            f"per order",
        )
    if policy.max_per_day is not None and spent_today + order.amount > policy.max_per_day:
        left = max(_ZERO, policy.max_per_day - spent_today)
        return PolicyViolation(
            ViolationCode.MAX_PER_DAY,
            f"buy of {order.amount} {unit} would bring today's (UTC) spend to "
            f"{spent_today + order.amount} {unit}, over the policy's {policy.max_per_day} "
            f"{unit} per day ({left} {unit} left)",
        )
    return None


def _norm(address: str) -> str:
    """EVM addresses are case-insensitive (checksum casing); Solana mints are not."""
    if len(address) == 42 and address[:2] in ("0x", "0X"):
        return address.lower()
    return address


def _pct(fraction: Decimal) -> str:
    return f"{(fraction * 100).normalize():f} %"


# --------------------------------------------------------------------------- daily spend


def utc_day(ts: float | datetime) -> str:
    """The UTC calendar day of ``ts`` (epoch seconds or an aware datetime): ``YYYY-MM-DD``.

    A naive datetime is refused: its day would depend on the machine's time zone.
    """
    if isinstance(ts, datetime):
        if ts.tzinfo is None or ts.utcoffset() is None:
            raise ValueError("a naive datetime has no defined UTC day; pass an aware one")
        moment = ts.astimezone(UTC)
    else:
        moment = datetime.fromtimestamp(ts, tz=UTC)
    return moment.date().isoformat()


@dataclass(frozen=True, slots=True)
class DailySpend:
    """Quote spent on buys during one UTC ``day`` (``YYYY-MM-DD``)."""

    day: str
    spent: Decimal = _ZERO

    def __post_init__(self) -> None:
        if not isinstance(self.spent, Decimal) or not self.spent.is_finite() or self.spent < 0:
            raise ValueError(f"spent must be a finite Decimal ≥ 0, got {self.spent!r}")

    def spent_on(self, ts: float | datetime) -> Decimal:
        """What was spent on the UTC day of ``ts``: zero once that day is not ``day``."""
        return self.spent if utc_day(ts) == self.day else _ZERO

    def add(self, ts: float | datetime, amount: Decimal) -> DailySpend:
        """Count a buy of ``amount`` signed at ``ts``; a new UTC day starts from zero."""
        if not isinstance(amount, Decimal) or not amount.is_finite() or amount < 0:
            raise ValueError(f"a spend must be a finite Decimal ≥ 0, got {amount!r}")
        return DailySpend(utc_day(ts), self.spent_on(ts) + amount)

    def release(self, signed_at: float | datetime, amount: Decimal) -> DailySpend:
        """Take back a buy signed at ``signed_at`` that provably failed.

        A buy from an earlier day changes nothing (that day is over); never below zero.
        """
        if not isinstance(amount, Decimal) or not amount.is_finite() or amount < 0:
            raise ValueError(f"a release must be a finite Decimal ≥ 0, got {amount!r}")
        if utc_day(signed_at) != self.day:
            return self
        return DailySpend(self.day, max(_ZERO, self.spent - amount))
