"""The supervisor's contract without Ray: restart counting (from recorded starts, and by
ping while they cannot be read), the restart intensity and its escalation, recovery after
a quiet window, hang detection, re-creation of a dead child, the aggregated state, and
re-adoption by a restarted supervisor that still knows every restart since boot.

Ray is replaced where the supervisor touches it: ``factory.spawn`` hands out fake child
handles, ``ray.kill`` is recorded, and ``starts_since_boot`` answers from a dict. The
supervisor's own clock is a fake one, and the monitor loop's sleep is replaced by a
stepper, so each test drives the real ``_monitor_loop`` one round at a time.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
import ray

import valux.supervisors.supervisor as supervisor_module
from tests.unit.fakes import construct
from tests.unit.harness import unit_settings
from valux.config.settings import Settings
from valux.errors import Unavailable
from valux.hosting.naming import evaluator_name
from valux.observability.metrics import ACTOR_RESTARTS, ESCALATIONS
from valux.supervisors import factory
from valux.supervisors.supervisor import Supervisor

_real_sleep = asyncio.sleep
INTENSITY = 2  # at most 2 restarts ...
PERIOD = 10.0  # ... in 10 s (of the fake clock)
PING_TIMEOUT = 0.05
INTERVAL = 2.0
DB_URL = "postgresql://unused/valux"
NAMES = [evaluator_name(0), evaluator_name(1)]


def _settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "hosting.evaluators": 2,
        "supervision.restart_intensity": INTENSITY,
        "supervision.restart_period_s": PERIOD,
        "supervision.ping_timeout_s": PING_TIMEOUT,
        "supervision.ping_interval_s": INTERVAL,
    }
    base.update(overrides)
    return unit_settings(**base)


# -- fakes -----


class _Remote:
    """``handle.method`` of a Ray actor handle: ``.remote()`` returns an awaitable."""

    def __init__(self, fn: Callable[[], Awaitable[Any]]) -> None:
        self._fn = fn

    def remote(self, *args: Any) -> Awaitable[Any]:
        return self._fn(*args)


class FakeChild:
    """A child actor's handle. ``mode``: ``answer`` its ping, ``hang`` (never answer) or
    ``raise`` ``error``. ``restart()`` is a new process behind the same handle (what Ray's
    ``max_restarts`` does): a new incarnation, and a start recorded in the cluster."""

    def __init__(self, cluster: Cluster, name: str, generation: int) -> None:
        self.cluster = cluster
        self.name = name
        self.generation = generation
        self.process = 0
        self.mode = "answer"
        self.error: BaseException | None = None
        self.pings = 0
        self.shut_down = False
        self.ping = _Remote(self._ping)
        self.shutdown = _Remote(self._shutdown)
        self.metrics = _Remote(self._metrics)

    @property
    def incarnation(self) -> str:
        return f"{self.name}/{self.generation}.{self.process}"

    def restart(self) -> None:
        self.process += 1
        self.cluster.record_start(self.name)

    async def _ping(self) -> dict[str, Any]:
        self.pings += 1
        if self.mode == "hang":
            await asyncio.Event().wait()
        if self.mode == "raise":
            assert self.error is not None
            raise self.error
        return {"incarnation": self.incarnation, "pid": 1000 + self.process}

    async def _shutdown(self) -> dict[str, Any]:
        self.shut_down = True
        return {"final_snapshot": True}

    async def _metrics(self) -> list[Any]:
        return []


class Cluster:
    """The Ray side the supervisor sees: named children (``spawn`` returns the running
    child of a name, as ``get_if_exists`` does, or creates one), ``ray.kill`` calls, and
    the ``actor_starts`` rows since boot (``starts_down``: they cannot be read)."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.alive: dict[str, FakeChild] = {}
        self.spawns: list[tuple[Any, ...]] = []
        self.kills: list[tuple[Any, bool]] = []
        self.starts: dict[str, list[float]] = {}
        self.starts_down = False
        self.reads: list[list[str]] = []

    def record_start(self, name: str, at: float | None = None) -> None:
        self.starts.setdefault(name, []).append(self.clock.time() if at is None else at)

    def spawn(self, kind: str, name: str, namespace: str, *args: Any, **options: Any) -> FakeChild:
        self.spawns.append((kind, name, namespace, *args))
        if name not in self.alive:
            generation = sum(1 for s in self.spawns if s[1] == name)
            self.alive[name] = FakeChild(self, name, generation)
            self.record_start(name)
        return self.alive[name]

    def die(self, name: str) -> FakeChild:
        """The child is gone for good (ActorDiedError): the next spawn makes a new one."""
        child = self.alive.pop(name)
        child.mode, child.error = "raise", ray.exceptions.ActorDiedError()
        return child

    def kill(self, handle: Any, *, no_restart: bool = True) -> None:
        self.kills.append((handle, no_restart))

    async def starts_since_boot(self, pool: Any, names: list[str]) -> dict[str, list[float]]:
        self.reads.append(list(names))
        if self.starts_down:
            raise OSError("connection refused")
        return {name: list(self.starts.get(name, [])) for name in names}


