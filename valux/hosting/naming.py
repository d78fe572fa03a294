"""Names of the detached actors in the ``valux`` namespace, and token sharding.

Every actor is found by name, so a restarted API process or supervisor
re-adopts the running actors instead of creating duplicates.
"""

from __future__ import annotations

import zlib

ROOT = "valux-root"


def supervisor_name(kind: str) -> str:
    return f"valux-sup-{kind}"


def agent_host_name(slot: int) -> str:
    return f"valux-agent-host-{slot}"


def wallet_host_name(slot: int) -> str:
    return f"valux-wallet-host-{slot}"


def evaluator_name(shard: int) -> str:
    return f"valux-evaluator-{shard}"


def exchange_name(venue: str) -> str:
    return f"valux-exchange-{venue}"


def feed_name(source: str) -> str:
    return f"valux-feed-{source}"


def shard_of(token: str, shards: int) -> int:
    """The evaluator shard that owns ``token`` (stable across processes and restarts)."""
    return zlib.crc32(token.encode("utf-8")) % shards
