"""StopLossEvaluator: the armed exit rules of every open position on a shard of tokens.

Contract:
- Owns an :class:`~valux.evaluation.book.ArmedBook` (numpy arrays per token) and
  the latest price of each of its tokens; evaluates each tick batch vectorised,
  inside this process, with no I/O on that path.
- A trigger is sent to the agent's host (one call per host per batch) and the
  position is marked exiting, so it cannot fire twice; the host answers with
  ``settle`` (closed → forgotten, failed → released to fire again).
- Trailing-stop state (peak, ratchet) is written to ``position_stops`` in the
  background, coalesced (SL-12 persistence): the book marks changed positions
  in an array; every 100 ms their current values go out in one upsert per
  chunk, and a failed write marks them again.
- On restart: the constructor re-arms every open position of its shard from
  PostgreSQL (positions read model + position_stops) before it answers
  anything, so "ready" implies "armed".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import time
import uuid
from collections import defaultdict
from typing import Any

import asyncpg
import structlog

from valux.config.secrets import with_password
from valux.config.settings import Settings
from valux.evaluation.book import ArmedBook, ExitTrigger, StopWrites
from valux.hosting.host import node_id
from valux.hosting.naming import evaluator_name, shard_of
from valux.hosting.peers import Peers, RayPeers
from valux.observability.logging import configure_logging
from valux.observability.metrics import ARMED_POSITIONS, EVALUATION_SECONDS, collect_families
from valux.persistence.starts import record_start
from valux.rules.armed import ArmedPosition
from valux.rules.exit_rules import decode_exits, stop_params
from valux.schema.messages import ExitRequest

_STOPS_FLUSH_S = 0.1
_STOPS_CHUNK = 20_000  # rows per upsert statement
_UPSERT_STOPS = (
    "INSERT INTO position_stops (position_id, peak, stop_pct, updated_at)"
    " SELECT u.id, u.peak, u.pct, to_timestamp(u.ts)"
    " FROM unnest($1::text[], $2::float8[], $3::float8[], $4::float8[]) AS u(id, peak, pct, ts)"
    " ON CONFLICT (position_id) DO UPDATE"
    " SET peak = EXCLUDED.peak, stop_pct = EXCLUDED.stop_pct, updated_at = EXCLUDED.updated_at"
)


def _finite(values: dict[str, float]) -> dict[str, float]:
    """Drop NaN (no stop) so no NaN crosses into JSON or the journal."""
    return {k: v for k, v in values.items() if math.isfinite(v)}


class StopLossEvaluator:
    """One shard of the token space; see the module docstring for the contract."""

    # Ray runs an async constructor to completion before the actor takes its first call,
    # which is exactly the recovery contract; mypy only knows synchronous constructors.
    async def __init__(  # type: ignore[misc]
        self, shard: int, settings: Settings, database_url: str, *, peers: Peers | None = None
    ) -> None:
        self.shard = shard
        self.peers: Peers = peers if peers is not None else RayPeers(settings.ray.namespace)
        self.settings = settings
        self.shards = settings.hosting.evaluators
        configure_logging(
            settings.logging.level, settings.logging.format, process=f"evaluator-{shard}"
        )
        self.log = structlog.get_logger("valux.evaluator").bind(shard=shard)
        self.book = ArmedBook(record_updates=False)
        self.started_at = time.time()
        self.pool: asyncpg.Pool = await asyncpg.create_pool(
            with_password(database_url),
            min_size=1,
            max_size=2,
            timeout=settings.database.connect_timeout_s,
            command_timeout=60,  # a database that hangs fails the start (Ray restarts it)
        )
        self.incarnation = uuid.uuid4().hex
        try:
            await record_start(self.pool, evaluator_name(shard), self.incarnation)
        except Exception as exc:  # the supervisor then counts restarts by ping
            self.log.warning("start_not_recorded", error=str(exc))
        self._stops_task: asyncio.Task[None] | None = None
        self._exit_tasks: set[asyncio.Task[None]] = set()
        self._received: dict[str, float] = {}  # token -> wall time of its last tick here
        self._watchdog: asyncio.Task[None] | None = None
        self.ticks_seen = 0
        self.batches = 0
        self.triggers = 0
        started = time.perf_counter()
        self.rearmed = await self._rearm_from_database()
        self._schedule_stop_writes()  # SL-1 state of positions restored without any
        self.rearm_seconds = time.perf_counter() - started
        self.log.info("evaluator_ready", rearmed=self.rearmed, ms=round(self.rearm_seconds * 1000))
        self._watchdog = asyncio.get_running_loop().create_task(self._watch_silent_feeds())

    # -- recovery -----

    async def _rearm_from_database(self) -> int:
        rows = await self.pool.fetch(
            "SELECT p.id, p.agent_id, p.token, p.host_slot, p.purchase_price, p.exit_rules,"
            " s.peak, s.stop_pct FROM positions p"
            " LEFT JOIN position_stops s ON s.position_id = p.id WHERE p.status = 'open'"
        )
        positions = []
        for r in rows:
            if shard_of(r["token"], self.shards) != self.shard:
                continue
            rules = json.loads(r["exit_rules"])
            positions.append(
                ArmedPosition(
                    position_id=r["id"],
                    agent_id=r["agent_id"],
                    host=r["host_slot"],
                    token=r["token"],
                    purchase_price=float(r["purchase_price"]),
                    stop=stop_params(rules),
                    peak=r["peak"],
                    stop_pct=r["stop_pct"],
                    exits=decode_exits(rules.get("exits")),
                )
            )
        self.book.arm(positions)
        ARMED_POSITIONS.set(self.book.armed_count())
        return len(positions)

    # -- arming -----

    async def arm(self, specs: list[dict[str, Any]]) -> list[bool]:
        """Arm positions; re-arming keeps the trailing state the book already has unless
        the spec carries its own (a DCA buy re-initialises the stop). A spec with
        ``release`` also makes an exiting position live again: the agent has acted on
        its trigger and armed the parameters that follow."""
        held = [s for s in specs if not s.get("release")]
        released = [s for s in specs if s.get("release")]
        for group, release in ((held, False), (released, True)):
            if group:
                self._arm_group(group, release=release)
        ARMED_POSITIONS.set(self.book.armed_count())
        return [True] * len(specs)

    def _arm_group(self, specs: list[dict[str, Any]], *, release: bool) -> None:
        positions = []
        for spec in specs:
            current = self.book.state(spec["position_id"])
            peak = spec.get("peak")
            stop_pct = spec.get("stop_pct")
            if current is not None and peak is None and stop_pct is None:
                peak, stop_pct = current.peak, current.stop_pct
            positions.append(
                ArmedPosition(
                    position_id=spec["position_id"],
                    agent_id=spec["agent_id"],
                    host=spec["host"],
                    token=spec["token"],
                    purchase_price=spec["purchase_price"],
                    stop=stop_params(spec["exit_rules"]),
                    peak=peak,
                    stop_pct=stop_pct,
                    exits=decode_exits(spec["exit_rules"].get("exits")),
                )
            )
        # Written with the next flush: a new position's SL-1 stop (the book marks it),
        # and one whose stop the agent reset.
        reset = {spec["position_id"]: math.nan for spec in specs if spec.get("peak") is not None}
        self.book.arm(positions, release=release, persist=reset)
        self._schedule_stop_writes()

    async def settle(self, outcomes: list[tuple[str, bool]]) -> list[bool]:
        """(position_id, closed): closed → disarm; not closed → release to fire again."""
        closed = [pid for pid, done in outcomes if done]
        released = [pid for pid, done in outcomes if not done]
        if closed:
            self.book.disarm(closed)  # a pending stop write goes with the position
        if released:
            self.book.release(released)
        ARMED_POSITIONS.set(self.book.armed_count())
        return [True] * len(outcomes)

    # -- ticks -----

    async def on_ticks(
        self,
        ticks: list[tuple[str, float, float]],
        entered_at: float | None = None,
        *,
        until_trigger: bool = False,
    ) -> dict[str, Any]:
        """Evaluate a tick batch; dispatch exits; never waits for the exits to finish.
        ``entered_at``: when the batch entered its feed (wall clock), carried by the
        exits as ``detected_at`` for tick → exit latency; this call's arrival if None.
        ``until_trigger`` (backtests): stop after the first tick that triggers; the answer
        says how many ticks were ``consumed`` and lists the ``exits`` dispatched as
        ``(agent_id, position_id, reason)``."""
        received = time.time()
        started = time.perf_counter()
        result = self.book.on_ticks(ticks, until_trigger=until_trigger)
        EVALUATION_SECONDS.observe(time.perf_counter() - started)
        taken = ticks if result.consumed == len(ticks) else ticks[: result.consumed]
        for token in {t[0] for t in taken}:
            self._received[token] = received
        self.ticks_seen += result.consumed
        self.batches += 1
        if result.stop_writes:
            self._schedule_stop_writes()
        if result.triggers:
            self.triggers += len(result.triggers)
            self._dispatch(result.triggers, received if entered_at is None else entered_at)
        answer: dict[str, Any] = {
            "evaluated": result.evaluated,
            "triggers": len(result.triggers),
            "consumed": result.consumed,
        }
        if until_trigger:
            answer["exits"] = [(t.agent_id, t.position_id, t.reason) for t in result.triggers]
        return answer

    def _dispatch(self, triggers: list[ExitTrigger], received: float) -> None:
        by_host: dict[int, list[ExitRequest]] = defaultdict(list)
        for t in triggers:
            by_host[t.host].append(
                ExitRequest(
                    agent_id=t.agent_id,
                    position_id=t.position_id,
                    token=t.token,
                    reason=t.reason,
                    price=t.price,
                    ts=t.ts,
                    detected_at=received,
                    details=_finite({"stop_pct": t.stop_pct, "stop_price": t.stop_price}),
                )
            )
        for host, exits in by_host.items():
            task = asyncio.get_running_loop().create_task(self._send_exits(host, exits))
            self._exit_tasks.add(task)
            task.add_done_callback(self._exit_tasks.discard)

    async def _send_exits(self, host: int, exits: list[ExitRequest]) -> None:
        from valux.observability.metrics import TICK_TO_EXIT_SECONDS

        try:
            results: list[dict[str, Any]] = await self.peers.call("agent", host, "on_exits", exits)
        except Exception as exc:  # host down: release so the next tick retries the exit
            self.log.warning("exit_dispatch_failed", host=host, error=str(exc), count=len(exits))
            self.book.release([e.position_id for e in exits])
            return
        now = time.time()
        for request, outcome in zip(exits, results, strict=False):
            if outcome.get("status") == "closed":
                TICK_TO_EXIT_SECONDS.observe(now - request.detected_at)
            elif outcome.get("status") == "ignored" and outcome.get("reason") == "closed":
                self.book.disarm([request.position_id])

    async def drain(self) -> int:
        """Wait until every exit dispatched so far has been answered by its agent host
        (including exits those answers led to); returns how many dispatches it waited for.

        A backtest calls it after each tick batch, so the next batch sees the positions
        the exits left behind, as a live run eventually does."""
        waited = 0
        while self._exit_tasks:
            pending = list(self._exit_tasks)
            waited += len(pending)
            await asyncio.gather(*pending, return_exceptions=True)
        return waited

    def _schedule_stop_writes(self) -> None:
        if self.book.has_stop_writes() and (self._stops_task is None or self._stops_task.done()):
            self._stops_task = asyncio.get_running_loop().create_task(self._flush_stops())

    async def _flush_stops(self) -> None:
        while self.book.has_stop_writes():
            await asyncio.sleep(_STOPS_FLUSH_S)
            writes = self.book.take_stop_writes(time.time())
            try:
                await self._write_stops(writes)
            except Exception as exc:  # keep the newest values and retry on the next round
                self.log.warning("stop_persist_failed", error=str(exc), pending=len(writes))
                self.book.mark_for_write(writes.position_ids, writes.ts)
                await asyncio.sleep(1.0)

    async def _write_stops(self, writes: StopWrites) -> None:
        for i in range(0, len(writes), _STOPS_CHUNK):
            end = i + _STOPS_CHUNK
            await self.pool.execute(
                _UPSERT_STOPS,
                writes.position_ids[i:end],
                writes.peaks[i:end],
                writes.stop_pcts[i:end],
                writes.ts[i:end],
            )

    # -- silent feeds -----

    def freshness(self) -> dict[str, dict[str, Any]]:
        """Tokens with armed positions: how many, and seconds since their last tick here
        (since this evaluator started, if none yet)."""
        now = time.time()
        return {
            token: {"armed": armed, "age_s": now - self._received.get(token, self.started_at)}
            for token, armed in self.book.armed_per_token().items()
        }

    async def token_freshness(self) -> dict[str, dict[str, Any]]:
        return self.freshness()

    async def _watch_silent_feeds(self) -> None:
        """``feeds.on_silent = exit``: sell the positions of a token whose prices stopped."""
        feeds = self.settings.feeds
        while True:
            await asyncio.sleep(min(1.0, feeds.stale_after_s / 2))
            if feeds.on_silent != "exit":
                continue
            now = time.time()
            for token, info in self.freshness().items():
                if info["age_s"] <= feeds.stale_after_s:
                    continue
                triggers = self.book.force_exit(token, "feed_silent", now)
                if triggers:
                    self.log.warning("feed_silent_exit", token=token, positions=len(triggers))
                    self.triggers += len(triggers)
                    self._dispatch(triggers, now)

    # -- queries -----

    async def latest_price(self, token: str) -> tuple[float, float] | None:
        return self.book.last_price(token)

    async def latest_prices(self) -> dict[str, tuple[float, float]]:
        return self.book.last_prices()

    async def armed_ids(self) -> list[str]:
        return self.book.armed_ids()

    async def position_state(self, position_id: str) -> dict[str, Any] | None:
        state = self.book.state(position_id)
        if state is None:
            return None
        return {
            "peak": state.peak,
            "stop_pct": state.stop_pct,
            "token": state.token,
            "purchase_price": state.purchase_price,
            "exiting": self.book.is_exiting(position_id),
        }

    async def ready_report(self) -> dict[str, Any]:
        """Open positions of this shard (from PostgreSQL) that are not armed here."""
        rows = await self.pool.fetch("SELECT id, token FROM positions WHERE status = 'open'")
        mine = [r["id"] for r in rows if shard_of(r["token"], self.shards) == self.shard]
        missing = [pid for pid in mine if not self.book.is_armed(pid)]
        return {
            "shard": self.shard,
            "open": len(mine),
            "unarmed": missing[:50],
            "unarmed_count": len(missing),
        }

    async def ping(self) -> dict[str, Any]:
        return {
            "kind": "evaluator",
            "pid": os.getpid(),
            "node": node_id(),
            "shard": self.shard,
            "armed": self.book.armed_count(),
            "ticks": self.ticks_seen,
            "batches": self.batches,
            "triggers": self.triggers,
            "rearmed": self.rearmed,
            "rearm_seconds": self.rearm_seconds,
            "started_at": self.started_at,
            "incarnation": self.incarnation,
        }

    async def metrics(self) -> list[Any]:
        return collect_families()

    async def shutdown(self) -> dict[str, Any]:
        for task in (self._watchdog, self._stops_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await self._write_stops(self.book.take_stop_writes(time.time()))
        await self.pool.close()
        return {"armed": self.book.armed_count()}
