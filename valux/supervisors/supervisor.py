"""Supervisor: one per kind of child (agent hosts, wallet hosts, evaluators, feeds).

Contract:
- Strategy one-for-one: each child is watched and restarted on its own.
- Ray's ``max_restarts`` revives a crashed process; the supervisor adds what Ray
  lacks: hang detection (a ping with a timeout; a child that does not answer is
  killed so Ray restarts it), restart counting with an OTP-style intensity (at
  most R restarts in T seconds), and escalation: past the budget the child is
  marked ``failed``, the supervisor reports itself degraded and logs a
  structured alert; the root decides what to do.
- Re-adoption: children are named; a restarted supervisor finds them by name
  (``get_if_exists``) instead of creating duplicates. The set of children is
  derived from PostgreSQL (agent and wallet slots) and settings (evaluators,
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

from valux.config.settings import Settings
from valux.observability.logging import configure_logging
from valux.observability.metrics import ACTOR_RESTARTS, ESCALATIONS, collect_families
from valux.supervisors import factory
from valux.supervisors.naming import agent_host_name, evaluator_name, feed_name, wallet_host_name

CHILD_KIND = {"agents": "agent", "wallets": "wallet", "evaluators": "evaluator", "feeds": "feed"}


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
        for key in await self._desired_keys():
            await self.ensure(key)
        self.state = "running"
        self._monitor = asyncio.get_running_loop().create_task(self._monitor_loop())

    # -- which children -----

    async def _desired_keys(self) -> list[Any]:
        if self.group == "evaluators":
            return list(range(self.settings.hosting.evaluators))
        if self.group == "feeds":
            feeds = self.settings.feeds
            sources = []
            if feeds.simulated.enabled:
                sources.append("simulated")
            if feeds.manual.enabled:
                sources.append("manual")
            if feeds.replay.path is not None:
                sources.append("replay")
            return sources
        table = "agents" if self.group == "agents" else "wallets"
        condition = " WHERE status <> 'deleted'" if table == "agents" else ""
        conn = await asyncpg.connect(self.database_url)
        try:
            rows = await conn.fetch(f"SELECT DISTINCT host_slot FROM {table}{condition}")
        finally:
            await conn.close()
        return sorted(r["host_slot"] for r in rows)

    def _name(self, key: Any) -> str:
        if self.group == "agents":
            return agent_host_name(key)
        if self.group == "wallets":
            return wallet_host_name(key)
        if self.group == "evaluators":
            return evaluator_name(key)
        return feed_name(key)

    def _args(self, key: Any) -> tuple[Any, ...]:
        if self.kind == "evaluator":
            return (key, self.settings, self.database_url)
        if self.kind == "feed":
            return (key, self.settings, self.redis_url)
        return (key, self.settings, self.database_url, self.redis_url)

    # -- starting children -----

    async def ensure(self, key: Any) -> dict[str, Any]:
        """Start (or adopt) the child for ``key`` and wait until it has recovered."""
        name = self._name(key)
        async with self._lock:
            child = self.children.get(name)
            if child is None:
                handle = factory.spawn(self.kind, name, self.namespace, *self._args(key))
                child = self.children[name] = Child(name, key, handle)
        if child.state != "running":
            info = await asyncio.wait_for(
                child.handle.ping.remote(), timeout=self.settings.supervision.step_timeout_s * 6
            )
            child.incarnation = info.get("incarnation") or str(info.get("started_at"))
            child.last_ping = info
            child.state = "running"
        return child.view()

    # -- monitoring -----

    async def _monitor_loop(self) -> None:
        interval = self.settings.supervision.ping_interval_s
        while True:
            await asyncio.sleep(interval)
            await asyncio.gather(*(self._check(c) for c in list(self.children.values())))
            self._update_state()

    async def _check(self, child: Child) -> None:
        if child.state == "starting":
            return
        timeout = self.settings.supervision.ping_timeout_s
        try:
            info = await asyncio.wait_for(child.handle.ping.remote(), timeout=timeout)
        except TimeoutError:
            self._restarted(child, f"no answer to ping within {timeout}s; killed")
            ray.kill(child.handle, no_restart=False)
            return
        except ray.exceptions.ActorDiedError as exc:
            self._restarted(child, f"died permanently: {exc}; recreating")
            child.handle = factory.spawn(
                self.kind, child.name, self.namespace, *self._args(child.key)
            )
            return
        except Exception as exc:  # restarting (ActorUnavailableError) or a crash
            child.last_failure = f"{type(exc).__name__}: {exc}"
            if child.state == "running":
                child.state = "degraded"
            return
        incarnation = info.get("incarnation") or str(info.get("started_at"))
        if child.incarnation is not None and incarnation != child.incarnation:
            self._restarted(child, child.last_failure or "process restarted")
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

    def _restarted(self, child: Child, why: str) -> None:
        now = time.monotonic()
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
            "group": self.group,
            "state": self.state,
            "children": len(self.children),
        }

    async def status(self) -> dict[str, Any]:
        return {
            "group": self.group,
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
