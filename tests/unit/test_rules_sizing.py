"""Position sizing for signal buys (reference §9, PS-1..PS-9)."""

from __future__ import annotations

import pickle
import random
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from valux.rules.config import AgentConfig, load_agent_config
from valux.rules.sizing import (
    SizingError,
    base_size,
    calculate_position_size,
    normalise_sol_balance,
    size_tier,
    size_with_price_impact,
    to_lamports,
)

D = Decimal
DEFAULTS = AgentConfig.defaults()


class FixedRandom(random.Random):
    """An rng whose draws are given in advance (and that fails if drawn too often)."""

    def __init__(self, *draws: float) -> None:
        super().__init__(0)
        self.draws = list(draws)

    def random(self) -> float:
        return self.draws.pop(0)


def config(**sections: Any) -> AgentConfig:
    return load_agent_config(sections)


NO_RANDOM = config(positionCalculator={"randomization": {"enabled": False}})


def sizing_error(
    balance: Decimal, cfg: AgentConfig, rng: random.Random | None = None
) -> SizingError:
    with pytest.raises(SizingError) as caught:
        calculate_position_size(balance, cfg, rng or FixedRandom())
    return caught.value


@pytest.mark.parametrize("balance", [D(0), D("-1")])
def test_ps1_non_positive_balance_fails(balance: Decimal) -> None:
    """PS-1: a balance ≤ 0 fails INSUFFICIENT_BALANCE ("SOL balance must be positive")."""
    error = sizing_error(balance, DEFAULTS)
    assert (error.code, error.message) == ("INSUFFICIENT_BALANCE", "SOL balance must be positive")


def test_ps2_balance_below_minimum_threshold_fails() -> None:
    """PS-2: a balance below solBalanceThresholds.minimum (0.2) fails BELOW_MINIMUM_THRESHOLD."""
    error = sizing_error(D("0.19"), DEFAULTS)
    assert error.code == "BELOW_MINIMUM_THRESHOLD"
    assert "0.2 SOL" in error.message


def test_ps2_balance_equal_to_the_threshold_passes() -> None:
    """PS-2: exactly the minimum threshold is not below it (with a 0.1 reserve, 0.1 is bought)."""
    cfg = config(purchaseLimits={"minimumAgentBalance": 0.1})
    assert calculate_position_size(D("0.2"), cfg, FixedRandom()) == D("0.1")


@pytest.mark.parametrize(
    ("balance", "tier"),
    [
        (D("4.999999999"), "small"),
        (D("5"), "medium"),
        (D("9.999999999"), "medium"),
        (D("10"), "large"),
        (D("1000"), "large"),
    ],
)
def test_ps3_tier_boundaries_are_inclusive_at_the_lower_end(balance: Decimal, tier: str) -> None:
    """PS-3: ≥ large → large, else ≥ medium → medium, else small; exactly 5 is medium."""
    assert size_tier(balance, DEFAULTS.position_calculator.sol_balance_thresholds) == tier


@pytest.mark.parametrize(
    ("balance", "size"), [(D("4.99"), D("0.1")), (D("5"), D("1.0")), (D("10"), D("2.0"))]
)
def test_ps4_without_randomization_the_tier_max_is_used(balance: Decimal, size: Decimal) -> None:
    """PS-4: with randomization off the size is the tier max (small 0.1, medium 1.0, large 2.0)."""
    assert calculate_position_size(balance, NO_RANDOM, FixedRandom()) == size


def test_ps4_randomized_size_is_min_plus_u_times_range() -> None:
    """PS-4: min + U·(max − min), U from rng.random(); U = 0.25 on medium gives 0.625."""
    assert calculate_position_size(D("6"), DEFAULTS, FixedRandom(0.25)) == D("0.625")
    assert calculate_position_size(D("6"), DEFAULTS, FixedRandom(0.0)) == D("0.5")


