"""The agent config reference table, generated from :class:`~valux.rules.config.AgentConfig`.

:func:`config_reference_markdown` walks the model's fields and renders one
markdown row per leaf field: its camelCase key path (the reference engine's
spelling), its snake_case path (valux's field names), the production default
(CFG-1, read from ``AgentConfig.defaults()``) and the values it accepts (from
the field's type and its ``ge``/``gt``/``le``/``lt``/length constraints). An
array of levels gets a row of its own and one row per field of a level
(``takeProfit.levels[].targetPercent``). The relational rules a single row cannot
express (VAL-2..VAL-8) follow the table as hand-written bullets.

README.md carries this output between ``<!-- config-reference:start -->`` and
``<!-- config-reference:end -->``, and ``tests/unit/test_config_doc.py`` fails
when the two differ, so the docs cannot drift from the model.

Usage::

    python -m valux.rules.config_doc                    # print the table
    python -m valux.rules.config_doc --update README.md # rewrite the marked block
"""

from __future__ import annotations

import argparse
import sys
import types
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from valux.rules.config import AgentConfig

__all__ = [
    "END_MARKER",
    "START_MARKER",
    "ConfigRow",
    "config_reference_markdown",
    "config_rows",
    "replace_reference_block",
]

START_MARKER: Final = "<!-- config-reference:start -->"
END_MARKER: Final = "<!-- config-reference:end -->"

_HEADER: Final = (
    "| Key (camelCase) | Field (snake_case) | Default | Allowed values |\n|---|---|---|---|\n"
)

#: Relational rules (reference §3) that no single row can express, checked
#: against ``valux/rules/config.py``; each names the rule it implements.
_RULES: Final[tuple[str, ...]] = (
    "**VAL-0** Unknown keys are ignored, not rejected. A missing key takes its default "
    "(CFG-2: objects deep-merge over the defaults; arrays and `null` replace); an empty "
    "`stopLoss.mode` becomes `fixed` and a legacy `stopLoss.continuousTrailing` is dropped.",
    "**VAL-2** `signals`: `marketCapMin ≤ marketCapMax`, `liquidityMin ≤ liquidityMax` and "
    "`holderCountMin ≤ holderCountMax` whenever both bounds of a pair are set.",
    "**VAL-3 / VAL-8** `stopLoss.mode` `custom`: at least one trailing level when `enabled`; "
    "`trailingLevels[].change` strictly descending.",
    "**valux** `stopLoss.mode` `trailing` (an extension of the reference's four modes): "
    "`trailingPercentage` is required when `enabled`. Once the peak gain reaches "
    "`activationPercentage` (0: from entry) the stop sits `trailingPercentage` % below the "
    "highest price since entry, never looser than `defaultPercentage` (before that, the "
    "default applies).",
    "**VAL-4** `positionCalculator`: `solBalanceThresholds` `minimum < medium < large`; "
    "each `positionSizes` range (`small`, `medium`, `large`) has `min ≤ max`.",
    "**VAL-5 / VAL-8** `dca.mode` `custom`: at least one level when `enabled`; levels least "
    "negative first, each `dropPercent` ≤ the one before it (equal values allowed).",
    "**VAL-6 / VAL-8** `takeProfit.mode` `custom` (enabled or not): at least one level; "
    "take-profit sell percents + moon-bag retain (when `moonBag.enabled`) ≤ 100 (TP-14); "
    "`targetPercent` strictly ascending; with the moon bag enabled, "
    "`moonBag.triggerPercent` ≤ the last level's `targetPercent`.",
    "**VAL-7** `staleTrade`: `minProfitPercent ≤ maxProfitPercent` (either may be negative).",
    "The level rules above apply to `custom` mode only; in a preset mode the stored levels "
    "are still checked field by field (and `takeProfit.levels` is capped at 10).",
)

_TYPES_NOTE: Final = (
    "Types: a *number* is a finite JSON number (never a boolean); an *integer* also accepts "
    "a whole number such as `3.0`; an *amount* is quote currency (SOL), held as an exact "
    "decimal and given as a number or a numeric string. Percentages are percent numbers "
    "(`-32` is −32 %) except `maxPriceImpact`, a fraction (`0.05` is 5 %). *required* marks "
    "a field every level must give. `null` for an optional number means unset: no metric "
    "bound, no price-impact check."
)


