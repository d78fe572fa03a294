"""nautilus: a 5 % trailing stop with re-entry, valux's whole backtest pipeline vs NautilusTrader's.

One instrument, ``ticks`` ticks of a seeded geometric random walk (σ = 0.05 % per tick
from 10,000, rounded to 8 decimals, bid = ask), the same list fed to both engines. ``K``
position *slots*: slot ``s`` opens a long position at tick ``s × stride`` at that tick's
price; whenever a slot's position is stopped out at tick ``t``, the slot re-enters at
tick ``t``'s price, so K positions stay open. Each position is protected by a 5 %
trailing stop (the stop trails 5 % below the highest price since entry).

- **valux, pipeline** (the row that counts): the production trading classes in one
  process (:class:`~valux.backtest.inprocess.InProcessSystem`: agent host, wallet host,
  paper exchange, stop-loss evaluator, journal into a scratch PostgreSQL database). One
  agent per slot with ``stopLoss.mode = trailing``, ``trailingPercentage = 5``; each
  entry and re-entry is a signal the agent buys on (sized, filled, journaled, armed);
  each close is the evaluator's trigger, the agent's sale through its wallet and the
  paper exchange, journaled. Timed: the replay, with the journal's last write.
- **valux, kernel only** (labelled as such): the evaluator's
  :class:`~valux.evaluation.book.ArmedBook` alone, one ``on_ticks`` per tick, triggered
  positions disarmed and re-armed at the trigger tick's price — no agents, wallets,
  orders or journal. Not like for like with NautilusTrader's whole engine; kept to show
  what the evaluation itself costs.
- **NautilusTrader** (``nautilus_trader`` from PyPI, the optional ``bench`` dependency
  group): low-level ``BacktestEngine``, a simulated venue (margin account, hedging OMS so
  each slot is its own position), an instrument with 8-decimal prices, the risk engine
  bypassed (its default order-rate throttle would reject re-entries), logging bypassed;
  a strategy that buys with market orders and protects each position with an
  *emulated* ``TRAILING_STOP_MARKET`` sell, ``trailing_offset`` 500 basis points,
  ``BID_ASK`` trigger, reduce-only on the position. Timed: ``engine.run()``.

NautilusTrader runs in a spawned child process (timed inside it), valux in this one;
both in the same run on the same machine. The comparison reports, per slot, positions
that entered at the same tick and closed at the same tick, those that closed at
different ticks, and those not comparable because an earlier position of the slot
already diverged. NautilusTrader rounds its trigger price to the instrument's price
increment (1e-8 here); valux's stop is the exact percentage of SL-2 (decimal) applied to
the purchase price, so the two can only disagree on a tick that lands within ~1e-8 of
the stop.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import random
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from bench.common import BenchEnv, Benchmark, BenchResult, Row, Target
from valux.backtest.inprocess import Exit, InProcessSystem
from valux.config.settings import load_settings
from valux.evaluation.book import ArmedBook
from valux.ops.scratch_db import scratch_database
from valux.rules.armed import ArmedPosition
from valux.rules.stop_loss import StopLossParams
from valux.schema.messages import Signal
from valux.system.runtime import prepare_database

OFFSET = 0.05
TOKEN = "BTCUSDT"
START_PRICE = 10_000.0
SIGMA = 0.0005
PRECISION = 8
CHUNK = 50_000  # ticks per call into the pipeline once every slot has entered
AGENT_CONFIG: dict[str, Any] = {
    "stopLoss": {"enabled": True, "defaultPercentage": -OFFSET * 100, "mode": "trailing",
                 "trailingPercentage": OFFSET * 100},
    "staleTrade": {"enabled": False},
    "positionCalculator": {"randomization": {"enabled": False}},
    "purchaseLimits": {"maxPriceImpact": None},
}  # fmt: skip


def random_walk(ticks: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    price = START_PRICE
    out = []
    for _ in range(ticks):
        price *= math.exp(rng.gauss(0.0, SIGMA))
        out.append(round(price, PRECISION))
    return out


def trailing_params() -> StopLossParams:
    """A 5 % trailing stop from entry, as the agent config above arms it."""
    return StopLossParams(
        enabled=True,
        default_percentage=-OFFSET * 100.0,
        mode="trailing",
        trailing_percentage=OFFSET * 100.0,
    )


@dataclass
class Run:
    """Per slot, the (entry tick, close tick or None) of each position, and the time taken."""

    ticks: int
    seconds: float
    slots: dict[int, list[tuple[int, int | None]]] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.ticks / self.seconds

    def closes(self, horizon: int | None = None) -> int:
        """Positions closed before tick ``horizon`` (all without one)."""
        end = self.ticks if horizon is None else horizon
        return sum(1 for seq in self.slots.values() for _, c in seq if c is not None and c < end)


def run_kernel(prices: list[float], k: int, stride: int) -> Run:
    """The evaluator's book alone (module docstring, "kernel only")."""
    params = trailing_params()
    book = ArmedBook(record_updates=False)  # as the evaluator actor runs it
    slots: dict[int, list[tuple[int, int | None]]] = {s: [] for s in range(k)}
    slot_of: dict[str, int] = {}
    generation = [0] * k
    on_ticks = book.on_ticks
    started = time.perf_counter()
    for i, price in enumerate(prices):
        fresh: list[int] = []
        res = on_ticks([(TOKEN, price, float(i))])
        if res.triggers:
            ids = [t.position_id for t in res.triggers]
            book.disarm(ids)
            for pid in ids:
                slot = slot_of.pop(pid)
                entry, _ = slots[slot][-1]
                slots[slot][-1] = (entry, i)
                fresh.append(slot)
        if i % stride == 0 and i // stride < k:
            fresh.append(i // stride)
        if fresh:
            armed = []
            for slot in fresh:
                generation[slot] += 1
                pid = f"{slot}:{generation[slot]}"
                slot_of[pid] = slot
                slots[slot].append((i, None))
                armed.append(ArmedPosition(pid, f"agent-{slot}", 0, TOKEN, price, params))
            book.arm(armed)
    return Run(len(prices), time.perf_counter() - started, slots)


async def run_pipeline(prices: list[float], k: int, stride: int, admin_url: str) -> Run:
    """The whole valux pipeline in one process (module docstring, "pipeline")."""
    async with scratch_database(admin_url, "valux_bench") as url:
        settings = load_settings(
            env={},
            overrides={
                "database.url": url,
                "logging.level": "error",
                "venue.paper.fee_bps": 0,
                "venue.paper.slippage_bps_per_unit": 0.0,
                "venue.paper.network_fee": "0",
            },
        )
        _, pool = await prepare_database(settings)
        await pool.close()
        system = await InProcessSystem.start(settings, url)
        try:
            return await _replay_slots(system, prices, k, stride)
        finally:
            await system.close()


async def _replay_slots(system: InProcessSystem, prices: list[float], k: int, stride: int) -> Run:
    for slot in range(k):
        await system.add_agent(f"slot-{slot}", AGENT_CONFIG, Decimal(10) ** 12)
    ticks = [(TOKEN, price, float(i)) for i, price in enumerate(prices)]
    slots: dict[int, list[tuple[int, int | None]]] = {s: [] for s in range(k)}
    entries = [0] * k

    async def enter(slot: int, i: int) -> None:
        entries[slot] += 1
        signal = Signal(
            id=f"{slot}:{entries[slot]}",
            token=TOKEN,
            strength=5,
            type="re-entry",
            size=Decimal(1),
            received_at=float(i),
            agents=(f"slot-{slot}",),
        )
        (outcome,) = await system.signal(signal)
        if outcome["status"] != "bought":
            raise RuntimeError(f"slot {slot} could not enter at tick {i}: {outcome}")
        slots[slot].append((i, None))

    async def on_exits(exits: list[Exit], tick: tuple[str, float, float]) -> None:
        i = int(tick[2])
        for agent_id, position_id, _ in exits:
            slot = int(agent_id.removeprefix("slot-"))
            if position_id in system.agents.entities[agent_id].positions:
                raise RuntimeError(f"{position_id} was not sold at tick {i}")
            entry, _ = slots[slot][-1]
            slots[slot][-1] = (entry, i)
            await enter(slot, i)

    started = time.perf_counter()
    cursor = 0
    for slot in range(min(k, (len(ticks) + stride - 1) // stride)):
        at = slot * stride
        await system.ticks(ticks[cursor : at + 1], on_exits)
        cursor = at + 1
        await enter(slot, at)
    while cursor < len(ticks):
        await system.ticks(ticks[cursor : cursor + CHUNK], on_exits)
        cursor += CHUNK
    await system.store.flush()
    return Run(len(prices), time.perf_counter() - started, slots)


def _instrument() -> Any:
    """BTC/USDT as a spot pair with 8-decimal prices (the test kit's has 2: its trigger
    rounding to the cent would decide closes that a finer price increment does not)."""
    from nautilus_trader.model.currencies import BTC, USDT
    from nautilus_trader.model.identifiers import InstrumentId, Symbol, Venue
    from nautilus_trader.model.instruments import CurrencyPair
    from nautilus_trader.model.objects import Money, Price, Quantity

    return CurrencyPair(
        instrument_id=InstrumentId(symbol=Symbol("BTCUSDT"), venue=Venue("BINANCE")),
        raw_symbol=Symbol("BTCUSDT"),
        base_currency=BTC,
        quote_currency=USDT,
        price_precision=PRECISION,
        size_precision=6,
        price_increment=Price(10.0**-PRECISION, precision=PRECISION),
        size_increment=Quantity(1e-06, precision=6),
        lot_size=None,
        max_quantity=Quantity(9000, precision=6),
        min_quantity=Quantity(1e-06, precision=6),
        max_notional=None,
        min_notional=Money(10.00000000, USDT),
        max_price=Price(1_000_000, precision=PRECISION),
        min_price=Price(10.0**-PRECISION, precision=PRECISION),
        margin_init=Decimal(0),
        margin_maint=Decimal(0),
        maker_fee=Decimal(0),
        taker_fee=Decimal(0),
        ts_event=0,
        ts_init=0,
    )


def run_nautilus(prices: list[float], k: int, stride: int) -> Run:
    """The same ticks and slots through NautilusTrader's BacktestEngine (module docstring)."""
    from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
    from nautilus_trader.config import LoggingConfig, RiskEngineConfig, StrategyConfig
    from nautilus_trader.model.currencies import BTC, USDT
    from nautilus_trader.model.data import QuoteTick
    from nautilus_trader.model.enums import (
        AccountType,
        OmsType,
        OrderSide,
        TrailingOffsetType,
        TriggerType,
    )
    from nautilus_trader.model.identifiers import Venue
    from nautilus_trader.model.objects import Money, Price, Quantity
    from nautilus_trader.trading.strategy import Strategy

    instrument = _instrument()
    one = Quantity(1, instrument.size_precision)
    depth = Quantity(1_000_000, instrument.size_precision)
    slots: dict[int, list[tuple[int, int | None]]] = {s: [] for s in range(k)}

    class SlotsConfig(StrategyConfig, frozen=True):  # type: ignore[misc,call-arg]
        k: int = 1
        stride: int = 10

    class TrailingSlots(Strategy):  # type: ignore[misc]
        def __init__(self, config: SlotsConfig) -> None:
            super().__init__(config)
            self.k = config.k
            self.stride = config.stride
            self.slot_of_order: dict[Any, int] = {}
            self.slot_of_position: dict[Any, int] = {}

        def on_start(self) -> None:
            self.subscribe_quote_ticks(instrument.id)

        def buy(self, slot: int) -> None:
            order = self.order_factory.market(instrument.id, OrderSide.BUY, one)
            self.slot_of_order[order.client_order_id] = slot
            self.submit_order(order)

        def on_quote_tick(self, tick: Any) -> None:
            i = tick.ts_event // 1000 - 1
            if i % self.stride == 0 and i // self.stride < self.k:
                self.buy(i // self.stride)

        def on_position_opened(self, event: Any) -> None:
            slot = self.slot_of_order.pop(event.opening_order_id)
            self.slot_of_position[event.position_id] = slot
            slots[slot].append((event.ts_event // 1000 - 1, None))
            stop = self.order_factory.trailing_stop_market(
                instrument_id=instrument.id,
                order_side=OrderSide.SELL,
                quantity=one,
                trailing_offset=Decimal(int(OFFSET * 10_000)),
                trailing_offset_type=TrailingOffsetType.BASIS_POINTS,
                trigger_type=TriggerType.BID_ASK,
                reduce_only=True,
                emulation_trigger=TriggerType.BID_ASK,
            )
            self.submit_order(stop, position_id=event.position_id)

        def on_position_closed(self, event: Any) -> None:
            slot = self.slot_of_position.pop(event.position_id)
            entry, _ = slots[slot][-1]
            slots[slot][-1] = (entry, event.ts_event // 1000 - 1)
            self.buy(slot)

    engine = BacktestEngine(
        BacktestEngineConfig(
            logging=LoggingConfig(bypass_logging=True),
            risk_engine=RiskEngineConfig(bypass=True),
        )
    )
    try:
        engine.add_venue(
            Venue("BINANCE"),
            OmsType.HEDGING,
            AccountType.MARGIN,
            [Money(10**12, USDT), Money(10**6, BTC)],
            default_leverage=Decimal(1),
        )
        engine.add_instrument(instrument)
        precision = instrument.price_precision
        engine.add_data(
            [
                QuoteTick(
                    instrument.id,
                    Price(p, precision),
                    Price(p, precision),
                    depth,
                    depth,
                    (i + 1) * 1000,
                    (i + 1) * 1000,
                )
                for i, p in enumerate(prices)
            ]
        )
        engine.add_strategy(TrailingSlots(SlotsConfig(k=k, stride=stride)))
        started = time.perf_counter()
        engine.run()
        seconds = time.perf_counter() - started
    finally:
        engine.dispose()
    return Run(len(prices), seconds, slots)


def compare(valux: Run, nautilus: Run, horizon: int) -> dict[str, int]:
    """Per slot, walk both engines' positions (entry tick, close tick) within the first
    ``horizon`` ticks in order: ``same`` when entry and close agree, ``differ`` at the
    first one that does not (``entry_differs`` if even the entry did), after which the
    slot's later positions are ``not_compared`` (their entries follow from that close)."""
    out = {"same": 0, "differ": 0, "entry_differs": 0, "not_compared": 0}

    def clip(seq: list[tuple[int, int | None]]) -> list[tuple[int, int | None]]:
        return [(e, c if c is not None and c < horizon else None) for e, c in seq if e < horizon]

    for slot in nautilus.slots:
        a, b = clip(valux.slots.get(slot, [])), clip(nautilus.slots[slot])
        for n, (va, nb) in enumerate(zip(a, b, strict=False)):
            if va == nb:
                out["same"] += 1
                continue
            out["differ" if va[0] == nb[0] else "entry_differs"] += 1
            out["not_compared"] += max(len(a), len(b)) - n - 1
            break
        else:
            out["not_compared"] += abs(len(a) - len(b))
    return out


def _mismatches(valux: Run, nautilus: Run, horizon: int, limit: int = 5) -> list[str]:
    """The first differing positions, for the notes (evidence, not a verdict)."""
    found = []
    for slot in sorted(nautilus.slots):
        a = [p for p in valux.slots.get(slot, []) if p[0] < horizon]
        b = [p for p in nautilus.slots[slot] if p[0] < horizon]
        for va, nb in zip(a, b, strict=False):
            if va != nb:
                found.append(f"slot {slot}: valux {va}, NautilusTrader {nb}")
                break
        if len(found) >= limit:
            break
    return found


async def run(
    env: BenchEnv,
    result: BenchResult,
    *,
    ticks: int,
    ks: list[int],
    stride: int = 10,
    seed: int = 7,
    max_ticks: dict[str, int] | None = None,
) -> None:
    caps = max_ticks or {}
    prices = random_walk(ticks, seed)
    result.details["per_k"] = {}
    # NautilusTrader runs in a child process of its own: importing it installs uvloop's
    # event-loop policy (which breaks asyncio subprocesses in this one) and its engine
    # keeps memory that would count against the later benchmarks' RSS.
    spawn = multiprocessing.get_context("spawn")
    targets = {1: 1.0, 100: 10.0, 1000: 10.0}
    for k in ks:
        horizon = min(ticks, caps.get(str(k), ticks))
        window = prices[:horizon]
        pipeline = await run_pipeline(window, k, stride, env.admin_url)
        kernel = run_kernel(window, k, stride)
        with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
            nautilus = await asyncio.get_running_loop().run_in_executor(
                pool, run_nautilus, window, k, stride
            )
        cmp = compare(pipeline, nautilus, horizon)
        ratio = pipeline.rate / nautilus.rate
        label = f"K={k:,} ({horizon:,} ticks)"
        result.add(Row(f"{label}: valux pipeline ticks/s", "ticks/s", value=pipeline.rate))
        result.add(Row(f"{label}: NautilusTrader ticks/s", "ticks/s", value=nautilus.rate))
        result.add(
            Row(
                f"{label}: speed-up valux pipeline / NautilusTrader",
                "×",
                value=ratio,
                targets=[Target("value", ">=", targets[k])] if k in targets else [],
            )
        )
        compared = cmp["same"] + cmp["differ"] + cmp["entry_differs"]
        result.add(
            Row(
                f"{label}: positions closed at the same tick",
                "%",
                value=100.0 * cmp["same"] / max(1, compared),
                targets=[Target("value", ">=", 99.9)],
                note=(
                    f"same {cmp['same']}, close differs {cmp['differ']}, entry differs "
                    f"{cmp['entry_differs']}, not comparable after a divergence "
                    f"{cmp['not_compared']}"
                ),
            )
        )
        result.add(
            Row(f"{label}: valux kernel only (evaluator book, no orders)", "ticks/s",
                value=kernel.rate)
        )  # fmt: skip
        result.details["per_k"][str(k)] = {
            "ticks": horizon,
            "pipeline_s": pipeline.seconds,
            "kernel_s": kernel.seconds,
            "nautilus_s": nautilus.seconds,
            "pipeline_closes": pipeline.closes(),
            "kernel_closes": kernel.closes(),
            "nautilus_closes": nautilus.closes(),
            "comparison": cmp,
            "first_mismatches": _mismatches(pipeline, nautilus, horizon),
        }
        result.notes.append(
            f"K={k}: {pipeline.closes():,} closes in valux's pipeline (each a journaled "
            f"sale and a journaled re-entry buy), {nautilus.closes():,} in NautilusTrader; "
            f"{cmp['same']} positions at the same entry and close tick, {cmp['differ']} "
            f"closed at another tick, {cmp['entry_differs']} entered at another tick."
        )


SPEC = Benchmark(
    name="nautilus",
    title="5 % trailing stop with re-entry: valux's backtest pipeline vs NautilusTrader",
    needs_ray=False,
    quick={"ticks": 10_000, "ks": [1, 10]},
    full={"ticks": 1_000_000, "ks": [1, 100, 1000], "max_ticks": {"1000": 100_000}},
    run=run,
)
