"""The package layout runs downhill: no room imports a room above it, and there is no cycle.

The order is the README's (architecture, "Package layout"): a signal's way from HTTP to a
fill goes api/system → supervisors → actors → trading / custody / risk → venues / feeds /
evaluation / hosting → rules → persistence → schema / config / observability → errors.
Every import counts, including those inside functions and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "valux"

#: Rank of each top-level room; a module may import its own room or a lower rank only.
RANKS: dict[str, int] = {
    "errors": 0,
    "config": 1,
    "observability": 1,
    "schema": 1,
    "ops": 2,
    "persistence": 2,
    "auth": 2,
    "rules": 3,
    "evaluation": 4,
    "feeds": 4,
    "hosting": 4,
    "venues": 5,
    "custody": 6,
    "risk": 6,
    "trading": 7,
    "actors": 8,
    "supervisors": 9,
    "api": 10,
    "system": 11,
    "backtest": 12,
    "sandbox": 12,
    "main": 13,
    "__main__": 14,
    "__init__": 14,
}


def _room(path: Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0].removesuffix(".py")


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("valux."):
                found.append((node.lineno, node.module.split(".")[1]))
        elif isinstance(node, ast.Import):
            found.extend(
                (node.lineno, a.name.split(".")[1])
                for a in node.names
                if a.name.startswith("valux.")
            )
    return found


MODULES = sorted(ROOT.rglob("*.py"))


def test_every_room_has_a_rank() -> None:
    """A new top-level package must be placed in the order before it can be used."""
    rooms = {_room(p) for p in MODULES}
    assert rooms <= set(RANKS), f"rooms without a rank: {sorted(rooms - set(RANKS))}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_run_downhill(path: Path) -> None:
    """Each valux module imports only from its own room or rooms below it."""
    room = _room(path)
    uphill = [
        f"line {line}: {room} imports valux.{target}"
        for line, target in _imports(path)
        if target != room and RANKS.get(target, 99) >= RANKS[room]
    ]
    assert not uphill, "\n".join(uphill)
