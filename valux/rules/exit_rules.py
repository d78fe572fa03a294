"""What an evaluator arms for one position, as a JSON document (the ``exit_rules`` column).

The agent computes it from its config and the position's rule state
(:class:`~valux.rules.position.PositionState`); the evaluator turns it back into
:class:`~valux.evaluation.book.ArmedPosition` parameters, both when the agent arms a
position and when an evaluator re-arms every open position from PostgreSQL after a
restart. One document, two readers, so the re-armed book is exactly the armed one.

JSON (and PostgreSQL's ``jsonb``) has no infinities, and the exit parameters use
them for "never": they are stored as the strings ``"inf"`` / ``"-inf"``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, replace
from decimal import Decimal
from typing import Any

from valux.rules.armed import ExitParams
from valux.rules.config import AgentConfig
from valux.rules.orchestration import arm_params, exits_can_act, tracks_position
from valux.rules.position import PositionState, open_position
from valux.rules.stop_loss import StopLossParams

__all__ = [
    "decode_exits",
    "encode_exits",
    "exit_rules",
    "position_state",
    "stop_params",
    "without_entries",
]


def _encode(value: float) -> float | str:
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def encode_exits(exits: ExitParams | None) -> dict[str, float | str] | None:
    """``ExitParams`` as JSON-safe values (``None`` stays ``None``: stop loss alone)."""
    if exits is None:
        return None
    return {name: _encode(value) for name, value in asdict(exits).items()}


def decode_exits(doc: dict[str, Any] | None) -> ExitParams | None:
    """Inverse of :func:`encode_exits`."""
    if not doc:
        return None
    return ExitParams(**{name: float(value) for name, value in doc.items()})


def exit_rules(config: AgentConfig, state: PositionState | None = None) -> dict[str, Any]:
    """The stop-loss parameters of ``config`` and, for ``state``, the take-profit /
    stale-trade / DCA detection parameters (``exits``; ``None`` when none can act)."""
    sl = config.stop_loss
    exits = None
    if state is not None and tracks_position(config):  # ORCH-4: else no per-tick rule runs
        params = arm_params(state, config, 0.0)
        exits = params if exits_can_act(params) else None
    return {
        "stop_loss": {
            "enabled": sl.enabled,
            "default_percentage": float(sl.default_percentage),
            "mode": sl.mode,
            "trailing_levels": [
                [float(lv.change), float(lv.stop_loss)] for lv in sl.trailing_levels
            ],
            "trailing_percentage": float(sl.trailing_percentage or 0.0),
            "activation_percentage": float(sl.activation_percentage),
        },
        "exits": encode_exits(exits),
    }


def without_entries(rules: dict[str, Any]) -> dict[str, Any]:
    """``rules`` with DCA switched off: what an agent that takes no entries (REDUCING)
    arms, so a DCA threshold does not trigger a buy it would refuse."""
    exits = decode_exits(rules.get("exits"))
    if exits is None or exits.dca_drop == -math.inf:
        return rules
    trimmed = replace(exits, dca_drop=-math.inf, dca_ready_ts=-math.inf)
    return {**rules, "exits": encode_exits(trimmed) if exits_can_act(trimmed) else None}


def stop_params(rules: dict[str, Any]) -> StopLossParams:
    """The stop-loss parameters of an ``exit_rules`` document."""
    sl = rules["stop_loss"]
    return StopLossParams(
        enabled=bool(sl["enabled"]),
        default_percentage=float(sl["default_percentage"]),
        mode=str(sl["mode"]),
        trailing_levels=tuple((float(c), float(s)) for c, s in sl["trailing_levels"]),
        # absent from documents written before the trailing mode existed
        trailing_percentage=float(sl.get("trailing_percentage") or 0.0),
        activation_percentage=float(sl.get("activation_percentage") or 0.0),
    )


def position_state(position: dict[str, Any]) -> PositionState:
    """The rule state of an open position of the agent (built from the opening fill
    for a position journaled before rule state was kept)."""
    stored = position.get("state")
    if stored is not None:
        return PositionState.from_dict(stored)
    return open_position(
        purchase_price=Decimal(position["purchase_price"]),
        amount=Decimal(position["amount"]),
        total_invested=Decimal(position["invested"]),
        created_at=float(position["opened_at"]),
    )
