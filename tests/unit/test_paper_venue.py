"""The venue interface and the paper venue: fill arithmetic, idempotency, injected trouble."""

from __future__ import annotations

import asyncio
import pickle
import random
from decimal import Decimal
from typing import Any

import pytest

from valux.errors import ConfigurationError, InvalidRequest, Unavailable
from valux.venues.base import (
    OrderIntent,
    OrderRejected,
    OrderState,
    OrderStatus,
    Side,
    Venue,
    VenueError,
    VenueUnavailable,
    should_retry,
)
from valux.venues.paper.venue import PaperVenue

D = Decimal


class Prices:
    """A price source with settable prices that counts its calls."""

    def __init__(self, **prices: float) -> None:
        self.prices: dict[str, float | None] = dict(prices)
        self.calls = 0
        self.error: Exception | None = None

    async def __call__(self, token: str) -> float | None:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return self.prices.get(token)


def venue(prices: Prices, **overrides: Any) -> PaperVenue:
    settings: dict[str, Any] = {
        "fee_bps": 0,
        "slippage_bps_per_unit": 0.0,
        "depth_quote": D(10_000),
        "latency_ms": 0.0,
        "failure_rate": 0.0,
        "unknown_rate": 0.0,
        "network_fee": D(0),
        "rng": random.Random(1),
    }
    settings.update(overrides)
    return PaperVenue(prices, **settings)


def intent(
    intent_id: str = "i-1",
    side: Side = Side.BUY,
    amount: str = "100",
    token: str = "SOL",
    reference_price: float | None = None,
) -> OrderIntent:
    return OrderIntent(
        intent_id=intent_id,
        wallet_id="w-1",
        side=side,
        token=token,
        quote_asset="USDC",
        amount=D(amount),
        reference_price=reference_price,
        created_at=1.0,
    )


# ------------------------------------------------------------------ arithmetic


async def test_buy_without_fees_or_slippage_floors_tokens_to_decimals() -> None:
    """10 quote at mid 3 buys 3.333333333 tokens (floored to 9 decimals); all 10 are debited."""
    fill = await venue(Prices(SOL=3.0)).submit(intent(amount="10"))
    assert fill.state is OrderState.FILLED
    assert fill.base_amount == D("3.333333333")
    assert fill.quote_amount == D("10")
    assert fill.price == D("3")
    assert (fill.fee, fill.network_fee) == (D(0), D(0))
    assert fill.reason is None and fill.tx_id == "paper-1"


async def test_buy_arithmetic_with_fees_and_impact_is_exact() -> None:
    """BUY: network fee first, protocol fee on the rest, impact on the swapped notional.

    100 quote, network fee 0.01, 30 bps → fee 0.29997, swap 99.69003;
    impact = 50 bps/unit × 99.69003 / 10 000 = 0.000049845015;
    price = 2 × (1 + impact) = 2.00009969003; tokens = floor9(99.69003 / price).
    """
    v = venue(
        Prices(SOL=2.0),
        fee_bps=30,
        slippage_bps_per_unit=50.0,
        network_fee=D("0.01"),
    )
    fill = await v.submit(intent(amount="100"))
    assert fill.state is OrderState.FILLED
    assert fill.fee == D("0.29997")
    assert fill.network_fee == D("0.01")
    assert fill.price == D("2.00009969003")
    assert fill.base_amount == D("49.842530598")
    assert fill.quote_amount == D("100")
    swap = D("99.69003")
    assert fill.base_amount * fill.price <= swap < (fill.base_amount + D("1e-9")) * fill.price


async def test_sell_arithmetic_with_fees_and_impact_is_exact() -> None:
    """SELL: price = mid × (1 − impact); credit = gross − protocol fee − network fee.

    49.8 tokens at mid 2: impact = 0.005 × 99.6 / 10 000 = 0.0000498, price 1.9999004,
    gross 99.59503992, fee 30 bps = 0.29878511976, credit 99.28625480024.
    """
    v = venue(
        Prices(SOL=2.0),
        fee_bps=30,
        slippage_bps_per_unit=50.0,
        network_fee=D("0.01"),
    )
    fill = await v.submit(intent(side=Side.SELL, amount="49.8"))
    assert fill.state is OrderState.FILLED
    assert fill.base_amount == D("49.8")
    assert fill.price == D("1.9999004")
    assert fill.fee == D("0.29878511976")
    assert fill.quote_amount == D("99.28625480024")
    assert all(isinstance(x, Decimal) for x in (fill.base_amount, fill.quote_amount, fill.fee))