@dataclass(frozen=True, slots=True)
class ConfigRow:
    """One leaf field of the agent config, as the reference table shows it."""

    key: str
    """camelCase key path, e.g. ``stopLoss.defaultPercentage``."""
    field: str
    """snake_case path, e.g. ``stop_loss.default_percentage``."""
    default: str
    """The production default, rendered as a markdown cell."""
    allowed: str
    """The accepted values, rendered as a markdown cell."""


def config_rows() -> list[ConfigRow]:
    """Every leaf field of :class:`AgentConfig`, depth first in declaration order."""
    return list(_rows(AgentConfig, AgentConfig.defaults(), "", ""))


def config_reference_markdown() -> str:
    """The reference table and the relational rules below it, as markdown (ends in a newline)."""
    table = "".join(
        f"| `{row.key}` | `{row.field}` | {row.default} | {row.allowed} |\n"
        for row in config_rows()
    )
    rules = "".join(f"- {rule}\n" for rule in _RULES)
    return f"{_HEADER}{table}\n{_TYPES_NOTE}\n\nCross-field rules:\n\n{rules}"


def replace_reference_block(text: str, block: str) -> str:
    """``text`` with the content between the two markers replaced by ``block``.

    Raises ``ValueError`` when the markers are missing or out of order.
    """
    start = text.find(START_MARKER)
    end = text.find(END_MARKER)
    if start < 0 or end < start:
        raise ValueError(f"missing {START_MARKER} … {END_MARKER}")
    head = text[: start + len(START_MARKER)]
    return f"{head}\n{block}{text[end:]}"


# --------------------------------------------------------------------------
# Walking the model
# --------------------------------------------------------------------------


def _rows(
    model: type[BaseModel], instance: BaseModel | None, key: str, name: str
) -> Iterator[ConfigRow]:
    """Rows of ``model``'s leaf fields; defaults from ``instance`` (None: a level item)."""
    for field_name, info in model.model_fields.items():
        key_path = _join(key, info.alias or field_name)
        name_path = _join(name, field_name)
        annotation, constraints, optional = _unwrap(info.annotation, info.metadata)
        value = getattr(instance, field_name) if instance is not None else None
        section = _model_class(annotation)
        if section is not None:
            nested = value if isinstance(value, BaseModel) else None
            yield from _rows(section, nested, key_path, name_path)
            continue
        default = _default_cell(value) if instance is not None else "*required*"
        yield ConfigRow(key_path, name_path, default, _allowed(annotation, constraints, optional))
        item = _item_model(annotation)
        if item is not None:
            yield from _rows(item, None, f"{key_path}[]", f"{name_path}[]")


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _unwrap(annotation: Any, metadata: Sequence[Any]) -> tuple[Any, list[Any], bool]:
    """(bare type, its constraints, whether ``None`` is accepted) of a field annotation.

    Strips ``Annotated`` (collecting its metadata, including that of nested
    ``Field(...)`` objects) and ``X | None``.
    """
    collected: list[Any] = list(metadata)
    optional = False
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation, *extra = get_args(annotation)
            collected.extend(extra)
        elif origin is Union or origin is types.UnionType:
            members = [arg for arg in get_args(annotation) if arg is not type(None)]
            if len(members) != 1:
                break
            optional = True
            annotation = members[0]
        else:
            break
    constraints: list[Any] = []
    for item in collected:
        constraints.extend(item.metadata if isinstance(item, FieldInfo) else [item])
    return annotation, constraints, optional


