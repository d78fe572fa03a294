"""Trading-state controls of one agent host: per-agent and global states, breakers.

- :meth:`Controls.effective` is the state that applies to an agent now: the strictest of
  its own (journaled) state, the global state, quarantine and the safe state
  (:func:`valux.risk.states.effective_state`), each with its reason.
- :meth:`Controls.set_state` journals ``trading_state_changed`` in the agent's stream and
  re-arms its positions for the new state (REDUCING arms no DCA; leaving HALTED releases
  the triggers that were held).
- :meth:`Controls.set_global` applies the global state the root supervisor journaled;
  every agent host gets it in one round of calls, and reads it back from PostgreSQL after
  a restart.
- :meth:`Controls.after_close` runs the breakers (:mod:`valux.risk.breakers`) after a
  close was journaled; a trip puts the agent in REDUCING with the breaker's reason.
"""

from __future__ import annotations

import time
from typing import Any

from valux.observability.metrics import BREAKER_TRIPS, TRADING_STATES
from valux.risk.breakers import tripped
from valux.risk.states import ACTIVE, HALTED, REDUCING, Effective, TradingState, effective_state
from valux.trading.agent import Agent
from valux.trading.context import TradingHost


class Controls:
    """Trading states and breakers for the agents of one host (see the module docstring)."""

    def __init__(self, host: TradingHost) -> None:
        self.host = host
        self.global_state: dict[str, Any] = {"state": ACTIVE.value, "reason": None, "ts": 0.0}
        self._gauges_stale = True

    # -- what applies -----

    def effective(self, agent: Agent) -> Effective:
        own = agent.trading_state
        glob = self.global_state
        return effective_state(
            (agent.state, own["reason"] or f"agent set {own['state']}"),
            (TradingState(glob["state"]), f"global {glob['state']}: {glob['reason']}"),
            (
                REDUCING if agent.status == "quarantined" else ACTIVE,
                f"quarantined after repeated failures: {agent.last_error}",
            ),
            (
                REDUCING if self.host.safe_state else ACTIVE,
                self.host.safe_state,
            ),
        )

    def update_gauges(self) -> None:
        """Some agent's state may have changed: count again when metrics are next read
        (counting is O(agents); creating many agents must not be O(agents²))."""
        self._gauges_stale = True

    def refresh_gauges(self) -> None:
        """Set ``valux_agents_trading_state`` from the agents' effective states, if stale."""
        if not self._gauges_stale:
            return
        self._gauges_stale = False
        counts = {s.value: 0 for s in TradingState}
        for agent in self.host.entities.values():
            if agent.status != "deleted":
                counts[self.effective(agent).state.value] += 1
        for state, count in counts.items():
            TRADING_STATES.labels(state).set(count)

    # -- changes -----

    async def set_state(
        self, agent: Agent, state: TradingState, reason: str | None, source: str
    ) -> None:
        """Journal the agent's new state and re-arm its positions (caller holds the mailbox)."""
        before = self.effective(agent)
        event = {"state": state.value, "reason": reason, "source": source, "ts": time.time()}
        await self.host.persist(agent, [("trading_state_changed", event)])
        log = self.host.log.warning if state is not ACTIVE else self.host.log.info
        log("trading_state_changed", agent_id=agent.id, state=state.value, reason=reason,
            source=source)  # fmt: skip
        await self._rearm(agent, before)
        self.update_gauges()

    async def set_global(self, state: TradingState, reason: str | None, ts: float) -> int:
        """Apply the global state; returns how many agents' effective state changed."""
        before = {a.id: self.effective(a) for a in self.host.entities.values()}
        self.global_state = {"state": state.value, "reason": reason, "ts": ts}
        changed = 0
        for agent_id, was in before.items():
            async with self.host.mailbox(agent_id):
                agent = self.host.entities.get(agent_id)
                if agent is not None and self.effective(agent).state is not was.state:
                    changed += 1
                    await self._rearm(agent, was)
        self.update_gauges()
        return changed

    async def _rearm(self, agent: Agent, before: Effective) -> None:
        """Arm the agent's positions for its effective state after a change from ``before``."""
        now = self.effective(agent)
        if now.state is before.state:
            return
        release = before.state is HALTED  # triggers held while halted may fire now
        for position in list(agent.positions.values()):
            await self.host.arm_position(agent, position, release=release)

    # -- breakers -----

    async def after_close(self, agent: Agent) -> None:
        """Trip a breaker whose limit the agent's closes have reached (caller holds the
        mailbox, the close is journaled)."""
        if agent.state is not ACTIVE:
            return
        trip = tripped(agent.risk, agent.breaker_limits)
        if trip is None:
            return
        breaker, reason = trip
        BREAKER_TRIPS.labels(breaker).inc()
        self.host.log.error("alert_breaker_tripped", agent_id=agent.id, breaker=breaker,
                            reason=reason)  # fmt: skip
        await self.set_state(agent, REDUCING, reason, "breaker")

    # -- reports -----

    def halted_positions(self) -> list[dict[str, Any]]:
        """Open positions whose exits do not run (their agent is HALTED)."""
        out: list[dict[str, Any]] = []
        for agent in self.host.entities.values():
            effective = self.effective(agent)
            if effective.state is HALTED:
                out.extend(
                    {"agent_id": agent.id, "position_id": pid, "reason": effective.reason}
                    for pid in agent.positions
                )
        return out
