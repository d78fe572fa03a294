"""``GET /api/v1/wallets`` while one host restarts: the others answer, the restarting one's
wallets are listed from PostgreSQL with ``unavailable`` — the list does not fail whole.
In-process fakes of the pool and the hosts; no Ray, no PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest
from ray.exceptions import RayActorError, RayTaskError

from valux.system import live_wallets
from valux.system.live_wallets import LiveWallets

ROWS = [  # as the list's query answers, in creation order
    {"id": "w-a", "host_slot": 0, "agent_id": "a", "venue": "jupiter", "chain": "solana",
     "address": "Addr1"},
    {"id": "w-b", "host_slot": 1, "agent_id": "", "venue": "uniswap", "chain": "arbitrum",
     "address": "0xb"},
    {"id": "w-c", "host_slot": 0, "agent_id": "c", "venue": "jupiter", "chain": "solana",
     "address": "Addr3"},
    {"id": "w-d", "host_slot": 2, "agent_id": "d", "venue": "jupiter", "chain": "solana",
     "address": "Addr4"},
]  # fmt: skip


class _Pool:
    async def fetch(self, _sql: str, *_args: Any) -> list[dict[str, Any]]:
        return ROWS


class _Host:
    """A host's ``wallet_call`` handle: answers ``describe`` (``None`` for the wallets in
    ``unloaded``), raises ``error``, or never answers (``hang``)."""

    def __init__(
        self,
        error: BaseException | None = None,
        *,
        hang: bool = False,
        unloaded: tuple[str, ...] = (),
    ) -> None:
        self.error, self.hang, self.unloaded = error, hang, unloaded
        self.asked = asyncio.Event()
        self.wallet_call = SimpleNamespace(remote=self._remote)

    async def _remote(self, method: str, ids: list[str]) -> list[dict[str, Any] | None]:
        assert method == "describe"
        self.asked.set()
        if self.hang:
            await asyncio.Event().wait()
        if self.error is not None:
            raise self.error
        return [None if i in self.unloaded else
                {"id": i, "wallet_id": i, "key": {"state": "locked"}, "key_record": "x"}
                for i in ids]  # fmt: skip


def _wallets(monkeypatch: pytest.MonkeyPatch, hosts: dict[int, _Host | None]) -> LiveWallets:
    async def handle(slot: int, _namespace: str) -> _Host:
        host = hosts[slot]
        if host is None:
            raise ValueError(f"Failed to look up actor with name 'agent-host-{slot}'")
        return host

    monkeypatch.setattr(live_wallets, "agent_host_handle", handle)
    settings = SimpleNamespace(api=SimpleNamespace(actor_retry_s=0.5))
    backend = SimpleNamespace(pool=_Pool(), ns="test", settings=settings)
    return LiveWallets(backend)  # type: ignore[arg-type]


async def test_a_restarting_host_marks_its_wallets_unavailable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wallets = _wallets(monkeypatch, {0: _Host(), 1: _Host(RayActorError()), 2: None})
    listed = await wallets.list(owner=None)
    assert [w["id"] for w in listed] == ["w-a", "w-b", "w-c", "w-d"]  # creation order kept
    a, b, c, d = listed
    assert a == c | {"id": "w-a", "wallet_id": "w-a"} and a["locked"] is True
    assert "key_record" not in a
    assert b == {
        "id": "w-b",
        "wallet_id": "w-b",
        "agent_id": None,
        "venue": "uniswap",
        "chain": "arbitrum",
        "address": "0xb",
        "unavailable": "its host is restarting (RayActorError); try again shortly",
    }
    assert d["unavailable"] == "its host is not running; try again shortly"
    assert d["agent_id"] == "d" and d["address"] == "Addr4"


async def test_a_bug_in_a_host_is_not_taken_for_a_restart(monkeypatch: pytest.MonkeyPatch) -> None:
    bug = RayTaskError("describe", "traceback", ValueError("boom")).as_instanceof_cause()
    wallets = _wallets(monkeypatch, {0: _Host(), 1: _Host(bug), 2: _Host()})
    with pytest.raises(RayTaskError):
        await wallets.list(owner=None)


async def test_a_host_that_does_not_answer_holds_the_list_no_longer_than_the_retry_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The hosts are asked at once; one that never answers is marked after
    ``api.actor_retry_s`` (0.5 s here) and the others are listed; a wallet its host has
    not loaded is marked too, not dropped."""
    hung = _Host(hang=True)
    wallets = _wallets(monkeypatch, {0: _Host(unloaded=("w-c",)), 1: hung, 2: _Host()})
    began = time.monotonic()
    a, b, c, d = await wallets.list(owner=None)
    assert time.monotonic() - began < 2
    assert hung.asked.is_set()
    assert a["locked"] is True and d["locked"] is True
    assert b["unavailable"] == "its host did not answer within 0.5s; try again shortly"
    assert c["unavailable"] == "its host has not loaded it"


async def test_a_timeout_inside_a_host_is_its_bug_not_a_slow_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bug = RayTaskError("describe", "traceback", TimeoutError("inner")).as_instanceof_cause()
    wallets = _wallets(monkeypatch, {0: _Host(), 1: _Host(bug), 2: _Host()})
    with pytest.raises(RayTaskError):
        await wallets.list(owner=None)
