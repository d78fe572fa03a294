"""Agent trading config: defaults, merging and validation (reference §1–3).

Each test pins one rule of ``agent-rules.md`` (CFG-*, VAL-*, TP-1/TP-2,
DCA-1/DCA-2), including the boundaries the reference calls out.
"""

from __future__ import annotations

import copy
import pickle
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from valux.errors import InvalidRequest
from valux.rules.config import (
    DEFAULT_CONFIG_DOCUMENT,
    AgentConfig,
    DcaConfig,
    DcaLevel,
    MoonBag,
    PurchaseLimits,
    TakeProfitConfig,
    TakeProfitLevel,
    as_decimal,
    dca_levels,
    dca_template,
    load_agent_config,
    merge_config_patch,
    moon_bag_template,
    tp_levels,
    tp_template,
)

TOKEN = "So11111111111111111111111111111111111111112"  # 43 characters


def problems(document: Any) -> dict[str, str]:
    """The field → message map of the InvalidRequest that loading ``document`` raises."""
    with pytest.raises(InvalidRequest) as caught:
        load_agent_config(document)
    assert caught.value.message == "invalid agent config"
    return {error.field: error.message for error in caught.value.errors}


def section(name: str, **fields: Any) -> dict[str, Any]:
    """A stored document with one section partly given."""
    return {name: fields}


# ---------------------------------------------------------------------------
# CFG-1 production defaults
# ---------------------------------------------------------------------------


def test_cfg1_default_document_is_the_reference_production_config() -> None:
    """CFG-1: DEFAULT_CONFIG_DOCUMENT is DEFAULT_TRADING_CONFIG, key for key, camelCase."""
    assert DEFAULT_CONFIG_DOCUMENT == {
        "purchaseLimits": {
            "minimumAgentBalance": 0.5,
            "maxPurchasePerToken": 2.0,
            "maxPriceImpact": 0.05,
        },
        "signals": {
            "minScore": 1,
            "allowedSignalTypes": [],
            "tokenFilterMode": "none",
            "tokenList": [],
        },
        "stopLoss": {
            "enabled": True,
            "defaultPercentage": -32,
            "mode": "fixed",
            "trailingLevels": [],
        },
        "positionCalculator": {
            "solBalanceThresholds": {"minimum": 0.2, "medium": 5, "large": 10},
            "positionSizes": {
                "small": {"min": 0.1, "max": 0.1},
                "medium": {"min": 0.5, "max": 1.0},
                "large": {"min": 1.5, "max": 2.0},
            },
            "randomization": {"enabled": True},
        },
        "staleTrade": {
            "enabled": True,
            "minHoldTimeMinutes": 60,
            "minProfitPercent": 1,
            "maxProfitPercent": 10,
        },
        "dca": {
            "enabled": False,
            "mode": "moderate",
            "levels": [],
            "maxDCACount": 3,
            "cooldownSeconds": 30,
        },
        "takeProfit": {
            "enabled": False,
            "mode": "moderate",
            "levels": [
                {"targetPercent": 50, "sellPercent": 25},
                {"targetPercent": 150, "sellPercent": 25},
                {"targetPercent": 300, "sellPercent": 25},
                {"targetPercent": 400, "sellPercent": 15},
            ],
            "moonBag": {"enabled": True, "triggerPercent": 300, "retainPercent": 10},
        },
    }


def test_cfg1_model_defaults_match_the_document_and_money_is_decimal() -> None:
    """CFG-1: AgentConfig.defaults() carries the production values; SOL money is Decimal."""
    config = AgentConfig.defaults()
    assert config == load_agent_config(DEFAULT_CONFIG_DOCUMENT) == AgentConfig()
    limits = config.purchase_limits
    assert limits.minimum_agent_balance == Decimal("0.5")
    assert limits.max_purchase_per_token == Decimal("2.0")
    assert limits.max_price_impact == 0.05
    thresholds = config.position_calculator.sol_balance_thresholds
    assert (thresholds.minimum, thresholds.medium, thresholds.large) == (
        Decimal("0.2"),
        Decimal("5"),
        Decimal("10"),
    )
    sizes = config.position_calculator.position_sizes
    assert (sizes.small.min, sizes.small.max) == (Decimal("0.1"), Decimal("0.1"))
    assert (sizes.medium.min, sizes.medium.max) == (Decimal("0.5"), Decimal("1.0"))
    assert (sizes.large.min, sizes.large.max) == (Decimal("1.5"), Decimal("2.0"))
    assert config.position_calculator.randomization.enabled is True
    assert config.signals.min_score == 1 and config.signals.token_filter_mode == "none"
    assert not config.signals.has_metric_bounds
    assert config.stop_loss.default_percentage == -32 and config.stop_loss.mode == "fixed"
    assert config.stale_trade.min_hold_time_minutes == 60
    assert (config.stale_trade.min_profit_percent, config.stale_trade.max_profit_percent) == (1, 10)
    assert config.dca.enabled is False and config.dca.max_dca_count == 3
    assert config.dca.cooldown_seconds == 30
    assert [(lv.target_percent, lv.sell_percent) for lv in config.take_profit.levels] == [
        (50, 25),
        (150, 25),
        (300, 25),
        (400, 15),
    ]
    assert config.take_profit.moon_bag == MoonBag(
        enabled=True, trigger_percent=300, retain_percent=10
    )
    assert config.take_profit.allocation_percent == 100
    assert config.engine.reference_quirks is False and config.engine.max_open_positions == 25


def test_config_is_frozen_and_picklable() -> None:
    """Configs are immutable values that can cross a Ray boundary unchanged."""
    config = AgentConfig.defaults()
    with pytest.raises(ValueError, match="frozen"):
        config.dca = DcaConfig()  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(config)) == config


# ---------------------------------------------------------------------------
# CFG-2 merging a stored config with defaults
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("stored", [None, "not an object", [1, 2], 5, True])
def test_cfg2_missing_null_or_non_object_yields_defaults(stored: Any) -> None:
    """CFG-2: a missing, null or non-object stored config gives the defaults."""
    assert load_agent_config(stored) == AgentConfig.defaults()


