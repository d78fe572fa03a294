"""PriceLookup: cache, and one evaluator call for concurrent lookups of a token."""

from __future__ import annotations

import asyncio

import pytest

from valux.hosting.peers import LocalPeers
from valux.venues.paper.prices import PriceLookup


class _Evaluator:
    """Stands in for an evaluator: ``latest_price(token)`` answers once released."""

    def __init__(self, answer: tuple[float, float] | None, fail: bool = False) -> None:
        self.calls: list[str] = []
        self.answer = answer
        self.fail = fail
        self.release = asyncio.Event()

    async def latest_price(self, token: str) -> tuple[float, float] | None:
        self.calls.append(token)
        await self.release.wait()
        if self.fail:
            raise ConnectionError("evaluator down")
        return self.answer


def _lookup(
    monkeypatch: pytest.MonkeyPatch, answer: tuple[float, float], *, fail: bool = False
) -> tuple[PriceLookup, _Evaluator]:
    """A live-mode lookup whose evaluators (both shards) are one :class:`_Evaluator`."""
    evaluator = _Evaluator(answer, fail)
    peers = LocalPeers()
    for shard in (0, 1):
        peers.register("evaluator", shard, evaluator)
    return PriceLookup(2, peers), evaluator


async def test_concurrent_lookups_share_one_evaluator_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lookup, evaluator = _lookup(monkeypatch, (1.25, 100.0))
    waiting = [asyncio.ensure_future(lookup.price("SOL")) for _ in range(50)]
    await asyncio.sleep(0)
    evaluator.release.set()
    assert await asyncio.gather(*waiting) == [1.25] * 50
    assert evaluator.calls == ["SOL"]
    assert await lookup.price("SOL") == 1.25  # cached now
    assert evaluator.calls == ["SOL"]


async def test_a_failed_call_fails_every_waiter_and_the_next_lookup_retries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lookup, evaluator = _lookup(monkeypatch, (2.0, 1.0), fail=True)
    waiting = [asyncio.ensure_future(lookup.price("BONK")) for _ in range(3)]
    await asyncio.sleep(0)
    evaluator.release.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    assert evaluator.calls == ["BONK"]
    evaluator.fail = False
    assert await lookup.price("BONK") == 2.0
    assert evaluator.calls == ["BONK", "BONK"]


async def test_a_cancelled_waiter_does_not_cancel_the_shared_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lookup, evaluator = _lookup(monkeypatch, (3.0, 1.0))
    first = asyncio.ensure_future(lookup.price("WIF"))
    second = asyncio.ensure_future(lookup.price("WIF"))
    await asyncio.sleep(0)
    second.cancel()
    evaluator.release.set()
    assert await first == 3.0
    with pytest.raises(asyncio.CancelledError):
        await second
