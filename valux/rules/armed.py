"""What an evaluator arms for one position: the stop-loss and exit-detection parameters.

Pure data shared by the rules that build them (:func:`valux.rules.orchestration.arm_params`)
and the vectorised book that evaluates them (:mod:`valux.evaluation.book`), so the book
depends on the rules and never the other way round.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Final

from valux.rules.stop_loss import StopLossParams

__all__ = ["EXIT_REASONS", "ArmedPosition", "ExitParams", "exit_reason"]

#: The non-stop exit reasons, in ORCH-3 order (index = the reason code in the arrays).
EXIT_REASONS: Final = ("take_profit", "stale_trade", "dca")


@dataclass(frozen=True, slots=True)
class ExitParams:
    """What the vectorised pass needs to detect take-profit, stale-trade and DCA ticks.

    Built by :func:`valux.rules.orchestration.arm_params` from the position's
    state and config; the defaults disable each rule.

    - ``tp_target`` / ``tp_ceiling``: take profit acts at gains in
      ``[tp_target, tp_ceiling)`` (``tp_target`` = +inf: never; the ceiling is
      +inf except in the rare reference-quirk case of
      :func:`valux.rules.take_profit.trigger_band`).
    - ``stale_after_ts``: the stale-trade rule applies from this time (+inf:
      disabled); it fires for gains in ``[stale_min, stale_max]``.
    - ``dca_drop``: DCA buys at gains ≤ this (−inf: never); ``dca_ready_ts``:
      not before this time (the cooldown's end, −inf without cooldown).

    NaN is rejected (``ValueError``).
    """

    tp_target: float = math.inf
    stale_after_ts: float = math.inf
    stale_min: float = -math.inf
    stale_max: float = math.inf
    dca_drop: float = -math.inf
    dca_ready_ts: float = -math.inf
    tp_ceiling: float = math.inf

    def __post_init__(self) -> None:
        for f in fields(self):
            if math.isnan(getattr(self, f.name)):
                raise ValueError(f"ExitParams.{f.name} must not be NaN")


def exit_reason(exits: ExitParams, purchase_price: float, price: float, ts: float) -> str | None:
    """The scalar statement of the book's exit detection (module docstring): the first
    of ``take_profit``, ``stale_trade``, ``dca`` whose condition holds at ``(price,
    ts)``, or None. The book evaluates exactly these double operations, vectorised."""
    if not purchase_price > 0:
        return None
    gain = (price - purchase_price) / purchase_price * 100
    if exits.tp_target <= gain < exits.tp_ceiling:
        return EXIT_REASONS[0]
    if ts >= exits.stale_after_ts and exits.stale_min <= gain <= exits.stale_max:
        return EXIT_REASONS[1]
    if ts >= exits.dca_ready_ts and gain <= exits.dca_drop:
        return EXIT_REASONS[2]
    return None


@dataclass(frozen=True, slots=True)
class ArmedPosition:
    """One open position as the evaluator arms it.

    ``peak`` and ``stop_pct`` are the stored stop-loss state (restored from
    the journal); both ``None`` means a fresh position and SL-1 applies.
    ``exits``: the take-profit / stale-trade / DCA detection parameters
    (``None``: the stop loss alone). Non-finite prices or state are rejected
    (``ValueError``): the journal never stores them, so seeing one is a bug
    upstream.
    """

    position_id: str
    agent_id: str
    host: int
    token: str
    purchase_price: float
    stop: StopLossParams
    peak: float | None = None
    stop_pct: float | None = None
    exits: ExitParams | None = None

    def __post_init__(self) -> None:
        if not math.isfinite(self.purchase_price):
            raise ValueError(f"{self.position_id}: purchase_price must be finite")
        for name in ("peak", "stop_pct"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{self.position_id}: {name} must be finite or None")
        if not _finite_params(self.stop):
            raise ValueError(f"{self.position_id}: stop-loss parameters must be finite")


# Params objects already checked finite, by identity (the object is kept alive so its
# id is not reused). Agents share one params object per config, and a custom ladder can
# have thousands of levels: checking them on every arm would dominate arming.
_CHECKED_PARAMS: dict[int, StopLossParams] = {}
_CHECKED_LIMIT: Final = 4096


def _finite_params(params: StopLossParams) -> bool:
    if _CHECKED_PARAMS.get(id(params)) is params:
        return True
    ok = math.isfinite(params.default_percentage) and all(
        math.isfinite(c) and math.isfinite(s) for c, s in params.trailing_levels
    )
    if ok:
        if len(_CHECKED_PARAMS) >= _CHECKED_LIMIT:
            _CHECKED_PARAMS.clear()
        _CHECKED_PARAMS[id(params)] = params
    return ok