class FakeClock:
    """The supervisor's ``time`` module: wall and monotonic clocks that move together,
    only when told to."""

    def __init__(self) -> None:
        self.wall = 1_700_000_000.0
        self.mono = 5_000.0

    def time(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


class Stepper(types.ModuleType):
    """The supervisor's ``asyncio`` module, except that ``sleep`` waits for :meth:`round`:
    one call of :meth:`round` lets the monitor loop run exactly one round."""

    def __init__(self) -> None:
        super().__init__("asyncio")
        self.delays: list[float] = []
        self.arrivals = 0
        self.waiting = False
        self.tick = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    async def sleep(self, delay: float, result: Any = None) -> Any:
        self.delays.append(delay)
        self.arrivals += 1
        self.waiting = True
        await self.tick.wait()
        self.tick.clear()
        return result

    async def _until(self, condition: Callable[[], bool]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2.0
        while not condition():
            if self.task is not None and self.task.done():
                raise AssertionError(f"the monitor loop ended: {self.task!r}")
            assert loop.time() < deadline, "the monitor loop did not come round"
            await _real_sleep(0.001)

    async def round(self) -> None:
        await self._until(lambda: self.waiting)
        arrived = self.arrivals
        self.waiting = False
        self.tick.set()
        await self._until(lambda: self.arrivals > arrived)


class Rig:
    """A supervisor of two evaluators over the fakes above."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch
        self.clock = FakeClock()
        self.cluster = Cluster(self.clock)
        self.supervisors: list[tuple[Supervisor, Stepper]] = []
        monkeypatch.setattr(factory, "spawn", self.cluster.spawn)
        monkeypatch.setattr(ray, "kill", self.cluster.kill)
        monkeypatch.setattr(supervisor_module, "starts_since_boot", self.cluster.starts_since_boot)
        monkeypatch.setattr(supervisor_module, "time", self.clock)

        async def create_pool(*args: Any, **kwargs: Any) -> object:
            return object()

        monkeypatch.setattr(asyncpg, "create_pool", create_pool)

    async def supervisor(self, settings: Settings | None = None) -> Supervisor:
        """A (new) supervisor; the previous one, if any, stops monitoring (it died)."""
        for old, _ in self.supervisors:
            old._monitor.cancel()
        stepper = Stepper()
        self.monkeypatch.setattr(supervisor_module, "asyncio", stepper)
        sup = await construct(Supervisor, "evaluators", settings or _settings(), DB_URL, None)
        stepper.task = sup._monitor
        self.supervisors.append((sup, stepper))
        return sup

    @property
    def sup(self) -> Supervisor:
        return self.supervisors[-1][0]

    async def round(self) -> None:
        """One round of the current supervisor's monitor loop."""
        await self.supervisors[-1][1].round()

    def child(self, index: int) -> FakeChild:
        return self.cluster.alive[NAMES[index]]

    async def view(self, index: int) -> dict[str, Any]:
        status = await self.sup.status()
        views: dict[str, dict[str, Any]] = {c["name"]: c for c in status["children"]}
        return views[NAMES[index]]

    async def close(self) -> None:
        for sup, _ in self.supervisors:
            sup._monitor.cancel()
        await asyncio.gather(*(s._monitor for s, _ in self.supervisors), return_exceptions=True)


@pytest.fixture
async def rig(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Rig]:
    rig = Rig(monkeypatch)
    yield rig
    await rig.close()


def _count(counter: Any, kind: str = "evaluator") -> float:
    value: float = counter.labels(kind)._value.get()
    return value


# -- starting and adopting -----


async def test_children_are_spawned_by_name_and_running_once_they_answer(rig: Rig) -> None:
    """The constructor creates (or adopts) every desired child by its name, with its
    arguments, waits for its first answer, and is then ``running``."""
    sup = await rig.supervisor()
    assert [s[:4] for s in rig.cluster.spawns] == [
        ("evaluator", NAMES[0], sup.namespace, 0),
        ("evaluator", NAMES[1], sup.namespace, 1),
    ]
    assert all(s[4] is sup.settings and s[5] == DB_URL for s in rig.cluster.spawns)
    assert sup.state == "running" and await sup.child_keys() == [0, 1]
    assert [(await rig.view(i))["state"] for i in (0, 1)] == ["running", "running"]
    assert rig.child(0).pings == 1 and rig.child(1).pings == 1
    ping = await sup.ping()
    node = ping.pop("node")
    assert node is None or isinstance(node, str)  # Ray's node, when Ray runs here
    assert ping == {"pid": (await sup.status())["pid"], "group": "evaluators",
                    "state": "running", "children": 2}  # fmt: skip


async def test_the_monitor_pings_every_child_each_ping_interval(rig: Rig) -> None:
    """Each round sleeps ``ping_interval_s``, reads the recorded starts and pings every
    child; quiet children are not counted as restarted."""
    sup = await rig.supervisor()
    for _ in range(3):
        await rig.round()
    stepper = rig.supervisors[-1][1]
    assert stepper.delays[:3] == [INTERVAL] * 3
    assert rig.child(0).pings == 4 and rig.child(1).pings == 4
    assert rig.cluster.reads == [NAMES] * 3
    assert [(await rig.view(i))["restarts"] for i in (0, 1)] == [0, 0]
    assert sup.state == "running"


# -- counting restarts -----


async def test_a_recorded_start_counts_as_a_restart_none_missed_between_pings(rig: Rig) -> None:
    """Two restarts between two pings are both counted (from ``actor_starts``), and only
    the restarted child's count moves."""
    await rig.supervisor()
    await rig.round()
    before = _count(ACTOR_RESTARTS)
    rig.child(0).restart()
    rig.clock.advance(0.5)
    rig.child(0).restart()
    await rig.round()
    view = await rig.view(0)
    assert view["restarts"] == 2 and view["state"] == "running"
    assert view["last_failure"] == "process restarted"
    assert view["info"]["incarnation"] == rig.child(0).incarnation
    assert (await rig.view(1))["restarts"] == 0
    assert _count(ACTOR_RESTARTS) == before + 2
    await rig.round()
    assert (await rig.view(0))["restarts"] == 2  # counted once, not again next round


async def test_while_starts_are_unreadable_a_changed_incarnation_counts(rig: Rig) -> None:
    """The starts cannot be read: the ping's new incarnation is counted as one restart;
    an unchanged incarnation is not."""
    await rig.supervisor()
    rig.cluster.starts_down = True
    await rig.round()
    assert (await rig.view(0))["restarts"] == 0
    rig.child(0).restart()
    await rig.round()
    assert (await rig.view(0))["restarts"] == 1
    assert (await rig.view(1))["restarts"] == 0
    await rig.round()
    assert (await rig.view(0))["restarts"] == 1


async def test_a_changed_incarnation_is_not_counted_twice_when_starts_are_read(rig: Rig) -> None:
    """With the starts readable the ping's incarnation is not a second source: one
    restart, one count."""
    await rig.supervisor()
    await rig.round()
    rig.child(0).restart()
    await rig.round()
    assert (await rig.view(0))["restarts"] == 1


async def test_a_restart_counted_by_ping_is_not_counted_again_once_starts_are_readable(
    rig: Rig,
) -> None:
    """The child recorded its start but the supervisor could not read it that round, so
    the ping counted the restart; when the starts are readable again that same start is
    not a second restart (which could push a child past its budget)."""
    await rig.supervisor()
    await rig.round()
    rig.child(0).restart()
    rig.cluster.starts_down = True
    await rig.round()
    assert (await rig.view(0))["restarts"] == 1
    rig.cluster.starts_down = False
    await rig.round()
    assert (await rig.view(0))["restarts"] == 1
    rig.child(0).restart()  # a later restart is still counted
    await rig.round()
    assert (await rig.view(0))["restarts"] == 2


async def test_a_child_added_while_the_starts_are_read_does_not_stop_the_monitor(
    rig: Rig,
) -> None:
    """``ensure`` adds a child (a new slot) while the round's read of the starts is in
    flight: the read does not know it, the round goes on, and the new child is watched
    from the next round."""
    sup = await rig.supervisor()
    read = rig.cluster.starts_since_boot
    in_flight = asyncio.Event()
    release = asyncio.Event()

    async def slow(pool: Any, names: list[str]) -> dict[str, list[float]]:
        answer = await read(pool, names)
        in_flight.set()
        await release.wait()
        return answer

    rig.monkeypatch.setattr(supervisor_module, "starts_since_boot", slow)
    stepper = rig.supervisors[-1][1]
    await stepper._until(lambda: stepper.waiting)
    arrived = stepper.arrivals
    stepper.waiting = False
    stepper.tick.set()
    await asyncio.wait_for(in_flight.wait(), 2)
    await sup.ensure(2)
    release.set()
    await stepper._until(lambda: stepper.arrivals > arrived)  # the round completed
    rig.monkeypatch.setattr(supervisor_module, "starts_since_boot", read)
    rig.cluster.alive[evaluator_name(2)].restart()
    await rig.round()
    status = await sup.status()
    views = {c["name"]: c for c in status["children"]}
    assert views[evaluator_name(2)]["restarts"] == 1


async def test_ensure_does_not_lift_a_failed_childs_escalation(rig: Rig) -> None:
    """Creating an agent calls ``ensure`` on its host slot; a child that failed its budget
    stays failed (and the root's safe state with it) until a quiet window has passed."""
    sup = await rig.supervisor()
    await rig.round()
    for _ in range(INTENSITY + 1):
        rig.child(0).restart()
    await rig.round()
    assert (await rig.view(0))["state"] == "failed"
    await sup.ensure(0)
    sup._update_state()
    assert (await rig.view(0))["state"] == "failed" and sup.state == "failed"


# -- intensity and escalation -----


async def test_past_the_restart_intensity_the_child_fails_and_escalates_once(rig: Rig) -> None:
    """``restart_intensity`` restarts within ``restart_period_s`` are tolerated; one more
    marks the child ``failed`` (counted once as an escalation) and the supervisor
    ``failed``; further restarts keep it failed without a second escalation."""
    sup = await rig.supervisor()
    await rig.round()
    escalations = _count(ESCALATIONS)
    for _ in range(INTENSITY):
        rig.clock.advance(1.0)
        rig.child(0).restart()
        await rig.round()
    assert (await rig.view(0))["state"] == "running" and sup.state == "running"
    assert _count(ESCALATIONS) == escalations
    rig.clock.advance(1.0)
    rig.child(0).restart()
    await rig.round()
    view = await rig.view(0)
    assert view["state"] == "failed" and view["restarts"] == INTENSITY + 1
    assert sup.state == "failed" and (await sup.status())["state"] == "failed"
    assert _count(ESCALATIONS) == escalations + 1
    rig.clock.advance(1.0)
    rig.child(0).restart()
    await rig.round()
    assert (await rig.view(0))["state"] == "failed"
    assert _count(ESCALATIONS) == escalations + 1
    assert (await rig.view(1))["state"] == "running"


async def test_a_burst_of_restarts_between_two_pings_also_fails_the_child(rig: Rig) -> None:
    """The intensity applies to when the restarts happened (their recorded times), so
    R+1 restarts inside one ping interval exceed it."""
    await rig.supervisor()
    await rig.round()
    for _ in range(INTENSITY + 1):
        rig.clock.advance(0.1)
        rig.child(1).restart()
    await rig.round()
    assert (await rig.view(1))["state"] == "failed"
    assert (await rig.view(0))["state"] == "running"


async def test_restarts_spread_wider_than_the_period_never_fail(rig: Rig) -> None:
    """Restarts further apart than ``restart_period_s / restart_intensity`` never pile up
    past the budget inside one window."""
    sup = await rig.supervisor()
    await rig.round()
    for _ in range(3 * INTENSITY):
        rig.clock.advance(PERIOD / INTENSITY + 0.5)
        rig.child(0).restart()
        await rig.round()
    view = await rig.view(0)
    assert view["restarts"] == 3 * INTENSITY and view["state"] == "running"
    assert sup.state == "running"


async def test_restarts_counted_by_ping_fail_the_child_too(rig: Rig) -> None:
    """Without readable starts the budget is enforced from the incarnations the ping
    sees."""
    await rig.supervisor()
    rig.cluster.starts_down = True
    await rig.round()
    for _ in range(INTENSITY + 1):
        rig.clock.advance(1.0)
        rig.child(0).restart()
        await rig.round()
    assert (await rig.view(0))["state"] == "failed"
    assert rig.sup.state == "failed"


async def test_a_failed_child_quiet_for_a_whole_window_is_running_again(rig: Rig) -> None:
    """After the escalation, a child that answers without restarting is still ``failed``
    inside the window and ``running`` (supervisor too) once a whole window has passed
    since its last restart."""
    sup = await rig.supervisor()
    await rig.round()
    for _ in range(INTENSITY + 1):
        rig.clock.advance(1.0)
        rig.child(0).restart()
    await rig.round()
    assert (await rig.view(0))["state"] == "failed"
    rig.clock.advance(PERIOD / 2)
    await rig.round()
    assert (await rig.view(0))["state"] == "failed" and sup.state == "failed"
    rig.clock.advance(PERIOD / 2 + 0.1)
    await rig.round()
    assert (await rig.view(0))["state"] == "running" and sup.state == "running"
    assert (await rig.view(0))["restarts"] == INTENSITY + 1  # the history is kept


async def test_a_failed_child_that_cannot_be_reached_does_not_recover(rig: Rig) -> None:
    """Recovery needs an answer: a failed child whose ping fails stays failed however
    long it has been since its last restart."""
    await rig.supervisor()
    await rig.round()
    for _ in range(INTENSITY + 1):
        rig.child(0).restart()
    await rig.round()
    rig.child(0).mode, rig.child(0).error = "raise", RuntimeError("restarting")
    rig.clock.advance(PERIOD * 3)
    await rig.round()
    assert (await rig.view(0))["state"] == "failed"


# -- hangs, errors and deaths -----


async def test_a_child_that_does_not_answer_in_time_is_killed_for_ray_to_restart(
    rig: Rig,
) -> None:
    """No answer within ``ping_timeout_s``: that handle is killed with ``no_restart=False``
    (Ray restarts the process) and the reason is recorded; the other child is left be."""
    await rig.supervisor()
    hung = rig.child(0)
    hung.mode = "hang"
    loop = asyncio.get_running_loop()
    started = loop.time()
    await rig.round()
    assert PING_TIMEOUT * 0.8 <= loop.time() - started < 0.5
    assert rig.cluster.kills == [(hung, False)]
    assert rig.cluster.kills[0][0] is hung
    assert "no answer to ping within 0.05s" in (await rig.view(0))["last_failure"]
    hung.mode = "answer"
    hung.restart()  # what Ray does after the kill
    await rig.round()
    assert rig.cluster.kills == [(hung, False)]
    assert (await rig.view(0))["restarts"] == 1
    assert "no answer to ping" in (await rig.view(0))["last_failure"]


async def test_a_child_that_answers_just_in_time_is_not_killed(rig: Rig) -> None:
    """An answer inside ``ping_timeout_s`` is an answer."""
    await rig.supervisor()
    child = rig.child(0)

    async def slow_ping() -> dict[str, Any]:
        await _real_sleep(PING_TIMEOUT / 5)
        return {"incarnation": child.incarnation}

    child.ping = _Remote(slow_ping)
    await rig.round()
    assert rig.cluster.kills == []
    assert (await rig.view(0))["state"] == "running"


async def test_a_child_that_died_for_good_is_created_again(rig: Rig) -> None:
    """``ActorDiedError``: the supervisor spawns the child again by the same name and
    arguments and supervises the new handle from then on; its start counts as a
    restart."""
    sup = await rig.supervisor()
    await rig.round()
    first_spawn = rig.cluster.spawns[0]
    dead = rig.cluster.die(NAMES[0])
    await rig.round()
    assert rig.cluster.spawns[-1] == first_spawn
    reborn = rig.child(0)
    assert reborn is not dead and sup.children[NAMES[0]].handle is reborn
    assert "died permanently" in (await rig.view(0))["last_failure"]
    assert rig.cluster.kills == []
    await rig.round()
    view = await rig.view(0)
    assert view["restarts"] == 1 and view["state"] == "running"
    assert view["info"]["incarnation"] == reborn.incarnation
    assert reborn.pings == 1


async def test_an_unreachable_child_is_degraded_until_it_answers(rig: Rig) -> None:
    """Any other ping error (a restarting actor): the child and the supervisor are
    ``degraded``, nothing is killed or spawned, and the next answer makes both
    ``running``."""
    sup = await rig.supervisor()
    child = rig.child(1)
    child.mode = "raise"
    child.error = ray.exceptions.ActorUnavailableError("restarting", None)
    spawns = len(rig.cluster.spawns)
    await rig.round()
    view = await rig.view(1)
    assert view["state"] == "degraded" and sup.state == "degraded"
    assert view["last_failure"].startswith("ActorUnavailableError")
    assert rig.cluster.kills == [] and len(rig.cluster.spawns) == spawns
    child.mode = "answer"
    await rig.round()
    assert (await rig.view(1))["state"] == "running" and sup.state == "running"


async def test_the_supervisor_state_is_its_worst_childs(rig: Rig) -> None:
    """failed > degraded > running, whichever child it comes from."""
    sup = await rig.supervisor()
    await rig.round()
    for _ in range(INTENSITY + 1):
        rig.child(0).restart()
    rig.child(1).mode, rig.child(1).error = "raise", RuntimeError("busy")
    await rig.round()
    assert [(await rig.view(i))["state"] for i in (0, 1)] == ["failed", "degraded"]
    assert sup.state == "failed"
    rig.clock.advance(PERIOD + 1)
    await rig.round()
    assert [(await rig.view(i))["state"] for i in (0, 1)] == ["running", "degraded"]
    assert sup.state == "degraded"
    rig.child(1).mode = "answer"
    await rig.round()
    assert sup.state == "running"


# -- a restarted supervisor -----


async def test_a_restarted_supervisor_adopts_its_children_and_their_restarts(rig: Rig) -> None:
    """A new supervisor finds the running children by name (no new processes), counts
    every restart since boot from the recorded starts, and a further restart is counted
    on top of them, within the same budget."""
    await rig.supervisor()
    await rig.round()
    children = [rig.child(0), rig.child(1)]
    for _ in range(INTENSITY):
        rig.clock.advance(1.0)
        children[0].restart()
    rig.clock.advance(1.0)
    await rig.supervisor()  # the old one died before counting those restarts
    assert [rig.child(0), rig.child(1)] == children
    assert children[0].process == INTENSITY  # adopted, not re-created
    await rig.round()
    view = await rig.view(0)
    assert view["restarts"] == INTENSITY and view["state"] == "running"
    assert (await rig.view(1))["restarts"] == 0
    rig.clock.advance(1.0)
    children[0].restart()
    await rig.round()
    view = await rig.view(0)
    assert view["restarts"] == INTENSITY + 1 and view["state"] == "failed"
    assert rig.sup.state == "failed"


async def test_a_restarted_supervisor_marks_failed_a_child_already_over_budget(
    rig: Rig,
) -> None:
    """Adopting a child that restarted more than ``restart_intensity`` times within the
    last window: it is ``failed`` at once."""
    await rig.supervisor()
    for _ in range(INTENSITY + 1):
        rig.clock.advance(1.0)
        rig.child(1).restart()
    await rig.supervisor()
    await rig.round()
    view = await rig.view(1)
    assert view["restarts"] == INTENSITY + 1 and view["state"] == "failed"
    assert rig.sup.state == "failed"
    assert (await rig.view(0))["state"] == "running"
    rig.clock.advance(PERIOD + 1)
    await rig.round()
    assert (await rig.view(1))["state"] == "running"  # and it can recover as usual


async def test_a_restarted_supervisor_does_not_hold_old_restarts_against_a_child(
    rig: Rig,
) -> None:
    """Restarts since boot but older than the window count in ``restarts`` and not
    against the budget — even while the child does not answer (it is then ``degraded``,
    not ``failed``)."""
    await rig.supervisor()
    for _ in range(INTENSITY + 3):
        rig.clock.advance(1.0)
        rig.child(0).restart()
    rig.clock.advance(PERIOD + 1)
    await rig.supervisor()
    rig.child(0).mode, rig.child(0).error = "raise", RuntimeError("busy")
    await rig.round()
    view = await rig.view(0)
    assert view["restarts"] == INTENSITY + 3 and view["state"] == "degraded"
    rig.child(0).mode = "answer"
    await rig.round()
    assert (await rig.view(0))["state"] == "running"
    rig.child(0).restart()
    await rig.round()
    assert (await rig.view(0))["state"] == "running"


async def test_a_child_with_no_recorded_start_yet_is_counted_once_it_has_one(
    rig: Rig,
) -> None:
    """Until a child's first start is recorded there is nothing to count; its first row
    is its start, not a restart."""
    await rig.supervisor()
    rig.cluster.starts.pop(NAMES[0])
    await rig.round()
    assert (await rig.view(0))["restarts"] == 0
    rig.cluster.record_start(NAMES[0])
    await rig.round()
    assert (await rig.view(0))["restarts"] == 0
    rig.child(0).restart()
    await rig.round()
    assert (await rig.view(0))["restarts"] == 1


# -- shutdown -----


async def test_shutdown_stops_every_child_and_kills_it_for_good(rig: Rig) -> None:
    """Each child is asked for its orderly shutdown and then killed without restart; a
    child that cannot answer is reported as skipped and killed all the same."""
    sup = await rig.supervisor()
    rig.child(1).shutdown = _Remote(rig.child(1)._ping)
    rig.child(1).mode, rig.child(1).error = "raise", RuntimeError("gone")
    report = await sup.shutdown()
    assert report[NAMES[0]] == {"final_snapshot": True}
    assert report[NAMES[1]] == "skipped: RuntimeError: gone"
    assert sorted((h.name, no_restart) for h, no_restart in rig.cluster.kills) == [
        (NAMES[0], True),
        (NAMES[1], True),
    ]
    await asyncio.gather(sup._monitor, return_exceptions=True)
    assert sup._monitor.cancelled()


async def test_no_child_is_started_after_the_shutdown(rig: Rig) -> None:
    """A request that reaches a supervisor after its shutdown (an API still draining)
    is refused as unavailable instead of starting a child nobody will stop."""
    sup = await rig.supervisor()
    await sup.shutdown()
    with pytest.raises(Unavailable, match="shutting down"):
        await sup.ensure("a-new-key")


async def test_a_supervisor_started_while_the_database_refuses_waits_for_it(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agents supervisor reads its children's slots from PostgreSQL. Started (or
    restarted by Ray) while the database refuses connections, its constructor retries
    instead of raising: a constructor that raised would leave the actor dead for good,
    and no agent host would be supervised again (a chaos run found exactly that)."""
    attempts: list[str] = []

    class Conn:
        async def fetch(self, sql: str, **options: float) -> list[dict[str, int]]:
            return [{"host_slot": 3}]

        async def close(self, **options: float) -> None:
            return None

    async def connect(url: str, **options: float) -> Conn:
        attempts.append(url)
        if len(attempts) <= 2:
            raise ConnectionRefusedError("connection refused")
        return Conn()

    monkeypatch.setattr(asyncpg, "connect", connect)
    stepper = Stepper()
    monkeypatch.setattr(supervisor_module, "asyncio", stepper)
    starting = asyncio.ensure_future(construct(Supervisor, "agents", _settings(), DB_URL, None))
    await stepper.round()  # the first retry's back-off
    await stepper.round()  # the second's; the third connect answers
    sup = await asyncio.wait_for(starting, 2)
    try:
        assert len(attempts) == 3 and stepper.delays[:2] == [0.2, 0.4]
        assert await sup.child_keys() == [3] and sup.state == "running"
    finally:
        sup._monitor.cancel()
        await asyncio.gather(sup._monitor, return_exceptions=True)
