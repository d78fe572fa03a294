"""Trade validation before a signal buy (reference §10, TV-1 checks 5–11)."""

from __future__ import annotations

import pickle
import random
from decimal import Decimal
from typing import Any

import pytest

from valux.rules.config import AgentConfig, load_agent_config
from valux.rules.sizing import SizingError
from valux.rules.validation import TradeRejected, validate_trade

D = Decimal
DEFAULTS = AgentConfig.defaults()
TOKEN = "TokenMint1111111111111111111111111111111111"
RICH = D("10")
NO_RANDOM = load_agent_config({"positionCalculator": {"randomization": {"enabled": False}}})


def validate(
    *,
    config: AgentConfig = DEFAULTS,
    balance: Decimal = RICH,
    open_tokens: frozenset[str] = frozenset(),
    token: str = TOKEN,
    requested_size: Decimal | None = None,
    wallet_type: str | None = None,
    wallet_key_loaded: bool = True,
    trading_mode: str | None = None,
) -> Decimal:
    return validate_trade(
        config=config,
        balance=balance,
        open_tokens=open_tokens,
        token=token,
        requested_size=requested_size,
        rng=random.Random(7),
        wallet_type=wallet_type,
        wallet_key_loaded=wallet_key_loaded,
        trading_mode=trading_mode,
    )


def rejection(**kwargs: Any) -> TradeRejected:
    with pytest.raises(TradeRejected) as caught:
        validate(**kwargs)
    return caught.value


def others(count: int) -> frozenset[str]:
    return frozenset(f"other-{i}" for i in range(count))


def test_tv1_5_live_wallet_without_its_key_is_rejected() -> None:
    """TV-1 #5: a live wallet whose key is not loaded fails WALLET_NOT_LOADED; a simulation
    wallet needs no key."""
    assert rejection(wallet_type="live", wallet_key_loaded=False).code == "WALLET_NOT_LOADED"
    assert validate(wallet_type="simulation", wallet_key_loaded=False, requested_size=D(1)) == 1


def test_tv1_6_trading_mode_must_equal_wallet_type() -> None:
    """TV-1 #6: an agent in simulation mode may not trade through a live wallet."""
    error = rejection(wallet_type="live", trading_mode="simulation")
    assert error.code == "TRADING_MODE_MISMATCH"
    assert validate(wallet_type="live", trading_mode="live", requested_size=D(1)) == 1


@pytest.mark.parametrize("balance", [D(0), D("-0.1")])
def test_tv1_7_non_positive_balance(balance: Decimal) -> None:
    """TV-1 #7: SOL balance must be > 0: INSUFFICIENT_BALANCE ("Insufficient SOL balance")."""
    error = rejection(balance=balance)
    assert (error.code, error.message) == ("INSUFFICIENT_BALANCE", "Insufficient SOL balance")


def test_tv1_8_balance_below_minimum_agent_balance() -> None:
    """TV-1 #8: balance < minimumAgentBalance fails BELOW_MINIMUM_THRESHOLD."""
    error = rejection(balance=D("0.49"))
    assert error.code == "BELOW_MINIMUM_THRESHOLD"
    assert error.message == "Balance below minimum threshold: 0.5 SOL"


def test_tv1_8_balance_equal_to_minimum_passes_check_8() -> None:
    """TV-1 #8 is inclusive: 0.5 passes it (and the computed size then fails PS-6, wrapped)."""
    assert rejection(balance=D("0.5")).code == "POSITION_CALCULATION_ERROR"


def test_tv1_9_one_open_position_per_token() -> None:
    """TV-1 #9: an open position for the token fails POSITION_EXISTS, checked before #10."""
    error = rejection(open_tokens=others(30) | {TOKEN})
    assert (error.code, error.message) == (
        "POSITION_EXISTS",
        f"Position already exists for token: {TOKEN}",
    )


def test_tv1_10_at_most_25_open_positions() -> None:
    """TV-1 #10: 24 open positions allow a buy, 25 fail MAX_POSITIONS_EXCEEDED."""
    assert validate(open_tokens=others(24), requested_size=D(1)) == 1
    error = rejection(open_tokens=others(25))
    assert error.code == "MAX_POSITIONS_EXCEEDED"
    assert "25 open positions" in error.message


def test_tv1_10_limit_comes_from_the_engine_section() -> None:
    """TV-1 #10 reads config.engine.max_open_positions (valux makes the 25 configurable)."""
    cfg = load_agent_config({"engine": {"maxOpenPositions": 3}})
    assert validate(config=cfg, open_tokens=others(2), requested_size=D(1)) == 1
    assert rejection(config=cfg, open_tokens=others(3)).code == "MAX_POSITIONS_EXCEEDED"


@pytest.mark.parametrize(
    ("size", "balance", "code"),
    [
        (D(0), D(10), "INVALID_POSITION_SIZE"),
        (D("-1"), D(10), "INVALID_POSITION_SIZE"),
        (D(3), D("2.5"), "POSITION_SIZE_EXCEEDS_BALANCE"),
        (D("2.1"), D("2.5"), "VIOLATES_MINIMUM_BALANCE"),
        (D("2.5"), D(10), "EXCEEDS_MAX_PURCHASE"),
    ],
)
def test_tv1_11_given_size_checks_in_order(size: Decimal, balance: Decimal, code: str) -> None:
    """TV-1 #11 with a size: ≤ 0, > balance, breaks the reserve, > maxPurchasePerToken —
    in that order (3 of 2.5 is "exceeds balance", not "exceeds max purchase")."""
    assert rejection(requested_size=size, balance=balance).code == code


def test_tv1_11_given_size_boundaries_are_accepted() -> None:
    """TV-1 #11: size = maxPurchasePerToken and balance − size = minimum are both allowed."""
    assert validate(requested_size=D("2.0"), balance=D("10")) == D("2.0")
    assert validate(requested_size=D("1.5"), balance=D("2.0")) == D("1.5")


def test_tv1_11_computed_size_comes_from_ps1_to_ps7() -> None:
    """TV-1 #11 without a size: PS-1..PS-7 compute it (medium tier max with randomization off)."""
    assert validate(config=NO_RANDOM, balance=D("6")) == D("1.0")


def test_tv1_11_sizing_failures_are_wrapped_with_the_inner_message() -> None:
    """TV-1 #11: a sizing failure becomes POSITION_CALCULATION_ERROR carrying its message."""
    cfg = load_agent_config(
        {"positionCalculator": {"positionSizes": {"small": {"max": 0, "min": 0}}}}
    )
    error = rejection(config=cfg, balance=D("1"))
    assert error.code == "POSITION_CALCULATION_ERROR"
    assert error.message == (
        "Failed to calculate position size: Calculated position size must be positive"
    )
    assert isinstance(error.__cause__, SizingError)
    assert error.__cause__.code == "INVALID_POSITION_SIZE"


def test_tv1_first_failure_decides() -> None:
    """TV-1: checks run in order; a zero balance is reported even if the token is also open."""
    assert rejection(balance=D(0), open_tokens=frozenset({TOKEN})).code == "INSUFFICIENT_BALANCE"


def test_trade_rejected_pickles_with_its_code() -> None:
    """TradeRejected crosses Ray: code and message survive pickling."""
    error = pickle.loads(pickle.dumps(TradeRejected("POSITION_EXISTS", "already open")))
    assert (error.code, error.message) == ("POSITION_EXISTS", "already open")
