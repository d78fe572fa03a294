"""The root supervisor's tree without Ray: a group supervisor that died for good is made
again (Ray restarts a killed process, never an actor whose constructor raised)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import ray
import structlog

from tests.unit.harness import unit_settings
from valux.supervisors import factory
from valux.supervisors.root import GROUPS, RootSupervisor


class _Remote:
    def __init__(self, fn: Callable[[], Awaitable[Any]]) -> None:
        self._fn = fn

    def remote(self) -> Awaitable[Any]:
        return self._fn()


class FakeSupervisor:
    def __init__(self, group: str, dead: bool = False) -> None:
        self.group = group
        self.dead = dead
        self.status = _Remote(self._status)

    async def _status(self) -> dict[str, Any]:
        if self.dead:
            raise ray.exceptions.ActorDiedError()
        return {"group": self.group, "state": "running", "children": []}


async def test_a_group_supervisor_that_died_for_good_is_spawned_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The tree reports the dead group as failed this round and spawns it again, by its
    name and with the root's arguments; the next round reads the new one."""
    spawned: list[tuple[Any, ...]] = []

    def spawn(kind: str, name: str, namespace: str, *args: Any, **options: Any) -> FakeSupervisor:
        spawned.append((kind, name, namespace, *args))
        return FakeSupervisor(args[0])

    monkeypatch.setattr(factory, "spawn", spawn)
    root = RootSupervisor.__new__(RootSupervisor)
    root.settings = unit_settings()
    root.namespace = "ns"
    root.database_url, root.redis_url = "postgresql://db", "redis://r"
    root.log = structlog.get_logger("test")
    root.started_at, root.boot_seconds = 0.0, 0.0
    root.supervisors = {g: FakeSupervisor(g, dead=g == "agents") for g in GROUPS}
    first = await root.tree()
    assert first["supervisors"]["agents"]["state"] == "failed"
    assert spawned == [("supervisor", "valux-sup-agents", "ns", "agents", root.settings,
                        "postgresql://db", "redis://r")]  # fmt: skip
    second = await root.tree()
    assert {g: s["state"] for g, s in second["supervisors"].items()} == dict.fromkeys(
        GROUPS, "running"
    )
