"""Wallet: one logical actor per wallet — balances, in-flight intents, its venue.

Contract:
- Owns the balances of its wallet (quote asset and tokens) and the set of order
  intents it has ever accepted. It is the single writer for its key / nonce.
- Journal first: an intent is journaled (``intent_submitted``, which reserves the
  funds) *before* it is sent to the venue; its outcome (``intent_filled`` /
  ``intent_failed``) is journaled before the caller hears of it.
- Exactly once: an intent id seen before is answered from the record, never sent
  again, however old: recent outcomes are kept in memory (at most
  ``MAX_RECENT_FINISHED``), and every outcome is written to the ``wallet_intents``
  read model in the same transaction as its event, which the host asks for older
  ones. An intent left ``pending`` by a crash is resolved on recovery by
  *querying* the venue (``status``): filled → apply once; not found → send again
  under the same id; unknown → stays pending and is queried again later.
- Fencing: an intent the agent gave up on as "never received" is *voided*
  (``intent_voided``) before the agent books it as failed, so a late arrival of
  that order is refused instead of buying tokens no position owns.
- On restart: state = snapshot + journal replay; then pending intents are
  resolved before new work is accepted (the host does this before it serves).
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from valux.custody.policy import utc_day
from valux.persistence.entity import Entity
from valux.persistence.journal import RowWrite
from valux.schema.messages import OrderRequest, OrderResult

ADD_BALANCE = (
    "INSERT INTO balances (wallet_id, asset, amount, updated_at) VALUES ($1, $2, $3, now()) "
    "ON CONFLICT (wallet_id, asset) DO UPDATE SET amount = balances.amount + EXCLUDED.amount,"
    " updated_at = now()"
)
"""Balances move by each event's delta, added in SQL: the row is the sum of every journaled
movement (deposits, fills, reservations), whatever the wallet's memory says, which is
what the custody audit compares the memory with."""
UPSERT_INTENT = (
    "INSERT INTO wallet_intents (intent_id, wallet_id, side, token, state, base_amount,"
    " quote_amount, price, fee, network_fee, reason, ts, updated_at)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, now())"
    " ON CONFLICT (intent_id) DO UPDATE SET state = EXCLUDED.state,"
    " base_amount = EXCLUDED.base_amount, quote_amount = EXCLUDED.quote_amount,"
    " price = EXCLUDED.price, fee = EXCLUDED.fee, network_fee = EXCLUDED.network_fee,"
    " reason = EXCLUDED.reason, ts = EXCLUDED.ts, updated_at = now()"
)
UPSERT_WALLET = (
    "INSERT INTO wallets (id, agent_id, venue, host_slot, created_at, chain, address, owner_id)"
    " VALUES ($1, $2, $3, $4, to_timestamp($5), $6, $7, $8) ON CONFLICT (id) DO NOTHING"
)
UPDATE_WALLET = (
    "INSERT INTO wallets (id, agent_id, venue, host_slot, chain, address, owner_id, deleted_at,"
    " created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, to_timestamp($8), now())"
    " ON CONFLICT (id) DO UPDATE SET agent_id = EXCLUDED.agent_id,"
    " deleted_at = EXCLUDED.deleted_at"
)
"""A wallet's row after it was linked to its agent or deleted."""
INSERT_TRADE = (
    "INSERT INTO trades (intent_id, agent_id, wallet_id, position_id, side, token, base_amount,"
    " quote_amount, price, fee, network_fee, reason, ts)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, to_timestamp($13))"
    " ON CONFLICT (intent_id) DO NOTHING"
)

