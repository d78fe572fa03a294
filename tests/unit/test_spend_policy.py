"""The spend policy: every rule refuses a buy with its stable code and the numbers, sells
(exits) are never held by the money limits or the token allowlist, and the daily budget
resets at the UTC day boundary."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from valux.custody.policy import (
    DailySpend,
    SpendPolicy,
    SpendRefused,
    ViolationCode,
    check,
    utc_day,
)
from valux.venues.base import OrderIntent, Side

MINT = "So11111111111111111111111111111111111111112"
OTHER_MINT = "EPjFWdd5AufqSSqeM2qJxvnZkPFaKzwV6UDjBX4NgQp"
ROUTER = "0x68b3465833fb72A70ecDF485E0e4C7bD8665Fc45"
USDC = "0xaf88d065e77c8cC2239327C5EDb3A432268e5831"
UNKNOWN = "0x000000000000000000000000000000000000dEaD"


def _policy(**overrides: Any) -> SpendPolicy:
    fields: dict[str, Any] = {
        "quote_asset": "SOL",
        "max_per_order": Decimal("1"),
        "max_per_day": Decimal("5"),
        "allowed_tokens": [MINT, USDC],
        "max_price_impact": Decimal("0.02"),
        "max_priority_fee_lamports": 100_000,
        "allowed_contracts": [ROUTER, USDC],
    }
    fields.update(overrides)
    return SpendPolicy(**fields)


def _order(
    side: Side = Side.BUY, amount: str = "0.5", token: str = MINT, quote: str = "SOL"
) -> OrderIntent:
    return OrderIntent(
        intent_id="i1",
        wallet_id="w1",
        side=side,
        token=token,
        quote_asset=quote,
        amount=Decimal(amount),
        created_at=0.0,
    )


def _check(order: OrderIntent, policy: SpendPolicy | None = None, **kw: Any) -> Any:
    args: dict[str, Any] = {"spent_today": Decimal(0), "price_impact": 0.01}
    args.update(kw)
    return check(policy or _policy(), order, **args)


def test_an_order_within_every_rule_passes() -> None:
    """A buy inside every limit, with allowed contracts and fee, is not refused."""
    assert (
        _check(_order(), spent_today=Decimal("4.5"), priority_fee=100_000, contracts=[ROUTER])
        is None
    )


def test_max_per_order() -> None:
    """A buy above max_per_order is POLICY_MAX_PER_ORDER with both amounts; equal passes."""
    found = _check(_order(amount="1.25"))
    assert found.code is ViolationCode.MAX_PER_ORDER
    assert found.error().code == "POLICY_MAX_PER_ORDER"
    assert "1.25 SOL" in found.message and "1 SOL per order" in found.message
    assert _check(_order(amount="1")) is None


def test_max_per_day() -> None:
    """A buy that would take today's spend past max_per_day is POLICY_MAX_PER_DAY, with
    the resulting total and what is left; landing exactly on the limit passes."""
    found = _check(_order(amount="0.75"), spent_today=Decimal("4.5"))
    assert found.code is ViolationCode.MAX_PER_DAY
    assert "5.25 SOL" in found.message and "0.5 SOL left" in found.message
    assert _check(_order(amount="0.5"), spent_today=Decimal("4.5")) is None


def test_token_allowlist() -> None:
    """A buy of a token off the allowlist is POLICY_TOKEN_NOT_ALLOWED; EVM addresses
    match whatever their casing; allowed_tokens=None allows any token."""
    found = _check(_order(token=OTHER_MINT))
    assert found.code is ViolationCode.TOKEN_NOT_ALLOWED and OTHER_MINT in found.message
    assert _check(_order(token=USDC.lower())) is None
    assert _check(_order(token=MINT.lower())).code is ViolationCode.TOKEN_NOT_ALLOWED
    assert _check(_order(token=OTHER_MINT), _policy(allowed_tokens=None)) is None


def test_quote_asset_must_match_the_limits() -> None:
    """A buy paid in another asset than the policy's is POLICY_QUOTE_ASSET (its limits
    cannot be compared)."""
    found = _check(_order(quote="USDC"))
    assert found.code is ViolationCode.QUOTE_ASSET and "USDC" in found.message


def test_price_impact() -> None:
    """Impact over max_price_impact is POLICY_MAX_PRICE_IMPACT with both percentages;
    the float 0.02 equals the cap Decimal('0.02') exactly and passes; an unknown impact
    under a cap is POLICY_PRICE_IMPACT_UNKNOWN; no cap accepts anything."""
    found = _check(_order(), price_impact=0.035)
    assert found.code is ViolationCode.MAX_PRICE_IMPACT
    assert "3.5 %" in found.message and "2 %" in found.message
    assert _check(_order(), price_impact=0.02) is None
    assert _check(_order(), price_impact=Decimal("0.02")) is None
    assert _check(_order(), price_impact=None).code is ViolationCode.PRICE_IMPACT_UNKNOWN
    assert _check(_order(), price_impact=float("nan")).code is ViolationCode.MAX_PRICE_IMPACT
    assert _check(_order(), _policy(max_price_impact=None), price_impact=0.9) is None


def test_priority_fee() -> None:
    """A priority fee over the cap is POLICY_MAX_PRIORITY_FEE, for buys and sells alike;
    a transaction without one (None) passes."""
    for side in Side:
        found = _check(_order(side=side), priority_fee=100_001)
        assert found.code is ViolationCode.MAX_PRIORITY_FEE
        assert "100001 lamports" in found.message and "100000" in found.message
    assert _check(_order(), priority_fee=None) is None


def test_contract_allowlist() -> None:
    """Any called or approved contract off the list is POLICY_CONTRACT_NOT_ALLOWED naming
    it — for sells too; casing does not matter; a single string is one address; a sell
    may approve the token it sells."""
    found = _check(_order(), contracts=[ROUTER, UNKNOWN])
    assert found.code is ViolationCode.CONTRACT_NOT_ALLOWED and UNKNOWN in found.message
    assert _check(_order(side=Side.SELL), contracts=UNKNOWN).code is (
        ViolationCode.CONTRACT_NOT_ALLOWED
    )
    assert _check(_order(), contracts=ROUTER.lower()) is None
    held = "0x1111111111111111111111111111111111111111"
    assert _check(_order(side=Side.SELL, token=held), contracts=[held, ROUTER]) is None
    assert _check(_order(token=USDC), contracts=[held]).code is ViolationCode.CONTRACT_NOT_ALLOWED


def test_sells_are_never_blocked_by_money_limits_or_the_token_allowlist() -> None:
    """A sell far over max_per_order, on a day whose budget is spent, of a token off the
    allowlist, priced in another asset, at any price impact (known or not), passes."""
    sell = _order(side=Side.SELL, amount="1000000", token=OTHER_MINT, quote="USDC")
    for impact in (0.99, None):
        assert _check(sell, spent_today=Decimal("5"), price_impact=impact) is None


def test_exit_price_impact_cap_is_opt_in() -> None:
    """max_exit_price_impact, when set, applies to sells (and only then)."""
    policy = _policy(max_exit_price_impact=Decimal("0.3"))
    sell = _order(side=Side.SELL)
    assert check(policy, sell, spent_today=Decimal(0), price_impact=0.5).code is (  # type: ignore[union-attr]
        ViolationCode.MAX_PRICE_IMPACT
    )
    assert check(policy, sell, spent_today=Decimal(0), price_impact=0.25) is None


def test_no_limits_when_said_explicitly() -> None:
    """With every limit None the policy refuses nothing it is asked about."""
    policy = SpendPolicy(quote_asset="SOL", max_per_order=None, max_per_day=None)
    assert _check(_order(amount="1e9", token=OTHER_MINT), policy, price_impact=None) is None


def test_policy_model_is_strict() -> None:
    """The policy is keyword-only and frozen, rejects unknown fields, requires the two
    money limits to be stated, rejects bad numbers, and reads 0.1 as Decimal('0.1')."""
    with pytest.raises(ValidationError, match="max_per_day"):
        SpendPolicy(quote_asset="SOL", max_per_order=Decimal(1))  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="Extra inputs"):
        _policy(max_per_week=Decimal(1))
    with pytest.raises(TypeError):
        SpendPolicy("SOL", None, None)  # type: ignore[misc]
    for bad in (
        {"max_per_order": 0},
        {"max_per_day": "NaN"},
        {"max_per_order": True},
        {"max_price_impact": 1.5},
        {"max_priority_fee_lamports": -1},
        {"allowed_tokens": [" "]},
    ):
        with pytest.raises(ValidationError):
            _policy(**bad)
    policy = _policy(max_per_order=0.1)
    assert policy.max_per_order == Decimal("0.1")
    with pytest.raises(ValidationError):
        policy.max_per_order = Decimal(2)  # type: ignore[misc]
    assert SpendPolicy.model_validate_json(policy.model_dump_json()) == policy


def test_violation_becomes_a_picklable_error_with_its_code() -> None:
    """PolicyViolation.error() is a SpendRefused whose code is the rule's; it pickles."""
    found = _check(_order(amount="2"))
    err = found.error()
    assert isinstance(err, SpendRefused) and err.code == "POLICY_MAX_PER_ORDER"
    again = pickle.loads(pickle.dumps(err))
    assert (again.code, again.message) == (err.code, err.message)