def test_cfg2_objects_merge_recursively_keeping_default_siblings() -> None:
    """CFG-2: plain objects merge key by key; untouched defaults survive at every depth."""
    config = load_agent_config(
        {
            "positionCalculator": {"positionSizes": {"medium": {"max": 1.2}}},
            "dca": {"enabled": True},
        }
    )
    sizes = config.position_calculator.position_sizes
    assert sizes.medium.min == Decimal("0.5") and sizes.medium.max == Decimal("1.2")
    assert sizes.large.max == Decimal("2.0")
    assert config.dca.enabled is True and config.dca.mode == "moderate"
    assert config.stop_loss == AgentConfig.defaults().stop_loss


def test_cfg2_arrays_replace_the_default_array() -> None:
    """CFG-2: an array never merges element-wise; the stored array replaces the default."""
    config = load_agent_config(
        {"takeProfit": {"levels": [{"targetPercent": 80, "sellPercent": 50}]}}
    )
    assert config.take_profit.levels == (TakeProfitLevel(target_percent=80, sell_percent=50),)


def test_cfg2_null_replaces_and_is_then_validated() -> None:
    """CFG-2: a stored null replaces the default; a null section then fails validation."""
    assert problems({"stopLoss": None}) == {"stop_loss": "must be an object, got null"}


@pytest.mark.parametrize("mode", ["", None])
def test_cfg2_empty_or_null_stop_loss_mode_becomes_fixed(mode: Any) -> None:
    """CFG-2: an empty or missing stopLoss.mode becomes fixed after merging."""
    assert load_agent_config({"stopLoss": {"mode": mode}}).stop_loss.mode == "fixed"


def test_cfg2_legacy_continuous_trailing_is_dropped() -> None:
    """CFG-2: the legacy stopLoss.continuousTrailing key is removed, not rejected."""
    config = load_agent_config({"stopLoss": {"continuousTrailing": True, "mode": "zones"}})
    assert config.stop_loss.mode == "zones"
    assert "continuous_trailing" not in config.to_document()["stop_loss"]


def test_cfg2_snake_case_and_mixed_documents_merge_over_the_camel_defaults() -> None:
    """Keys are normalised before merging, so snake_case (or mixed) documents merge correctly."""
    snake = load_agent_config(
        {"stop_loss": {"default_percentage": -20}, "purchaseLimits": {"max_purchase_per_token": 1}}
    )
    assert snake.stop_loss.default_percentage == -20
    assert snake.stop_loss.mode == "fixed"  # the default sibling survived the merge
    assert snake.purchase_limits.max_purchase_per_token == Decimal("1")
    assert snake.purchase_limits.minimum_agent_balance == Decimal("0.5")


def test_cfg2_same_key_in_both_spellings_with_different_values_is_rejected() -> None:
    """An ambiguous document (minScore and min_score disagreeing) is an error, not a guess."""
    assert "signals.min_score" in problems({"signals": {"minScore": 2, "min_score": 3}})
    assert load_agent_config({"signals": {"minScore": 2, "min_score": 2}}).signals.min_score == 2


def test_cfg2_stored_document_is_not_mutated() -> None:
    """Loading deep-copies: neither the stored document nor the defaults change."""
    stored = {"takeProfit": {"levels": [{"targetPercent": 80, "sellPercent": 50}]}}
    before = copy.deepcopy(stored)
    defaults_before = copy.deepcopy(DEFAULT_CONFIG_DOCUMENT)
    load_agent_config(stored)
    assert stored == before and defaults_before == DEFAULT_CONFIG_DOCUMENT


# ---------------------------------------------------------------------------
# CFG-3 partial update
# ---------------------------------------------------------------------------


def test_cfg3_patch_deep_merges_and_arrays_replace() -> None:
    """CFG-3: a patch deep-merges into the current config; arrays replace."""
    current = load_agent_config({"signals": {"allowedSignalTypes": ["a", "b"], "minScore": 3}})
    patched = merge_config_patch(current, {"signals": {"allowedSignalTypes": ["c"]}})
    assert patched.signals.allowed_signal_types == ("c",)
    assert patched.signals.min_score == 3


def test_cfg3_explicit_null_clears_each_signal_metric_bound() -> None:
    """CFG-3: an explicit null for any of the six signal metric bounds clears it."""
    bounds = {
        "marketCapMin": 1.0,
        "marketCapMax": 2.0,
        "liquidityMin": 3.0,
        "liquidityMax": 4.0,
        "holderCountMin": 5,
        "holderCountMax": 6,
    }
    current = load_agent_config({"signals": bounds})
    assert current.signals.has_metric_bounds
    cleared = merge_config_patch(current, {"signals": dict.fromkeys(bounds)})
    assert not cleared.signals.has_metric_bounds
    assert cleared.signals.market_cap_min is None and cleared.signals.holder_count_max is None
    assert "market_cap_min" not in cleared.to_document()["signals"]


def test_cfg3_null_max_price_impact_disables_the_check_and_survives_a_round_trip() -> None:
    """A null maxPriceImpact unsets it (PS-9 off); documents keep the null so reloading
    does not merge the default 0.05 back in."""
    patched = merge_config_patch(
        AgentConfig.defaults(), {"purchaseLimits": {"maxPriceImpact": None}}
    )
    assert patched.purchase_limits.max_price_impact is None
    for style in ("camel", "snake"):
        document = patched.to_document(style)
        assert load_agent_config(document) == patched


def test_cfg3_invalid_patch_is_rejected_with_every_problem() -> None:
    """CFG-3: the merged result is validated; the current config is left as it was."""
    current = AgentConfig.defaults()
    with pytest.raises(InvalidRequest) as caught:
        merge_config_patch(current, {"signals": {"minScore": 9}, "dca": {"maxDCACount": 0}})
    assert {e.field for e in caught.value.errors} == {"signals.min_score", "dca.max_dca_count"}
    assert current == AgentConfig.defaults()


