"""Wallet: one logical actor per wallet — balances, in-flight intents, its venue.

Contract:
- Owns the balances of its wallet (quote asset and tokens) and the set of order
  intents it has ever accepted. It is the single writer for its key / nonce.
- Journal first: an intent is journaled (``intent_submitted``, which reserves the
  funds) *before* it is sent to the venue; its outcome (``intent_filled`` /
  ``intent_failed``) is journaled before the caller hears of it.
- Exactly once: an intent id seen before is answered from the record, never sent
  again. An intent left ``pending`` by a crash is resolved on recovery by
  *querying* the venue (``status``): filled → apply once; not found → send again
  under the same id; unknown → stays pending and is queried again later.
- On restart: state = snapshot + journal replay; then pending intents are
  resolved before new work is accepted (the host does this before it serves).
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from valux.actors.entity import Entity
from valux.persistence.journal import RowWrite
from valux.schema.messages import OrderRequest, OrderResult

UPSERT_BALANCE = (
    "INSERT INTO balances (wallet_id, asset, amount, updated_at) VALUES ($1, $2, $3, now()) "
    "ON CONFLICT (wallet_id, asset) DO UPDATE SET amount = EXCLUDED.amount, updated_at = now()"
)
UPSERT_WALLET = (
    "INSERT INTO wallets (id, agent_id, venue, host_slot, created_at) "
    "VALUES ($1, $2, $3, $4, to_timestamp($5)) ON CONFLICT (id) DO NOTHING"
)
INSERT_TRADE = (
    "INSERT INTO trades (intent_id, agent_id, wallet_id, position_id, side, token, base_amount,"
    " quote_amount, price, fee, network_fee, reason, ts)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, to_timestamp($13))"
    " ON CONFLICT (intent_id) DO NOTHING"
)

MAX_FINISHED_INTENTS = 10_000


class Wallet(Entity):
    """The state of one wallet; transitions only through journaled events."""

    stream_prefix = "wallet"

    def __init__(self, entity_id: str) -> None:
        super().__init__(entity_id)
        self.agent_id = ""
        self.venue = "paper"
        self.quote_asset = "SOL"
        self.host_slot = 0
        self.created = False
        self.balances: dict[str, Decimal] = {}
        self.pending: dict[str, dict[str, Any]] = {}  # intent_id -> request fields + reserved
        self.finished: dict[str, dict[str, Any]] = {}  # intent_id -> OrderResult as dict

    # -- queries -----

    def balance(self, asset: str) -> Decimal:
        return self.balances.get(asset, Decimal(0))

    def known_result(self, intent_id: str) -> OrderResult | None:
        done = self.finished.get(intent_id)
        if done is not None:
            return OrderResult.from_dict(done)
        if intent_id in self.pending:
            return OrderResult(intent_id, "pending", ts=time.time())
        return None

    def view(self) -> dict[str, Any]:
        return {
            "wallet_id": self.id,
            "agent_id": self.agent_id,
            "venue": self.venue,
            "quote_asset": self.quote_asset,
            "balances": {asset: str(amount) for asset, amount in sorted(self.balances.items())},
            "pending_intents": sorted(self.pending),
        }

    # -- decisions (return events; the host journals them) -----------------------

    def reserve(self, order: OrderRequest) -> tuple[str, dict[str, Any]] | OrderResult:
        """Events that accept ``order`` (reserving funds), or a failed result."""
        asset = self.quote_asset if order.side == "buy" else order.token
        if order.amount <= 0:
            return OrderResult(order.intent_id, "failed", reason="amount must be > 0")
        available = self.balance(asset)
        if available < order.amount:
            return OrderResult(
                order.intent_id,
                "failed",
                reason=f"insufficient {asset}: have {available}, need {order.amount}",
                ts=time.time(),
            )
        return (
            "intent_submitted",
            {
                "intent_id": order.intent_id,
                "agent_id": order.agent_id,
                "position_id": order.position_id,
                "side": order.side,
                "token": order.token,
                "amount": order.amount,
                "reason": order.reason,
                "reserved_asset": asset,
                "reserved": order.amount,
                "reference_price": order.reference_price,
                "submitted_at": time.time(),
            },
        )

    def outcome_event(self, result: OrderResult) -> tuple[str, dict[str, Any]]:
        kind = "intent_filled" if result.state == "filled" else "intent_failed"
        return (kind, result.as_dict())

    # -- state transitions -----

    def apply(self, event_type: str, data: dict[str, Any]) -> None:
        for asset, delta in self._deltas(event_type, data).items():
            self._add(asset, delta)
        if event_type == "wallet_created":
            self.created = True
            self.agent_id = data["agent_id"]
            self.venue = data["venue"]
            self.quote_asset = data["quote_asset"]
            self.host_slot = data["host_slot"]
        elif event_type == "intent_submitted":
            self.pending[data["intent_id"]] = data
        elif event_type in ("intent_filled", "intent_failed"):
            if self.pending.pop(data["intent_id"], None) is None:
                return
            self.finished[data["intent_id"]] = data
            if len(self.finished) > MAX_FINISHED_INTENTS:
                self.finished.pop(next(iter(self.finished)))
        elif event_type != "deposited":
            raise ValueError(f"unknown wallet event {event_type}")

    def _deltas(self, event_type: str, data: dict[str, Any]) -> dict[str, Decimal]:
        """How an event moves balances (a reservation is released when its intent ends)."""
        deltas: dict[str, Decimal] = {}

        def add(asset: str, amount: Decimal) -> None:
            deltas[asset] = deltas.get(asset, Decimal(0)) + amount

        if event_type == "wallet_created":
            add(data["quote_asset"], Decimal(0))
        elif event_type == "deposited":
            add(data["asset"], data["amount"])
        elif event_type == "intent_submitted":
            add(data["reserved_asset"], -data["reserved"])
        elif event_type in ("intent_filled", "intent_failed"):
            intent = self.pending.get(data["intent_id"])
            if intent is None:
                return deltas
            add(intent["reserved_asset"], intent["reserved"])
            if event_type == "intent_filled":
                quote, token = self.quote_asset, intent["token"]
                if intent["side"] == "buy":
                    add(quote, -data["quote_amount"])
                    add(token, data["base_amount"])
                else:
                    add(token, -data["base_amount"])
                    add(quote, data["quote_amount"])
        return deltas

    def _add(self, asset: str, delta: Decimal) -> None:
        amount = self.balances.get(asset, Decimal(0)) + delta
        if amount == 0 and asset != self.quote_asset:
            self.balances.pop(asset, None)
        else:
            self.balances[asset] = amount

    # -- read model -----

    def rows(self, event_type: str, data: dict[str, Any]) -> list[RowWrite]:
        out: list[RowWrite] = []
        if event_type == "wallet_created":
            out.append(
                RowWrite(
                    UPSERT_WALLET,
                    ("wallets", self.id),
                    (self.id, data["agent_id"], data["venue"], data["host_slot"], data["ts"]),
                )
            )
        elif event_type == "intent_filled":
            intent = self.pending.get(data["intent_id"])
            if intent is not None:
                out.append(_trade_row(self.id, intent, data))
        for asset, delta in sorted(self._deltas(event_type, data).items()):
            out.append(
                RowWrite(
                    UPSERT_BALANCE,
                    ("balances", self.id, asset),
                    (self.id, asset, self.balance(asset) + delta),
                )
            )
        return out

    # -- snapshots -----

    def to_snapshot(self) -> dict[str, Any]:
        return {
            "agent_id": self.agent_id,
            "venue": self.venue,
            "quote_asset": self.quote_asset,
            "host_slot": self.host_slot,
            "created": self.created,
            "balances": self.balances,
            "pending": self.pending,
            "finished": self.finished,
        }

    def load_snapshot(self, state: dict[str, Any]) -> None:
        self.agent_id = state["agent_id"]
        self.venue = state["venue"]
        self.quote_asset = state["quote_asset"]
        self.host_slot = state["host_slot"]
        self.created = state["created"]
        self.balances = dict(state["balances"])
        self.pending = dict(state["pending"])
        self.finished = dict(state["finished"])


def _trade_row(wallet_id: str, intent: dict[str, Any], fill: dict[str, Any]) -> RowWrite:
    return RowWrite(
        INSERT_TRADE,
        ("trades", fill["intent_id"]),
        (
            fill["intent_id"],
            intent["agent_id"],
            wallet_id,
            intent["position_id"],
            intent["side"],
            intent["token"],
            fill["base_amount"],
            fill["quote_amount"],
            fill["price"],
            fill["fee"],
            fill["network_fee"],
            intent["reason"],
            fill["ts"],
        ),
    )
