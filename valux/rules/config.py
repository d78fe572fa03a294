"""The agent trading config: seven frozen sections, defaults, merging and validation.

Implements reference sections 1–3 of ``agent-rules.md``: the state model of the
config (§1), the production defaults and the two merge operations (CFG-1..CFG-3)
and every validation rule (VAL-0..VAL-8). A config written for the reference
engine (camelCase keys) loads unchanged; valux code uses the snake_case field
names, and documents may mix both spellings.

Numbers: percentages, prices and fractions stay ``float`` (the reference's IEEE
doubles, reproduced bit for bit). SOL amounts that are money are ``Decimal``,
parsed from the number's shortest decimal string (``Decimal(repr(x))``) or
from the string itself, so ``0.1`` is exactly ``Decimal("0.1")``.

Validation collects *every* problem. Field rules (types, ranges, lengths) come
from pydantic and are converted to :class:`~valux.errors.FieldError`; the
relational rules (min ≤ max, ordering of levels, allocation) are plain
functions over the raw document, so they are reported even when a sibling
field is also invalid. No pydantic error ever escapes this module: failures
raise :class:`~valux.errors.InvalidRequest` with ``errors`` listing each
problem by its dotted snake_case path.

Optional numbers (``max_price_impact`` and the six signal metric bounds): null
means unset, on load as in a patch (CFG-3). The reference rejects a stored
null; accepting it is the one place valux is more lenient, and it is how a
config says "no price-impact check" (absent would merge in the default 0.05).

valux-level additions (reference §14 allows fixing quirks): an ``engine``
section (:class:`EngineOptions`) with ``reference_quirks`` (reproduce the
reference's quirks, e.g. Q-2, instead of valux's fixes) and
``max_open_positions`` (TV-1 #10, 25 in the reference); and a ``risk`` section
(:class:`RiskLimits`) with the breakers of :mod:`valux.risk.breakers`.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Final, Literal, Self, TypeAlias

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from valux.errors import FieldError, InvalidRequest

__all__ = [
    "DEFAULT_CONFIG_DOCUMENT",
    "SIGNAL_METRIC_BOUNDS",
    "AgentConfig",
    "DcaConfig",
    "DcaLevel",
    "EngineOptions",
    "MoonBag",
    "PositionCalculator",
    "PositionSizeRange",
    "PositionSizes",
    "PurchaseLimits",
    "Randomization",
    "RiskLimits",
    "SignalFilters",
    "SolBalanceThresholds",
    "StaleTrade",
    "StopLossConfig",
    "TakeProfitConfig",
    "TakeProfitLevel",
    "TrailingLevel",
    "as_decimal",
    "dca_levels",
    "dca_template",
    "load_agent_config",
    "merge_config_patch",
    "moon_bag_template",
    "tp_levels",
    "tp_template",
]

StopLossMode: TypeAlias = Literal["fixed", "exponential", "zones", "custom", "trailing"]
LadderMode: TypeAlias = Literal["aggressive", "moderate", "conservative", "custom"]
TokenFilterMode: TypeAlias = Literal["none", "blacklist", "whitelist"]

#: The six optional signal metric bounds, in the order EL-6 checks them.
SIGNAL_METRIC_BOUNDS: Final = (
    "market_cap_min",
    "market_cap_max",
    "liquidity_min",
    "liquidity_max",
    "holder_count_min",
    "holder_count_max",
)

_INVALID_CONFIG = "invalid agent config"
_RULE_ERROR = "config_rule"


# --------------------------------------------------------------------------
# Scalar types
# --------------------------------------------------------------------------


def as_decimal(value: Decimal | float | int | str) -> Decimal:
    """Exact decimal of a number: from its shortest decimal string (``repr``) or a string.

    ``as_decimal(0.1) == Decimal("0.1")`` (not the binary expansion of the double).
    Raises ``ValueError`` for a bool or an unparsable string.
    """
    parsed = _money_input(value)
    if not isinstance(parsed, Decimal):
        raise ValueError(f"not a number: {value!r}")
    return parsed


def _money_input(value: object) -> object:
    """Before-validator for money: numbers and numeric strings become ``Decimal``."""
    if isinstance(value, bool):
        return value  # left for the strict Decimal check to reject
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, str):
        try:
            return Decimal(value.strip())
        except InvalidOperation:
            return value
    return value


def _integer_input(value: object) -> object:
    """Before-validator for integers: a whole float (``3.0``) is the integer 3, as in JS."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Money = Annotated[Decimal, Strict(), Field(allow_inf_nan=False), BeforeValidator(_money_input)]
Number = Annotated[float, Strict(), Field(allow_inf_nan=False)]
Integer = Annotated[int, Strict(), BeforeValidator(_integer_input)]
Flag = Annotated[bool, Strict()]
Text = Annotated[str, Strict()]


