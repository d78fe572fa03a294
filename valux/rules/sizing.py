"""Position sizing for new buys from signals (reference §9, PS-1..PS-9).

Everything here is Decimal: a balance and a size are money. The only float is
the uniform draw ``U`` of PS-4 (``rng.random()``), which enters the arithmetic
as its exact binary value, and the price-impact fraction of PS-9.

Sizes are not rounded here; the venue floors them to base units (PS-9:
lamports = floor(size × 1e9), see :func:`to_lamports`).
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from typing import Final, Literal, TypeAlias

from valux.errors import ValuxError
from valux.rules.config import AgentConfig, PositionSizeRange, SolBalanceThresholds

__all__ = [
    "LAMPORTS_PER_SOL",
    "LAMPORTS_THRESHOLD",
    "MINIMUM_RETRY_SIZE",
    "PRICE_IMPACT_RETRY_FACTORS",
    "SizingError",
    "Tier",
    "base_size",
    "calculate_position_size",
    "normalise_sol_balance",
    "size_tier",
    "size_with_price_impact",
    "to_lamports",
]

Tier: TypeAlias = Literal["small", "medium", "large"]

LAMPORTS_PER_SOL: Final = Decimal(1_000_000_000)
#: PS-8: a parsed SOL balance strictly above this is taken to be lamports.
LAMPORTS_THRESHOLD: Final = Decimal(1_000_000)
#: PS-9: re-quote at 90 %, 80 %, then 70 % of the size.
PRICE_IMPACT_RETRY_FACTORS: Final = (Decimal("0.9"), Decimal("0.8"), Decimal("0.7"))
#: PS-9: no retry below this many SOL.
MINIMUM_RETRY_SIZE: Final = Decimal("0.01")


class SizingError(ValuxError):
    """A size could not be computed; ``code`` is the reference's failure code."""

    code = "SIZING_ERROR"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

    def __reduce__(self) -> tuple[type[SizingError], tuple[str, str]]:
        return (type(self), (self.code, self.message))


def normalise_sol_balance(raw: Decimal | str | int | float | None) -> Decimal:
    """PS-8: the SOL balance as read from storage.

    A missing entry counts as 0. A parsed value strictly above 1,000,000 is
    taken to be lamports and divided by 1e9 (exactly 1,000,000 stays SOL).
    An unparsable value counts as 0, like a missing one (the reference's
    ``parseFloat`` would give NaN, which fails every later check).
    """
    if raw is None or isinstance(raw, bool):
        return Decimal(0)
    try:
        balance = Decimal(repr(raw)) if isinstance(raw, float) else Decimal(raw)
    except InvalidOperation:
        return Decimal(0)
    if not balance.is_finite():
        return Decimal(0)
    return balance / LAMPORTS_PER_SOL if balance > LAMPORTS_THRESHOLD else balance


def to_lamports(size: Decimal) -> int:
    """PS-9: base units of a SOL amount, floor(size × 1e9)."""
    return int((size * LAMPORTS_PER_SOL).to_integral_value(rounding=ROUND_FLOOR))


def size_tier(balance: Decimal, thresholds: SolBalanceThresholds) -> Tier:
    """PS-3: large if balance ≥ large, else medium if ≥ medium, else small.

    Lower ends are inclusive: exactly 5 is medium under the defaults.
    """
    if balance >= thresholds.large:
        return "large"
    if balance >= thresholds.medium:
        return "medium"
    return "small"


def base_size(size_range: PositionSizeRange, *, randomize: bool, rng: random.Random) -> Decimal:
    """PS-4: min + U·(max − min) with U = rng.random() in [0, 1) (min if min ≥ max);
    without randomization, the tier's max. ``rng`` is drawn only when it is used."""
    if not randomize:
        return size_range.max
    if size_range.min >= size_range.max:
        return size_range.min
    return size_range.min + Decimal(rng.random()) * (size_range.max - size_range.min)


def calculate_position_size(balance: Decimal, config: AgentConfig, rng: random.Random) -> Decimal:
    """PS-1..PS-7: the SOL to spend on a new position, given the agent's SOL balance.

    Raises :class:`SizingError` with the reference's code: INSUFFICIENT_BALANCE,
    BELOW_MINIMUM_THRESHOLD, INSUFFICIENT_BALANCE_FOR_MINIMUM, INVALID_POSITION_SIZE
    or POSITION_SIZE_EXCEEDS_BALANCE.
    """
    calculator = config.position_calculator
    limits = config.purchase_limits
    thresholds = calculator.sol_balance_thresholds
    if balance <= 0:  # PS-1
        raise SizingError("INSUFFICIENT_BALANCE", "SOL balance must be positive")
    if balance < thresholds.minimum:  # PS-2
        raise SizingError(
            "BELOW_MINIMUM_THRESHOLD", f"Balance below minimum threshold: {thresholds.minimum} SOL"
        )
    sizes = calculator.position_sizes
    tiers = {"small": sizes.small, "medium": sizes.medium, "large": sizes.large}
    size_range = tiers[size_tier(balance, thresholds)]  # PS-3
    size = base_size(size_range, randomize=calculator.randomization.enabled, rng=rng)
    size = min(size, limits.max_purchase_per_token)  # PS-5
    if balance - size < limits.minimum_agent_balance:  # PS-6: keep the reserve
        adjusted = balance - limits.minimum_agent_balance
        if adjusted <= 0:
            raise SizingError(
                "INSUFFICIENT_BALANCE_FOR_MINIMUM",
                f"Cannot maintain minimum balance: {limits.minimum_agent_balance} SOL",
            )
        size = min(adjusted, limits.max_purchase_per_token)  # no floor at the tier minimum
    if size <= 0:  # PS-7
        raise SizingError("INVALID_POSITION_SIZE", "Calculated position size must be positive")
    if size > balance:
        raise SizingError(
            "POSITION_SIZE_EXCEEDS_BALANCE", "Position size exceeds available balance"
        )
    return size


async def size_with_price_impact(
    size: Decimal,
    max_impact: float | None,
    quote: Callable[[Decimal], Awaitable[float]],
) -> Decimal:
    """PS-9: the size to buy once the quote's price impact is acceptable.

    With ``max_impact`` None the check is off and ``quote`` is not called.
    Otherwise the first quote with |impact| < max_impact (strict) wins: the full
    size, then 90 %, 80 % and 70 % of it. Retrying stops once a retry amount
    would fall below 0.01 SOL. ``quote(amount)`` returns the price-impact
    fraction (Jupiter reports it negative; the sign is ignored). If no quote is
    accepted, raises :class:`SizingError` PRICE_IMPACT_TOO_HIGH.
    """
    if max_impact is None:
        return size
    impact = await quote(size)
    if abs(impact) < max_impact:
        return size
    for factor in PRICE_IMPACT_RETRY_FACTORS:
        retry = size * factor
        if retry < MINIMUM_RETRY_SIZE:
            break
        impact = await quote(retry)
        if abs(impact) < max_impact:
            return retry
    raise SizingError(
        "PRICE_IMPACT_TOO_HIGH",
        f"Price impact {abs(impact):.2%} is not below the maximum {max_impact:.2%}"
        " even at a reduced size",
    )