MAX_RECENT_FINISHED = 1_000
"""Finished intents kept in memory (and snapshots); older ones are in ``wallet_intents``."""


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
        self.finished: dict[str, dict[str, Any]] = {}  # recent: intent_id -> OrderResult dict
        # Custody (chains): where the wallet lives, its key encrypted at rest (ciphertext,
        # salt and KDF parameters only: custody.keys), its spend policy and today's buys.
        self.chain = "paper"
        self.address = ""
        self.key: dict[str, Any] | None = None
        self.policy: dict[str, Any] | None = None
        self.spent_day = ""
        self.spent = Decimal(0)
        self.deleted = False
        self.owner: str | None = None  # the user a wallet made on its own belongs to

    # -- queries -----

    def snapshot_weight(self) -> int:
        return len(self.balances) + len(self.pending) + len(self.finished)

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
            "id": self.id,
            "wallet_id": self.id,
            "agent_id": self.agent_id or None,
            "venue": self.venue,
            "chain": self.chain,
            "address": self.address,
            "quote_asset": self.quote_asset,
            "balances": {asset: str(amount) for asset, amount in sorted(self.balances.items())},
            "pending_intents": sorted(self.pending),
            "policy": self.policy,
            "spent_today": {"day": self.spent_day, "amount": str(self.spent)},
            "deleted": self.deleted,
        }

    def holds_tokens(self) -> bool:
        """Whether any token other than the quote asset is held (positions are open)."""
        return any(a != self.quote_asset and v != 0 for a, v in self.balances.items())

    def spent_on(self, day: str) -> Decimal:
        """Quote spent on buys signed on the UTC ``day`` (for the daily limit)."""
        return self.spent if day == self.spent_day else Decimal(0)

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
                "reference_ts": order.reference_ts,
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
            self.chain = data.get("chain", "paper")
            self.address = data.get("address", "")
            self.key = data.get("key")
            self.owner = data.get("owner")
        elif event_type == "wallet_linked":
            self.agent_id = data["agent_id"]
        elif event_type == "intent_submitted":
            self.pending[data["intent_id"]] = data
            if data["side"] == "buy":
                day = utc_day(data["submitted_at"])
                self.spent = self.spent_on(day) + data["amount"]
                self.spent_day = day
        elif event_type in ("intent_filled", "intent_failed"):
            intent = self.pending.pop(data["intent_id"], None)
            if intent is None:
                return
            failed_buy = event_type == "intent_failed" and intent["side"] == "buy"
            if failed_buy and utc_day(intent["submitted_at"]) == self.spent_day:
                self.spent -= intent["amount"]  # nothing was spent
            self._finish(data)
        elif event_type == "intent_voided":
            self._finish(voided_result(data).as_dict())
        elif event_type == "attempt_signed":
            intent = self.pending.get(data["intent_id"])
            if intent is not None:
                intent["attempts"] = [*intent.get("attempts", []), data["attempt"]]
        elif event_type == "policy_set":
            self.policy = data["policy"]
        elif event_type == "wallet_deleted":
            self.deleted = True
        elif event_type not in ("deposited", "key_exported"):
            raise ValueError(f"unknown wallet event {event_type}")

    def _finish(self, result: dict[str, Any]) -> None:
        self.finished[result["intent_id"]] = result
        while len(self.finished) > MAX_RECENT_FINISHED:
            self.finished.pop(next(iter(self.finished)))

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
            if event_type == "intent_failed" and data.get("network_fee"):
                add(self.quote_asset, -data["network_fee"])  # landed, failed, paid its fee
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
                    (
                        self.id,
                        data["agent_id"],
                        data["venue"],
                        data["host_slot"],
                        data["ts"],
                        data.get("chain", "paper"),
                        data.get("address") or None,
                        data.get("owner"),
                    ),
                )
            )
        elif event_type in ("wallet_linked", "wallet_deleted"):
            agent_id = data["agent_id"] if event_type == "wallet_linked" else self.agent_id
            deleted_at = data["ts"] if event_type == "wallet_deleted" else None
            row = (self.id, agent_id, self.venue, self.host_slot, self.chain,
                   self.address or None, self.owner, deleted_at)  # fmt: skip
            out.append(RowWrite(UPDATE_WALLET, ("wallets", self.id), row))
        elif event_type == "intent_submitted":
            out.append(self._intent_row(data, OrderResult(data["intent_id"], "pending")))
        elif event_type in ("intent_filled", "intent_failed"):
            intent = self.pending.get(data["intent_id"])
            if intent is not None:
                if event_type == "intent_filled":
                    out.append(_trade_row(self.id, intent, data))
                out.append(self._intent_row(intent, OrderResult.from_dict(data)))
        elif event_type == "intent_voided":
            result = voided_result(data)
            out.append(self._intent_row({**data, "side": "buy", "token": ""}, result, "voided"))
        for asset, delta in sorted(self._deltas(event_type, data).items()):
            if delta:
                out.append(
                    RowWrite(
                        ADD_BALANCE, ("balances", self.id, asset), (self.id, asset, delta), True
                    )
                )
        return out

    def _intent_row(
        self, intent: dict[str, Any], result: OrderResult, state: str | None = None
    ) -> RowWrite:
        return RowWrite(
            UPSERT_INTENT,
            ("wallet_intents", result.intent_id),
            (
                result.intent_id,
                self.id,
                intent["side"],
                intent["token"],
                state or result.state,
                result.base_amount,
                result.quote_amount,
                result.price,
                result.fee,
                result.network_fee,
                result.reason,
                result.ts,
            ),
        )

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
            "chain": self.chain,
            "address": self.address,
            "key": self.key,
            "policy": self.policy,
            "spent_day": self.spent_day,
            "spent": self.spent,
            "deleted": self.deleted,
            "owner": self.owner,
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
        # absent from snapshots taken before wallets had custody
        self.chain = state.get("chain", "paper")
        self.address = state.get("address", "")
        self.key = state.get("key")
        self.policy = state.get("policy")
        self.spent_day = state.get("spent_day", "")
        self.spent = state.get("spent", Decimal(0))
        self.deleted = state.get("deleted", False)
        self.owner = state.get("owner")


def voided_result(data: dict[str, Any]) -> OrderResult:
    """The answer for an intent that was voided before it ever reached this wallet."""
    return OrderResult(
        data["intent_id"], "failed", reason=f"voided: {data['reason']}", ts=data["ts"]
    )


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