class _Model(BaseModel):
    """Frozen, unknown keys ignored (VAL-0), both spellings accepted, locations by name."""

    model_config = ConfigDict(
        frozen=True,
        extra="ignore",
        validate_by_name=True,
        validate_by_alias=True,
        loc_by_alias=False,
    )


class _Section(_Model):
    """A model with relational rules, checked after its fields validate.

    The same rule function also runs over the raw document in
    :func:`load_agent_config` so that a relational problem is reported even
    when another field of the section is invalid.
    """

    @classmethod
    def _rules(cls, raw: Mapping[str, Any]) -> list[tuple[str, str]]:
        return []

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        problems = type(self)._rules(self.model_dump())
        if problems:
            summary = "; ".join(f"{path}: {message}" for path, message in problems)
            raise PydanticCustomError(
                _RULE_ERROR, "{summary}", {"summary": summary, "problems": tuple(problems)}
            )
        return self


# --------------------------------------------------------------------------
# Tolerant readers for the relational rules (they see raw, maybe invalid, data)
# --------------------------------------------------------------------------


def _number(value: object) -> float | None:
    """The value as a finite float, or None if it is not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _amount(value: object) -> Decimal | None:
    """The value as a finite Decimal (money), or None if it is not one."""
    parsed = _money_input(value)
    if isinstance(parsed, Decimal) and parsed.is_finite():
        return parsed
    return None


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _sequence(value: object) -> Sequence[Any] | None:
    if isinstance(value, (list, tuple)):
        return value
    return None


def _field_numbers(items: Sequence[Any], name: str) -> list[float | None]:
    return [_number(_mapping(item).get(name)) for item in items]


def _adjacent(values: list[float | None]) -> Iterator[tuple[int, float, float]]:
    """(index, previous, current) for each adjacent pair where both are numbers."""
    for index in range(1, len(values)):
        previous, current = values[index - 1], values[index]
        if previous is not None and current is not None:
            yield index, previous, current


def _fmt(value: object) -> str:
    """Render a number the way a person writes it: ``5`` not ``5.0``, ``0.1`` not ``1E-1``."""
    if isinstance(value, bool) or value is None:
        return "true" if value is True else "false" if value is False else "null"
    if isinstance(value, Decimal):
        if not value.is_finite():
            return str(value)
        if value == value.to_integral_value():
            return str(int(value))
        return format(value.normalize(), "f")
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            return str(int(value))
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        match = re.fullmatch(r"Decimal\('(.*)'\)", value)
        return match.group(1) if match else value
    return str(value)


# --------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------


class PurchaseLimits(_Model):
    """``purchaseLimits`` (VAL-1)."""

    minimum_agent_balance: Annotated[Money, Field(ge=Decimal("0.1"))] = Field(
        default=Decimal("0.5"), alias="minimumAgentBalance"
    )
    max_purchase_per_token: Annotated[Money, Field(gt=0)] = Field(
        default=Decimal("2.0"), alias="maxPurchasePerToken"
    )
    #: A fraction (0.05 = 5 %), unlike every other percentage; None disables PS-9.
    max_price_impact: Annotated[Number, Field(ge=0, le=1)] | None = Field(
        default=0.05, alias="maxPriceImpact"
    )


class SignalFilters(_Section):
    """``signals`` (VAL-2); used by signal eligibility (EL-3..EL-6)."""

    min_score: Annotated[Integer, Field(ge=1, le=5)] = Field(default=1, alias="minScore")
    allowed_signal_types: tuple[Annotated[Text, Field(min_length=1, max_length=50)], ...] = Field(
        default=(), alias="allowedSignalTypes"
    )
    token_filter_mode: TokenFilterMode = Field(default="none", alias="tokenFilterMode")
    token_list: tuple[Annotated[Text, Field(min_length=32, max_length=44)], ...] = Field(
        default=(), alias="tokenList"
    )
    market_cap_min: Annotated[Number, Field(gt=0)] | None = Field(
        default=None, alias="marketCapMin"
    )
    market_cap_max: Annotated[Number, Field(gt=0)] | None = Field(
        default=None, alias="marketCapMax"
    )
    liquidity_min: Annotated[Number, Field(gt=0)] | None = Field(default=None, alias="liquidityMin")
    liquidity_max: Annotated[Number, Field(gt=0)] | None = Field(default=None, alias="liquidityMax")
    holder_count_min: Annotated[Integer, Field(ge=0)] | None = Field(
        default=None, alias="holderCountMin"
    )
    holder_count_max: Annotated[Integer, Field(ge=0)] | None = Field(
        default=None, alias="holderCountMax"
    )

    @property
    def has_metric_bounds(self) -> bool:
        """EL-6 applies only if at least one of the six bounds is set."""
        return any(getattr(self, name) is not None for name in SIGNAL_METRIC_BOUNDS)

    @classmethod
    def _rules(cls, raw: Mapping[str, Any]) -> list[tuple[str, str]]:
        """VAL-2: for each pair, min ≤ max when both are set (reported on the max)."""
        problems = []
        for low_name, high_name in zip(
            SIGNAL_METRIC_BOUNDS[::2], SIGNAL_METRIC_BOUNDS[1::2], strict=True
        ):
            low, high = _number(raw.get(low_name)), _number(raw.get(high_name))
            if low is not None and high is not None and low > high:
                problems.append(
                    (high_name, f"must be ≥ {low_name} ({_fmt(low)}), got {_fmt(high)}")
                )
        return problems


class TrailingLevel(_Model):
    """One custom stop-loss level: at a peak gain of ``change`` %, lock ``stop_loss`` %."""

    change: Annotated[Number, Field(gt=0)]
    stop_loss: Annotated[Number, Field(gt=0, le=1000)] = Field(alias="stopLoss")


class StopLossConfig(_Section):
    """``stopLoss`` (VAL-3)."""

    enabled: Flag = True
    default_percentage: Annotated[Number, Field(ge=-100, le=0)] = Field(
        default=-32.0, alias="defaultPercentage"
    )
    mode: StopLossMode = "fixed"
    trailing_levels: tuple[TrailingLevel, ...] = Field(default=(), alias="trailingLevels")
    trailing_percentage: Annotated[Number, Field(gt=0, lt=100)] | None = Field(
        default=None, alias="trailingPercentage"
    )
    """``trailing`` mode (a valux extension): the stop's distance below the peak, in %."""
    activation_percentage: Annotated[Number, Field(ge=0, le=100_000)] = Field(
        default=0.0, alias="activationPercentage"
    )
    """``trailing`` mode: the peak gain (%) from which the stop trails; 0 = from entry."""

    @classmethod
    def _rules(cls, raw: Mapping[str, Any]) -> list[tuple[str, str]]:
        """VAL-3/VAL-8: custom mode needs levels when enabled, strictly descending by change;
        trailing mode needs its distance when enabled."""
        if raw.get("mode") == "trailing":
            if raw.get("enabled") is True and raw.get("trailing_percentage") is None:
                return [("trailing_percentage", "is required when trailing stop loss is enabled")]
            return []
        levels = _sequence(raw.get("trailing_levels"))
        if raw.get("mode") != "custom" or levels is None:
            return []
        problems = []
        if raw.get("enabled") is True and not levels:
            problems.append(
                ("trailing_levels", "must have at least one level when custom stop loss is enabled")
            )
        for index, previous, current in _adjacent(_field_numbers(levels, "change")):
            if current >= previous:
                problems.append(
                    (
                        f"trailing_levels[{index}].change",
                        f"must be < {_fmt(previous)} (the previous level's change; custom "
                        f"trailing levels are strictly descending), got {_fmt(current)}",
                    )
                )
        return problems