async def test_impact_moves_buys_up_and_sells_down_and_grows_with_size() -> None:
    """Buys fill above mid, sells below, and a bigger order gets a worse price."""
    v = venue(Prices(SOL=10.0), slippage_bps_per_unit=100.0, depth_quote=D(1_000))
    small_buy = await v.quote(Side.BUY, "SOL", D(10))
    big_buy = await v.quote(Side.BUY, "SOL", D(500))
    small_sell = await v.quote(Side.SELL, "SOL", D(1))
    big_sell = await v.quote(Side.SELL, "SOL", D(50))
    assert D(10) < small_buy.price < big_buy.price
    assert D(10) > small_sell.price > big_sell.price
    assert small_buy.price_impact == pytest.approx(0.01 * 10 / 1_000)
    assert big_sell.price_impact == pytest.approx(0.01 * 500 / 1_000)


async def test_quote_matches_the_fill_it_predicts() -> None:
    """quote() runs the same model as submit(): same price, fees and amounts at an unchanged mid."""
    v = venue(Prices(SOL=1.7), fee_bps=25, slippage_bps_per_unit=30.0, network_fee=D("0.002"))
    q = await v.quote(Side.BUY, "SOL", D("250"))
    fill = await v.submit(intent(amount="250"))
    assert (q.price, q.fee, q.network_fee, q.base_amount, q.quote_amount) == (
        fill.price,
        fill.fee,
        fill.network_fee,
        fill.base_amount,
        fill.quote_amount,
    )


async def test_sell_amount_is_floored_to_token_decimals() -> None:
    """A SELL with more decimals than the token has sells the floored amount and reports it."""
    v = venue(Prices(SOL=2.0), token_decimals=6)
    fill = await v.submit(intent(side=Side.SELL, amount="1.23456789"))
    assert fill.base_amount == D("1.234567")
    assert fill.quote_amount == D("2.469134")


async def test_quote_decimals_round_fees_up_and_proceeds_down() -> None:
    """With quote_decimals, the venue keeps the dust: fee rounds up, sell credit rounds down."""
    v = venue(Prices(SOL=1.0), fee_bps=30, quote_decimals=6)
    fill = await v.submit(intent(side=Side.SELL, amount="0.333333333"))
    # gross 0.333333333 → fee 0.000999999999 ↑ 0.001000 → net 0.332333333 ↓ 0.332333
    assert fill.fee == D("0.001")
    assert fill.quote_amount == D("0.332333")


async def test_orders_that_cannot_execute_fail_and_quotes_reject() -> None:
    """Non-positive amounts, fees above the amount and sells beyond the depth FAIL (not raise)."""
    v = venue(
        Prices(SOL=1.0), network_fee=D("0.5"), slippage_bps_per_unit=10_000.0, depth_quote=D(100)
    )
    cases = {
        "zero": (Side.BUY, "0"),
        "negative": (Side.SELL, "-1"),
        "nan": (Side.BUY, "NaN"),
        "fee": (Side.BUY, "0.4"),
        "dust": (Side.SELL, "0.0000000001"),
        "deep": (Side.SELL, "100"),
    }
    reasons = {}
    for name, (side, amount) in cases.items():
        status = await v.submit(intent(intent_id=name, side=side, amount=amount))
        assert status.state is OrderState.FAILED, name
        assert (status.base_amount, status.quote_amount, status.network_fee) == (D(0),) * 3
        reasons[name] = status.reason or ""
    assert "finite Decimal > 0" in reasons["zero"]
    assert "network fee" in reasons["fee"]
    assert "depth" in reasons["deep"]
    with pytest.raises(OrderRejected):
        await v.quote(Side.BUY, "SOL", D(0))
    with pytest.raises(OrderRejected, match="network fee"):
        await v.quote(Side.BUY, "SOL", D("0.1"))


# ------------------------------------------------------------------ prices