def test_ps4_min_at_least_max_returns_min_without_drawing() -> None:
    """PS-4: if min ≥ max the size is min and the rng is not consulted (small is 0.1–0.1)."""
    cfg = config(purchaseLimits={"minimumAgentBalance": 0.1})
    assert calculate_position_size(D("1"), cfg, FixedRandom()) == D("0.1")  # no draws given


def test_ps4_base_size_is_below_max_for_every_draw_in_unit_interval() -> None:
    """PS-4: U in [0, 1) keeps the randomized size in [min, max)."""
    size_range = DEFAULTS.position_calculator.position_sizes.large
    for u in (0.0, 0.5, 0.9999999999999999):
        size = base_size(size_range, randomize=True, rng=FixedRandom(u))
        assert size_range.min <= size < size_range.max


def test_ps5_size_is_capped_at_max_purchase_per_token() -> None:
    """PS-5: the size never exceeds maxPurchasePerToken."""
    cfg = config(
        purchaseLimits={"maxPurchasePerToken": 0.3},
        positionCalculator={"randomization": {"enabled": False}},
    )
    assert calculate_position_size(D("50"), cfg, FixedRandom()) == D("0.3")


def test_ps6_size_is_reduced_to_keep_the_reserve_without_a_tier_floor() -> None:
    """PS-6: if balance − size < minimumAgentBalance, size = balance − minimum, even below
    the tier's min (no floor)."""
    cfg = config(
        purchaseLimits={"minimumAgentBalance": 4.9},
        positionCalculator={"randomization": {"enabled": False}},
    )
    assert calculate_position_size(D("5.2"), cfg, FixedRandom()) == D("0.3")
    assert calculate_position_size(D("5.0"), cfg, FixedRandom()) == D("0.1")  # < medium min 0.5


@pytest.mark.parametrize("balance", [D("0.5"), D("0.3")])
def test_ps6_no_room_above_the_reserve_fails(balance: Decimal) -> None:
    """PS-6: adjusted = balance − minimum ≤ 0 fails INSUFFICIENT_BALANCE_FOR_MINIMUM
    (a balance exactly equal to the reserve leaves 0)."""
    error = sizing_error(balance, DEFAULTS)
    assert error.code == "INSUFFICIENT_BALANCE_FOR_MINIMUM"
    assert error.message == "Cannot maintain minimum balance: 0.5 SOL"


def test_ps7_zero_size_is_invalid() -> None:
    """PS-7: a resulting size ≤ 0 (a 0–0 tier) fails INVALID_POSITION_SIZE."""
    cfg = config(positionCalculator={"positionSizes": {"small": {"min": 0, "max": 0}}})
    assert sizing_error(D("1"), cfg).code == "INVALID_POSITION_SIZE"


def test_ps7_size_above_balance_is_rejected() -> None:
    """PS-7: a size > balance fails POSITION_SIZE_EXCEEDS_BALANCE (unreachable under VAL-1's
    reserve ≥ 0.1, so shown with an unvalidated negative reserve)."""
    base = config(
        positionCalculator={
            "positionSizes": {"small": {"min": 1, "max": 1}},
            "randomization": {"enabled": False},
        }
    )
    limits = base.purchase_limits.model_copy(update={"minimum_agent_balance": D("-1")})
    cfg_small = base.model_copy(update={"purchase_limits": limits})  # model_copy skips checks
    assert sizing_error(D("0.3"), cfg_small).code == "POSITION_SIZE_EXCEEDS_BALANCE"


