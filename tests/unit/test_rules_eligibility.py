"""Signal eligibility of one agent (reference §11, EL-1..EL-7)."""

from __future__ import annotations

from typing import Any

import pytest

from valux.rules.config import AgentConfig, load_agent_config
from valux.rules.eligibility import (
    TokenMetrics,
    ineligibility_reason,
    ineligibility_reasons,
    is_eligible,
)

TOKEN = "TokenMint1111111111111111111111111111111111"
OTHER = "OtherMint1111111111111111111111111111111111"
METRICS = TokenMetrics(market_cap=1_000_000.0, liquidity=50_000.0, holder_count=300)


def reason(config: AgentConfig | None, **signal: Any) -> str | None:
    """ineligibility_reason for a default, passing signal with some fields overridden."""
    fields: dict[str, Any] = {
        "paused": False,
        "strength": 3,
        "signal_type": "Hypersurge",
        "token": TOKEN,
        "metrics": METRICS,
    }
    fields.update(signal)
    return ineligibility_reason(config, **fields)


def signals(**fields: Any) -> AgentConfig:
    return load_agent_config({"signals": fields})


def test_el_defaults_accept_every_signal() -> None:
    """With the CFG-1 defaults every signal is eligible, with or without metrics."""
    assert reason(AgentConfig.defaults()) is None
    assert reason(AgentConfig.defaults(), metrics=None, strength=1) is None
    assert is_eligible(
        AgentConfig.defaults(),
        paused=False,
        strength=1,
        signal_type="x",
        token=TOKEN,
        metrics=None,
    )


def test_el1_paused_agent_is_not_eligible_and_nothing_else_is_checked() -> None:
    """EL-1: a paused agent is ineligible; the reference stops there."""
    assert reason(signals(minScore=5), paused=True, strength=1) == "automated trading is paused"


def test_el2_agent_without_config_is_not_eligible() -> None:
    """EL-2: no config → not eligible."""
    assert reason(None) == "no config"


def test_el3_score_below_minimum_fails_and_equality_passes() -> None:
    """EL-3: strength < minScore fails ("score 2 below minimum 3"); strength = minScore passes."""
    cfg = signals(minScore=3)
    assert reason(cfg, strength=2) == "score 2 below minimum 3"
    assert reason(cfg, strength=3) is None


def test_el4_signal_type_filter_is_exact_and_empty_means_all() -> None:
    """EL-4: with allowedSignalTypes set the type must appear exactly (case-sensitive)."""
    cfg = signals(allowedSignalTypes=["Hypersurge", "Pump"])
    assert reason(cfg, signal_type="Pump") is None
    assert reason(cfg, signal_type="pump") == (
        "signal type 'pump' not in allowed types [Hypersurge, Pump]"
    )
    assert reason(signals(allowedSignalTypes=[]), signal_type="anything") is None


def test_el5_blacklist_rejects_listed_tokens() -> None:
    """EL-5 blacklist: a listed token is ineligible, others pass."""
    cfg = signals(tokenFilterMode="blacklist", tokenList=[TOKEN])
    assert reason(cfg) == f"token {TOKEN} is blacklisted"
    assert reason(cfg, token=OTHER) is None


def test_el5_whitelist_rejects_unlisted_tokens_case_sensitively() -> None:
    """EL-5 whitelist: only listed tokens pass; matching is exact and case-sensitive."""
    cfg = signals(tokenFilterMode="whitelist", tokenList=[TOKEN])
    assert reason(cfg) is None
    assert reason(cfg, token=TOKEN.lower()) == f"token {TOKEN.lower()} not in whitelist"


def test_el5_none_mode_ignores_the_token_list() -> None:
    """EL-5 none: no filter, even with tokens listed."""
    assert reason(signals(tokenFilterMode="none", tokenList=[TOKEN])) is None


def test_el6_without_bounds_missing_metrics_do_not_matter() -> None:
    """EL-6 applies only if at least one of the six bounds is set."""
    assert reason(AgentConfig.defaults(), metrics=None) is None


def test_el6_bounds_with_unavailable_metrics_are_not_eligible() -> None:
    """EL-6: bounds set and metrics unavailable (null) → not eligible."""
    assert reason(signals(holderCountMin=1), metrics=None) == (
        "token metrics unavailable and the agent has metric bounds"
    )


def test_el6_a_set_bound_with_an_unknown_metric_fails_but_unbounded_unknowns_pass() -> None:
    """EL-6: a bound whose metric is null fails; a null metric without a bound is fine."""
    metrics = TokenMetrics(market_cap=None, liquidity=10.0, holder_count=None)
    assert reason(signals(liquidityMin=5), metrics=metrics) is None
    assert reason(signals(marketCapMax=5e6), metrics=metrics) == (
        "market cap unknown and the agent requires a maximum"
    )


@pytest.mark.parametrize(
    ("bounds", "expected"),
    [
        ({"marketCapMin": 1_000_000}, None),
        ({"marketCapMin": 1_000_001}, "market cap 1000000 below minimum 1000001"),
        ({"marketCapMax": 1_000_000}, None),
        ({"marketCapMax": 999_999}, "market cap 1000000 above maximum 999999"),
        ({"liquidityMin": 50_000}, None),
        ({"liquidityMin": 50_000.5}, "liquidity 50000 below minimum 50000.5"),
        ({"liquidityMax": 49_999}, "liquidity 50000 above maximum 49999"),
        ({"holderCountMin": 300, "holderCountMax": 300}, None),
        ({"holderCountMin": 301}, "holder count 300 below minimum 301"),
        ({"holderCountMax": 299}, "holder count 300 above maximum 299"),
    ],
)
def test_el6_bounds_are_inclusive(bounds: dict[str, float], expected: str | None) -> None:
    """EL-6: value < min or value > max fails; the bounds themselves pass."""
    assert reason(signals(**bounds)) == expected


def test_el6_only_the_first_failing_bound_is_reported_in_reference_order() -> None:
    """EL-6: bounds are checked marketCapMin, marketCapMax, liquidityMin, … and the first
    failure is the reason."""
    cfg = signals(liquidityMin=60_000, holderCountMax=10, marketCapMax=10)
    assert reason(cfg) == "market cap 1000000 above maximum 10"


def test_el7_every_check_runs_and_all_failures_are_listed_in_order() -> None:
    """EL-7: all checks are evaluated; any failure makes the agent ineligible. The reasons
    come in reference order and ineligibility_reason joins them with "; "."""
    cfg = signals(
        minScore=4,
        allowedSignalTypes=["Pump"],
        tokenFilterMode="blacklist",
        tokenList=[TOKEN],
        holderCountMin=1000,
    )
    fields: dict[str, Any] = {
        "paused": False,
        "strength": 2,
        "signal_type": "Dump",
        "token": TOKEN,
        "metrics": METRICS,
    }
    expected = [
        "score 2 below minimum 4",
        "signal type 'Dump' not in allowed types [Pump]",
        f"token {TOKEN} is blacklisted",
        "holder count 300 below minimum 1000",
    ]
    assert ineligibility_reasons(cfg, **fields) == expected
    assert ineligibility_reason(cfg, **fields) == "; ".join(expected)
    assert not is_eligible(cfg, **fields)