def test_bad_spent_today_is_refused() -> None:
    """A negative or non-Decimal spent_today is a caller bug and raises ValueError."""
    for bad in (Decimal(-1), 0.5, Decimal("NaN")):
        with pytest.raises(ValueError, match="spent_today"):
            _check(_order(), spent_today=bad)


MIDNIGHT = datetime(2024, 3, 10, tzinfo=UTC)


def test_utc_day_boundary() -> None:
    """The day key changes at 00:00 UTC exactly, whatever zone an aware datetime is
    given in; a naive datetime is refused."""
    before = MIDNIGHT - timedelta(microseconds=1)
    assert utc_day(before.timestamp()) == "2024-03-09"
    assert utc_day(MIDNIGHT.timestamp()) == "2024-03-10" == utc_day(MIDNIGHT)
    tokyo = MIDNIGHT.astimezone(timezone(timedelta(hours=9)))
    assert tokyo.day == 10 and tokyo.hour == 9 and utc_day(tokyo) == "2024-03-10"
    new_york = before.astimezone(timezone(timedelta(hours=-5)))
    assert utc_day(new_york) == "2024-03-09"
    with pytest.raises(ValueError, match="naive"):
        utc_day(datetime(2024, 3, 10))  # noqa: DTZ001 — the naive datetime under test


