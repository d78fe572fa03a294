"""Supervisor: one per kind of child (agent hosts, evaluators, the exchange, feeds).

Contract:
- Strategy one-for-one: each child is watched and restarted on its own.
- Ray's ``max_restarts`` revives a crashed process; the supervisor adds what Ray
  lacks: hang detection (a ping with a timeout; a child that does not answer is
  killed so Ray restarts it), restart counting with an OTP-style intensity (at
  most R restarts in T seconds), and escalation: past the budget the child is
  marked ``failed``, the supervisor reports itself degraded and logs a
  structured alert; the root decides what to do.
- Restarts are counted from the starts each child records itself (``actor_starts``,
  since the system booted): none is missed between two pings, and a restarted
  supervisor knows every restart of its children and when it happened. While
  PostgreSQL cannot be read, a changed incarnation seen by the ping counts instead.
- Re-adoption: children are named; a restarted supervisor finds them by name
  (``get_if_exists``) instead of creating duplicates. The set of children is
  derived from PostgreSQL (agent slots) and settings (evaluators,
  feeds), so it needs no state of its own.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import ray
import structlog

from valux.config.secrets import with_password
from valux.config.settings import Settings
from valux.errors import Unavailable
from valux.feeds.live import HTTP_SOURCES
from valux.hosting.host import node_id
from valux.hosting.naming import (
    agent_host_name,
    evaluator_name,
    exchange_name,
    feed_name,
)
from valux.observability.logging import configure_logging
from valux.observability.metrics import ACTOR_RESTARTS, ESCALATIONS, collect_families
from valux.persistence.journal import DATABASE_DOWN
from valux.persistence.starts import starts_since_boot
from valux.supervisors import factory

CHILD_KIND = {
    "agents": "agent",
    "evaluators": "evaluator",
    "venues": "exchange",
    "feeds": "feed",
}


@dataclass
class Child:
    name: str
    key: Any  # slot, shard or source
    handle: Any
    state: str = "starting"  # starting | running | degraded | failed
    incarnation: str | None = None
    restarts: int = 0
    restart_times: deque[float] = field(default_factory=deque)
    last_failure: str | None = None
    last_ping: dict[str, Any] = field(default_factory=dict)
    starts_seen: int | None = None  # recorded starts since boot, at the last count
    counted_by_ping: int = 0  # restarts counted by ping whose recorded start is not seen yet

    def view(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state,
            "restarts": self.restarts,
            "last_failure": self.last_failure,
            "info": self.last_ping,
        }


class Supervisor:
    """Supervises the children of one kind; see the module docstring."""

    # Ray runs an async constructor to completion before the actor takes its first call,
    # which is exactly the recovery contract; mypy only knows synchronous constructors.
    async def __init__(  # type: ignore[misc]
        self, group: str, settings: Settings, database_url: str, redis_url: str | None
    ) -> None:
        self.group = group
        self.kind = CHILD_KIND[group]
        self.settings = settings
        self.database_url = database_url
        self.redis_url = redis_url
        self.namespace = settings.ray.namespace
        configure_logging(settings.logging.level, settings.logging.format, process=f"sup-{group}")
        self.log = structlog.get_logger("valux.supervisor").bind(group=group)
        self.children: dict[str, Child] = {}
        self.started_at = time.time()
        self.state = "starting"
        self._lock = asyncio.Lock()
        self._ensuring: set[str] = set()  # children whose first ping is under way
        self._stopping = False  # set by shutdown: no child is started or recreated after it
        self._pool: asyncpg.Pool | None = None
        # Children of one group are independent: adopt or start them together, so one that
        # is slow to answer (restarting, or stuck on its database) does not hold the others
        # or this supervisor's own start; the monitor loop goes on pinging it.
        answers = await asyncio.gather(
            *(self.ensure(key) for key in await self._desired_keys()), return_exceptions=True
        )
        for failure in (a for a in answers if isinstance(a, BaseException)):
            self.log.warning("child_not_answering_yet", error=repr(failure))
        self.state = "running"
        self._monitor = asyncio.get_running_loop().create_task(self._monitor_loop())

    # -- which children -----

    async def _desired_keys(self) -> list[Any]:
        if self.group == "evaluators":
            return list(range(self.settings.hosting.evaluators))
        if self.group == "venues":
            return ["paper"]
        if self.group == "feeds":
            feeds = self.settings.feeds
            sources = []
            if feeds.simulated.enabled:
                sources.append("simulated")
            if feeds.manual.enabled:
                sources.append("manual")
            if feeds.replay.path is not None:
                sources.append("replay")
            sources += [k for k in HTTP_SOURCES if getattr(feeds, k).enabled]
            return sources
        table, condition = "agents", " WHERE status <> 'deleted'"
        delay = 0.2
        while True:  # a constructor that raised would leave this supervisor dead for good
            try:
                conn = await asyncpg.connect(with_password(self.database_url), timeout=5)
                try:
                    rows = await conn.fetch(
                        f"SELECT DISTINCT host_slot FROM {table}{condition}", timeout=10
                    )
                finally:
                    await conn.close(timeout=5)
                return sorted(r["host_slot"] for r in rows)
            except DATABASE_DOWN as exc:  # refused or hung: the children run on meanwhile
                self.log.warning("children_unreadable_retrying", error=repr(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _name(self, key: Any) -> str:
        if self.group == "agents":
            return agent_host_name(key)
        if self.group == "evaluators":
            return evaluator_name(key)
        if self.group == "venues":
            return exchange_name(key)
        return feed_name(key)

    def _args(self, key: Any) -> tuple[Any, ...]:
        if self.kind in ("evaluator", "exchange"):
            return (key, self.settings, self.database_url)
        if self.kind == "feed":
            return (key, self.settings, self.redis_url, self.database_url)
        return (key, self.settings, self.database_url, self.redis_url)

    # -- starting children -----

    async def ensure(self, key: Any) -> dict[str, Any]:
        """Start (or adopt) the child for ``key`` and wait until it has recovered."""
        name = self._name(key)
        if self._stopping:
            raise Unavailable(f"the {self.group} supervisor is shutting down")
        async with self._lock:
            child = self.children.get(name)
            if child is None:
                handle = factory.spawn(
                    self.kind,
                    name,
                    self.namespace,
                    *self._args(key),
                    placement=self.settings.placement,
                )
                child = self.children[name] = Child(name, key, handle)
        if child.state in ("starting", "degraded"):
            self._ensuring.add(name)
            try:
                info = await asyncio.wait_for(
                    child.handle.ping.remote(), timeout=self.settings.supervision.step_timeout_s * 6
                )
            finally:
                self._ensuring.discard(name)
            child.incarnation = info.get("incarnation") or str(info.get("started_at"))
            child.last_ping = info
            child.state = "running"
        # A failed child stays failed: only a quiet restart window lifts an escalation.
        return child.view()

    # -- monitoring -----

    async def _monitor_loop(self) -> None:
        interval = self.settings.supervision.ping_interval_s
        while True:
            await asyncio.sleep(interval)
            counted = await self._count_recorded_starts()
            await asyncio.gather(
                *(self._check(c, by_ping=not counted) for c in list(self.children.values()))
            )
            self._update_state()

    async def _count_recorded_starts(self) -> bool:
        """Count restarts from ``actor_starts``; False if they could not be read."""
        try:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    with_password(self.database_url), min_size=1, max_size=1, timeout=5,
                    command_timeout=10,
                )  # fmt: skip
            starts = await asyncio.wait_for(
                starts_since_boot(self._pool, [c.name for c in self.children.values()]), 5
            )
        except Exception as exc:
            self.log.warning("restart_counts_unreadable", error=str(exc))
            return False
        now_wall, now_mono = time.time(), time.monotonic()
        for child in self.children.values():
            times = starts.get(child.name, [])  # a child added while the read was in flight
            if not times:
                continue  # the first start is not recorded yet
            if child.starts_seen is None:  # (re)adopted: every restart since boot
                child.restarts = len(times) - 1
                window = self.settings.supervision.restart_period_s
                child.restart_times.extend(
                    now_mono - (now_wall - t) for t in times[1:] if now_wall - t <= window
                )
                if len(child.restart_times) > self.settings.supervision.restart_intensity:
                    if child.state != "failed":
                        ESCALATIONS.labels(self.kind).inc()
                    child.state = "failed"
                    self.log.error("alert_restart_intensity_exceeded", child=child.name,
                                   restarts_in_window=len(child.restart_times), window_s=window,
                                   adopted=True)  # fmt: skip
            else:
                new = times[child.starts_seen :]
                already = min(child.counted_by_ping, len(new))  # seen by ping while unreadable
                child.counted_by_ping -= already
                for t in new[already:]:
                    self._restarted(child, child.last_failure or "process restarted",
                                    at=now_mono - (now_wall - t))  # fmt: skip
            child.starts_seen = len(times)
        return True

    async def _check(self, child: Child, *, by_ping: bool = False) -> None:
        """Ping ``child``; ``by_ping``: count a changed incarnation as a restart (the
        recorded starts could not be read this round)."""
        if child.state == "starting" and child.name in self._ensuring:
            return  # its first ping is under way
        timeout = self.settings.supervision.ping_timeout_s
        try:
            info = await asyncio.wait_for(child.handle.ping.remote(), timeout=timeout)
        except TimeoutError:
            child.last_failure = f"no answer to ping within {timeout}s; killed"
            self.log.warning("child_hung_killed", child=child.name, timeout_s=timeout)
            ray.kill(child.handle, no_restart=False)
            return
        except ray.exceptions.ActorDiedError as exc:
            child.last_failure = f"died permanently: {exc}; recreating"
            child.handle = factory.spawn(
                self.kind,
                child.name,
                self.namespace,
                *self._args(child.key),
                placement=self.settings.placement,
            )
            return
        except Exception as exc:  # restarting (ActorUnavailableError) or a crash
            child.last_failure = f"{type(exc).__name__}: {exc}"
            if child.state == "running":
                child.state = "degraded"
            return
        incarnation = info.get("incarnation") or str(info.get("started_at"))
        if by_ping and child.incarnation is not None and incarnation != child.incarnation:
            self._restarted(child, child.last_failure or "process restarted")
            child.counted_by_ping += 1  # its recorded start, once readable, is this restart
        child.incarnation = incarnation
        child.last_ping = info
        if child.state == "failed":
            self._maybe_recovered(child)
        else:
            child.state = "running"

    def _maybe_recovered(self, child: Child) -> None:
        """A failed child that has answered without a restart for a whole restart window
        is running again (the root then lifts the safe state)."""
        window = self.settings.supervision.restart_period_s
        now = time.monotonic()
        while child.restart_times and now - child.restart_times[0] > window:
            child.restart_times.popleft()
        if not child.restart_times:
            child.state = "running"
            self.log.warning("child_recovered", child=child.name, window_s=window)

    def _restarted(self, child: Child, why: str, *, at: float | None = None) -> None:
        now = time.monotonic() if at is None else at
        child.restarts += 1
        child.last_failure = why
        child.restart_times.append(now)
        window = self.settings.supervision.restart_period_s
        while child.restart_times and now - child.restart_times[0] > window:
            child.restart_times.popleft()
        ACTOR_RESTARTS.labels(self.kind).inc()
        if len(child.restart_times) > self.settings.supervision.restart_intensity:
            if child.state != "failed":
                ESCALATIONS.labels(self.kind).inc()
            child.state = "failed"
            self.log.error(
                "alert_restart_intensity_exceeded",
                child=child.name,
                restarts_in_window=len(child.restart_times),
                window_s=window,
                last_failure=why,
            )
        else:
            child.state = "degraded"
            self.log.warning("child_restarted", child=child.name, why=why)

    def _update_state(self) -> None:
        states = {c.state for c in self.children.values()}
        self.state = (
            "failed" if "failed" in states else "degraded" if "degraded" in states else "running"
        )

    # -- queries -----

    async def ping(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "node": node_id(),
            "group": self.group,
            "state": self.state,
            "children": len(self.children),
        }

    async def status(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "pid": os.getpid(),
            "node": node_id(),
            "state": self.state,
            "started_at": self.started_at,
            "children": [c.view() for c in self.children.values()],
        }

    async def child_keys(self) -> list[Any]:
        return [c.key for c in self.children.values()]

    async def children_metrics(self) -> list[tuple[str, list[Any]]]:
        async def one(child: Child) -> tuple[str, list[Any]]:
            try:
                return child.name, await asyncio.wait_for(child.handle.metrics.remote(), 5)
            except Exception:
                return child.name, []

        own = (f"sup-{self.group}", collect_families())
        return [own, *await asyncio.gather(*(one(c) for c in self.children.values()))]

    async def shutdown(self) -> dict[str, Any]:
        """Stop every child after its final snapshot; each step bounded by a timeout."""
        self._stopping = True
        self._monitor.cancel()
        report: dict[str, Any] = {}
        timeout = self.settings.supervision.step_timeout_s

        async def stop(child: Child) -> None:
            try:
                report[child.name] = await asyncio.wait_for(child.handle.shutdown.remote(), timeout)
            except Exception as exc:
                report[child.name] = f"skipped: {type(exc).__name__}: {exc}"
            ray.kill(child.handle, no_restart=True)

        await asyncio.gather(*(stop(c) for c in self.children.values()))
        return report
