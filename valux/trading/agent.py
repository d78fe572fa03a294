"""Agent: one logical actor per trading agent — config, open positions, P&L, decisions.

Contract:
- Owns its config, its open positions, its realised P&L and the outcome of every
  signal it has handled. Decides what to buy (eligibility, validation, sizing)
  and when a position is closed; the Wallet executes, the StopLossEvaluator
  watches prices.
- Journal first: every decision is an event committed before it is applied or
  answered. A buy is journaled as ``buy_intended`` (with its deterministic intent
  id) before the wallet hears of it; an exit as ``exit_intended``.
- Exactly once: a signal id seen before is answered from the recorded outcome —
  recent ones from memory (at most ``MAX_RECENT_SIGNALS``), any older one from the
  ``signal_outcomes`` read model, written in the same transaction as the event; an
  exit for a position already closed or already exiting is ignored.
- Trading state (:mod:`valux.risk.states`): ACTIVE, REDUCING or HALTED, with its
  reason and source (a user, a breaker, reconciliation), journaled as
  ``trading_state_changed``; breakers (:mod:`valux.risk.breakers`) fold from the
  closes. Schema 2: a version-1 ``pause`` (``status_changed`` to ``paused``) is read
  as REDUCING, and its resume as ACTIVE.
- On restart: snapshot + journal replay; intents left open by a crash are then
  resolved with the wallet (by intent id) before new signals are handled.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Collection
from decimal import Decimal
from typing import Any

from valux.persistence.entity import Entity
from valux.persistence.journal import RowWrite
from valux.risk.breakers import BreakerLimits, RiskStats
from valux.risk.states import ACTIVE, REDUCING, TradingState
from valux.rules.config import AgentConfig, load_agent_config
from valux.rules.exit_rules import exit_rules, position_state
from valux.rules.position import PositionState

UPSERT_AGENT = (
    "INSERT INTO agents (id, name, status, config, seq, host_slot, wallet_id, wallet_slot,"
    " last_error, trading_state, trading_state_reason, created_at, updated_at)"
    " VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7, $8, $9, $10, $11, to_timestamp($12), now())"
    " ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, status = EXCLUDED.status,"
    " config = EXCLUDED.config, seq = EXCLUDED.seq, host_slot = EXCLUDED.host_slot,"
    " wallet_id = EXCLUDED.wallet_id, wallet_slot = EXCLUDED.wallet_slot,"
    " last_error = EXCLUDED.last_error, trading_state = EXCLUDED.trading_state,"
    " trading_state_reason = EXCLUDED.trading_state_reason,"
    " created_at = EXCLUDED.created_at, updated_at = now()"
)
UPSERT_POSITION = (
    "INSERT INTO positions (id, agent_id, wallet_id, token, status, amount, remaining,"
    " purchase_price, invested, proceeds, realized_pnl, exit_reason, signal_id, host_slot,"
    " exit_rules, opened_at, closed_at)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15::jsonb,"
    " to_timestamp($16), to_timestamp($17))"
    " ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, remaining = EXCLUDED.remaining,"
    " amount = EXCLUDED.amount, purchase_price = EXCLUDED.purchase_price,"
    " invested = EXCLUDED.invested, proceeds = EXCLUDED.proceeds,"
    " realized_pnl = EXCLUDED.realized_pnl,"
    " exit_reason = EXCLUDED.exit_reason, exit_rules = EXCLUDED.exit_rules,"
    " closed_at = EXCLUDED.closed_at"
)
INSERT_OUTCOME = (
    "INSERT INTO signal_outcomes (signal_id, agent_id, status, reason, position_id, detail,"
    " created_at) VALUES ($1, $2, $3, $4, $5, $6::jsonb, to_timestamp($7)) ON CONFLICT DO NOTHING"
)

MAX_RECENT_SIGNALS = 256
"""Signal outcomes kept in memory per agent; older ones are read from ``signal_outcomes``."""


class Agent(Entity):
    """The state of one agent; transitions only through journaled events."""

    stream_prefix = "agent"
    schema_version = 2

    @classmethod
    def upcast_event(
        cls, event_type: str, data: dict[str, Any], version: int
    ) -> tuple[str, dict[str, Any]]:
        """1 → 2: ``pause`` became the REDUCING trading state; its resume, ACTIVE."""
        if version == 1 and event_type == "status_changed":
            if data["status"] == "paused":
                state = {"state": "REDUCING", "reason": "paused", "source": "user", "ts": 0.0}
                return "trading_state_changed", state
            if data["status"] == "active":
                return event_type, {**data, "resumed": True}
        return event_type, data

    @classmethod
    def upcast_snapshot(cls, state: dict[str, Any], version: int) -> dict[str, Any]:
        """1 → 2: a paused agent is active in the REDUCING state; the new fields default."""
        if version == 1:
            state = dict(state)
            if state["status"] == "paused":
                state["status"] = "active"
                state["trading_state"] = {"state": "REDUCING", "reason": "paused",
                                          "source": "user", "ts": 0.0}  # fmt: skip
        return state

    def __init__(self, entity_id: str) -> None:
        super().__init__(entity_id)
        self.name = ""
        self.status = "new"  # new | active | quarantined | deleted
        self.config_doc: dict[str, Any] = {}
        self._config: AgentConfig | None = None
        self.wallet_id = ""
        self.wallet_slot = 0
        self.host_slot = 0
        self.number = 0
        self.created_at = 0.0
        self.last_error: str | None = None
        self.positions: dict[str, dict[str, Any]] = {}  # open positions by id
        self.pending_buys: dict[str, dict[str, Any]] = {}  # intent_id -> buy_intended data
        self.signals: dict[str, dict[str, Any]] = {}  # signal_id -> outcome
        self.realized_pnl = Decimal(0)
        self.closed_count = 0
        self.trading_state: dict[str, Any] = _state(ACTIVE, None, None, 0.0)
        self.risk = RiskStats()
        # token -> open positions and buys in flight on it, kept with both dicts, so a buy's
        # "one position per token" check costs the same with 1 or 1,000 positions open
        self._tokens: Counter[str] = Counter()

    # -- derived -----

    @property
    def config(self) -> AgentConfig:
        if self._config is None:
            self._config = load_agent_config(self.config_doc)
        return self._config

    @property
    def state(self) -> TradingState:
        """The agent's own trading state (the host combines it with the global one)."""
        return TradingState(self.trading_state["state"])

    @property
    def breaker_limits(self) -> BreakerLimits:
        risk = self.config.risk
        return BreakerLimits(risk.max_drawdown_percent, risk.daily_loss_limit, risk.max_loss_streak)

    def snapshot_weight(self) -> int:
        return len(self.positions) + len(self.pending_buys) + len(self.signals)

    def open_tokens(self) -> Collection[str]:
        """The tokens of every open position and buy in flight (``in`` and ``len`` in
        O(1), whatever the number of positions)."""
        return self._tokens.keys()

    def _hold(self, token: str) -> None:
        self._tokens[token] += 1

    def _release(self, token: str) -> None:
        left = self._tokens[token] - 1
        if left > 0:
            self._tokens[token] = left
        else:
            del self._tokens[token]

    def _count_tokens(self) -> None:
        self._tokens = Counter(p["token"] for p in self.positions.values())
        self._tokens.update(b["token"] for b in self.pending_buys.values())

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "config": self.config.to_document("snake"),
            "wallet_id": self.wallet_id,
            "host_slot": self.host_slot,
            "open_positions": len(self.positions),
            "closed_positions": self.closed_count,
            "realized_pnl": str(self.realized_pnl),
            "last_error": self.last_error,
            "created_at": self.created_at,
            "trading_state": self.trading_state["state"],
            "trading_state_reason": self.trading_state["reason"],
            "trading_state_source": self.trading_state["source"],
            "trading_state_since": self.trading_state["ts"],
            "risk": self.risk.view(),
        }

    # -- state transitions -----

    def apply(self, event_type: str, data: dict[str, Any]) -> None:
        handler = getattr(self, f"_on_{event_type}", None)
        if handler is None:
            raise ValueError(f"unknown agent event {event_type}")
        handler(data)

    def _on_agent_created(self, data: dict[str, Any]) -> None:
        """A new agent, or a new incarnation of a deleted id: everything starts afresh."""
        self.name = data["name"]
        self.status = "active"
        self.config_doc = data["config"]
        self._config = None
        self.wallet_id = data["wallet_id"]
        self.wallet_slot = data["wallet_slot"]
        self.host_slot = data["host_slot"]
        self.number = data["number"]
        self.created_at = data["ts"]
        self.last_error = None
        self.positions = {}
        self.pending_buys = {}
        self._tokens = Counter()
        self.realized_pnl = Decimal(0)
        self.closed_count = 0
        self.trading_state = _state(ACTIVE, None, None, data["ts"])
        self.risk = RiskStats(capital=data.get("capital", Decimal(0)))

    def _on_config_changed(self, data: dict[str, Any]) -> None:
        self.config_doc = data["config"]
        self._config = None
        for position in self.positions.values():
            position["exit_rules"] = exit_rules(self.config, position_state(position))

    def _on_renamed(self, data: dict[str, Any]) -> None:
        self.name = data["name"]

    def _on_status_changed(self, data: dict[str, Any]) -> None:
        self.status = data["status"]
        self.last_error = data.get("error")
        if data.get("resumed"):  # schema 1: a resume also ended a pause
            self.trading_state = _state(ACTIVE, None, "user", self.trading_state["ts"])

    def _on_trading_state_changed(self, data: dict[str, Any]) -> None:
        state = TradingState(data["state"])
        self.trading_state = _state(state, data.get("reason"), data.get("source"), data["ts"])
        if state is ACTIVE and data.get("source") == "user":
            self.risk = self.risk.reset()

    def _on_signal_handled(self, data: dict[str, Any]) -> None:
        self._remember(data["signal_id"], data["outcome"])

    def _on_buy_intended(self, data: dict[str, Any]) -> None:
        if (old := self.pending_buys.get(data["intent_id"])) is not None:
            self._release(old["token"])
        self.pending_buys[data["intent_id"]] = data
        self._hold(data["token"])

    def _on_buy_failed(self, data: dict[str, Any]) -> None:
        if (buy := self.pending_buys.pop(data["intent_id"], None)) is not None:
            self._release(buy["token"])
        self._remember(data["signal_id"], data["outcome"])

    def _on_position_opened(self, data: dict[str, Any]) -> None:
        position = data["position"]
        if (buy := self.pending_buys.pop(data["intent_id"], None)) is not None:
            self._release(buy["token"])
        if (old := self.positions.get(position["id"])) is not None:
            self._release(old["token"])
        self.positions[position["id"]] = position
        self._hold(position["token"])
        self._remember(data["signal_id"], data["outcome"])

    def _on_exit_intended(self, data: dict[str, Any]) -> None:
        position = self.positions.get(data["position_id"])
        if position is not None:
            position["exit_intent"] = data["intent_id"]
            position["exit_reason"] = data["reason"]

    def _on_exit_failed(self, data: dict[str, Any]) -> None:
        position = self.positions.get(data["position_id"])
        if position is not None:
            position["exit_intent"] = None
            position["exit_reason"] = None
            # The next sale is a new decision with a new intent id: the failed one is
            # finished at the wallet and would answer "failed" forever.
            position["exit_failures"] = position.get("exit_failures", 0) + 1

    def _on_order_intended(self, data: dict[str, Any]) -> None:
        """A take-profit sale or DCA buy of an open position is about to be sent."""
        position = self.positions.get(data["position_id"])
        if position is not None:
            position["order_intent"] = data

    def _on_order_failed(self, data: dict[str, Any]) -> None:
        position = self.positions.get(data["position_id"])
        if position is not None:
            position["order_intent"] = None
            position["order_failures"] = position.get("order_failures", 0) + 1  # as exits

    def _on_position_updated(self, data: dict[str, Any]) -> None:
        """A take-profit sale, DCA buy, moon-bag activation or lowest price was applied."""
        position = self.positions.get(data["position_id"])
        if position is not None:
            position.update(self._updated_fields(position, data))

    def _updated_fields(self, position: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        state = data["state"]
        return {
            "state": state,
            "amount": state["purchase_amount"],
            "remaining": PositionState.from_dict(state).holding,
            "purchase_price": state["purchase_price"],
            "invested": state["total_invested"],
            "proceeds": position["proceeds"] + data.get("proceeds", Decimal(0)),
            "exit_rules": data["exit_rules"],
            "order_intent": None,
        }

    def _on_position_closed(self, data: dict[str, Any]) -> None:
        position = self.positions.pop(data["position_id"], None)
        if position is None:
            return
        self._release(position["token"])
        self.realized_pnl += data["realized_pnl"]
        self.closed_count += 1
        self.risk = self.risk.after_close(data["realized_pnl"], data["closed_at"])

    def _remember(self, signal_id: str, outcome: dict[str, Any]) -> None:
        self.signals.pop(signal_id, None)
        self.signals[signal_id] = outcome
        while len(self.signals) > MAX_RECENT_SIGNALS:
            self.signals.pop(next(iter(self.signals)))

    # -- read model -----

    def rows(self, event_type: str, data: dict[str, Any]) -> list[RowWrite]:
        if event_type == "agent_created":
            return [self._agent_row(data["name"], "active", data["config"], None, data)]
        if event_type == "config_changed":
            rows = [self._agent_row(self.name, self.status, data["config"], self.last_error)]
            config = load_agent_config(data["config"])
            rows.extend(
                self._position_row({**p, "exit_rules": exit_rules(config, position_state(p))})
                for p in self.positions.values()
            )
            return rows
        if event_type == "position_updated":
            position = self.positions.get(data["position_id"])
            if position is None:
                return []
            return [self._position_row({**position, **self._updated_fields(position, data)})]
        if event_type == "renamed":
            return [self._agent_row(data["name"], self.status, self.config_doc, self.last_error)]
        if event_type == "status_changed":
            resumed = _state(ACTIVE, None, None, 0.0) if data.get("resumed") else None
            return [
                self._agent_row(
                    self.name, data["status"], self.config_doc, data.get("error"), trading=resumed
                )
            ]
        if event_type == "trading_state_changed":
            trading = _state(TradingState(data["state"]), data.get("reason"), None, data["ts"])
            return [
                self._agent_row(
                    self.name, self.status, self.config_doc, self.last_error, trading=trading
                )
            ]
        if event_type in ("signal_handled", "buy_failed"):
            return [self._outcome_row(data["signal_id"], data["outcome"])]
        if event_type == "position_opened":
            return [
                self._position_row(data["position"]),
                self._outcome_row(data["signal_id"], data["outcome"]),
            ]
        if event_type == "position_closed":
            position = self.positions.get(data["position_id"])
            if position is None:
                return []
            closed = {
                **position,
                "status": "closed",
                "remaining": Decimal(0),
                "proceeds": data["proceeds"],
                "realized_pnl": data["realized_pnl"],
                "exit_reason": data["reason"],
                "closed_at": data["closed_at"],
            }
            return [self._position_row(closed)]
        return []

    def _agent_row(
        self,
        name: str,
        status: str,
        config: dict[str, Any],
        error: str | None,
        created: dict[str, Any] | None = None,
        *,
        trading: dict[str, Any] | None = None,
    ) -> RowWrite:
        trading = trading or (_state(ACTIVE, None, None, 0) if created else self.trading_state)
        src = created or {
            "number": self.number,
            "host_slot": self.host_slot,
            "wallet_id": self.wallet_id,
            "wallet_slot": self.wallet_slot,
            "ts": self.created_at,
        }
        return RowWrite(
            UPSERT_AGENT,
            ("agents", self.id),
            (
                self.id,
                name,
                status,
                json.dumps(config, default=str),
                src["number"],
                src["host_slot"],
                src["wallet_id"],
                src["wallet_slot"],
                error,
                trading["state"],
                trading["reason"],
                src["ts"],
            ),
        )

    def _position_row(self, p: dict[str, Any]) -> RowWrite:
        return RowWrite(
            UPSERT_POSITION,
            ("positions", p["id"]),
            (
                p["id"],
                self.id,
                self.wallet_id,
                p["token"],
                p.get("status", "open"),
                p["amount"],
                p["remaining"],
                p["purchase_price"],
                p["invested"],
                p.get("proceeds", Decimal(0)),
                p.get("realized_pnl"),
                p.get("exit_reason") if p.get("status") == "closed" else None,
                p.get("signal_id"),
                self.host_slot,
                json.dumps(p["exit_rules"]),
                p["opened_at"],
                p.get("closed_at"),
            ),
        )

    def _outcome_row(self, signal_id: str, outcome: dict[str, Any]) -> RowWrite:
        return RowWrite(
            INSERT_OUTCOME,
            ("signal_outcomes", signal_id, self.id),
            (
                signal_id,
                self.id,
                outcome["status"],
                outcome.get("reason"),
                outcome.get("position_id"),
                json.dumps(outcome, default=str),
                outcome.get("ts", time.time()),
            ),
        )

    # -- snapshots -----

    def to_snapshot(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "config": self.config_doc,
            "wallet_id": self.wallet_id,
            "wallet_slot": self.wallet_slot,
            "host_slot": self.host_slot,
            "number": self.number,
            "created_at": self.created_at,
            "last_error": self.last_error,
            "positions": self.positions,
            "pending_buys": self.pending_buys,
            "signals": self.signals,
            "realized_pnl": self.realized_pnl,
            "closed_count": self.closed_count,
            "trading_state": self.trading_state,
            "risk": self.risk.to_dict(),
        }

    def load_snapshot(self, state: dict[str, Any]) -> None:
        self.name = state["name"]
        self.status = state["status"]
        self.config_doc = state["config"]
        self._config = None
        self.wallet_id = state["wallet_id"]
        self.wallet_slot = state["wallet_slot"]
        self.host_slot = state["host_slot"]
        self.number = state["number"]
        self.created_at = state["created_at"]
        self.last_error = state["last_error"]
        self.positions = {pid: dict(p) for pid, p in state["positions"].items()}
        self.pending_buys = dict(state["pending_buys"])
        self._count_tokens()
        self.signals = dict(state["signals"])
        self.realized_pnl = state["realized_pnl"]
        self.closed_count = state["closed_count"]
        self.trading_state = dict(state.get("trading_state") or _state(ACTIVE, None, None, 0.0))
        self.risk = RiskStats.from_dict(state["risk"]) if "risk" in state else RiskStats()


def _state(
    state: TradingState, reason: str | None, source: str | None, ts: float
) -> dict[str, Any]:
    return {"state": state.value, "reason": reason, "source": source, "ts": ts}


__all__ = ["MAX_RECENT_SIGNALS", "REDUCING", "Agent"]