def test_daily_spend_rolls_at_midnight() -> None:
    """Spend accumulates within a UTC day and starts from zero on the next; the budget
    that refuses a buy at 23:59:59 accepts it at 00:00:00."""
    late = MIDNIGHT.timestamp() - 1
    spend = DailySpend(utc_day(late)).add(late, Decimal("3")).add(late, Decimal("2"))
    assert spend == DailySpend("2024-03-09", Decimal("5"))
    order = _order(amount="0.5")
    assert _check(order, spent_today=spend.spent_on(late)).code is ViolationCode.MAX_PER_DAY
    assert spend.spent_on(MIDNIGHT) == 0
    assert _check(order, spent_today=spend.spent_on(MIDNIGHT)) is None
    rolled = spend.add(MIDNIGHT, Decimal("0.5"))
    assert rolled == DailySpend("2024-03-10", Decimal("0.5"))


def test_daily_spend_release() -> None:
    """A failed buy is released on its own day (never below zero); releasing a buy from
    an earlier day changes nothing; negative amounts are refused."""
    noon = MIDNIGHT.timestamp() + 12 * 3600
    spend = DailySpend(utc_day(noon)).add(noon, Decimal("2"))
    assert spend.release(noon, Decimal("0.5")).spent == Decimal("1.5")
    assert spend.release(noon, Decimal("9")).spent == 0
    assert spend.release(MIDNIGHT.timestamp() - 60, Decimal("1")) == spend
    with pytest.raises(ValueError):
        spend.add(noon, Decimal("-1"))
    with pytest.raises(ValueError):
        spend.release(noon, Decimal("-1"))