class SolBalanceThresholds(_Section):
    """Balance tiers for position sizing (PS-2, PS-3)."""

    minimum: Annotated[Money, Field(gt=0)] = Decimal("0.2")
    medium: Annotated[Money, Field(gt=0)] = Decimal("5")
    large: Annotated[Money, Field(gt=0)] = Decimal("10")

    @classmethod
    def _rules(cls, raw: Mapping[str, Any]) -> list[tuple[str, str]]:
        """VAL-4: minimum < medium < large."""
        minimum, medium, large = (_amount(raw.get(k)) for k in ("minimum", "medium", "large"))
        problems = []
        if minimum is not None and medium is not None and not minimum < medium:
            problems.append(("medium", f"must be > minimum ({_fmt(minimum)}), got {_fmt(medium)}"))
        if medium is not None and large is not None and not medium < large:
            problems.append(("large", f"must be > medium ({_fmt(medium)}), got {_fmt(large)}"))
        return problems


class PositionSizeRange(_Section):
    """A tier's size range in SOL."""

    min: Annotated[Money, Field(ge=0)]
    max: Annotated[Money, Field(ge=0)]

    @classmethod
    def _rules(cls, raw: Mapping[str, Any]) -> list[tuple[str, str]]:
        """VAL-4: min ≤ max (reported on min)."""
        low, high = _amount(raw.get("min")), _amount(raw.get("max"))
        if low is not None and high is not None and low > high:
            return [("min", f"must be ≤ max ({_fmt(high)}), got {_fmt(low)}")]
        return []


class PositionSizes(_Model):
    """Size ranges per tier."""

    small: PositionSizeRange = PositionSizeRange(min=Decimal("0.1"), max=Decimal("0.1"))
    medium: PositionSizeRange = PositionSizeRange(min=Decimal("0.5"), max=Decimal("1.0"))
    large: PositionSizeRange = PositionSizeRange(min=Decimal("1.5"), max=Decimal("2.0"))


class Randomization(_Model):
    """PS-4: randomise within the tier's range, or take its max."""

    enabled: Flag = True