def test_cfg3_patch_can_switch_engine_options() -> None:
    """The valux-only engine section merges like any other section."""
    patched = merge_config_patch(AgentConfig.defaults(), {"engine": {"referenceQuirks": True}})
    assert patched.engine.reference_quirks is True
    assert patched.engine.max_open_positions == 25


# ---------------------------------------------------------------------------
# VAL-0 shape and unknown keys
# ---------------------------------------------------------------------------


def test_val0_unknown_keys_are_ignored_and_kept_out_of_the_model() -> None:
    """VAL-0: unknown keys (anywhere) are ignored, and do not appear in the output."""
    config = load_agent_config(
        {"autoTrade": {"enabled": True}, "signals": {"colour": "red"}, "extra": 1}
    )
    assert config == AgentConfig.defaults()
    document = config.to_document("camel")
    assert "autoTrade" not in document and "colour" not in document["signals"]


def test_val0_sections_must_have_the_right_types() -> None:
    """VAL-0: a section that is not an object, or a field of the wrong type, is an error."""
    found = problems(
        {
            "dca": [1],
            "stopLoss": {"enabled": "yes"},
            "signals": {"tokenList": "abc", "minScore": "3"},
        }
    )
    assert found == {
        "dca": "must be an object, got an array",
        "stop_loss.enabled": 'must be true or false, got "yes"',
        "signals.token_list": 'must be an array, got "abc"',
        "signals.min_score": 'must be an integer, got "3"',
    }


def test_val0_booleans_are_not_numbers() -> None:
    """JS numbers and booleans are distinct: true is not 1 for any numeric field."""
    found = problems(
        {"signals": {"minScore": True}, "purchaseLimits": {"maxPurchasePerToken": True}}
    )
    assert set(found) == {"signals.min_score", "purchase_limits.max_purchase_per_token"}


# ---------------------------------------------------------------------------
# VAL-1 purchaseLimits
# ---------------------------------------------------------------------------


def test_val1_minimum_agent_balance_is_at_least_0_1() -> None:
    """VAL-1: minimumAgentBalance ≥ 0.1 (inclusive)."""
    assert load_agent_config(
        section("purchaseLimits", minimumAgentBalance=0.1)
    ).purchase_limits.minimum_agent_balance == Decimal("0.1")
    assert problems(section("purchaseLimits", minimumAgentBalance=0.09999)) == {
        "purchase_limits.minimum_agent_balance": "must be ≥ 0.1, got 0.09999"
    }


def test_val1_max_purchase_per_token_is_positive() -> None:
    """VAL-1: maxPurchasePerToken > 0 (exclusive)."""
    assert problems(section("purchaseLimits", maxPurchasePerToken=0)) == {
        "purchase_limits.max_purchase_per_token": "must be > 0, got 0"
    }
    tiny = load_agent_config(section("purchaseLimits", maxPurchasePerToken=1e-9))
    assert tiny.purchase_limits.max_purchase_per_token == Decimal("1e-09")


@pytest.mark.parametrize("impact", [0, 1, 0.5])
def test_val1_max_price_impact_accepts_the_closed_unit_interval(impact: float) -> None:
    """VAL-1: maxPriceImpact is a fraction in [0, 1], both ends inclusive."""
    config = load_agent_config(section("purchaseLimits", maxPriceImpact=impact))
    assert config.purchase_limits.max_price_impact == impact


@pytest.mark.parametrize("impact", [-0.01, 1.01])
def test_val1_max_price_impact_outside_the_unit_interval_is_rejected(impact: float) -> None:
    """VAL-1: maxPriceImpact outside [0, 1] is rejected."""
    assert list(problems(section("purchaseLimits", maxPriceImpact=impact))) == [
        "purchase_limits.max_price_impact"
    ]


def test_val1_max_price_impact_is_optional() -> None:
    """VAL-1: maxPriceImpact may be unset; absent from a stored config it takes the CFG-2
    default 0.05, and a model built without it in code has it unset."""
    stored = {"purchaseLimits": {"minimumAgentBalance": 0.5, "maxPurchasePerToken": 2.0}}
    assert load_agent_config(stored).purchase_limits.max_price_impact == 0.05
    assert PurchaseLimits(max_price_impact=None).max_price_impact is None


def test_money_is_parsed_from_the_shortest_decimal_string() -> None:
    """Money is Decimal(repr(x)) for a number, the exact string for a string; never a float."""
    config = load_agent_config(
        {
            "purchaseLimits": {"minimumAgentBalance": 0.3, "maxPurchasePerToken": "0.123456789123"},
        }
    )
    assert config.purchase_limits.minimum_agent_balance == Decimal("0.3")
    assert config.purchase_limits.max_purchase_per_token == Decimal("0.123456789123")
    assert as_decimal(0.1) == Decimal("0.1") and as_decimal(3) == Decimal(3)
    assert as_decimal(0.1 + 0.2) == Decimal("0.30000000000000004")  # the double's shortest form
    with pytest.raises(ValueError):
        as_decimal(True)


# ---------------------------------------------------------------------------
# VAL-2 signals
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("score", [1, 5, 3.0])
def test_val2_min_score_integer_1_to_5_accepted(score: float) -> None:
    """VAL-2: minScore is an integer in 1..5 (a whole double such as 3.0 is an integer)."""
    assert load_agent_config(section("signals", minScore=score)).signals.min_score == score


@pytest.mark.parametrize(
    ("score", "message"),
    [(0, "must be ≥ 1, got 0"), (6, "must be ≤ 5, got 6"), (2.5, "must be an integer, got 2.5")],
)
def test_val2_min_score_outside_1_to_5_or_fractional_rejected(score: float, message: str) -> None:
    """VAL-2: minScore 0, 6 or 2.5 is invalid, and the message names the limit."""
    assert problems(section("signals", minScore=score)) == {"signals.min_score": message}


def test_val2_allowed_signal_types_are_1_to_50_characters() -> None:
    """VAL-2: each allowedSignalTypes entry is a string of 1–50 characters."""
    ok = load_agent_config(section("signals", allowedSignalTypes=["x", "y" * 50]))
    assert ok.signals.allowed_signal_types == ("x", "y" * 50)
    assert problems(section("signals", allowedSignalTypes=["", "z" * 51, 7])) == {
        "signals.allowed_signal_types[0]": "must be at least 1 characters long, got 0",
        "signals.allowed_signal_types[1]": "must be at most 50 characters long, got 51",
        "signals.allowed_signal_types[2]": "must be a string, got 7",
    }