async def test_no_price_fails_and_reference_price_is_the_fallback() -> None:
    """No price from the source: the intent's reference_price is used; with neither, FAILED."""
    prices = Prices()
    v = venue(prices)
    failed = await v.submit(intent(intent_id="a", token="X"))
    assert failed.state is OrderState.FAILED
    assert failed.reason == "no price for token X"
    filled = await v.submit(intent(intent_id="b", token="X", reference_price=4.0))
    assert filled.state is OrderState.FILLED and filled.price == D(4)
    prices.prices["X"] = 5.0
    assert (await v.submit(intent(intent_id="c", token="X", reference_price=4.0))).price == D(5)
    with pytest.raises(VenueUnavailable, match="no price for token Y"):
        await v.quote(Side.BUY, "Y", D(1))


async def test_a_failing_price_source_raises_unavailable_and_records_nothing() -> None:
    """If the price source raises, submit raises VenueUnavailable and status stays NOT_FOUND."""
    prices = Prices(SOL=1.0)
    prices.error = ConnectionError("feed down")
    v = venue(prices)
    with pytest.raises(VenueUnavailable) as caught:
        await v.submit(intent())
    assert should_retry(caught.value)
    assert (await v.status("i-1")).state is OrderState.NOT_FOUND
    prices.error = None
    assert (await v.submit(intent())).state is OrderState.FILLED


# ------------------------------------------------------------------ exactly once


async def test_submit_is_idempotent_by_intent_id() -> None:
    """A second submit of the same id returns the first outcome and executes nothing new."""
    prices = Prices(SOL=2.0)
    v = venue(prices)
    first = await v.submit(intent(amount="10"))
    prices.prices["SOL"] = 3.0
    second = await v.submit(intent(amount="999"))
    assert second == first
    assert prices.calls == 1
    assert await v.status("i-1") == first


async def test_concurrent_duplicate_submits_execute_once() -> None:
    """Submits of one id racing each other share a single execution."""
    prices = Prices(SOL=2.0)
    v = venue(prices, latency_ms=1.0)
    outcomes = await asyncio.gather(*(v.submit(intent()) for _ in range(5)))
    assert prices.calls == 1
    assert len({o.tx_id for o in outcomes}) == 1
    assert all(o == outcomes[0] and o.state is OrderState.FILLED for o in outcomes)


async def test_unknown_answer_is_resolved_by_status() -> None:
    """unknown_rate = 1: submit answers UNKNOWN, yet the order landed; status() says FILLED."""
    prices = Prices(SOL=2.0)
    v = venue(prices, unknown_rate=1.0)
    answer = await v.submit(intent(amount="10"))
    assert answer.state is OrderState.UNKNOWN
    assert answer.base_amount == 0
    status = await v.status("i-1")
    assert status.state is OrderState.FILLED
    assert status.base_amount == D(5)
    assert await v.submit(intent(amount="10")) == status  # a resubmit reveals, never refills
    assert prices.calls == 1


async def test_failure_injection_fails_with_a_reason() -> None:
    """failure_rate = 1: every valid order FAILS with a reason, and status agrees."""
    v = venue(Prices(SOL=2.0), failure_rate=1.0)
    status = await v.submit(intent())
    assert status.state is OrderState.FAILED
    assert status.reason == "simulated venue failure"
    assert await v.status("i-1") == status


async def test_injected_trouble_is_reproducible_with_a_seeded_rng() -> None:
    """Two venues with equally seeded rngs fail and time out on the same intents."""

    async def states(seed: int) -> list[OrderState]:
        v = venue(Prices(SOL=2.0), failure_rate=0.3, unknown_rate=0.3, rng=random.Random(seed))
        return [(await v.submit(intent(intent_id=str(i)))).state for i in range(40)]

    first = await states(42)
    assert first == await states(42)
    assert {OrderState.FILLED, OrderState.FAILED, OrderState.UNKNOWN} <= set(first)


async def test_status_of_an_unseen_intent_is_not_found() -> None:
    """status() of an id never submitted is NOT_FOUND (so resubmitting it is safe)."""
    status = await venue(Prices()).status("never")
    assert status.state is OrderState.NOT_FOUND
    assert status.intent_id == "never"