class PositionCalculator(_Model):
    """``positionCalculator`` (VAL-4)."""

    sol_balance_thresholds: SolBalanceThresholds = Field(
        default=SolBalanceThresholds(), alias="solBalanceThresholds"
    )
    position_sizes: PositionSizes = Field(default=PositionSizes(), alias="positionSizes")
    randomization: Randomization = Randomization()


class StaleTrade(_Section):
    """``staleTrade`` (VAL-7); the rule itself is ST-1."""

    enabled: Flag = True
    min_hold_time_minutes: Annotated[Number, Field(ge=1)] = Field(
        default=60.0, alias="minHoldTimeMinutes"
    )
    min_profit_percent: Number = Field(default=1.0, alias="minProfitPercent")
    max_profit_percent: Number = Field(default=10.0, alias="maxProfitPercent")

    @classmethod
    def _rules(cls, raw: Mapping[str, Any]) -> list[tuple[str, str]]:
        """VAL-7: min ≤ max (both may be negative; reported on the max, as the reference)."""
        low, high = _number(raw.get("min_profit_percent")), _number(raw.get("max_profit_percent"))
        if low is not None and high is not None and low > high:
            return [
                (
                    "max_profit_percent",
                    f"must be ≥ min_profit_percent ({_fmt(low)}), got {_fmt(high)}",
                )
            ]
        return []


class DcaLevel(_Model):
    """One DCA level: at ``drop_percent`` from the average, buy ``buy_percent`` of the holding."""

    drop_percent: Annotated[Number, Field(ge=-99, le=-1)] = Field(alias="dropPercent")
    buy_percent: Annotated[Number, Field(ge=1, le=500)] = Field(alias="buyPercent")


class DcaConfig(_Section):
    """``dca`` (VAL-5)."""

    enabled: Flag = False
    mode: LadderMode = "moderate"
    levels: tuple[DcaLevel, ...] = ()
    max_dca_count: Annotated[Integer, Field(ge=1, le=10)] = Field(default=3, alias="maxDCACount")
    cooldown_seconds: Annotated[Number, Field(ge=10, le=3600)] = Field(
        default=30.0, alias="cooldownSeconds"
    )

    @classmethod
    def _rules(cls, raw: Mapping[str, Any]) -> list[tuple[str, str]]:
        """VAL-5/VAL-8: custom needs levels when enabled; least negative first (ties allowed)."""
        levels = _sequence(raw.get("levels"))
        if raw.get("mode") != "custom" or levels is None:
            return []
        problems = []
        if raw.get("enabled") is True and not levels:
            problems.append(("levels", "must have at least one level when custom DCA is enabled"))
        for index, previous, current in _adjacent(_field_numbers(levels, "drop_percent")):
            if current > previous:
                problems.append(
                    (
                        f"levels[{index}].drop_percent",
                        f"must be ≤ {_fmt(previous)} (the previous level's drop_percent; custom "
                        f"DCA levels go least negative first), got {_fmt(current)}",
                    )
                )
        return problems


class TakeProfitLevel(_Model):
    """One take-profit level: at ``target_percent`` gain, sell ``sell_percent`` of the original."""

    target_percent: Annotated[Number, Field(ge=1, le=10000)] = Field(alias="targetPercent")
    sell_percent: Annotated[Number, Field(ge=1, le=100)] = Field(alias="sellPercent")


class MoonBag(_Model):
    """The share of the original position kept after the ladder (TP-7)."""

    enabled: Flag = True
    trigger_percent: Annotated[Number, Field(ge=1, le=10000)] = Field(
        default=300.0, alias="triggerPercent"
    )
    retain_percent: Annotated[Number, Field(ge=1, le=50)] = Field(
        default=10.0, alias="retainPercent"
    )


class TakeProfitConfig(_Section):
    """``takeProfit`` (VAL-6, TP-14)."""

    enabled: Flag = False
    mode: LadderMode = "moderate"
    levels: tuple[TakeProfitLevel, ...] = Field(
        default=(
            TakeProfitLevel(target_percent=50, sell_percent=25),
            TakeProfitLevel(target_percent=150, sell_percent=25),
            TakeProfitLevel(target_percent=300, sell_percent=25),
            TakeProfitLevel(target_percent=400, sell_percent=15),
        ),
        max_length=10,
    )
    moon_bag: MoonBag = Field(default=MoonBag(), alias="moonBag")

    @property
    def allocation_percent(self) -> float:
        """TP-14: Σ sell_percent + retain_percent if the moon bag is enabled.

        Summed left to right from 0, as the reference's ``reduce`` does.
        """
        total = sum((level.sell_percent for level in self.levels), 0.0)
        return total + (self.moon_bag.retain_percent if self.moon_bag.enabled else 0.0)

    @classmethod
    def _rules(cls, raw: Mapping[str, Any]) -> list[tuple[str, str]]:
        """VAL-6 custom mode: ≥ 1 level, allocation ≤ 100, ascending targets, trigger ≤ last."""
        levels = _sequence(raw.get("levels"))
        if raw.get("mode") != "custom" or levels is None:
            return []
        if not levels:
            return [("levels", "must have at least one level in custom mode")]
        moon_bag = _mapping(raw.get("moon_bag"))
        moon_enabled = moon_bag.get("enabled") is True
        return [
            *_allocation_problem(levels, moon_bag, moon_enabled),
            *_ascending_target_problems(levels),
            *_trigger_problem(levels, moon_bag, moon_enabled),
        ]