def test_val2_token_filter_mode_is_one_of_three() -> None:
    """VAL-2: tokenFilterMode is none, blacklist or whitelist."""
    for mode in ("none", "blacklist", "whitelist"):
        assert (
            load_agent_config(section("signals", tokenFilterMode=mode)).signals.token_filter_mode
            == mode
        )
    assert list(problems(section("signals", tokenFilterMode="greylist"))) == [
        "signals.token_filter_mode"
    ]


def test_val2_token_list_entries_are_32_to_44_characters() -> None:
    """VAL-2: each tokenList entry is 32–44 characters long (both ends inclusive)."""
    ok = load_agent_config(section("signals", tokenList=["a" * 32, "b" * 44, TOKEN]))
    assert len(ok.signals.token_list) == 3
    assert set(problems(section("signals", tokenList=["a" * 31, "b" * 45]))) == {
        "signals.token_list[0]",
        "signals.token_list[1]",
    }


@pytest.mark.parametrize("name", ["marketCapMin", "marketCapMax", "liquidityMin", "liquidityMax"])
def test_val2_market_cap_and_liquidity_bounds_are_positive(name: str) -> None:
    """VAL-2: market cap and liquidity bounds are optional positive numbers (0 is invalid)."""
    assert len(problems(section("signals", **{name: 0}))) == 1
    assert load_agent_config(section("signals", **{name: 0.5})).signals.has_metric_bounds


@pytest.mark.parametrize("name", ["holderCountMin", "holderCountMax"])
def test_val2_holder_bounds_are_integers_at_least_zero(name: str) -> None:
    """VAL-2: holder bounds are optional integers ≥ 0 (0 is valid; -1 and 1.5 are not)."""
    assert load_agent_config(section("signals", **{name: 0})).signals.has_metric_bounds
    assert len(problems(section("signals", **{name: -1}))) == 1
    assert len(problems(section("signals", **{name: 1.5}))) == 1


@pytest.mark.parametrize(
    ("low", "high", "field"),
    [
        ("marketCapMin", "marketCapMax", "signals.market_cap_max"),
        ("liquidityMin", "liquidityMax", "signals.liquidity_max"),
        ("holderCountMin", "holderCountMax", "signals.holder_count_max"),
    ],
)
def test_val2_each_min_must_not_exceed_its_max(low: str, high: str, field: str) -> None:
    """VAL-2: min ≤ max for each pair when both are set; equal is valid."""
    assert load_agent_config(section("signals", **{low: 100, high: 100})).signals.has_metric_bounds
    found = problems(section("signals", **{low: 101, high: 100}))
    assert found == {field: f"must be ≥ {field.split('.')[1][:-3]}min (101), got 100"}


def test_val2_null_metric_bound_means_unset() -> None:
    """VAL-2: metric bounds are optional; null (or absence) means no bound."""
    config = load_agent_config(section("signals", marketCapMin=None, liquidityMax=None))
    assert config.signals.market_cap_min is None and not config.signals.has_metric_bounds


# ---------------------------------------------------------------------------
# VAL-3 stopLoss
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", [-100, 0, -32.5])
def test_val3_default_percentage_in_minus_100_to_0(value: float) -> None:
    """VAL-3: defaultPercentage lies in [-100, 0], both ends inclusive."""
    config = load_agent_config(section("stopLoss", defaultPercentage=value))
    assert config.stop_loss.default_percentage == value


def test_val3_default_percentage_outside_range_names_the_limit() -> None:
    """VAL-3: 5 is above 0 and -100.5 below -100; messages name the limit."""
    assert problems(section("stopLoss", defaultPercentage=5)) == {
        "stop_loss.default_percentage": "must be ≤ 0, got 5"
    }
    assert problems(section("stopLoss", defaultPercentage=-100.5)) == {
        "stop_loss.default_percentage": "must be ≥ -100, got -100.5"
    }


def test_val3_mode_is_one_of_four_or_valux_trailing() -> None:
    """VAL-3: mode is fixed, exponential, zones or custom, or valux's trailing (which needs
    its distance below the peak when enabled); anything else names the mode."""
    for mode in ("fixed", "exponential", "zones"):
        assert load_agent_config(section("stopLoss", mode=mode)).stop_loss.mode == mode
    assert list(problems(section("stopLoss", mode="ratchet"))) == ["stop_loss.mode"]
    assert problems(section("stopLoss", mode="trailing")) == {
        "stop_loss.trailing_percentage": "is required when trailing stop loss is enabled"
    }
    trailing = load_agent_config(
        section("stopLoss", mode="trailing", trailingPercentage=5, activationPercentage=3)
    ).stop_loss
    assert (trailing.trailing_percentage, trailing.activation_percentage) == (5.0, 3.0)
    assert list(problems(section("stopLoss", mode="trailing", trailingPercentage=100))) == [
        "stop_loss.trailing_percentage"
    ]


def test_val3_trailing_level_bounds() -> None:
    """VAL-3: each level has change > 0 and stopLoss in (0, 1000]."""
    ok = load_agent_config(
        section("stopLoss", trailingLevels=[{"change": 0.001, "stopLoss": 1000}])
    )
    assert ok.stop_loss.trailing_levels[0].stop_loss == 1000
    found = problems(
        section(
            "stopLoss",
            trailingLevels=[
                {"change": 0, "stopLoss": 10},
                {"change": 5, "stopLoss": 0},
                {"change": 4, "stopLoss": 1000.5},
            ],
        )
    )
    assert found == {
        "stop_loss.trailing_levels[0].change": "must be > 0, got 0",
        "stop_loss.trailing_levels[1].stop_loss": "must be > 0, got 0",
        "stop_loss.trailing_levels[2].stop_loss": "must be ≤ 1000, got 1000.5",
    }