@settings(max_examples=200, deadline=None)
@given(
    balance=st.decimals(min_value=D("0.2"), max_value=D("100000"), places=9),
    u=st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_ps5_ps6_every_computed_size_respects_the_cap_and_the_reserve(
    balance: Decimal, u: float
) -> None:
    """PS-5..PS-7: any successful size is positive, ≤ maxPurchasePerToken, and leaves at
    least minimumAgentBalance behind."""
    try:
        size = calculate_position_size(balance, DEFAULTS, FixedRandom(u))
    except SizingError as error:
        assert error.code == "INSUFFICIENT_BALANCE_FOR_MINIMUM"
        assert balance <= DEFAULTS.purchase_limits.minimum_agent_balance
        return
    assert 0 < size <= DEFAULTS.purchase_limits.max_purchase_per_token
    assert balance - size >= DEFAULTS.purchase_limits.minimum_agent_balance


@pytest.mark.parametrize(
    ("raw", "sol"),
    [
        (None, D(0)),
        ("2.5", D("2.5")),
        ("1000000", D("1000000")),
        ("1000001", D("0.001000001")),
        (5_000_000_000, D(5)),
        (2.5e9, D("2.5")),
        ("not a number", D(0)),
    ],
)
def test_ps8_lamports_heuristic(raw: Any, sol: Decimal) -> None:
    """PS-8: above 1,000,000 the parsed balance is lamports (÷ 1e9); exactly 1,000,000 stays
    SOL; a missing (or unparsable) entry counts as 0."""
    assert normalise_sol_balance(raw) == sol


def test_ps9_lamports_are_floored() -> None:
    """PS-9: lamports = floor(size × 1e9)."""
    assert to_lamports(D("0.1234567899")) == 123_456_789
    assert to_lamports(D("1")) == 1_000_000_000


class Quotes:
    """A quote function returning scripted price impacts and recording the sizes asked."""

    def __init__(self, *impacts: float) -> None:
        self.impacts = list(impacts)
        self.sizes: list[Decimal] = []

    async def __call__(self, size: Decimal) -> float:
        self.sizes.append(size)
        return self.impacts.pop(0)


async def test_ps9_no_maximum_means_no_quote() -> None:
    """PS-9 applies only when maxPriceImpact is set: otherwise the size is kept, unquoted."""
    quotes = Quotes()
    assert await size_with_price_impact(D("1"), None, quotes) == D("1")
    assert quotes.sizes == []


async def test_ps9_first_quote_under_the_maximum_keeps_the_size() -> None:
    """PS-9: |impact| < max on the first quote buys the full size; the sign is ignored."""
    quotes = Quotes(-0.049)
    assert await size_with_price_impact(D("1"), 0.05, quotes) == D("1")
    assert quotes.sizes == [D("1")]


async def test_ps9_impact_equal_to_the_maximum_is_not_accepted() -> None:
    """PS-9: acceptance is strict (|impact| < max); equal triggers a retry at 90 %."""
    quotes = Quotes(0.05, -0.05, 0.01)
    assert await size_with_price_impact(D("1"), 0.05, quotes) == D("0.8")
    assert quotes.sizes == [D("1"), D("0.9"), D("0.8")]


async def test_ps9_all_quotes_too_high_fails_after_70_percent() -> None:
    """PS-9: 100 %, 90 %, 80 %, 70 % all too high → PRICE_IMPACT_TOO_HIGH."""
    quotes = Quotes(0.2, 0.2, 0.2, 0.2)
    with pytest.raises(SizingError) as caught:
        await size_with_price_impact(D("2"), 0.05, quotes)
    assert caught.value.code == "PRICE_IMPACT_TOO_HIGH"
    assert quotes.sizes == [D("2"), D("1.8"), D("1.6"), D("1.4")]


async def test_ps9_retries_stop_below_one_hundredth_of_a_sol() -> None:
    """PS-9: no retry amount below 0.01 SOL is quoted; exactly 0.01 still is."""
    quotes = Quotes(0.5, 0.5, 0.5)
    with pytest.raises(SizingError):
        await size_with_price_impact(D("0.0125"), 0.05, quotes)
    assert quotes.sizes == [D("0.0125"), D("0.01125"), D("0.01")]


def test_sizing_error_pickles_with_its_code() -> None:
    """SizingError crosses Ray: code and message survive pickling."""
    error = pickle.loads(pickle.dumps(SizingError("INVALID_POSITION_SIZE", "bad")))
    assert (error.code, error.message, str(error)) == ("INVALID_POSITION_SIZE", "bad", "bad")