def _allocation_problem(
    levels: Sequence[Any], moon_bag: Mapping[str, Any], moon_enabled: bool
) -> list[tuple[str, str]]:
    """TP-14: total = Σ sell + retain (if enabled) must be ≤ 100; message says "exceeds 100%"."""
    sells = _field_numbers(levels, "sell_percent")
    retain = _number(moon_bag.get("retain_percent")) if moon_enabled else 0.0
    if retain is None or any(sell is None for sell in sells):
        return []  # an invalid part is already reported on its own field
    sold = sum((sell for sell in sells if sell is not None), 0.0)
    total = sold + retain
    if total <= 100:
        return []
    return [
        (
            "levels",
            f"total allocation {_fmt(total)}% exceeds 100% (levels sell {_fmt(sold)}% "
            f"+ moon bag retains {_fmt(retain)}%)",
        )
    ]


def _ascending_target_problems(levels: Sequence[Any]) -> list[tuple[str, str]]:
    return [
        (
            f"levels[{index}].target_percent",
            f"must be > {_fmt(previous)} (the previous level's target_percent; custom "
            f"take-profit levels are strictly ascending), got {_fmt(current)}",
        )
        for index, previous, current in _adjacent(_field_numbers(levels, "target_percent"))
        if current <= previous
    ]


def _trigger_problem(
    levels: Sequence[Any], moon_bag: Mapping[str, Any], moon_enabled: bool
) -> list[tuple[str, str]]:
    last = _number(_mapping(levels[-1]).get("target_percent"))
    trigger = _number(moon_bag.get("trigger_percent"))
    if moon_enabled and last is not None and trigger is not None and trigger > last:
        return [
            (
                "moon_bag.trigger_percent",
                f"must be ≤ the last level's target_percent ({_fmt(last)}), got {_fmt(trigger)}",
            )
        ]
    return []


class EngineOptions(_Model):
    """valux-only options (not in the reference config).

    ``reference_quirks``: when True, reproduce the reference's quirks (§14, e.g.
    Q-2: no stop-loss reset after a DCA buy) instead of valux's fixes.
    ``max_open_positions``: TV-1 check #10 (the reference hard-codes 25).
    """

    reference_quirks: Flag = Field(default=False, alias="referenceQuirks")
    max_open_positions: Annotated[Integer, Field(ge=1)] = Field(
        default=25, alias="maxOpenPositions"
    )


class RiskLimits(_Model):
    """valux-only breakers (:mod:`valux.risk.breakers`): each puts the agent in REDUCING
    on its own when reached, evaluated at every close on realized results; ``null``
    (the default) switches it off.

    ``max_drawdown_percent``: equity (starting capital + realized P&L) this far below its
    peak, in percent. ``daily_loss_limit``: realized loss of one UTC day, in the quote
    asset. ``max_loss_streak``: this many losing closes in a row.
    """

    max_drawdown_percent: Annotated[Number, Field(gt=0, le=100)] | None = Field(
        default=None, alias="maxDrawdownPercent"
    )
    daily_loss_limit: Annotated[Money, Field(gt=0)] | None = Field(
        default=None, alias="dailyLossLimit"
    )
    max_loss_streak: Annotated[Integer, Field(ge=1)] | None = Field(
        default=None, alias="maxLossStreak"
    )


class AgentConfig(_Model):
    """The whole agent trading config; every section defaults to CFG-1."""

    purchase_limits: PurchaseLimits = Field(default=PurchaseLimits(), alias="purchaseLimits")
    signals: SignalFilters = SignalFilters()
    stop_loss: StopLossConfig = Field(default=StopLossConfig(), alias="stopLoss")
    position_calculator: PositionCalculator = Field(
        default=PositionCalculator(), alias="positionCalculator"
    )
    stale_trade: StaleTrade = Field(default=StaleTrade(), alias="staleTrade")
    dca: DcaConfig = DcaConfig()
    take_profit: TakeProfitConfig = Field(default=TakeProfitConfig(), alias="takeProfit")
    engine: EngineOptions = EngineOptions()
    risk: RiskLimits = RiskLimits()

    @classmethod
    def defaults(cls) -> AgentConfig:
        """The CFG-1 production defaults (equal to ``load_agent_config(None)``)."""
        return cls()

    def to_document(self, style: Literal["snake", "camel"] = "snake") -> dict[str, Any]:
        """A JSON-safe document of this config; unset metric bounds are left out.

        ``snake``: field names, money as decimal strings. ``camel``: the reference's
        spelling, money as a JSON number when the double's shortest form is the
        exact amount, else as a decimal string (both load back unchanged).
        """
        if style == "snake":
            document = self.model_dump(mode="json", exclude_none=True)
        else:
            document = _camel_json(self.model_dump(mode="python", by_alias=True, exclude_none=True))
        if self.purchase_limits.max_price_impact is None:
            # Absent would mean "the default 0.05" after CFG-2; null keeps it disabled.
            limits = "purchase_limits" if style == "snake" else "purchaseLimits"
            impact = "max_price_impact" if style == "snake" else "maxPriceImpact"
            document[limits][impact] = None
        return document


