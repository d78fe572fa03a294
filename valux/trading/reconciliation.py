"""Reconciliation: a permanent component of every agent host.

Contract — from the host's start, forever, every ``reconcile.interval_s``; nothing
outside it has to call it:

- **Resolves what is in flight.** A buy, exit, take-profit sale or DCA buy whose
  outcome has been unknown for longer than ``reconcile.pending_after_s`` is resolved
  by asking its wallet (which asks the venue). A buy the wallet has never seen is
  *voided* at the wallet first — so a late arrival of that order is refused — and
  only then booked as failed. A sale or rule order the wallet has never seen is sent
  again under its own intent id (a late arrival of the first send is then the same
  order, executed once). Right after recovery everything in flight is resolved at once.
- **Arms what is not armed.** A position whose arming failed (its evaluator was
  restarting) is armed again on the next round.
- **Audits custody**, every ``reconcile.audit_every_s`` per agent, while neither the
  agent nor its wallet has an order in flight (the agent's mailbox is held, so none can
  start): the wallet's token balances must equal the sum of the agent's open positions'
  ``remaining``, and the wallet's memory must equal its journal (deposits plus fills,
  summed in SQL). A mismatch is logged with its evidence (``alert_custody_mismatch``),
  counted (``valux_custody_mismatches``), puts the agent in REDUCING with the reason,
  and is listed by ``/health/ready`` until an audit finds the wallet consistent again.
- One agent's trouble never stops a round, and a round's trouble never stops the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from decimal import Decimal
from typing import Any

from valux.observability.metrics import CUSTODY_MISMATCHES, RECONCILE_RESOLVED
from valux.risk.states import ACTIVE, REDUCING
from valux.schema.messages import OrderRequest, OrderResult
from valux.trading.agent import Agent
from valux.trading.context import TradingHost
from valux.trading.exits import exit_order
from valux.trading.position_rules import order_request

NOT_RECEIVED = "not received by the wallet"


def has_in_flight(agent: Agent) -> bool:
    """A buy, exit, take-profit sale or DCA buy of ``agent`` awaits its outcome."""
    return bool(agent.pending_buys) or any(
        p.get("exit_intent") or p.get("order_intent") for p in agent.positions.values()
    )


def in_flight_ids(agent: Agent) -> list[str]:
    ids = list(agent.pending_buys)
    for position in agent.positions.values():
        if position.get("exit_intent"):
            ids.append(position["exit_intent"])
        if position.get("order_intent"):
            ids.append(position["order_intent"]["intent_id"])
    return ids


def held_tokens(agent: Agent) -> dict[str, Decimal]:
    """What the agent's open positions hold, per token."""
    held: dict[str, Decimal] = defaultdict(Decimal)
    for position in agent.positions.values():
        held[position["token"]] += position["remaining"]
    return {t: amount for t, amount in held.items() if amount}


