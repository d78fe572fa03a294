"""Agent: one logical actor per trading agent — config, open positions, P&L, decisions.

Contract:
- Owns its config, its open positions, its realised P&L and the outcome of every
  signal it has handled. Decides what to buy (eligibility, validation, sizing)
  and when a position is closed; the Wallet executes, the StopLossEvaluator
  watches prices.
- Journal first: every decision is an event committed before it is applied or
  answered. A buy is journaled as ``buy_intended`` (with its deterministic intent
  id) before the wallet hears of it; an exit as ``exit_intended``.
- Exactly once: a signal id seen before is answered from the recorded outcome;
  an exit for a position already closed or already exiting is ignored.
- On restart: snapshot + journal replay; intents left open by a crash are then
  resolved with the wallet (by intent id) before new signals are handled.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

from valux.actors.entity import Entity
from valux.actors.exit_rules import exit_rules, position_state
from valux.persistence.journal import RowWrite
from valux.rules.config import AgentConfig, load_agent_config
from valux.rules.position import PositionState

UPSERT_AGENT = (
    "INSERT INTO agents (id, name, status, config, seq, host_slot, wallet_id, wallet_slot,"
    " last_error, created_at, updated_at)"
    " VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7, $8, $9, to_timestamp($10), now())"
    " ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, status = EXCLUDED.status,"
    " config = EXCLUDED.config, last_error = EXCLUDED.last_error, updated_at = now()"
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
    "INSERT INTO signal_outcomes (signal_id, agent_id, status, reason, position_id, created_at)"
    " VALUES ($1, $2, $3, $4, $5, to_timestamp($6)) ON CONFLICT DO NOTHING"
)

MAX_REMEMBERED_SIGNALS = 10_000


class Agent(Entity):
    """The state of one agent; transitions only through journaled events."""

    stream_prefix = "agent"

    def __init__(self, entity_id: str) -> None:
        super().__init__(entity_id)
        self.name = ""
        self.status = "new"  # new | active | paused | quarantined | deleted
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

    # -- derived -----

    @property
    def config(self) -> AgentConfig:
        if self._config is None:
            self._config = load_agent_config(self.config_doc)
        return self._config

    @property
    def accepts_entries(self) -> bool:
        return self.status == "active"

    def open_tokens(self) -> set[str]:
        tokens = {p["token"] for p in self.positions.values()}
        tokens.update(b["token"] for b in self.pending_buys.values())
        return tokens

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
        }

    # -- state transitions -----

    def apply(self, event_type: str, data: dict[str, Any]) -> None:
        handler = getattr(self, f"_on_{event_type}", None)
        if handler is None:
            raise ValueError(f"unknown agent event {event_type}")
        handler(data)

    def _on_agent_created(self, data: dict[str, Any]) -> None:
        self.name = data["name"]
        self.status = "active"
        self.config_doc = data["config"]
        self._config = None
        self.wallet_id = data["wallet_id"]
        self.wallet_slot = data["wallet_slot"]
        self.host_slot = data["host_slot"]
        self.number = data["number"]
        self.created_at = data["ts"]

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

    def _on_signal_handled(self, data: dict[str, Any]) -> None:
        self._remember(data["signal_id"], data["outcome"])

    def _on_buy_intended(self, data: dict[str, Any]) -> None:
        self.pending_buys[data["intent_id"]] = data

    def _on_buy_failed(self, data: dict[str, Any]) -> None:
        self.pending_buys.pop(data["intent_id"], None)
        self._remember(data["signal_id"], data["outcome"])

    def _on_position_opened(self, data: dict[str, Any]) -> None:
        position = data["position"]
        self.pending_buys.pop(data["intent_id"], None)
        self.positions[position["id"]] = position
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

    def _on_order_intended(self, data: dict[str, Any]) -> None:
        """A take-profit sale or DCA buy of an open position is about to be sent."""
        position = self.positions.get(data["position_id"])
        if position is not None:
            position["order_intent"] = data

    def _on_order_failed(self, data: dict[str, Any]) -> None:
        position = self.positions.get(data["position_id"])
        if position is not None:
            position["order_intent"] = None

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
        self.positions.pop(data["position_id"], None)
        self.realized_pnl += data["realized_pnl"]
        self.closed_count += 1

    def _remember(self, signal_id: str, outcome: dict[str, Any]) -> None:
        self.signals[signal_id] = outcome
        if len(self.signals) > MAX_REMEMBERED_SIGNALS:
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
            return [self._agent_row(self.name, data["status"], self.config_doc, data.get("error"))]
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
    ) -> RowWrite:
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
        self.signals = dict(state["signals"])
        self.realized_pnl = state["realized_pnl"]
        self.closed_count = state["closed_count"]
