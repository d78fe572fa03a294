"""Messages that cross actor boundaries (pickled by Ray).

Frozen dataclasses with slots: cheap to pickle, impossible to mutate by accident
after they were sent. Money is Decimal; prices that feed the numpy evaluation
arrays are float.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

_NAMESPACE = uuid.UUID("5a1c7e2e-9b1f-4d0e-8a57-76616c757821")


def intent_id_for(kind: str, *parts: str) -> str:
    """A deterministic order-intent id: the same decision always gets the same id.

    ``buy`` intents derive from (signal, agent), ``sale`` intents from the
    position, so a retried decision can never become a second order. The parts
    are encoded as a JSON array, so no choice of ids can make two different
    decisions collide (``("tv:123", "alice")`` and ``("tv", "123:alice")`` once
    joined to the same ``tv:123:alice``). Ids already in a journal are data and
    are never recomputed, so journals written with the old encoding replay as
    they are.
    """
    encoded = json.dumps([kind, *parts], ensure_ascii=False, separators=(",", ":"))
    return str(uuid.uuid5(_NAMESPACE, encoded))


@dataclass(frozen=True, slots=True)
class TokenMetricsIn:
    market_cap: float | None = None
    liquidity: float | None = None
    holder_count: int | None = None


@dataclass(frozen=True, slots=True)
class Signal:
    """A trading signal as the agents see it."""

    id: str
    token: str
    strength: int
    type: str
    size: Decimal | None = None
    metrics: TokenMetricsIn | None = None
    agents: tuple[str, ...] | None = None
    received_at: float = 0.0


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """An order intent an agent asks its wallet to execute (idempotent by ``intent_id``)."""

    intent_id: str
    wallet_id: str
    agent_id: str
    position_id: str
    side: str  # "buy" | "sell"
    token: str
    amount: Decimal  # buy: quote to spend incl. fees; sell: tokens
    reason: str
    reference_price: float | None = None
    reference_ts: float | None = None


@dataclass(frozen=True, slots=True)
class OrderResult:
    """The wallet's answer: a final state, or ``pending`` / ``unknown`` while unresolved."""

    intent_id: str
    state: str  # filled | failed | pending | unknown
    base_amount: Decimal = Decimal(0)
    quote_amount: Decimal = Decimal(0)
    price: Decimal = Decimal(0)
    fee: Decimal = Decimal(0)
    network_fee: Decimal = Decimal(0)
    reason: str | None = None
    ts: float = 0.0
    tx_id: str | None = None
    """On a chain: the transaction that did it (a Solana signature)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "tx_id": self.tx_id,
            "intent_id": self.intent_id,
            "state": self.state,
            "base_amount": self.base_amount,
            "quote_amount": self.quote_amount,
            "price": self.price,
            "fee": self.fee,
            "network_fee": self.network_fee,
            "reason": self.reason,
            "ts": self.ts,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OrderResult:
        return cls(**data)


@dataclass(frozen=True, slots=True)
class ExitRequest:
    """An evaluator (or a user) asks an agent to close a position entirely."""

    agent_id: str
    position_id: str
    token: str
    reason: str  # stop_loss | manual | ...
    price: float | None = None
    ts: float = 0.0
    detected_at: float = 0.0  # wall time the tick entered its feed, for tick->exit latency
    details: dict[str, Any] = field(default_factory=dict)
