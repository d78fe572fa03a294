"""Signal eligibility: may this agent act on this signal? (reference §11, EL-1..EL-8).

Scoping a signal to its user's active agents (EL-0) and de-duplicating
(signal, agent) pairs (EL-8) belong to the caller; this module decides for one
agent.

EL-7: every check is evaluated and any failure makes the agent ineligible.
:func:`ineligibility_reasons` returns all failures in the reference's order;
:func:`ineligibility_reason` joins them with "; " into one string — exactly
what the reference logs — or returns None when the agent is eligible. As in the
reference, a paused agent (EL-1) or a missing config (EL-2) is reported alone,
and the metric bounds (EL-6) contribute at most their first failure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from valux.rules.config import AgentConfig, SignalFilters

__all__ = ["TokenMetrics", "ineligibility_reason", "ineligibility_reasons", "is_eligible"]


@dataclass(frozen=True)
class TokenMetrics:
    """Token metrics fetched once per signal (EL-0); any of them may be unknown."""

    market_cap: float | None
    liquidity: float | None
    holder_count: int | None


#: EL-6 order: (bound field, metric attribute, human name, is it a minimum?).
_BOUNDS: Final = (
    ("market_cap_min", "market_cap", "market cap", True),
    ("market_cap_max", "market_cap", "market cap", False),
    ("liquidity_min", "liquidity", "liquidity", True),
    ("liquidity_max", "liquidity", "liquidity", False),
    ("holder_count_min", "holder_count", "holder count", True),
    ("holder_count_max", "holder_count", "holder count", False),
)


def ineligibility_reasons(
    config: AgentConfig | None,
    *,
    paused: bool,
    strength: int,
    signal_type: str,
    token: str,
    metrics: TokenMetrics | None,
) -> list[str]:
    """Every reason (EL-1..EL-6, in order) why the agent may not act; empty if eligible."""
    if paused:  # EL-1
        return ["automated trading is paused"]
    if config is None:  # EL-2
        return ["no config"]
    signals = config.signals
    reasons = []
    if strength < signals.min_score:  # EL-3: equality passes
        reasons.append(f"score {strength} below minimum {signals.min_score}")
    allowed = signals.allowed_signal_types
    if allowed and signal_type not in allowed:  # EL-4: exact, case-sensitive
        reasons.append(f"signal type {signal_type!r} not in allowed types [{', '.join(allowed)}]")
    token_reason = _token_filter_reason(signals, token)  # EL-5
    if token_reason is not None:
        reasons.append(token_reason)
    metric_reason = _metric_reason(signals, metrics)  # EL-6
    if metric_reason is not None:
        reasons.append(metric_reason)
    return reasons


def ineligibility_reason(
    config: AgentConfig | None,
    *,
    paused: bool,
    strength: int,
    signal_type: str,
    token: str,
    metrics: TokenMetrics | None,
) -> str | None:
    """None if the agent is eligible (EL-7), else every failing rule joined with "; "."""
    reasons = ineligibility_reasons(
        config,
        paused=paused,
        strength=strength,
        signal_type=signal_type,
        token=token,
        metrics=metrics,
    )
    return "; ".join(reasons) if reasons else None


def is_eligible(
    config: AgentConfig | None,
    *,
    paused: bool,
    strength: int,
    signal_type: str,
    token: str,
    metrics: TokenMetrics | None,
) -> bool:
    """EL-7: eligible iff no check fails."""
    return not ineligibility_reasons(
        config,
        paused=paused,
        strength=strength,
        signal_type=signal_type,
        token=token,
        metrics=metrics,
    )


def _token_filter_reason(signals: SignalFilters, token: str) -> str | None:
    """EL-5: blacklist rejects listed tokens, whitelist rejects unlisted ones (exact match)."""
    if signals.token_filter_mode == "blacklist" and token in signals.token_list:
        return f"token {token} is blacklisted"
    if signals.token_filter_mode == "whitelist" and token not in signals.token_list:
        return f"token {token} not in whitelist"
    return None


def _metric_reason(signals: SignalFilters, metrics: TokenMetrics | None) -> str | None:
    """EL-6: only with a bound set; unknown metrics fail; bounds are inclusive."""
    if not signals.has_metric_bounds:
        return None
    if metrics is None:
        return "token metrics unavailable and the agent has metric bounds"
    for bound_name, metric_name, label, is_minimum in _BOUNDS:
        bound = getattr(signals, bound_name)
        if bound is None:
            continue
        value = getattr(metrics, metric_name)
        kind = "minimum" if is_minimum else "maximum"
        if value is None:
            return f"{label} unknown and the agent requires a {kind}"
        if (value < bound) if is_minimum else (value > bound):
            side = "below" if is_minimum else "above"
            return f"{label} {_number(value)} {side} {kind} {_number(bound)}"
    return None


def _number(value: float) -> str:
    """``1500000.0`` → ``1500000``; other values as Python writes them."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value)