class Reconciler:
    """The reconciliation of one agent host (see the module docstring)."""

    def __init__(self, host: TradingHost) -> None:
        self.host = host
        self._task: asyncio.Task[None] | None = None
        self._first_seen: dict[str, float] = {}
        self._audited_at: dict[str, float] = {}
        self.unarmed: dict[str, set[str]] = defaultdict(set)  # agent id -> position ids
        self.mismatches: dict[str, dict[str, Any]] = {}
        self.rounds = 0
        self.last_round_at = 0.0
        self.restarts = 0
        self._stopping = False  # a cancellation a library turns into an error ends it too

    # -- lifecycle -----

    async def after_recovery(self) -> None:
        """Resolve everything a crash left in flight, before the host serves; then start."""
        await self.run_round(resolve_after_s=0.0, audit=False)
        self.ensure()

    def ensure(self) -> None:
        """Keep the permanent loop running (restarted, with an alert, if it ever ended)."""
        if self._stopping or (self._task is not None and not self._task.done()):
            return
        if self._task is not None:
            self.restarts += 1
            error = None if self._task.cancelled() else self._task.exception()
            self.host.log.error("alert_reconciler_restarted", error=repr(error))
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """End the loop (an in-process system closing; a live host never calls it). The
        loop also checks a flag: a client library that turns the cancellation of a call in
        flight into an error of its own (which a round isolates per agent) cannot keep
        it running."""
        self._stopping = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.host.settings.reconcile.interval_s)
            try:
                await self.run_round()
            except Exception as exc:  # pragma: no cover - run_round isolates each agent
                self.host.log.error("reconcile_round_failed", error=repr(exc))

    # -- rounds -----

    async def run_round(self, *, resolve_after_s: float | None = None, audit: bool = True) -> int:
        """One pass over every agent; returns how many intents it resolved."""
        settings = self.host.settings.reconcile
        after = settings.pending_after_s if resolve_after_s is None else resolve_after_s
        now = time.monotonic()
        resolved = 0
        live: set[str] = set()
        for agent_id in list(self.host.entities):
            if self._stopping:
                break
            try:
                async with self.host.mailbox(agent_id):
                    agent = self.host.entities.get(agent_id)
                    if agent is None or agent.status == "deleted":
                        continue
                    ids = in_flight_ids(agent)
                    live.update(ids)
                    due = [i for i in ids if now - self._first_seen.setdefault(i, now) >= after]
                    if due:
                        resolved += await self._resolve(agent, set(due))
                    await self._arm_missing(agent)
                    last = self._audited_at.get(agent_id, 0.0)
                    if audit and now - last >= settings.audit_every_s and not has_in_flight(agent):
                        self._audited_at[agent_id] = now
                        await self._audit(agent)
            except Exception as exc:
                self.host.log.warning("reconcile_agent_failed", agent_id=agent_id, error=repr(exc))
        for intent_id in set(self._first_seen) - live:
            del self._first_seen[intent_id]
        self.rounds += 1
        self.last_round_at = time.time()
        return resolved

    async def reconcile_all(self) -> int:
        """Resolve every in-flight intent now (operators and tests; the loop does it anyway)."""
        return await self.run_round(resolve_after_s=0.0, audit=False)

    # -- in-flight intents -----

    async def _lookup(self, agent: Agent, intent_id: str) -> OrderResult | None:
        return await self.host.wallets.resolve(agent.wallet_id, intent_id)

    async def _resolve(self, agent: Agent, due: set[str]) -> int:
        """Resolve the due intents of ``agent`` (caller holds the mailbox)."""
        done = 0
        for intent_id, intent in list(agent.pending_buys.items()):
            if intent_id not in due:
                continue
            result = await self._lookup(agent, intent_id)
            if result is None:  # never seen: fence it at the wallet, then book the failure
                result = await self.host.wallets.void(agent.wallet_id, intent_id, NOT_RECEIVED)
            done += await self._counted(result)
            await self.host.entries.apply_buy_result(agent, intent, result)
        for position in list(agent.positions.values()):
            exit_id: str | None = position.get("exit_intent")
            if not exit_id or exit_id not in due:
                continue
            found = await self._lookup(agent, exit_id)
            if found is None:  # not seen (or not yet): send it again, same id
                sale = exit_order(agent, position, exit_id, position.get("exit_reason") or "")
                found = await self._send_again(agent, sale)
                if found is None:
                    continue
            done += await self._counted(found)
            await self.host.exits.apply_exit_result(agent, position, found)
        for position in list(agent.positions.values()):
            order: dict[str, Any] | None = position.get("order_intent")
            if not order or order["intent_id"] not in due:
                continue
            found = await self._lookup(agent, order["intent_id"])
            if found is None:  # not seen (or not yet): send it again, same id
                found = await self._send_again(agent, order_request(agent, position, order))
                if found is None:
                    continue
            done += await self._counted(found)
            applied = await self.host.rules.apply_result(agent, position, order, found)
            if applied is not None and applied.closed is None:  # the trigger is handled
                await self.host.arm_position(agent, position, release=True, stop=applied.stop)
        return done

    async def _send_again(self, agent: Agent, order: OrderRequest) -> OrderResult | None:
        """A sale or rule order the wallet has no record of is sent again under its own id:
        the trigger was decided and journaled, and if the first send is still on its way
        the wallet executes the id once either way. (A buy is voided instead: a signal's
        entry may be given up, an exit may not.) None: the wallet is unreachable."""
        try:
            return await self.host.wallets.execute(order)
        except Exception as exc:
            self.host.log.warning("resend_failed", intent_id=order.intent_id, error=repr(exc))
            return None

    @staticmethod
    async def _counted(result: OrderResult) -> int:
        final = result.state in ("filled", "failed")
        RECONCILE_RESOLVED.labels(result.state if final else "unknown").inc()
        return int(final)

    # -- arming -----

    def arm_failed(self, agent_id: str, position_id: str) -> None:
        """``arm_position`` gave up: the next round arms it again."""
        self.unarmed[agent_id].add(position_id)

    async def _arm_missing(self, agent: Agent) -> None:
        missing = self.unarmed.pop(agent.id, set())
        for position_id in missing:
            position = agent.positions.get(position_id)
            if position is not None and not await self.host.arm_position(agent, position):
                self.unarmed[agent.id].add(position_id)

    # -- custody -----

    async def _audit(self, agent: Agent) -> None:
        """Compare the wallet with the positions and with its journal (caller holds the
        mailbox and has checked that nothing of the agent is in flight)."""
        report = await self.host.wallets.audit(agent.wallet_id, held_tokens(agent))
        if report["status"] == "busy":
            return
        if report["status"] == "ok":
            if self.mismatches.pop(agent.id, None) is not None:
                self.host.log.warning("custody_consistent_again", agent_id=agent.id)
            return
        evidence = report["evidence"]
        if agent.id not in self.mismatches:
            CUSTODY_MISMATCHES.inc()
            self.host.log.error("alert_custody_mismatch", agent_id=agent.id,
                                wallet_id=agent.wallet_id, evidence=evidence)  # fmt: skip
        self.mismatches[agent.id] = {
            "wallet_id": agent.wallet_id,
            "evidence": evidence,
            "since": self.mismatches.get(agent.id, {}).get("since", time.time()),
        }
        if agent.state is ACTIVE:
            reason = "reconciliation: " + "; ".join(evidence)
            await self.host.controls.set_state(agent, REDUCING, reason, "reconciliation")

    def report(self) -> dict[str, Any]:
        return {
            "rounds": self.rounds,
            "last_round_at": self.last_round_at,
            "restarts": self.restarts,
            "running": self._task is not None and not self._task.done(),
            "mismatches": dict(self.mismatches),
            "unarmed": {a: sorted(p) for a, p in self.unarmed.items() if p},
            "in_flight": len(self._first_seen),
        }