def test_val3_custom_enabled_needs_a_level_but_disabled_or_preset_may_be_empty() -> None:
    """VAL-3/VAL-8: enabled custom stop loss needs ≥ 1 level; disabled custom and presets don't."""
    assert problems(section("stopLoss", mode="custom", trailingLevels=[])) == {
        "stop_loss.trailing_levels": "must have at least one level when custom stop loss is enabled"
    }
    assert load_agent_config(section("stopLoss", mode="custom", enabled=False)).stop_loss.mode == (
        "custom"
    )
    assert load_agent_config(section("stopLoss", mode="zones")).stop_loss.trailing_levels == ()


def test_val3_custom_levels_strictly_descending_by_change() -> None:
    """VAL-3: custom levels must be strictly descending by change; equal neighbours fail."""
    descending = [{"change": 100, "stopLoss": 60}, {"change": 50, "stopLoss": 30}]
    config = load_agent_config(section("stopLoss", mode="custom", trailingLevels=descending))
    assert [level.change for level in config.stop_loss.trailing_levels] == [100, 50]
    equal = [{"change": 50, "stopLoss": 30}, {"change": 50, "stopLoss": 20}]
    assert problems(section("stopLoss", mode="custom", trailingLevels=equal)) == {
        "stop_loss.trailing_levels[1].change": "must be < 50 (the previous level's change; "
        "custom trailing levels are strictly descending), got 50"
    }


def test_val3_descending_order_applies_in_custom_mode_even_when_disabled() -> None:
    """VAL-3: the order rule is a custom-mode rule, checked whether or not stop loss is on."""
    ascending = [{"change": 10, "stopLoss": 5}, {"change": 20, "stopLoss": 10}]
    found = problems(section("stopLoss", mode="custom", enabled=False, trailingLevels=ascending))
    assert list(found) == ["stop_loss.trailing_levels[1].change"]
    # A non-custom mode ignores the order of its (unused) levels.
    assert load_agent_config(section("stopLoss", mode="fixed", trailingLevels=ascending))


# ---------------------------------------------------------------------------
# VAL-4 positionCalculator
# ---------------------------------------------------------------------------


def test_val4_size_ranges_min_max_non_negative_and_ordered() -> None:
    """VAL-4: each range has min ≥ 0, max ≥ 0, min ≤ max (equal and zero are valid)."""
    ok = load_agent_config(
        {"positionCalculator": {"positionSizes": {"small": {"min": 0, "max": 0}}}}
    )
    assert ok.position_calculator.position_sizes.small.max == 0
    found = problems(
        {
            "positionCalculator": {
                "positionSizes": {"medium": {"min": 2, "max": 1}, "large": {"min": -1}}
            }
        }
    )
    assert found == {
        "position_calculator.position_sizes.medium.min": "must be ≤ max (1), got 2",
        "position_calculator.position_sizes.large.min": "must be ≥ 0, got -1",
    }


def test_val4_thresholds_positive_and_strictly_increasing() -> None:
    """VAL-4: thresholds are positive with minimum < medium < large (equality fails)."""
    assert problems({"positionCalculator": {"solBalanceThresholds": {"minimum": 0}}}) == {
        "position_calculator.sol_balance_thresholds.minimum": "must be > 0, got 0"
    }
    found = problems({"positionCalculator": {"solBalanceThresholds": {"minimum": 5, "large": 5}}})
    assert found == {
        "position_calculator.sol_balance_thresholds.medium": "must be > minimum (5), got 5",
        "position_calculator.sol_balance_thresholds.large": "must be > medium (5), got 5",
    }


# ---------------------------------------------------------------------------
# VAL-5 dca
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [("maxDCACount", 1), ("maxDCACount", 10), ("cooldownSeconds", 10), ("cooldownSeconds", 3600)],
)
def test_val5_count_and_cooldown_bounds_are_inclusive(field: str, value: int) -> None:
    """VAL-5: maxDCACount in 1..10 and cooldownSeconds in 10..3600, ends inclusive."""
    assert load_agent_config(section("dca", **{field: value})).dca.enabled is False


@pytest.mark.parametrize(
    ("field", "value"),
    [("maxDCACount", 0), ("maxDCACount", 11), ("cooldownSeconds", 9.5), ("cooldownSeconds", 3601)],
)
def test_val5_count_and_cooldown_out_of_range_rejected(field: str, value: float) -> None:
    """VAL-5: values just outside the ranges are rejected."""
    assert len(problems(section("dca", **{field: value}))) == 1


def test_val5_level_bounds() -> None:
    """VAL-5: dropPercent in [-99, -1] and buyPercent in [1, 500], ends inclusive."""
    edges = [{"dropPercent": -1, "buyPercent": 1}, {"dropPercent": -99, "buyPercent": 500}]
    assert len(load_agent_config(section("dca", levels=edges)).dca.levels) == 2
    found = problems(
        section(
            "dca",
            levels=[
                {"dropPercent": -0.5, "buyPercent": 0.5},
                {"dropPercent": -99.5, "buyPercent": 501},
            ],
        )
    )
    assert found == {
        "dca.levels[0].drop_percent": "must be ≤ -1, got -0.5",
        "dca.levels[0].buy_percent": "must be ≥ 1, got 0.5",
        "dca.levels[1].drop_percent": "must be ≥ -99, got -99.5",
        "dca.levels[1].buy_percent": "must be ≤ 500, got 501",
    }


def test_val5_custom_enabled_needs_a_level() -> None:
    """VAL-5/VAL-8: enabled custom DCA needs ≥ 1 level; disabled custom may be empty."""
    assert problems(section("dca", mode="custom", enabled=True)) == {
        "dca.levels": "must have at least one level when custom DCA is enabled"
    }
    assert load_agent_config(section("dca", mode="custom", enabled=False)).dca.mode == "custom"