def _camel_json(value: Any) -> Any:
    """JSON-safe copy: tuples → lists, money → exact double or decimal string."""
    if isinstance(value, Mapping):
        return {key: _camel_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_camel_json(item) for item in value]
    if isinstance(value, Decimal):
        as_float = float(value)
        return as_float if Decimal(repr(as_float)) == value else str(value)
    return value


# --------------------------------------------------------------------------
# Templates (TP-1, DCA-1) and the level lists the engine uses (TP-2, DCA-2)
# --------------------------------------------------------------------------


def _tp(*pairs: tuple[float, float]) -> tuple[TakeProfitLevel, ...]:
    return tuple(TakeProfitLevel(target_percent=t, sell_percent=s) for t, s in pairs)


_TP_TEMPLATES: Final[dict[str, tuple[TakeProfitLevel, ...]]] = {
    "aggressive": _tp((25, 25), (50, 25), (100, 25), (150, 15)),
    "moderate": _tp((50, 25), (150, 25), (300, 25), (400, 15)),
    "conservative": _tp((100, 20), (200, 20), (400, 25), (600, 20)),
    "custom": (),
}
_MOON_BAG_TEMPLATES: Final[dict[str, MoonBag]] = {
    "aggressive": MoonBag(enabled=True, trigger_percent=100, retain_percent=10),
    "moderate": MoonBag(enabled=True, trigger_percent=300, retain_percent=10),
    "conservative": MoonBag(enabled=True, trigger_percent=400, retain_percent=15),
    "custom": MoonBag(enabled=True, trigger_percent=300, retain_percent=10),
}
_DCA_TEMPLATES: Final[dict[str, tuple[DcaLevel, ...]]] = {
    "aggressive": (DcaLevel(drop_percent=-10, buy_percent=100),) * 3,
    "moderate": (DcaLevel(drop_percent=-20, buy_percent=75),) * 2,
    "conservative": (DcaLevel(drop_percent=-20, buy_percent=100),),
    "custom": (),
}


def tp_template(mode: str) -> tuple[TakeProfitLevel, ...]:
    """TP-1 template levels of a mode; custom has none; an unknown mode maps to moderate."""
    return _TP_TEMPLATES.get(mode, _TP_TEMPLATES["moderate"])


def moon_bag_template(mode: str) -> MoonBag:
    """TP-1 moon bag of a mode; custom gives enabled/300/10; an unknown mode maps to moderate."""
    return _MOON_BAG_TEMPLATES.get(mode, _MOON_BAG_TEMPLATES["moderate"])


def dca_template(mode: str) -> tuple[DcaLevel, ...]:
    """DCA-1 template levels of a mode; custom has none; an unknown mode maps to moderate."""
    return _DCA_TEMPLATES.get(mode, _DCA_TEMPLATES["moderate"])


def dca_levels(config: AgentConfig | DcaConfig) -> tuple[DcaLevel, ...]:
    """DCA-2: custom → the user levels by drop_percent descending (least negative first,
    stable); a preset → its template (an unknown mode falls back to moderate)."""
    dca = config.dca if isinstance(config, AgentConfig) else config
    if dca.mode == "custom":
        return tuple(sorted(dca.levels, key=lambda level: level.drop_percent, reverse=True))
    return dca_template(dca.mode)


def tp_levels(config: AgentConfig | TakeProfitConfig) -> tuple[TakeProfitLevel, ...]:
    """TP-2/TP-15: the *stored* levels whatever the mode, sorted ascending by target (stable).

    This keeps the reference's backend behaviour (quirk Q-1): a preset mode does
    not swap in its template levels.
    """
    take_profit = config.take_profit if isinstance(config, AgentConfig) else config
    return tuple(sorted(take_profit.levels, key=lambda level: level.target_percent))


# --------------------------------------------------------------------------
# Defaults (CFG-1)
# --------------------------------------------------------------------------

