"""Micro-batching of remote calls: what is submitted in one loop turn travels as one call,
each caller gets its own answer (or the shared call's failure), and :class:`PeerBatcher`
keeps one batch per (remote actor, method) — against :class:`LocalPeers`, no Ray."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from valux.hosting.batching import CallBatcher, PeerBatcher
from valux.hosting.peers import LocalPeers, PeerUnavailable


class Sender:
    """A ``send`` for :class:`CallBatcher` that records each batch it was given.

    ``fail``: raise this instead of answering (once, then answer again).
    ``short``: answer one result fewer than asked (once).
    ``gate``: wait on this event before answering."""

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []
        self.fail: BaseException | None = None
        self.short = False
        self.gate: asyncio.Event | None = None
        self.sent = asyncio.Event()

    async def __call__(self, items: list[Any]) -> list[Any]:
        self.batches.append(list(items))
        self.sent.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            exc, self.fail = self.fail, None
            raise exc
        results = [("done", item) for item in items]
        if self.short:
            self.short = False
            return results[:-1]
        return results


class Remote:
    """A remote actor's list-taking methods, as a wallet host or evaluator has them."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.received: list[tuple[str, list[Any]]] = []

    async def double(self, items: list[Any]) -> list[Any]:
        self.received.append(("double", list(items)))
        return [(self.name, item * 2) for item in items]

    async def negate(self, items: list[Any]) -> list[Any]:
        self.received.append(("negate", list(items)))
        return [(self.name, -item) for item in items]

    async def broken(self, items: list[Any]) -> list[Any]:
        raise ValueError(f"{self.name} cannot do {len(items)} items")


# -- CallBatcher -----


async def test_calls_of_one_loop_turn_go_out_as_one_batch_answered_in_order() -> None:
    """Twenty callers in the same turn: one ``send`` with all twenty items in submission
    order, and each caller receives the result at its own position."""
    sender = Sender()
    batcher: CallBatcher[int, Any] = CallBatcher(sender)
    results = await asyncio.gather(*(batcher.call(i) for i in range(20)))
    assert sender.batches == [list(range(20))]
    assert results == [("done", i) for i in range(20)]
    assert batcher.calls == 1 and batcher.items == 20


async def test_calls_of_later_turns_form_later_batches() -> None:
    """A caller that submits after the first batch left is sent in a batch of its own."""
    sender = Sender()
    batcher: CallBatcher[str, Any] = CallBatcher(sender)
    first = list(await asyncio.gather(batcher.call("a"), batcher.call("b")))
    second = await batcher.call("c")
    assert sender.batches == [["a", "b"], ["c"]]
    assert first == [("done", "a"), ("done", "b")] and second == ("done", "c")
    assert batcher.calls == 2 and batcher.items == 3


async def test_a_failed_batch_fails_every_caller_of_it_and_the_next_batch_works() -> None:
    """The shared call raised: every caller of that batch sees that very exception; the
    batcher is not wedged and the next turn's batch is answered normally."""
    sender = Sender()
    sender.fail = ConnectionError("host went away")
    batcher: CallBatcher[int, Any] = CallBatcher(sender)
    failed = await asyncio.gather(*(batcher.call(i) for i in range(5)), return_exceptions=True)
    assert len(sender.batches) == 1
    assert all(isinstance(r, ConnectionError) for r in failed), failed
    assert all(r is failed[0] for r in failed)
    results = list(await asyncio.gather(batcher.call(10), batcher.call(11)))
    assert results == [("done", 10), ("done", 11)]
    assert sender.batches[1] == [10, 11]