def test_val5_custom_levels_least_negative_first_with_ties_allowed() -> None:
    """VAL-5: custom levels go least negative first; a level may not be greater than the one
    before it, and equal values are allowed."""
    ok = [
        {"dropPercent": -10, "buyPercent": 50},
        {"dropPercent": -10, "buyPercent": 50},
        {"dropPercent": -30, "buyPercent": 100},
    ]
    assert len(load_agent_config(section("dca", mode="custom", levels=ok)).dca.levels) == 3
    wrong = [{"dropPercent": -30, "buyPercent": 50}, {"dropPercent": -20, "buyPercent": 50}]
    assert list(problems(section("dca", mode="custom", levels=wrong))) == [
        "dca.levels[1].drop_percent"
    ]


# ---------------------------------------------------------------------------
# VAL-6 takeProfit
# ---------------------------------------------------------------------------


def _levels(*pairs: tuple[float, float]) -> list[dict[str, float]]:
    return [{"targetPercent": t, "sellPercent": s} for t, s in pairs]


def custom_tp(*pairs: tuple[float, float]) -> dict[str, Any]:
    """A custom take-profit section whose moon bag triggers at the last target (valid)."""
    return section(
        "takeProfit",
        mode="custom",
        levels=_levels(*pairs),
        moonBag={"triggerPercent": max(1, pairs[-1][0])},
    )


def test_val6_at_most_ten_levels_in_any_mode() -> None:
    """VAL-6: at most 10 levels, whatever the mode (10 is fine, 11 is not)."""
    ten = _levels(*((float(i), 1.0) for i in range(1, 11)))
    assert len(load_agent_config(section("takeProfit", levels=ten)).take_profit.levels) == 10
    eleven = _levels(*((float(i), 1.0) for i in range(1, 12)))
    assert problems(section("takeProfit", levels=eleven)) == {
        "take_profit.levels": "must have at most 10 items, got 11"
    }


def test_val6_level_and_moon_bag_bounds() -> None:
    """VAL-6: target in [1, 10000], sell in [1, 100], trigger in [1, 10000], retain in [1, 50]."""
    ok = load_agent_config(
        section(
            "takeProfit",
            levels=_levels((1, 1), (10000, 100)),
            moonBag={"triggerPercent": 10000, "retainPercent": 50},
        )
    )
    assert ok.take_profit.moon_bag.retain_percent == 50
    found = problems(
        section(
            "takeProfit",
            levels=_levels((0.5, 0.5), (10001, 101)),
            moonBag={"triggerPercent": 0, "retainPercent": 51},
        )
    )
    assert found == {
        "take_profit.levels[0].target_percent": "must be ≥ 1, got 0.5",
        "take_profit.levels[0].sell_percent": "must be ≥ 1, got 0.5",
        "take_profit.levels[1].target_percent": "must be ≤ 10000, got 10001",
        "take_profit.levels[1].sell_percent": "must be ≤ 100, got 101",
        "take_profit.moon_bag.trigger_percent": "must be ≥ 1, got 0",
        "take_profit.moon_bag.retain_percent": "must be ≤ 50, got 51",
    }


def test_val6_custom_needs_at_least_one_level_even_when_disabled() -> None:
    """VAL-6: custom mode requires at least one level (enabled or not)."""
    assert problems(section("takeProfit", mode="custom", levels=[])) == {
        "take_profit.levels": "must have at least one level in custom mode"
    }


def test_val6_allocation_of_exactly_100_is_valid() -> None:
    """VAL-6/TP-14: Σ sell + retain (moon bag on) = 100 exactly is valid."""
    config = load_agent_config(custom_tp((50, 45), (100, 45)))
    assert config.take_profit.allocation_percent == 100


def test_val6_allocation_above_100_says_exceeds_100_percent() -> None:
    """VAL-6/TP-14: 101 % is invalid and the message contains "exceeds 100%"."""
    found = problems(custom_tp((50, 45), (100, 46)))
    assert found == {
        "take_profit.levels": "total allocation 101% exceeds 100% "
        "(levels sell 91% + moon bag retains 10%)"
    }


def test_val6_allocation_is_summed_in_doubles_like_the_reference() -> None:
    """§0 float note for TP-14: 30.6 + 33.7 + 25.7 + 10 is 100.00000000000001 in IEEE
    doubles (summed left to right), so the reference rejects it and so does valux."""
    found = problems(custom_tp((50, 30.6), (100, 33.7), (200, 25.7)))
    assert found["take_profit.levels"].startswith("total allocation 100.00000000000001% exceeds")


def test_val6_allocation_counts_retain_only_when_the_moon_bag_is_enabled() -> None:
    """TP-14: with the moon bag off, only Σ sell counts, so 100 % of sales is valid."""
    config = load_agent_config(
        section("takeProfit", mode="custom", levels=_levels((50, 100)), moonBag={"enabled": False})
    )
    assert config.take_profit.allocation_percent == 100


def test_val6_allocation_is_only_checked_in_custom_mode() -> None:
    """VAL-6: preset modes skip the custom rules (allocation, order, trigger)."""
    config = load_agent_config(
        section("takeProfit", mode="aggressive", levels=_levels((60, 80), (50, 30)))
    )
    assert config.take_profit.allocation_percent == 120


def test_val6_custom_targets_strictly_ascending() -> None:
    """VAL-6: custom targets strictly ascending; an equal target fails."""
    found = problems(custom_tp((50, 10), (50, 10)))
    assert list(found) == ["take_profit.levels[1].target_percent"]


def test_val6_moon_bag_trigger_at_most_the_last_target() -> None:
    """VAL-6: enabled moon bag needs trigger ≤ last target (equal passes); disabled is unchecked."""
    levels = _levels((50, 30), (200, 30))
    equal = section("takeProfit", mode="custom", levels=levels, moonBag={"triggerPercent": 200})
    assert load_agent_config(equal).take_profit.moon_bag.trigger_percent == 200
    above = section("takeProfit", mode="custom", levels=levels, moonBag={"triggerPercent": 201})
    assert problems(above) == {
        "take_profit.moon_bag.trigger_percent": "must be ≤ the last level's target_percent "
        "(200), got 201"
    }
    off = section(
        "takeProfit",
        mode="custom",
        levels=levels,
        moonBag={"enabled": False, "triggerPercent": 900},
    )
    assert load_agent_config(off).take_profit.moon_bag.enabled is False


