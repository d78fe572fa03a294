"""The root supervisor's tree without Ray: a group supervisor that died for good is made
again (Ray restarts a killed process, never an actor whose constructor raised)."""

from __future__ import annotations

import asyncio
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
        self.shutdown = _Remote(self._shutdown)

    async def _status(self) -> dict[str, Any]:
        if self.dead:
            raise ray.exceptions.ActorDiedError()
        return {"group": self.group, "state": "running", "children": []}

    async def _shutdown(self) -> dict[str, Any]:
        return {"stopped": self.group}


def _root(supervisors: dict[str, FakeSupervisor]) -> RootSupervisor:
    root = RootSupervisor.__new__(RootSupervisor)
    root.settings = unit_settings()
    root.namespace = "ns"
    root.database_url, root.redis_url = "postgresql://db", "redis://r"
    root.log = structlog.get_logger("test")
    root.started_at, root.boot_seconds = 0.0, 0.0
    root.supervisors = dict(supervisors)
    root._stopping = False
    return root


@pytest.fixture
def spawned(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Every ``factory.spawn`` call, answered with a live fake supervisor."""
    calls: list[tuple[Any, ...]] = []

    def spawn(kind: str, name: str, namespace: str, *args: Any, **options: Any) -> FakeSupervisor:
        calls.append((kind, name, namespace, *args))
        return FakeSupervisor(args[0])

    monkeypatch.setattr(factory, "spawn", spawn)
    return calls


async def test_a_group_supervisor_that_died_for_good_is_spawned_again(
    spawned: list[tuple[Any, ...]],
) -> None:
    """The tree reports the dead group as failed this round and spawns it again, by its
    name and with the root's arguments; the next round reads the new one."""
    root = _root({g: FakeSupervisor(g, dead=g == "agents") for g in GROUPS})
    first = await root.tree()
    assert first["supervisors"]["agents"]["state"] == "failed"
    assert spawned == [("supervisor", "valux-sup-agents", "ns", "agents", root.settings,
                        "postgresql://db", "redis://r")]  # fmt: skip
    second = await root.tree()
    assert {g: s["state"] for g, s in second["supervisors"].items()} == dict.fromkeys(
        GROUPS, "running"
    )


async def test_supervisors_killed_by_the_shutdown_are_not_spawned_again(
    spawned: list[tuple[Any, ...]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``valux stop``: each supervisor is shut down and killed for good; a tree round
    meanwhile (the escalation loop, a readiness probe) must not recreate the ones already
    killed — a CI run found three supervisors and their children alive after the stop."""
    supervisors = {g: FakeSupervisor(g) for g in GROUPS}
    root = _root(supervisors)
    root._escalation = asyncio.get_running_loop().create_task(asyncio.sleep(3600))
    killed: list[tuple[str, bool]] = []

    def kill(handle: FakeSupervisor, no_restart: bool = True) -> None:
        handle.dead = True
        killed.append((handle.group, no_restart))

    monkeypatch.setattr(ray, "kill", kill)
    report = await root.shutdown()
    assert report == {g: {"stopped": g} for g in GROUPS}
    assert sorted(killed) == sorted((g, True) for g in GROUPS)
    tree = await root.tree()
    assert {s["state"] for s in tree["supervisors"].values()} == {"failed"}
    assert spawned == []
    await asyncio.gather(root._escalation, return_exceptions=True)
    assert root._escalation.cancelled()
