"""Breakers: conditions that put an agent in REDUCING on their own, evaluated at each close.

All three work on *realized* results, from the journal alone (like Freqtrade's
protections), so a restarted agent decides exactly as before:

- **max drawdown**: equity = the agent's starting capital + its realized P&L; the
  drawdown is how far equity stands below its peak, in percent of the peak;
- **daily loss**: the realized P&L of positions closed on the current UTC day (by close
  time) at or below minus the limit (in the quote asset);
- **loss streak**: that many consecutive closes with a realized loss.

A trip is journaled as a ``trading_state_changed`` to REDUCING with the reason. Setting an
agent ACTIVE again starts the breakers afresh (a new peak at the current equity, streak 0),
so a resumed agent is not tripped at once by the losses that tripped it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

__all__ = ["BreakerLimits", "RiskStats", "tripped"]

_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class BreakerLimits:
    """The agent's limits; ``None`` switches a breaker off."""

    max_drawdown_percent: float | None = None
    daily_loss_limit: Decimal | None = None
    max_loss_streak: int | None = None


@dataclass(frozen=True, slots=True)
class RiskStats:
    """What the breakers fold from the agent's closes."""

    capital: Decimal = _ZERO
    realized: Decimal = _ZERO
    peak: Decimal = _ZERO  # peak of realized (equity = capital + realized)
    day: str = ""
    day_pnl: Decimal = _ZERO
    streak: int = 0

    def after_close(self, realized_pnl: Decimal, closed_at: float) -> RiskStats:
        realized = self.realized + realized_pnl
        day = datetime.fromtimestamp(closed_at, UTC).date().isoformat()
        day_pnl = (self.day_pnl if day == self.day else _ZERO) + realized_pnl
        return replace(
            self,
            realized=realized,
            peak=max(self.peak, realized),
            day=day,
            day_pnl=day_pnl,
            streak=self.streak + 1 if realized_pnl < 0 else 0,
        )

    def reset(self) -> RiskStats:
        """A fresh start at the current equity (an agent set ACTIVE again)."""
        return replace(self, peak=self.realized, streak=0, day_pnl=_ZERO)

    def to_dict(self) -> dict[str, Any]:
        return {
            "capital": self.capital,
            "realized": self.realized,
            "peak": self.peak,
            "day": self.day,
            "day_pnl": self.day_pnl,
            "streak": self.streak,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RiskStats:
        return cls(**data)

    def view(self) -> dict[str, Any]:
        equity = self.capital + self.realized
        peak = self.capital + self.peak
        drawdown = float((peak - equity) / peak * 100) if peak > 0 else 0.0
        return {
            "equity": str(equity),
            "peak_equity": str(peak),
            "drawdown_percent": round(drawdown, 4),
            "day": self.day,
            "day_realized_pnl": str(self.day_pnl),
            "loss_streak": self.streak,
        }


def tripped(stats: RiskStats, limits: BreakerLimits) -> tuple[str, str] | None:
    """``(breaker, reason)`` of the first limit ``stats`` has reached, or None."""
    equity = stats.capital + stats.realized
    peak = stats.capital + stats.peak
    if limits.max_drawdown_percent is not None and peak > 0:
        drawdown = (peak - equity) / peak * 100
        if drawdown >= Decimal(str(limits.max_drawdown_percent)):
            return (
                "max_drawdown",
                f"breaker max_drawdown: equity {equity} is {drawdown:.2f}% below its peak {peak}"
                f" (limit {limits.max_drawdown_percent}%)",
            )
    if limits.daily_loss_limit is not None and stats.day_pnl <= -limits.daily_loss_limit:
        return (
            "daily_loss",
            f"breaker daily_loss: realized {stats.day_pnl} on {stats.day} UTC"
            f" (limit -{limits.daily_loss_limit})",
        )
    if limits.max_loss_streak is not None and stats.streak >= limits.max_loss_streak:
        return (
            "loss_streak",
            f"breaker loss_streak: {stats.streak} losing closes in a row"
            f" (limit {limits.max_loss_streak})",
        )
    return None