# ---------------------------------------------------------------------------
# VAL-7 staleTrade
# ---------------------------------------------------------------------------


def test_val7_min_hold_time_at_least_one_minute() -> None:
    """VAL-7: minHoldTimeMinutes ≥ 1 (1 valid, 0.5 not)."""
    assert load_agent_config(section("staleTrade", minHoldTimeMinutes=1)).stale_trade.enabled
    assert problems(section("staleTrade", minHoldTimeMinutes=0.5)) == {
        "stale_trade.min_hold_time_minutes": "must be ≥ 1, got 0.5"
    }


def test_val7_profit_range_ordered_and_may_be_negative() -> None:
    """VAL-7: minProfitPercent ≤ maxProfitPercent (equal valid), both may be negative."""
    negative = load_agent_config(section("staleTrade", minProfitPercent=-5, maxProfitPercent=-1))
    assert negative.stale_trade.min_profit_percent == -5
    assert load_agent_config(section("staleTrade", minProfitPercent=3, maxProfitPercent=3))
    assert problems(section("staleTrade", minProfitPercent=-1, maxProfitPercent=-5)) == {
        "stale_trade.max_profit_percent": "must be ≥ min_profit_percent (-1), got -5"
    }


# ---------------------------------------------------------------------------
# VAL-8 business rules and error reporting
# ---------------------------------------------------------------------------


def test_val8_business_rules_all_reported_together() -> None:
    """VAL-8: custom enabled SL and DCA need levels, no drop below -99, TP allocation ≤ 100;
    every failing rule is listed in one InvalidRequest."""
    found = problems(
        {
            "stopLoss": {"mode": "custom", "enabled": True, "trailingLevels": []},
            "dca": {
                "mode": "custom",
                "enabled": True,
                "levels": [{"dropPercent": -100, "buyPercent": 10}],
            },
            "takeProfit": {**custom_tp((10, 95))["takeProfit"], "enabled": True},
        }
    )
    assert set(found) == {
        "stop_loss.trailing_levels",
        "dca.levels[0].drop_percent",
        "take_profit.levels",
    }
    assert "exceeds 100%" in found["take_profit.levels"]


def test_relational_rules_reported_even_when_a_sibling_field_is_invalid() -> None:
    """Every problem is listed: an out-of-range target does not hide the allocation error."""
    found = problems(custom_tp((0, 60), (100, 50)))
    assert set(found) == {"take_profit.levels[0].target_percent", "take_profit.levels"}


def test_direct_model_construction_enforces_the_relational_rules() -> None:
    """The models check the relational rules too (no invalid config can be built in code)."""
    with pytest.raises(ValueError, match="exceeds 100%"):
        TakeProfitConfig(
            mode="custom",
            levels=(TakeProfitLevel(target_percent=10, sell_percent=100),),
        )


# ---------------------------------------------------------------------------
# Documents: both spellings, round trips
# ---------------------------------------------------------------------------


def test_camel_and_snake_spellings_load_the_same_config() -> None:
    """Both spellings are accepted on input and give equal configs."""
    camel = {
        "stopLoss": {"mode": "custom", "trailingLevels": [{"change": 50, "stopLoss": 20}]},
        "dca": {"maxDCACount": 5},
        "engine": {"maxOpenPositions": 7},
    }
    snake = {
        "stop_loss": {"mode": "custom", "trailing_levels": [{"change": 50, "stop_loss": 20}]},
        "dca": {"max_dca_count": 5},
        "engine": {"max_open_positions": 7},
    }
    assert load_agent_config(camel) == load_agent_config(snake)
    assert load_agent_config(camel).engine.max_open_positions == 7


def test_camel_document_uses_the_reference_spelling() -> None:
    """to_document("camel") spells keys as the reference does (maxDCACount, stopLoss, …)."""
    document = load_agent_config(
        section("stopLoss", mode="custom", trailingLevels=[{"change": 50, "stopLoss": 20}])
    ).to_document("camel")
    assert document["stopLoss"]["trailingLevels"] == [{"change": 50, "stopLoss": 20}]
    assert document["dca"]["maxDCACount"] == 3
    assert document["positionCalculator"]["solBalanceThresholds"]["minimum"] == 0.2
    assert set(document) == {*DEFAULT_CONFIG_DOCUMENT, "engine", "risk"}


def test_camel_document_keeps_money_exact_when_a_double_cannot() -> None:
    """A money amount a double cannot carry exactly is written as a decimal string."""
    config = load_agent_config(
        section("purchaseLimits", maxPurchasePerToken="1.00000000000000000001")
    )
    document = config.to_document("camel")
    assert document["purchaseLimits"]["maxPurchasePerToken"] == "1.00000000000000000001"
    assert load_agent_config(document) == config


# Hypothesis: valid documents built from the reference's ranges.

_money = st.decimals(min_value=Decimal("0.1"), max_value=Decimal("1000"), places=6)


@st.composite
def valid_documents(draw: st.DrawFn) -> dict[str, Any]:
    """A valid stored document in camelCase, varying every section."""
    low, high = sorted(draw(st.lists(st.floats(-100, 100), min_size=2, max_size=2)))
    sells = draw(st.lists(st.integers(1, 20), min_size=1, max_size=4))
    targets = sorted(draw(st.sets(st.integers(1, 10000), min_size=len(sells), max_size=len(sells))))
    drops = sorted(draw(st.lists(st.integers(-99, -1), min_size=1, max_size=3)), reverse=True)
    thresholds = sorted(draw(st.sets(_money, min_size=3, max_size=3)))
    bound = draw(st.none() | st.floats(1, 1e9))
    return {
        "purchaseLimits": {
            "minimumAgentBalance": float(draw(_money)),
            "maxPurchasePerToken": str(draw(_money)),
            "maxPriceImpact": draw(st.floats(0, 1)),
        },
        "signals": {
            "minScore": draw(st.integers(1, 5)),
            "tokenFilterMode": draw(st.sampled_from(["none", "blacklist", "whitelist"])),
            "tokenList": [TOKEN],
            **({"marketCapMin": bound} if bound is not None else {}),
        },
        "stopLoss": {
            "defaultPercentage": draw(st.floats(-100, 0)),
            "mode": draw(st.sampled_from(["fixed", "exponential", "zones"])),
        },
        "positionCalculator": {
            "solBalanceThresholds": dict(
                zip(("minimum", "medium", "large"), map(str, thresholds), strict=True)
            ),
            "randomization": {"enabled": draw(st.booleans())},
        },
        "staleTrade": {"minProfitPercent": low, "maxProfitPercent": high},
        "dca": {
            "mode": "custom",
            "enabled": draw(st.booleans()),
            "levels": [{"dropPercent": d, "buyPercent": 50} for d in drops],
            "maxDCACount": draw(st.integers(1, 10)),
        },
        "takeProfit": {
            "mode": "custom",
            "levels": _levels(*zip(targets, sells, strict=True)),
            "moonBag": {"enabled": False},
        },
        "engine": {"referenceQuirks": draw(st.booleans())},
    }


