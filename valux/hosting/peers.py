"""Peers: how one valux actor calls another, by kind and key.

Every call between valux actors goes through a :class:`Peers` object:
``await peers.call("wallet", slot, "execute", orders)``. In a running system
that is :class:`RayPeers` — the named, detached actor of that kind and key in
the valux namespace, called with ``.remote`` and awaited (never ``ray.get``).
Unit tests and in-process runs use :class:`LocalPeers`, which calls plain
objects directly; by default it copies arguments and results through pickle,
as Ray does, so code that mutates what it sent or received behaves the same
in both.

The kinds and their names are :mod:`valux.hosting.naming`'s.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any, Protocol

from ray.exceptions import ActorDiedError, GetTimeoutError, RayActorError

from valux.hosting.handles import actor_handle, forget
from valux.hosting.naming import (
    agent_host_name,
    evaluator_name,
    exchange_name,
    feed_name,
    wallet_host_name,
)

NAMERS: dict[str, Callable[[Any], str]] = {
    "agent": agent_host_name,
    "wallet": wallet_host_name,
    "evaluator": evaluator_name,
    "feed": feed_name,
    "exchange": exchange_name,
}


class Peers(Protocol):
    """Calls to other valux actors (see the module docstring)."""

    async def call(self, kind: str, key: Any, method: str, *args: Any) -> Any:
        """Call ``method(*args)`` on the actor of ``kind`` and ``key``; return its answer.

        Raises what the callee raised, or the transport's error (for Ray: an
        ``ActorUnavailableError`` while it restarts, ``ActorDiedError`` if it died
        during the call; a caller can see an error for a call that did run)."""
        ...

    def host_locally(self, kind: str, key: Any, obj: Any) -> None:
        """This process hosts the ``kind``/``key`` actor as ``obj`` (a wallet host inside its
        agent host): calls to it from here are method calls on ``obj``."""
        ...


class RayPeers:
    """Peers as the named actors of one Ray namespace."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._local: dict[tuple[str, Any], Any] = {}

    def host_locally(self, kind: str, key: Any, obj: Any) -> None:
        self._local[(kind, key)] = obj

    async def call(self, kind: str, key: Any, method: str, *args: Any) -> Any:
        local = self._local.get((kind, key))
        if local is not None:  # same process: no Ray, no copy (as a Ray actor's own call)
            return await getattr(local, method)(*args)
        name = NAMERS[kind](key)
        handle = await actor_handle(name, self.namespace)
        try:
            return await getattr(handle, method).remote(*args)
        except ActorDiedError:  # gone for good: its supervisor creates a new one by name
            forget(name, self.namespace)
            raise


class LocalPeers:
    """Peers as plain objects in this process (unit tests, in-process runs).

    ``copy``: pass arguments and results through a pickle round trip, as Ray does.
    ``down``: (kind, key) pairs — or (kind, key, method) triples — whose calls fail as
    an unreachable actor would.
    """

    def __init__(self, *, copy: bool = True) -> None:
        self.objects: dict[tuple[str, Any], Any] = {}
        self.copy = copy
        self.down: set[tuple[Any, ...]] = set()
        self.calls: list[tuple[str, Any, str]] = []

    def register(self, kind: str, key: Any, obj: Any) -> None:
        self.objects[(kind, key)] = obj

    def host_locally(self, kind: str, key: Any, obj: Any) -> None:
        self.register(kind, key, obj)

    async def call(self, kind: str, key: Any, method: str, *args: Any) -> Any:
        self.calls.append((kind, key, method))
        if {(kind, key), (kind, key, method)} & self.down or (kind, key) not in self.objects:
            raise PeerUnavailable(f"{kind} {key} is not reachable")
        if self.copy:
            args = pickle.loads(pickle.dumps(args))
        result = await getattr(self.objects[(kind, key)], method)(*args)
        return pickle.loads(pickle.dumps(result)) if self.copy else result


class PeerUnavailable(RuntimeError):
    """A callee is down or does not answer in time (a :class:`LocalPeers` callee that is
    down, or a bounded call that timed out; stands in for Ray's ActorUnavailableError)."""


PEER_ERRORS: tuple[type[BaseException], ...] = (RayActorError, GetTimeoutError, PeerUnavailable)
"""Errors that mean "the other actor could not be reached or died during the call" (also
when a nested call raised them: Ray's task errors are instances of their cause's class).
A bug raised inside the callee is not one of them."""
