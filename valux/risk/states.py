"""Trading states, as NautilusTrader's: what an agent may do, per agent and globally.

- ``ACTIVE``: normal trading.
- ``REDUCING``: no entries (signals buy nothing, DCA buys nothing); every exit runs —
  stop loss, trailing stop, take profit, stale trade, manual close. What ``pause`` means.
- ``HALTED``: nothing runs, exits included (the reference engine's ORCH-2 pause, chosen
  explicitly); ``/health/ready`` lists the positions this leaves unprotected.

An agent's *effective* state is the most restrictive of its own state, the global state,
and the system's own reasons to hold entries (quarantine after repeated failures, the
safe state after an escalation). Each contributes a reason, and the strictest wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["ACTIVE", "HALTED", "REDUCING", "Effective", "TradingState", "effective_state"]


class TradingState(StrEnum):
    """What an agent may do (see the module docstring)."""

    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"
    HALTED = "HALTED"

    @property
    def rank(self) -> int:
        """Strictness: ACTIVE 0 < REDUCING 1 < HALTED 2."""
        return _RANK[self]

    @property
    def allows_entries(self) -> bool:
        return self is TradingState.ACTIVE

    @property
    def allows_exits(self) -> bool:
        return self is not TradingState.HALTED

    @classmethod
    def parse(cls, value: str) -> TradingState:
        """``active`` / ``REDUCING`` / …, case-insensitive; ``ValueError`` names the choices."""
        try:
            return cls(value.upper())
        except ValueError:
            choices = ", ".join(s.value for s in cls)
            raise ValueError(f"unknown trading state {value!r}; one of {choices}") from None


ACTIVE = TradingState.ACTIVE
REDUCING = TradingState.REDUCING
HALTED = TradingState.HALTED
_RANK = {ACTIVE: 0, REDUCING: 1, HALTED: 2}


@dataclass(frozen=True, slots=True)
class Effective:
    """The state that applies, and why (``None`` when ACTIVE)."""

    state: TradingState
    reason: str | None = None


def effective_state(*contributions: tuple[TradingState, str | None]) -> Effective:
    """The strictest of ``(state, reason)`` contributions; the first one wins a tie."""
    best = Effective(ACTIVE)
    for state, reason in contributions:
        if state.rank > best.state.rank:
            best = Effective(state, reason)
    return best