def _model_class(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _item_type(annotation: Any) -> Any | None:
    """The item type of ``tuple[X, ...]``, else None."""
    if get_origin(annotation) is tuple:
        args = get_args(annotation)
        if len(args) == 2 and args[1] is Ellipsis:
            return args[0]
    return None


def _item_model(annotation: Any) -> type[BaseModel] | None:
    item = _item_type(annotation)
    return None if item is None else _model_class(item)


# --------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------


def _number(value: object) -> str:
    """``5`` not ``5.0``, ``0.1`` not ``1E-1``."""
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def _scalar(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return _number(value)


def _default_cell(value: object) -> str:
    """A default, compactly: ``-32``, ``[]``, ``50→25, 150→25, …`` for levels, unset for None."""
    if value is None:
        return "unset"
    if isinstance(value, tuple):
        if not value:
            return "`[]`"
        if all(isinstance(item, BaseModel) for item in value):
            return "`" + ", ".join(_level(item) for item in value) + "`"
        return "`[" + ", ".join(_scalar(item) for item in value) + "]`"
    return f"`{_scalar(value)}`"


def _level(level: BaseModel) -> str:
    return "→".join(_scalar(getattr(level, name)) for name in type(level).model_fields)


def _bounds(constraints: Sequence[Any]) -> str:
    """``in [-100, 0]``, ``in (0, 1000]``, ``≥ 0.1``, ``> 0``; empty without bounds."""
    low = high = ""
    low_open = high_open = False
    for item in constraints:
        if isinstance(item, annotated_types.Ge):
            low, low_open = _number(item.ge), False
        elif isinstance(item, annotated_types.Gt):
            low, low_open = _number(item.gt), True
        elif isinstance(item, annotated_types.Le):
            high, high_open = _number(item.le), False
        elif isinstance(item, annotated_types.Lt):
            high, high_open = _number(item.lt), True
    if low and high:
        return f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low:
        return f"{'>' if low_open else '≥'} {low}"
    if high:
        return f"{'<' if high_open else '≤'} {high}"
    return ""


def _lengths(constraints: Sequence[Any]) -> tuple[int | None, int | None]:
    shortest = longest = None
    for item in constraints:
        if isinstance(item, annotated_types.MinLen):
            shortest = item.min_length
        elif isinstance(item, annotated_types.MaxLen):
            longest = item.max_length
    return shortest, longest


def _with_bounds(kind: str, constraints: Sequence[Any]) -> str:
    bounds = _bounds(constraints)
    return f"{kind} {bounds}" if bounds else kind


_KINDS: Final[dict[Any, str]] = {int: "integer", float: "number", Decimal: "amount"}


def _allowed(annotation: Any, constraints: Sequence[Any], optional: bool) -> str:
    """The values a field accepts, from its type and constraints."""
    if get_origin(annotation) is Literal:
        text = "one of " + ", ".join(f"`{choice}`" for choice in get_args(annotation))
    elif annotation is bool:
        text = "`true` or `false`"
    elif annotation in _KINDS:
        text = _with_bounds(_KINDS[annotation], constraints)
    elif annotation is str:
        text = "string" + _length_phrase(constraints)
    elif (item := _item_type(annotation)) is not None:
        text = _array(item, constraints)
    else:
        raise TypeError(f"no reference rendering for {annotation!r}")
    return f"{text}, or `null` (unset)" if optional else text


def _length_phrase(constraints: Sequence[Any]) -> str:
    shortest, longest = _lengths(constraints)
    if shortest is not None and longest is not None:
        return f" of {shortest}–{longest} characters"
    if shortest is not None:
        return f" of at least {shortest} characters"
    if longest is not None:
        return f" of at most {longest} characters"
    return ""


def _array(item: Any, constraints: Sequence[Any]) -> str:
    item_type, item_constraints, _ = _unwrap(item, [])
    level = _model_class(item_type)
    if level is not None:
        keys = ", ".join(info.alias or name for name, info in level.model_fields.items())
        text = f"array of `{{{keys}}}`"
    else:
        text = "array of " + _allowed(item_type, item_constraints, False).replace(
            "string", "strings", 1
        )
    _, longest = _lengths(constraints)
    return f"{text}, at most {longest}" if longest is not None else text


# --------------------------------------------------------------------------
# python -m valux.rules.config_doc
# --------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Print the reference, or (``--update FILE``) rewrite the marked block in FILE."""
    parser = argparse.ArgumentParser(
        prog="python -m valux.rules.config_doc", description=main.__doc__
    )
    parser.add_argument("--update", metavar="FILE", type=Path, help="rewrite the marked block")
    args = parser.parse_args(argv)
    block = config_reference_markdown()
    if args.update is None:
        sys.stdout.write(block)
        return 0
    path: Path = args.update
    path.write_text(replace_reference_block(path.read_text(encoding="utf-8"), block), "utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