# ------------------------------------------------------------------ latency


async def test_latency_is_slept_before_every_answer_and_status_shows_pending() -> None:
    """Each call waits latency_ms through the injected sleep; in flight, status() is PENDING."""
    on_wire, release = asyncio.Event(), asyncio.Event()
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 1:  # hold the first submit "on the wire"
            on_wire.set()
            await release.wait()

    v = venue(Prices(SOL=2.0), latency_ms=250.0, sleep=fake_sleep)
    submit = asyncio.create_task(v.submit(intent()))
    await on_wire.wait()
    assert (await v.status("i-1")).state is OrderState.PENDING
    release.set()
    assert (await submit).state is OrderState.FILLED
    await v.quote(Side.BUY, "SOL", D(1))
    assert slept == [0.25, 0.25, 0.25]


async def test_real_latency_is_honoured() -> None:
    """With the real asyncio.sleep, a 20 ms venue takes at least 20 ms to answer."""
    v = venue(Prices(SOL=2.0), latency_ms=20.0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await v.submit(intent())
    assert loop.time() - started >= 0.019


async def test_an_abandoned_submit_still_lands() -> None:
    """A caller that times out does not cancel the order: it lands and status() shows it."""
    v = venue(Prices(SOL=2.0), latency_ms=30.0)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(v.submit(intent()), timeout=0.005)
    await asyncio.sleep(0.06)
    assert (await v.status("i-1")).state is OrderState.FILLED


# ------------------------------------------------------------------ interface, errors


def test_paper_venue_satisfies_the_venue_protocol() -> None:
    """PaperVenue is a Venue (name, quote, submit, status)."""
    v = venue(Prices())
    assert isinstance(v, Venue)
    assert v.name == "paper"


def test_should_retry_separates_transient_from_permanent_errors() -> None:
    """Transient trouble is retryable; rejections, other errors and bugs are not."""
    assert should_retry(VenueUnavailable("rpc down", "paper"))
    assert should_retry(Unavailable("db"))
    assert should_retry(TimeoutError())
    assert should_retry(ConnectionResetError())
    assert not should_retry(OrderRejected("too small", "paper"))
    assert not should_retry(VenueError("odd", "paper"))
    assert not should_retry(InvalidRequest("bad"))
    assert not should_retry(ValueError("bug"))


def test_venue_errors_pickle_with_all_their_fields() -> None:
    """Venue errors cross Ray intact: type, message and venue survive pickling."""
    for exc in (VenueError("a", "x"), VenueUnavailable("b", "y"), OrderRejected("c", "z")):
        copy = pickle.loads(pickle.dumps(exc))
        assert type(copy) is type(exc)
        assert (copy.message, copy.venue, str(copy)) == (exc.message, exc.venue, str(exc))


def test_intents_and_statuses_are_strict_values() -> None:
    """An intent refuses a float amount and coerces its side; statuses pickle."""
    with pytest.raises(TypeError, match="Decimal"):
        OrderIntent(
            intent_id="x",
            wallet_id="w",
            side=Side.BUY,
            token="SOL",
            quote_asset="USDC",
            amount=1.5,  # type: ignore[arg-type]  # the float is the point
            created_at=0.0,
        )
    sell = OrderIntent(
        intent_id="x",
        wallet_id="w",
        side="sell",  # type: ignore[arg-type]  # plain strings from JSON are coerced
        token="SOL",
        quote_asset="USDC",
        amount=D(1),
        created_at=0.0,
    )
    assert sell.side is Side.SELL
    status = OrderStatus.unknown("x", "timeout")
    assert status.ts > 0 and pickle.loads(pickle.dumps(status)) == status
    assert OrderState.FILLED.is_final and not OrderState.UNKNOWN.is_final


def test_bad_settings_are_reported_together() -> None:
    """Invalid venue settings raise one ConfigurationError naming every bad setting."""
    with pytest.raises(ConfigurationError) as caught:
        venue(
            Prices(),
            fee_bps=-1,
            depth_quote=D(0),
            failure_rate=1.5,
            network_fee=D(-1),
            token_decimals=40,
        )
    for name in ("fee_bps", "depth_quote", "failure_rate", "network_fee", "token_decimals"):
        assert name in caught.value.message