#: The reference's ``DEFAULT_TRADING_CONFIG`` (CFG-1), camelCase, all metric bounds unset.
DEFAULT_CONFIG_DOCUMENT: Final[Mapping[str, Any]] = {
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


# --------------------------------------------------------------------------
# Key normalisation and merging (CFG-2, CFG-3)
# --------------------------------------------------------------------------

_MODELS: Final[tuple[type[BaseModel], ...]] = (
    AgentConfig,
    PurchaseLimits,
    SignalFilters,
    TrailingLevel,
    StopLossConfig,
    SolBalanceThresholds,
    PositionSizeRange,
    PositionSizes,
    Randomization,
    PositionCalculator,
    StaleTrade,
    DcaLevel,
    DcaConfig,
    TakeProfitLevel,
    MoonBag,
    TakeProfitConfig,
    EngineOptions,
)


def _alias_map() -> dict[str, str]:
    """camelCase key → snake_case name, from every model's aliases (plus legacy keys)."""
    names = {"continuousTrailing": "continuous_trailing"}
    for model in _MODELS:
        for name, info in model.model_fields.items():
            if info.alias is not None:
                names[info.alias] = name
    return names


_SNAKE_NAME: Final = _alias_map()


def _normalise_keys(value: Any, path: str, errors: list[FieldError]) -> Any:
    """Copy ``value`` with every known camelCase key renamed to snake_case.

    Sequences become lists. A key given in both spellings with different values
    is an error (it is ambiguous which one the caller meant).
    """
    if isinstance(value, Mapping):
        result: dict[str, Any] = {}
        spelled: dict[str, str] = {}
        for key, item in value.items():
            name = _SNAKE_NAME.get(key, key) if isinstance(key, str) else key
            child = _normalise_keys(item, _join(path, str(name)), errors)
            if name in result and result[name] != child:
                errors.append(
                    FieldError(
                        _join(path, str(name)),
                        f"given twice with different values (as {spelled[name]} and {key})",
                    )
                )
            result[name] = child
            spelled[name] = str(key)
        return result
    if isinstance(value, (list, tuple)):
        return [_normalise_keys(item, f"{path}[{i}]", errors) for i, item in enumerate(value)]
    return value


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """CFG-2 deep merge: two plain objects merge recursively; anything else (arrays,
    nulls, scalars) in ``override`` replaces the base value. Inputs are not mutated."""
    result = copy.deepcopy(dict(base))
    for key, value in override.items():
        current = result.get(key)
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            result[key] = _deep_merge(current, value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def _js_falsy(value: object) -> bool:
    """JavaScript's falsy values: null/undefined, false, "", 0 and NaN."""
    if value is None or value is False or (isinstance(value, str) and not value):
        return True
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value == 0 or value != value
    return False


def _normalise_stop_loss(document: dict[str, Any]) -> None:
    """CFG-2: an empty or missing ``stop_loss.mode`` becomes fixed; legacy
    ``continuousTrailing`` is removed."""
    stop_loss = document.get("stop_loss")
    if isinstance(stop_loss, dict):
        if _js_falsy(stop_loss.get("mode")):
            stop_loss["mode"] = "fixed"
        stop_loss.pop("continuous_trailing", None)


_DEFAULTS_SNAKE: Final[dict[str, Any]] = _normalise_keys(DEFAULT_CONFIG_DOCUMENT, "", [])


def load_agent_config(document: Mapping[str, Any] | None) -> AgentConfig:
    """Load a stored config (CFG-2), then validate it (VAL-0..VAL-8).

    A missing, null or non-object document yields the defaults. Otherwise the
    document (camelCase, snake_case or mixed) is deep-merged over the defaults
    (arrays and nulls replace), an empty ``stop_loss.mode`` becomes fixed and the
    legacy ``continuousTrailing`` is dropped. Unknown keys are ignored.

    Raises :class:`InvalidRequest` listing every problem.
    """
    if not isinstance(document, Mapping):
        return AgentConfig.defaults()
    errors: list[FieldError] = []
    stored = _normalise_keys(document, "", errors)
    merged = _deep_merge(_DEFAULTS_SNAKE, stored)
    _normalise_stop_loss(merged)
    return _validate(merged, errors)


def merge_config_patch(current: AgentConfig, patch: Mapping[str, Any]) -> AgentConfig:
    """Apply a partial update (CFG-3), then validate the result.

    Deep merge with arrays replacing; an explicit null for any of the six signal
    metric bounds clears that bound. Raises :class:`InvalidRequest` listing every
    problem.
    """
    if not isinstance(patch, Mapping):
        raise InvalidRequest(_INVALID_CONFIG, [FieldError("", "the patch must be an object")])
    errors: list[FieldError] = []
    base = _normalise_keys(current.model_dump(mode="python"), "", [])
    # CFG-3: an explicit null for a signal metric bound clears it. In valux null
    # *is* "unset" for every optional field, so the merged null needs no extra step.
    merged = _deep_merge(base, _normalise_keys(patch, "", errors))
    _normalise_stop_loss(merged)
    return _validate(merged, errors)


# --------------------------------------------------------------------------
# Validation: pydantic errors → FieldError, plus relational rules on the raw data
# --------------------------------------------------------------------------

_SECTION_RULES: Final[
    tuple[tuple[str, Callable[[Mapping[str, Any]], list[tuple[str, str]]]], ...]
] = (
    ("signals", SignalFilters._rules),
    ("stop_loss", StopLossConfig._rules),
    ("position_calculator.sol_balance_thresholds", SolBalanceThresholds._rules),
    ("position_calculator.position_sizes.small", PositionSizeRange._rules),
    ("position_calculator.position_sizes.medium", PositionSizeRange._rules),
    ("position_calculator.position_sizes.large", PositionSizeRange._rules),
    ("stale_trade", StaleTrade._rules),
    ("dca", DcaConfig._rules),
    ("take_profit", TakeProfitConfig._rules),
)


def _at(document: Mapping[str, Any], dotted: str) -> Mapping[str, Any] | None:
    node: object = document
    for part in dotted.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node if isinstance(node, Mapping) else None


def _rule_errors(document: Mapping[str, Any]) -> list[FieldError]:
    """Every relational rule over the raw (possibly partly invalid) document."""
    errors: list[FieldError] = []
    for prefix, rules in _SECTION_RULES:
        section = _at(document, prefix)
        if section is not None:
            errors.extend(FieldError(_join(prefix, path), msg) for path, msg in rules(section))
    return errors


def _validate(document: Mapping[str, Any], errors: list[FieldError]) -> AgentConfig:
    rule_errors = _rule_errors(document)
    try:
        config = AgentConfig.model_validate(document)
    except ValidationError as exc:
        details = exc.errors()
        errors.extend(_field_error(d) for d in details if d["type"] != _RULE_ERROR)
        errors.extend(rule_errors)
        if not errors:  # defensive: a rule only the typed values could see
            errors.extend(_expand_rule_errors(details))
        raise InvalidRequest(_INVALID_CONFIG, _unique(errors)) from None
    if errors:
        raise InvalidRequest(_INVALID_CONFIG, _unique(errors))
    return config


def _unique(errors: list[FieldError]) -> list[FieldError]:
    return list(dict.fromkeys(errors))


def _expand_rule_errors(details: list[ErrorDetails]) -> list[FieldError]:
    expanded = []
    for detail in details:
        if detail["type"] == _RULE_ERROR:
            prefix = _location(detail["loc"])
            for path, message in detail.get("ctx", {}).get("problems", ()):
                expanded.append(FieldError(_join(prefix, path), message))
    return expanded


def _location(loc: tuple[int | str, ...]) -> str:
    """Dotted path: ``("dca", "levels", 1, "buy_percent")`` → ``dca.levels[1].buy_percent``."""
    path = ""
    for part in loc:
        path = f"{path}[{part}]" if isinstance(part, int) else _join(path, part)
    return path


def _describe(value: object) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "an array"
    return _fmt(value)


_TYPE_MESSAGES: Final = {
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "decimal_type": "must be a number",
    "decimal_parsing": "must be a number",
    "is_instance_of": "must be a number",
    "finite_number": "must be a finite number",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "dict_type": "must be an object",
    "tuple_type": "must be an array",
    "list_type": "must be an array",
}


def _field_error(detail: ErrorDetails) -> FieldError:
    """One pydantic error as a FieldError whose message names the limit and the value."""
    kind, ctx, given = detail["type"], detail.get("ctx", {}), detail["input"]
    got = f", got {_describe(given)}"
    bounds = {
        "greater_than_equal": ("≥", "ge"),
        "greater_than": (">", "gt"),
        "less_than_equal": ("≤", "le"),
        "less_than": ("<", "lt"),
    }
    if kind in bounds:
        symbol, key = bounds[kind]
        message = f"must be {symbol} {_fmt(ctx.get(key))}{got}"
    elif kind == "string_too_short":
        length = len(given) if isinstance(given, str) else "?"
        message = f"must be at least {ctx.get('min_length')} characters long, got {length}"
    elif kind == "string_too_long":
        length = len(given) if isinstance(given, str) else "?"
        message = f"must be at most {ctx.get('max_length')} characters long, got {length}"
    elif kind == "too_long":
        message = f"must have at most {ctx.get('max_length')} items, got {ctx.get('actual_length')}"
    elif kind == "too_short":
        message = (
            f"must have at least {ctx.get('min_length')} items, got {ctx.get('actual_length')}"
        )
    elif kind == "literal_error":
        message = f"must be one of {ctx.get('expected')}{got}"
    elif kind == "missing":
        message = "is required"
    elif kind in _TYPE_MESSAGES:
        message = _TYPE_MESSAGES[kind] + got
    else:
        message = detail["msg"]
    return FieldError(_location(detail["loc"]), message)
