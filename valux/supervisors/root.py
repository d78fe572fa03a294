"""RootSupervisor: the top of the tree, a named detached actor.

Contract:
- Starts (or re-adopts) the four kind supervisors in dependency order:
  evaluators (positions must be armable), wallets (agents reconcile with them),
  agents, feeds (ticks need evaluators).
- Answers readiness: every supervisor running, every open position armed at a
  live evaluator, every automatic feed fresh.
- ``shutdown`` stops the tree in reverse order, each step bounded by
  ``supervision.step_timeout_s``; a step that hangs is reported and skipped.
- Holds no state of its own: after a restart it re-adopts its supervisors by name.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import ray
import structlog

from valux.config.settings import Settings
from valux.observability.logging import configure_logging
from valux.supervisors import factory
from valux.supervisors.naming import supervisor_name

GROUPS = ("evaluators", "wallets", "agents", "feeds")


class RootSupervisor:
    """The root of the supervision tree; see the module docstring."""

    # Ray runs an async constructor to completion before the actor takes its first call,
    # which is exactly the recovery contract; mypy only knows synchronous constructors.
    async def __init__(self, settings: Settings, database_url: str, redis_url: str | None) -> None:  # type: ignore[misc]
        self.settings = settings
        self.namespace = settings.ray.namespace
        configure_logging(settings.logging.level, settings.logging.format, process="root")
        self.log = structlog.get_logger("valux.root")
        self.started_at = time.time()
        self.supervisors: dict[str, Any] = {}
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
            )
            await handle.ping.remote()  # returns once its children have recovered
            self.supervisors[group] = handle
        self.boot_seconds = time.perf_counter() - started
        self.log.info("tree_started", seconds=round(self.boot_seconds, 2))
        self.safe_state: dict[str, str | None] = {}  # agent host name -> reason
        self._escalation = asyncio.get_running_loop().create_task(self._escalation_loop())

    async def ping(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
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
            except Exception as exc:
                return group, {"group": group, "state": "failed", "error": str(exc), "children": []}

        statuses = dict(await asyncio.gather(*(one(g) for g in GROUPS)))
        return {"root": await self.ping(), "supervisors": statuses}

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
            for group in ("evaluators", "wallets", "feeds")
            for child in groups[group]["children"]
            if child["state"] == "failed"
        ]
        system = None
        if failed:
            system = f"safe state: {', '.join(failed)} failed past its restart budget"
        for child in groups["agents"]["children"]:
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
        return (not reasons, reasons, {"unarmed": unarmed})

    def _automatic_feeds(self) -> bool:
        """Whether a feed is expected to tick on its own (manual ticks come when pushed)."""
        feeds = self.settings.feeds
        return feeds.simulated.enabled or feeds.replay.path is not None

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
