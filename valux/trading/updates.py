"""What the agent hosts publish for WebSocket clients (best effort, through Redis)."""

from __future__ import annotations

from typing import Any

from valux.schema.messages import OrderResult
from valux.trading.agent import Agent


def position_message(agent: Agent, position: dict[str, Any], event: str) -> dict[str, Any]:
    return {
        "type": "position",
        "event": event,
        "agent_id": agent.id,
        "position_id": position["id"],
        "token": position["token"],
        "status": position.get("status", "open"),
        "amount": str(position["amount"]),
        "purchase_price": str(position["purchase_price"]),
        "realized_pnl": None
        if position.get("realized_pnl") is None
        else str(position["realized_pnl"]),
        "exit_reason": position.get("exit_reason"),
    }


def trade_message(
    agent: Agent, position: dict[str, Any], result: OrderResult, side: str
) -> dict[str, Any]:
    return {
        "type": "trade",
        "agent_id": agent.id,
        "position_id": position["id"],
        "intent_id": result.intent_id,
        "token": position["token"],
        "side": side,
        "amount": str(result.base_amount),
        "price": str(result.price),
        "quote_amount": str(result.quote_amount),
        "ts": result.ts,
    }