async def test_an_answer_of_the_wrong_length_fails_every_caller() -> None:
    """Results cannot be matched to callers when the callee answered fewer of them than it
    was sent: nobody gets a (possibly someone else's) result, all get a RuntimeError."""
    sender = Sender()
    sender.short = True
    batcher: CallBatcher[int, Any] = CallBatcher(sender)
    results = await asyncio.gather(*(batcher.call(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results), results
    assert "answered 2 of 3 items" in str(results[0])
    assert await batcher.call(7) == ("done", 7)


async def test_a_full_batch_is_sent_at_once_and_the_rest_follows_in_the_same_turn() -> None:
    """``max_batch`` bounds one call: seven callers with a limit of three make batches of
    3, 3 and 1, in submission order, each caller still answered with its own result."""
    sender = Sender()
    batcher: CallBatcher[int, Any] = CallBatcher(sender, max_batch=3)
    results = await asyncio.gather(*(batcher.call(i) for i in range(7)))
    assert sender.batches == [[0, 1, 2], [3, 4, 5], [6]]
    assert results == [("done", i) for i in range(7)]
    assert batcher.calls == 3 and batcher.items == 7


async def test_a_cancelled_caller_does_not_disturb_the_others_of_its_batch() -> None:
    """A caller that gave up while its batch was in flight: its item was sent, the batch's
    other callers still get their results, and nothing is set on the cancelled future."""
    sender = Sender()
    sender.gate = asyncio.Event()
    batcher: CallBatcher[int, Any] = CallBatcher(sender)
    tasks = [asyncio.ensure_future(batcher.call(i)) for i in range(4)]
    await sender.sent.wait()
    tasks[1].cancel()
    sender.gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert sender.batches == [[0, 1, 2, 3]]
    assert isinstance(results[1], asyncio.CancelledError)
    assert [results[0], results[2], results[3]] == [("done", 0), ("done", 2), ("done", 3)]


async def test_results_are_handed_over_as_they_are_even_exception_objects() -> None:
    """The batcher does not interpret answers: a per-item failure the callee chose to
    return as a value (here an exception instance) reaches its own caller as that value,
    and it does not fail the other callers of the batch."""
    problem = KeyError("unknown wallet")

    async def send(items: list[str]) -> list[Any]:
        return [problem if item == "bad" else item.upper() for item in items]

    batcher: CallBatcher[str, Any] = CallBatcher(send)
    results = list(await asyncio.gather(batcher.call("a"), batcher.call("bad"), batcher.call("c")))
    assert results == ["A", problem, "C"]
    assert results[1] is problem


# -- PeerBatcher -----


async def test_peer_batcher_sends_one_call_per_remote_and_method_per_turn() -> None:
    """Calls to two remotes and two methods in one turn: one ``peers.call`` per (key,
    method), each carrying exactly its own items in order, and every caller answered by
    the remote and method it addressed."""
    peers = LocalPeers()
    one, two = Remote("one"), Remote("two")
    peers.register("wallet", 1, one)
    peers.register("wallet", 2, two)
    batcher = PeerBatcher(peers, "wallet")
    calls = [(1, "double", 1), (2, "double", 2), (1, "negate", 3), (1, "double", 4)]
    calls += [(2, "double", 5), (1, "negate", 6)]
    results = list(await asyncio.gather(*(batcher.call(k, m, v) for k, m, v in calls)))
    assert results == [("one", 2), ("two", 4), ("one", -3), ("one", 8), ("two", 10), ("one", -6)]
    assert sorted(peers.calls) == [("wallet", 1, "double"), ("wallet", 1, "negate"),
                                   ("wallet", 2, "double")]  # fmt: skip
    assert sorted(one.received) == [("double", [1, 4]), ("negate", [3, 6])]
    assert two.received == [("double", [2, 5])]


async def test_peer_batcher_reuses_its_batcher_across_turns() -> None:
    """A later turn's calls to the same remote and method form a new batch there."""
    peers = LocalPeers()
    remote = Remote("r")
    peers.register("evaluator", 0, remote)
    batcher = PeerBatcher(peers, "evaluator")
    first = list(await asyncio.gather(batcher.call(0, "double", 1), batcher.call(0, "double", 2)))
    assert first == [("r", 2), ("r", 4)]
    assert await batcher.call(0, "double", 3) == ("r", 6)
    assert remote.received == [("double", [1, 2]), ("double", [3])]
    assert peers.calls == [("evaluator", 0, "double")] * 2


async def test_an_unreachable_peer_fails_every_caller_of_the_batch_then_recovers() -> None:
    """The remote is down: every caller waiting on that batch gets ``PeerUnavailable``,
    calls to another remote in the same turn are unaffected, and once the remote is back
    the next batch reaches it."""
    peers = LocalPeers()
    one, two = Remote("one"), Remote("two")
    peers.register("wallet", 1, one)
    peers.register("wallet", 2, two)
    peers.down.add(("wallet", 1))
    batcher = PeerBatcher(peers, "wallet")
    results = await asyncio.gather(
        batcher.call(1, "double", 1), batcher.call(1, "double", 2), batcher.call(2, "double", 3),
        return_exceptions=True,
    )  # fmt: skip
    assert isinstance(results[0], PeerUnavailable) and isinstance(results[1], PeerUnavailable)
    assert results[2] == ("two", 6)
    assert one.received == [] and peers.calls.count(("wallet", 1, "double")) == 1
    peers.down.clear()
    assert await batcher.call(1, "double", 5) == ("one", 10)


async def test_a_method_marked_down_fails_only_that_methods_callers() -> None:
    """A (kind, key, method) triple in ``down``: that method's batch fails for all its
    callers, the same remote's other method is answered."""
    peers = LocalPeers()
    remote = Remote("r")
    peers.register("wallet", 0, remote)
    peers.down.add(("wallet", 0, "negate"))
    batcher = PeerBatcher(peers, "wallet")
    results = await asyncio.gather(
        batcher.call(0, "negate", 1), batcher.call(0, "negate", 2), batcher.call(0, "double", 3),
        return_exceptions=True,
    )  # fmt: skip
    assert isinstance(results[0], PeerUnavailable) and isinstance(results[1], PeerUnavailable)
    assert results[2] == ("r", 6)


async def test_an_error_raised_by_the_remote_reaches_every_caller() -> None:
    """A bug in the callee (not a transport error) is what each caller of the batch sees."""
    peers = LocalPeers()
    peers.register("exchange", "paper", Remote("paper"))
    batcher = PeerBatcher(peers, "exchange")
    results = await asyncio.gather(
        *(batcher.call("paper", "broken", i) for i in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, ValueError) for r in results), results
    assert "cannot do 3 items" in str(results[0])
    with pytest.raises(ValueError, match="cannot do 1 items"):
        await batcher.call("paper", "broken", 0)


async def test_a_peer_that_never_answers_is_unreachable_after_the_timeout() -> None:
    """A bounded PeerBatcher: a callee that hangs (a restarting actor stuck in its
    constructor) answers its callers PeerUnavailable after ``timeout_s``, not never."""

    class Hanging:
        async def execute(self, items: list[Any]) -> list[Any]:
            await asyncio.Event().wait()
            return items

    peers = LocalPeers()
    peers.register("wallet", 0, Hanging())
    calls = PeerBatcher(peers, "wallet", timeout_s=0.05)
    with pytest.raises(PeerUnavailable, match=r"did not answer execute within 0\.05s"):
        await calls.call(0, "execute", "order")