@settings(max_examples=60, deadline=None)
@given(valid_documents())
def test_round_trip_through_camel_and_snake_documents(document: dict[str, Any]) -> None:
    """to_document in either style loads back to an equal config (camel/snake round trip)."""
    config = load_agent_config(document)
    assert load_agent_config(config.to_document("camel")) == config
    assert load_agent_config(config.to_document("snake")) == config


@settings(max_examples=60, deadline=None)
@given(valid_documents(), valid_documents())
def test_cfg3_merge_is_idempotent_and_an_empty_patch_is_identity(
    first: dict[str, Any], patch: dict[str, Any]
) -> None:
    """CFG-3: applying the same patch twice equals applying it once; {} changes nothing."""
    current = load_agent_config(first)
    once = merge_config_patch(current, patch)
    assert merge_config_patch(once, patch) == once
    assert merge_config_patch(current, {}) == current


@settings(max_examples=60, deadline=None)
@given(valid_documents())
def test_cfg2_loading_a_full_document_equals_patching_the_defaults(
    document: dict[str, Any],
) -> None:
    """CFG-2 and CFG-3 share one merge: load(doc) == merge_config_patch(defaults, doc)."""
    assert load_agent_config(document) == merge_config_patch(AgentConfig.defaults(), document)


# ---------------------------------------------------------------------------
# TP-1 / TP-2 / TP-15 and DCA-1 / DCA-2 helpers
# ---------------------------------------------------------------------------


def _pairs(levels: tuple[TakeProfitLevel, ...]) -> list[tuple[float, float]]:
    return [(level.target_percent, level.sell_percent) for level in levels]


def test_tp1_templates_and_moon_bags() -> None:
    """TP-1: the three preset ladders and moon bags; custom has no levels and a 300/10 bag;
    an unknown mode maps to moderate."""
    assert _pairs(tp_template("aggressive")) == [(25, 25), (50, 25), (100, 25), (150, 15)]
    assert _pairs(tp_template("moderate")) == [(50, 25), (150, 25), (300, 25), (400, 15)]
    assert _pairs(tp_template("conservative")) == [(100, 20), (200, 20), (400, 25), (600, 20)]
    assert tp_template("custom") == ()
    assert tp_template("yolo") == tp_template("moderate")
    assert moon_bag_template("aggressive") == MoonBag(trigger_percent=100, retain_percent=10)
    assert moon_bag_template("moderate") == MoonBag(trigger_percent=300, retain_percent=10)
    assert moon_bag_template("conservative") == MoonBag(trigger_percent=400, retain_percent=15)
    assert moon_bag_template("custom") == MoonBag(
        enabled=True, trigger_percent=300, retain_percent=10
    )
    assert moon_bag_template("yolo") == moon_bag_template("moderate")


def test_tp2_engine_uses_stored_levels_whatever_the_mode_sorted_ascending() -> None:
    """TP-2/TP-15: stored levels are used in every mode (Q-1), sorted ascending by target."""
    default_aggressive = load_agent_config(section("takeProfit", mode="aggressive"))
    assert _pairs(tp_levels(default_aggressive)) == _pairs(tp_template("moderate"))
    unsorted = load_agent_config(section("takeProfit", levels=_levels((300, 10), (100, 20))))
    assert _pairs(tp_levels(unsorted)) == [(100, 20), (300, 10)]
    assert _pairs(unsorted.take_profit.levels) == [(300, 10), (100, 20)]  # input not mutated
    assert tp_levels(unsorted.take_profit) == tp_levels(unsorted)


def test_dca1_templates() -> None:
    """DCA-1: aggressive 3 × (-10 → 100), moderate 2 × (-20 → 75), conservative 1 × (-20 → 100)."""
    assert dca_template("aggressive") == (DcaLevel(drop_percent=-10, buy_percent=100),) * 3
    assert dca_template("moderate") == (DcaLevel(drop_percent=-20, buy_percent=75),) * 2
    assert dca_template("conservative") == (DcaLevel(drop_percent=-20, buy_percent=100),)
    assert dca_template("custom") == ()
    assert dca_template("unknown") == dca_template("moderate")


def test_dca2_custom_levels_sorted_least_negative_first_and_presets_use_templates() -> None:
    """DCA-2: custom → user levels by dropPercent descending (input order irrelevant, stable);
    a preset → its template even if levels are stored."""
    # Built without validation: a validated custom config is already in order (VAL-5).
    custom = DcaConfig.model_construct(
        mode="custom",
        levels=(
            DcaLevel(drop_percent=-30, buy_percent=1),
            DcaLevel(drop_percent=-10, buy_percent=2),
            DcaLevel(drop_percent=-30, buy_percent=3),
        ),
    )
    assert [(lv.drop_percent, lv.buy_percent) for lv in dca_levels(custom)] == [
        (-10, 2),
        (-30, 1),
        (-30, 3),
    ]
    stored = load_agent_config(
        section("dca", mode="aggressive", levels=[{"dropPercent": -5, "buyPercent": 5}])
    )
    assert dca_levels(stored) == dca_template("aggressive")
