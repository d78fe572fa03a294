"""RootSupervisor: the top of the tree, a named detached actor.

Contract:
- Starts (or re-adopts) the four kind supervisors in dependency order:
  evaluators (positions must be armable, the venue prices from them), venues (the
  paper exchange: wallets resolve with it), agents (each agent host runs its agents'
  wallets in its own process), feeds (ticks need evaluators).
- Answers readiness: every supervisor running, every open position armed at a
  live evaluator, every automatic feed fresh.
- ``shutdown`` stops the tree in reverse order, each step bounded by
  ``supervision.step_timeout_s``; a step that hangs is reported and skipped.
- Owns the global trading state (the kill switch): ``set_global_state`` journals it
  (stream ``risk:global``, read model ``risk_states``) and applies it on every agent
  host in one round of parallel calls, measuring that round; every escalation round
  re-sends it to a host that restarted without it.
- Holds no other state: after a restart it re-adopts its supervisors by name and reads
  the global state back from PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import asyncpg
import ray
import structlog

from valux.config.secrets import with_password
from valux.config.settings import Settings
from valux.feeds.live import HTTP_SOURCES
from valux.hosting.handles import actor_handle
from valux.hosting.host import node_id
from valux.hosting.naming import supervisor_name
from valux.observability.logging import configure_logging
from valux.observability.metrics import GLOBAL_STATE_FANOUT_SECONDS
from valux.persistence.codec import encode
from valux.risk.states import TradingState
from valux.supervisors import factory

GROUPS = ("evaluators", "venues", "agents", "feeds")


class RootSupervisor:
    """The root of the supervision tree; see the module docstring."""

    # Ray runs an async constructor to completion before the actor takes its first call,
    # which is exactly the recovery contract; mypy only knows synchronous constructors.
    async def __init__(self, settings: Settings, database_url: str, redis_url: str | None) -> None:  # type: ignore[misc]
        self.settings = settings
        self.database_url = database_url
        self.redis_url = redis_url
        self._pool: asyncpg.Pool | None = None
        self.namespace = settings.ray.namespace
        configure_logging(settings.logging.level, settings.logging.format, process="root")
        self.log = structlog.get_logger("valux.root")
        self.started_at = time.time()
        self.supervisors: dict[str, Any] = {}
        self._stopping = False  # set by shutdown: a supervisor killed then is not recreated
        self.boot_seconds = 0.0
        started = time.perf_counter()
        for group in GROUPS:
            handle = factory.spawn(
                "supervisor",
                supervisor_name(group),
                self.namespace,
                group,
                settings,
                database_url,
                redis_url,
                placement=settings.placement,
            )
            self.supervisors[group] = handle
            bound = settings.supervision.step_timeout_s * 6  # as a child's first ping
            try:  # returns once its children have recovered; a stuck one does not hold the root
                await asyncio.wait_for(handle.ping.remote(), bound)
            except Exception as exc:
                self.log.warning("supervisor_still_starting", group=group, error=repr(exc))
        self.boot_seconds = time.perf_counter() - started
        self.log.info("tree_started", seconds=round(self.boot_seconds, 2))
        self.safe_state: dict[str, str | None] = {}  # agent host name -> reason
        self.global_state = await self._load_global_state()
        self._escalation = asyncio.get_running_loop().create_task(self._escalation_loop())

    # -- the global trading state -----

    async def _db(self) -> asyncpg.Pool:
        if self._pool is None:
            self._pool = await asyncpg.create_pool(
                with_password(self.database_url), min_size=1, max_size=2, timeout=5,
                command_timeout=10,
            )  # fmt: skip
        return self._pool

    async def _load_global_state(self) -> dict[str, Any]:
        try:
            row = await (await self._db()).fetchrow(
                "SELECT state, reason, extract(epoch FROM updated_at) AS ts FROM risk_states"
                " WHERE scope = 'global'"
            )
        except Exception as exc:  # the hosts read it themselves; the next change writes it
            self.log.warning("global_state_unreadable", error=str(exc))
            row = None
        if row is None:
            return {"state": "ACTIVE", "reason": None, "ts": 0.0}
        return {"state": row["state"], "reason": row["reason"], "ts": float(row["ts"])}

    async def set_global_state(self, state: str, reason: str | None) -> dict[str, Any]:
        """Journal the global state, then apply it on every agent host in one parallel
        round; returns it with the hosts reached and the round's latency."""
        target = TradingState.parse(state).value
        ts = time.time()
        event = {"state": target, "reason": reason, "source": "user", "ts": ts}
        pool = await self._db()
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO journal (stream_id, seq, event_type, payload, version)"
                " SELECT 'risk:global', coalesce(max(seq), 0) + 1, 'trading_state_changed', $1, 1"
                " FROM journal WHERE stream_id = 'risk:global'",
                encode(event),
            )
            await conn.execute(
                "INSERT INTO risk_states (scope, state, reason, source, updated_at)"
                " VALUES ('global', $1, $2, 'user', to_timestamp($3)) ON CONFLICT (scope) DO"
                " UPDATE SET state = EXCLUDED.state, reason = EXCLUDED.reason,"
                " source = EXCLUDED.source, updated_at = EXCLUDED.updated_at",
                target,
                reason,
                ts,
            )
        self.global_state = {"state": target, "reason": reason, "ts": ts}
        log = self.log.error if target != "ACTIVE" else self.log.warning
        log("alert_global_state" if target != "ACTIVE" else "global_state", state=target,
            reason=reason)  # fmt: skip
        hosts = [c["name"] for c in (await self.tree())["supervisors"]["agents"]["children"]]
        started = time.perf_counter()
        results = await asyncio.gather(*(self._send_global(h) for h in hosts))
        latency = time.perf_counter() - started
        GLOBAL_STATE_FANOUT_SECONDS.observe(latency)
        return {
            **self.global_state,
            "hosts": len(hosts),
            "hosts_reached": sum(1 for ok in results if ok),
            "latency_ms": round(latency * 1000, 2),
        }

    async def _send_global(self, host_name: str) -> bool:
        g = self.global_state
        try:
            handle = await actor_handle(host_name, self.namespace)
            await asyncio.wait_for(
                handle.set_global_state.remote(g["state"], g["reason"], g["ts"]), 10
            )
            return True
        except Exception as exc:  # restarting: it reads the state back, and the loop re-sends
            self.log.warning("global_state_not_delivered", host=host_name, error=str(exc))
            return False

    async def ping(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "node": node_id(),
            "kind": "root",
            "started_at": self.started_at,
            "boot_seconds": self.boot_seconds,
        }

    async def ensure(self, group: str, key: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self.supervisors[group].ensure.remote(key)
        return result

    async def tree(self) -> dict[str, Any]:
        async def one(group: str) -> tuple[str, Any]:
            try:
                return group, await asyncio.wait_for(self.supervisors[group].status.remote(), 5)
            except ray.exceptions.ActorDiedError as exc:
                self._respawn(group, exc)
                return group, {"group": group, "state": "failed", "error": str(exc), "children": []}
            except Exception as exc:
                return group, {"group": group, "state": "failed", "error": str(exc), "children": []}

        statuses = dict(await asyncio.gather(*(one(g) for g in GROUPS)))
        return {"root": await self.ping(), "supervisors": statuses}

    def _respawn(self, group: str, why: BaseException) -> None:
        """A supervisor that died for good (Ray restarts a killed process, not one whose
        constructor raised) is created again; it re-adopts its children by name."""
        if self._stopping:
            return  # killed by the shutdown on purpose
        self.log.error("alert_supervisor_recreated", group=group, error=str(why))
        self.supervisors[group] = factory.spawn(
            "supervisor",
            supervisor_name(group),
            self.namespace,
            group,
            self.settings,
            self.database_url,
            self.redis_url,
            placement=self.settings.placement,
        )

    # -- escalation -----

    async def _escalation_loop(self) -> None:
        """The parent's decision when a child exceeds its restart budget.

        A failed evaluator, wallet host or feed compromises every agent (prices, stops or
        execution), so every agent host enters the safe state: no new entries, exits keep
        running wherever they can. A failed agent host puts only its own agents in the
        safe state. The state is lifted when the failed child has run a whole restart
        window without restarting. Re-sent every round, so a host that restarts meanwhile
        comes back in the right state.
        """
        while True:
            await asyncio.sleep(self.settings.supervision.ping_interval_s)
            try:
                await self._apply_safe_state(await self.tree())
            except Exception as exc:  # keep deciding; one bad round must not end the loop
                self.log.warning("escalation_round_failed", error=str(exc))

    async def _apply_safe_state(self, tree: dict[str, Any]) -> None:
        groups = tree["supervisors"]
        failed = [
            child["name"]
            for group in ("evaluators", "venues", "feeds")
            for child in groups[group]["children"]
            if child["state"] == "failed"
        ]
        system = None
        if failed:
            system = f"safe state: {', '.join(failed)} failed past its restart budget"
        for child in groups["agents"]["children"]:
            seen = (child.get("info") or {}).get("global_state_ts")
            if seen is not None and seen != self.global_state["ts"]:
                await self._send_global(child["name"])
            own = child["state"] == "failed"
            reason = system or (
                f"safe state: {child['name']} failed past its restart budget" if own else None
            )
            if self.safe_state.get(child["name"], None) != reason:
                log = self.log.error if reason else self.log.warning
                log("alert_safe_state" if reason else "safe_state_lifted",
                    host=child["name"], reason=reason)  # fmt: skip
            try:
                handle = await asyncio.to_thread(
                    ray.get_actor, child["name"], namespace=self.namespace
                )
                await asyncio.wait_for(handle.set_safe_state.remote(reason), 5)
                self.safe_state[child["name"]] = reason
            except Exception as exc:  # restarting: the next round tries again
                self.log.warning("safe_state_not_delivered", host=child["name"], error=str(exc))

    async def ready(self) -> tuple[bool, list[str], dict[str, Any]]:
        """(ready, reasons, details)."""
        reasons: list[str] = []
        tree = await self.tree()
        for group, status in tree["supervisors"].items():
            if status["state"] not in ("running",):
                reasons.append(f"supervisor {group} is {status['state']}")
            for child in status["children"]:
                if child["state"] != "running":
                    reasons.append(f"{child['name']} is {child['state']}: {child['last_failure']}")
                info = child.get("info") or {}
                if info.get("journal_deferred"):
                    reasons.append(
                        f"{child['name']}: journal unavailable ({info.get('journal_error')}); "
                        f"{info['journal_deferred']} exit commit(s) buffered, entries refused"
                    )
        evaluators = tree["supervisors"]["evaluators"]["children"]
        unarmed = 0
        silent: dict[str, dict[str, Any]] = {}
        stale_after = self.settings.feeds.stale_after_s
        for child in evaluators:
            try:
                handle = await asyncio.to_thread(
                    ray.get_actor, child["name"], namespace=self.namespace
                )
                report: dict[str, Any] = await asyncio.wait_for(handle.ready_report.remote(), 10)
                unarmed += report["unarmed_count"]
                if self._automatic_feeds():
                    fresh = await asyncio.wait_for(handle.token_freshness.remote(), 5)
                    silent.update({t: i for t, i in fresh.items() if i["age_s"] > stale_after})
            except Exception as exc:
                reasons.append(f"{child['name']} cannot report armed positions: {exc}")
        if unarmed:
            reasons.append(f"{unarmed} open position(s) not armed at a live evaluator")
        if silent:
            count = sum(i["armed"] for i in silent.values())
            tokens = ", ".join(f"{t} ({i['age_s']:.0f}s)" for t, i in sorted(silent.items()))
            action = self.settings.feeds.on_silent
            reasons.append(
                f"{count} open position(s) unprotected by fresh prices, no tick for over "
                f"{stale_after:g}s on {tokens}; feeds.on_silent={action}"
            )
        reasons.extend(await self._stale_feeds(tree["supervisors"]["feeds"]["children"]))
        reasons.extend(await self._agent_host_health(tree["supervisors"]["agents"]["children"]))
        return (not reasons, reasons, {"unarmed": unarmed})

    async def _agent_host_health(self, children: list[dict[str, Any]]) -> list[str]:
        """Custody mismatches, HALTED positions, unreadable agents, a stopped reconciler."""
        reasons: list[str] = []

        async def one(name: str) -> dict[str, Any] | None:
            try:
                handle = await actor_handle(name, self.namespace)
                report: dict[str, Any] = await asyncio.wait_for(handle.health.remote(), 5)
                return report
            except Exception as exc:
                reasons.append(f"{name} cannot report its health: {type(exc).__name__}")
                return None

        for name, report in zip(
            [c["name"] for c in children],
            await asyncio.gather(*(one(c["name"]) for c in children)),
            strict=True,
        ):
            if report is None:
                continue
            recon = report["reconciliation"]
            for agent_id, found in sorted(recon["mismatches"].items()):
                reasons.append(
                    f"custody mismatch: agent {agent_id} (wallet {found['wallet_id']}): "
                    + "; ".join(found["evidence"])
                )
            if not recon["running"]:
                reasons.append(f"{name}: reconciliation is not running")
            halted = report["halted_positions"]
            if halted:
                ids = ", ".join(sorted(p["position_id"] for p in halted)[:20])
                reasons.append(
                    f"{len(halted)} open position(s) unprotected: their agents are HALTED"
                    f" ({halted[0]['reason']}): {ids}"
                )
            locked = report.get("locked_positions") or []
            if locked:
                ids = ", ".join(sorted(p["position_id"] for p in locked)[:20])
                wallets = ", ".join(sorted({p["wallet_id"] for p in locked}))
                reasons.append(
                    f"{len(locked)} open position(s) unprotected: the key of wallet(s)"
                    f" {wallets} is locked, so their exits cannot be signed (unlock with"
                    f" POST /api/v1/wallets/{{id}}/unlock): {ids}"
                )
            for agent_id, why in sorted(report["unreadable"].items()):
                reasons.append(f"agent {agent_id} quarantined: its journal cannot be read: {why}")
        return reasons

    def _automatic_feeds(self) -> bool:
        """Whether a feed is expected to tick on its own (manual ticks come when pushed)."""
        feeds = self.settings.feeds
        http = any(getattr(feeds, kind).enabled for kind in HTTP_SOURCES)
        return feeds.simulated.enabled or feeds.replay.path is not None or http

    async def _stale_feeds(self, children: list[dict[str, Any]]) -> list[str]:
        """Automatic feeds whose last tick is older than ``feeds.stale_after_s`` (asked live)."""
        stale_after = self.settings.feeds.stale_after_s
        reasons = []
        for child in children:
            try:
                handle = await asyncio.to_thread(
                    ray.get_actor, child["name"], namespace=self.namespace
                )
                info: dict[str, Any] = await asyncio.wait_for(handle.ping.remote(), 5)
            except Exception as exc:
                reasons.append(f"{child['name']} does not answer: {type(exc).__name__}")
                continue
            if info.get("push_driven") or info.get("finished"):
                continue
            age = info.get("last_tick_age_s")
            if age is None:
                reasons.append(f"feed {info['source']} has not ticked yet")
            elif age > stale_after:
                reasons.append(f"feed {info['source']} is stale (last tick {age:.1f}s ago)")
        return reasons

    async def shutdown(self) -> dict[str, Any]:
        """Stop the supervisors in reverse start order, each after its children; nothing
        is recreated meanwhile (the escalation loop ends, :meth:`tree` no longer respawns)."""
        self._stopping = True
        self._escalation.cancel()
        report: dict[str, Any] = {}
        timeout = self.settings.supervision.step_timeout_s * 3
        for group in reversed(GROUPS):
            handle = self.supervisors.get(group)
            if handle is None:
                continue
            try:
                report[group] = await asyncio.wait_for(handle.shutdown.remote(), timeout)
            except Exception as exc:
                report[group] = f"skipped: {type(exc).__name__}: {exc}"
                self.log.error("shutdown_step_skipped", group=group, error=str(exc))
            ray.kill(handle, no_restart=True)
        return report
