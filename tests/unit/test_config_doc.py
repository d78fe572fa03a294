"""The README's agent config reference: generated from the model, complete, example valid."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest
from pydantic import BaseModel

from valux.rules.config import AgentConfig, load_agent_config
from valux.rules.config_doc import (
    END_MARKER,
    START_MARKER,
    config_reference_markdown,
    config_rows,
    main,
    replace_reference_block,
)

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## Agent trading config"


def _section() -> str:
    """The README's agent config section, up to the next ``## `` heading."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n{SECTION}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def _reference_block() -> str:
    section = _section()
    start = section.index(START_MARKER) + len(START_MARKER) + 1  # the newline after it
    return section[start : section.index(END_MARKER)]


def _example() -> dict[str, Any]:
    match = re.search(r"```json\n(.*?)\n```", _section(), re.DOTALL)
    assert match is not None, "no ```json example in the agent config section"
    document = json.loads(match.group(1))
    assert isinstance(document, dict)
    return document


def _leaf_paths(model: type[BaseModel], key: str = "", name: str = "") -> list[tuple[str, str]]:
    """(camelCase, snake_case) path of every leaf field, walked independently of config_doc."""
    paths = []
    for field_name, info in model.model_fields.items():
        key_path = f"{key}.{info.alias or field_name}" if key else info.alias or field_name
        name_path = f"{name}.{field_name}" if name else field_name
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            paths.extend(_leaf_paths(annotation, key_path, name_path))
            continue
        paths.append((key_path, name_path))
        if get_origin(annotation) is tuple:
            item = get_args(annotation)[0]
            if isinstance(item, type) and issubclass(item, BaseModel):
                paths.extend(_leaf_paths(item, f"{key_path}[]", f"{name_path}[]"))
    return paths


def test_readme_reference_block_is_the_generated_markdown() -> None:
    """Regenerate with ``python -m valux.rules.config_doc --update README.md``."""
    assert _reference_block() == config_reference_markdown()


def test_readme_example_loads_and_round_trips() -> None:
    document = _example()
    config = load_agent_config(document)
    assert config.to_document("camel") == document  # every key given, nothing lost
    assert load_agent_config(config.to_document("camel")) == config
    assert load_agent_config(config.to_document("snake")) == config


def test_readme_example_has_every_section() -> None:
    sections = {info.alias or name for name, info in AgentConfig.model_fields.items()}
    assert set(_example()) == sections


def test_every_leaf_field_has_a_row() -> None:
    table = config_reference_markdown()
    leaves = _leaf_paths(AgentConfig)
    rows = {(row.key, row.field) for row in config_rows()}
    assert len(leaves) >= 40
    for key, name in leaves:
        assert f"| `{key}` | `{name}` |" in table, key
    assert rows == set(leaves)


def test_defaults_and_bounds_are_rendered_from_the_model() -> None:
    rows = {row.key: row for row in config_rows()}
    assert rows["stopLoss.defaultPercentage"].default == "`-32`"
    assert rows["stopLoss.defaultPercentage"].allowed == "number in [-100, 0]"
    assert rows["takeProfit.levels"].default == "`50→25, 150→25, 300→25, 400→15`"
    assert rows["takeProfit.levels"].allowed.endswith("at most 10")
    assert rows["stopLoss.trailingLevels[].stopLoss"].allowed == "number in (0, 1000]"
    assert rows["purchaseLimits.minimumAgentBalance"].allowed == "amount ≥ 0.1"
    assert rows["signals.holderCountMax"].default == "unset"
    assert rows["signals.holderCountMax"].allowed == "integer ≥ 0, or `null` (unset)"
    assert rows["stopLoss.mode"].allowed == (
        "one of `fixed`, `exponential`, `zones`, `custom`, `trailing`"
    )
    assert rows["engine.referenceQuirks"].default == "`false`"


def test_cross_field_rules_name_every_relational_val_rule() -> None:
    table = config_reference_markdown()
    for rule in ("VAL-2", "VAL-3", "VAL-4", "VAL-5", "VAL-6", "VAL-7", "VAL-8", "TP-14"):
        assert rule in table


def test_replace_reference_block_keeps_the_surroundings() -> None:
    text = f"before\n{START_MARKER}\nold\n{END_MARKER}\nafter\n"
    assert replace_reference_block(text, "new\n") == (
        f"before\n{START_MARKER}\nnew\n{END_MARKER}\nafter\n"
    )
    with pytest.raises(ValueError):
        replace_reference_block("no markers", "new\n")


def test_module_prints_the_reference(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    assert capsys.readouterr().out == config_reference_markdown()
