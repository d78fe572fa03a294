"""Resolving named actors without blocking the event loop.

``ray.get_actor`` is a synchronous GCS lookup; inside async actors and the API
it runs in a worker thread, and the handle is cached (a named, restartable
actor keeps its handle valid across restarts).
"""

from __future__ import annotations

import asyncio
from typing import Any

import ray

from valux.hosting.naming import agent_host_name, evaluator_name, wallet_host_name

_cache: dict[tuple[str, str], Any] = {}


async def actor_handle(name: str, namespace: str) -> Any:
    """The handle of a named actor; raises ``ValueError`` if it does not exist."""
    key = (namespace, name)
    handle = _cache.get(key)
    if handle is None:
        handle = await asyncio.to_thread(ray.get_actor, name, namespace=namespace)
        _cache[key] = handle
    return handle


def clear_cache() -> None:
    """Forget every cached handle (a new actor system was started in this process)."""
    _cache.clear()


def forget(name: str, namespace: str) -> None:
    """Drop a cached handle (after the actor was killed for good)."""
    _cache.pop((namespace, name), None)


async def evaluator_handle(shard: int, namespace: str) -> Any:
    return await actor_handle(evaluator_name(shard), namespace)


async def agent_host_handle(slot: int, namespace: str) -> Any:
    return await actor_handle(agent_host_name(slot), namespace)


async def wallet_host_handle(slot: int, namespace: str) -> Any:
    return await actor_handle(wallet_host_name(slot), namespace)
