"""The journal without PostgreSQL: group commit, the outage buffer, a hanging database, and
forks — against a fake pool that refuses, hangs, or commits and then drops the answer."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

from tests.unit.fakes import FakePool
from valux.persistence.journal import (
    Collect,
    Commit,
    Event,
    ForkHandler,
    Journal,
    JournalUnavailable,
)
from valux.persistence.spool import Spool


def _commit(stream: str, seq: int, etype: str = "e", **data: object) -> Commit:
    return Commit(events=[Event(stream, seq, etype, dict(data))])


async def _drained(journal: Journal, within: float = 3.0) -> None:
    deadline = time.monotonic() + within
    while journal.deferred:
        assert time.monotonic() < deadline, "buffer not drained"
        await asyncio.sleep(0.01)


async def test_commits_that_arrive_together_share_one_transaction() -> None:
    pool = FakePool()
    journal = Journal(pool)  # type: ignore[arg-type]
    await asyncio.gather(*(journal.commit(_commit(f"s{i}", 1)) for i in range(20)))
    assert len(pool.journal) == 20 and pool.transactions <= 2


async def test_a_second_writer_of_a_seq_fails_alone() -> None:
    pool = FakePool()
    journal = Journal(pool)  # type: ignore[arg-type]
    await journal.commit(_commit("a", 1))
    results = await asyncio.gather(
        journal.commit(_commit("a", 1, "other")), journal.commit(_commit("b", 1)),
        return_exceptions=True,
    )  # fmt: skip
    assert type(results[0]).__name__ == "UniqueViolationError" and results[1] is None
    assert ("b", 1) in pool.journal


async def test_refused_database_buffers_exits_refuses_entries_then_writes_in_order() -> None:
    pool = FakePool()
    pool.refuse = True
    journal = Journal(pool)  # type: ignore[arg-type]
    await journal.commit(_commit("a", 1), deferrable=True)
    await journal.commit(_commit("a", 2), deferrable=True)
    with pytest.raises(JournalUnavailable, match="entry refused"):
        await journal.commit(_commit("b", 1))
    assert journal.deferred == 2 and not pool.journal
    pool.refuse = False
    await _drained(journal)
    assert sorted(pool.journal) == [("a", 1), ("a", 2)]


async def test_a_hanging_database_costs_one_timeout_then_nothing_waits() -> None:
    """A blackhole: the first exit waits ``commit_timeout_s`` and is buffered; the next
    exit and an entry answer at once; all exits land once the database answers."""
    pool = FakePool()
    pool.hang = True
    journal = Journal(pool, commit_timeout_s=0.2)  # type: ignore[arg-type]
    started = time.perf_counter()
    await journal.commit(_commit("a", 1), deferrable=True)
    first = time.perf_counter() - started
    started = time.perf_counter()
    await journal.commit(_commit("a", 2), deferrable=True)
    with pytest.raises(JournalUnavailable):
        await journal.commit(_commit("b", 1))
    after = time.perf_counter() - started
    assert 0.15 < first < 1.0 and after < 0.05, (first, after)
    pool.release()
    await _drained(journal)
    assert sorted(pool.journal) == [("a", 1), ("a", 2)]


async def test_commits_waiting_behind_a_hung_flush_are_released_together() -> None:
    pool = FakePool()
    pool.hang = True
    journal = Journal(pool, commit_timeout_s=0.2)  # type: ignore[arg-type]
    started = time.perf_counter()
    await asyncio.gather(*(journal.commit(_commit(f"s{i}", 1), deferrable=True) for i in range(50)))
    assert time.perf_counter() - started < 0.6
    pool.release()
    await _drained(journal)
    assert len(pool.journal) == 50


async def test_a_commit_whose_answer_was_lost_is_not_written_twice() -> None:
    """The transaction committed and the connection dropped: the buffered retry finds the
    very same events and moves on."""
    pool = FakePool()
    pool.commit_then_fail = True
    journal = Journal(pool)  # type: ignore[arg-type]
    await journal.commit(_commit("a", 1, x=1), deferrable=True)
    pool.commit_then_fail = False
    await _drained(journal)
    assert journal.forks == 0 and len(pool.journal) == 1


def _rebase_onto(pool: FakePool, calls: list[tuple[str, list[str]]]) -> ForkHandler:
    """A host's rebase: the forked events renumbered after the stream's last seq."""

    async def rebase(stream_id: str, collect: Collect) -> Commit | None:
        events = collect()
        calls.append((stream_id, [e.type for e in events]))
        top = max(q for (s, q) in pool.journal if s == stream_id)
        return Commit(events=[replace(e, seq=top + i) for i, e in enumerate(events, 1)])

    return rebase


async def _exit_behind_an_entry_in_doubt(pool: FakePool, journal: Journal, etype: str) -> None:
    """An exit buffered at seq 5 of stream ``a`` during an outage, whose seq an entry
    refused as in doubt took after all; then the database answers again."""
    pool.refuse = True
    await journal.commit(_commit("a", 5, etype), deferrable=True)
    pool.journal[("a", 5)] = ("entry", b"\x80")
    pool.refuse = False


async def test_a_fork_is_rebased_in_place_of_its_stream_buffer(tmp_path: Path) -> None:
    """A buffered commit meets other content at its seq (an entry refused as in doubt did
    commit): its events and the rest of that stream's buffer — an exit already sent to the
    venue — are not dropped but handed to the host, whose rebase is written after the
    stream as PostgreSQL holds it; other streams are untouched."""
    pool = FakePool()
    journal = Journal(pool, spool=Spool(tmp_path / "h.spool"))  # type: ignore[arg-type]
    calls: list[tuple[str, list[str]]] = []
    journal.on_fork = _rebase_onto(pool, calls)
    pool.refuse = True
    await journal.commit(_commit("a", 5, "exit"), deferrable=True)
    await journal.commit(_commit("a", 6, "close"), deferrable=True)
    await journal.commit(_commit("z", 1, "other"), deferrable=True)
    pool.journal[("a", 5)] = ("entry", b"\x80")  # the in-doubt entry that did commit
    pool.refuse = False
    await _drained(journal)
    assert calls == [("a", ["exit", "close"])] and journal.forks == 1
    assert [pool.journal[("a", q)][0] for q in (5, 6, 7)] == ["entry", "exit", "close"]
    assert ("z", 1) in pool.journal


async def test_a_fork_rebase_is_in_the_spool_before_the_forked_commits_leave_it(
    tmp_path: Path,
) -> None:
    """The process dies right after the rebase replaced the forked commits: the next
    process of the host finds the rebase in the spool, not the forked commits."""
    pool = FakePool()
    spool_path = tmp_path / "h.spool"
    journal = Journal(pool, spool=Spool(spool_path))  # type: ignore[arg-type]
    calls: list[tuple[str, list[str]]] = []
    rebase = _rebase_onto(pool, calls)
    reached = asyncio.Event()

    async def rebase_then_die(stream_id: str, collect: Collect) -> Commit | None:
        commit = await rebase(stream_id, collect)
        pool.refuse = True  # the replacement cannot be written: it stays buffered
        reached.set()
        return commit

    journal.on_fork = rebase_then_die
    await _exit_behind_an_entry_in_doubt(pool, journal, "exit")
    await asyncio.wait_for(reached.wait(), 3)
    await asyncio.sleep(0.05)
    assert journal._drainer is not None
    journal._drainer.cancel()  # SIGKILL
    pool.refuse = False
    reborn = Journal(pool, spool=Spool(spool_path))  # type: ignore[arg-type]
    assert await reborn.write_restored() == 1
    assert pool.journal[("a", 6)][0] == "exit" and reborn.forks == 0


async def test_a_fork_that_cannot_be_rebased_yet_is_asked_again_and_kept() -> None:
    """The database goes away while the host reads the stream: nothing is dropped; the
    rebase is asked for again when it answers."""
    pool = FakePool()
    journal = Journal(pool)  # type: ignore[arg-type]
    calls: list[tuple[str, list[str]]] = []
    rebase = _rebase_onto(pool, calls)
    failures = [ConnectionRefusedError("down again (fake)")]

    async def flaky(stream_id: str, collect: Collect) -> Commit | None:
        if failures:
            collect()  # taken, then the handler fails: nothing may be lost
            raise failures.pop()
        return await rebase(stream_id, collect)

    journal.on_fork = flaky
    await _exit_behind_an_entry_in_doubt(pool, journal, "exit")
    await _drained(journal)
    assert calls == [("a", ["exit"])] and pool.journal[("a", 6)][0] == "exit"


async def test_what_the_mailbox_holder_buffers_during_a_fork_is_rebased_with_it() -> None:
    """The host takes the entity's mailbox before it collects: a commit its holder adds
    meanwhile (the close after the sale's venue call) is part of the one rebase, not left
    behind with a stale seq."""
    pool = FakePool()
    journal = Journal(pool)  # type: ignore[arg-type]
    calls: list[tuple[str, list[str]]] = []
    rebase = _rebase_onto(pool, calls)
    mailbox = asyncio.Lock()
    await mailbox.acquire()  # a handler of the entity is running

    async def host(stream_id: str, collect: Collect) -> Commit | None:
        async with mailbox:
            return await rebase(stream_id, collect)

    journal.on_fork = host
    await _exit_behind_an_entry_in_doubt(pool, journal, "exit_intended")
    journal._start_drainer()
    await asyncio.sleep(0.1)  # the drainer met the fork and waits for the mailbox
    await journal.commit(_commit("a", 6, "position_closed"), deferrable=True)
    mailbox.release()
    await _drained(journal)
    assert calls == [("a", ["exit_intended", "position_closed"])] and journal.forks == 1
    assert [pool.journal[("a", q)][0] for q in (5, 6, 7)] == [
        "entry",
        "exit_intended",
        "position_closed",
    ]


async def test_events_that_do_not_apply_after_the_fork_are_dropped_and_reported() -> None:
    pool = FakePool()
    journal = Journal(pool)  # type: ignore[arg-type]

    async def unappliable(stream_id: str, collect: Collect) -> Commit | None:
        return None

    journal.on_fork = unappliable
    pool.refuse = True
    await journal.commit(_commit("a", 5, "exit"), deferrable=True)
    await journal.commit(_commit("a", 6, "close"), deferrable=True)
    pool.journal[("a", 5)] = ("entry", b"\x80")
    pool.refuse = False
    await _drained(journal)
    assert journal.forks == 1 and ("a", 6) not in pool.journal


async def test_buffered_exits_survive_their_process_in_the_spool(tmp_path: Path) -> None:
    """The host dies during an outage with two exit commits buffered: a new process of the
    same host finds them in the spool and writes them, in order, before it recovers."""
    pool = FakePool()
    pool.refuse = True
    spool_path = tmp_path / "valux-agent-host-0.spool"
    dead = Journal(pool, spool=Spool(spool_path))  # type: ignore[arg-type]
    await dead.commit(_commit("a", 1, amount=Decimal("1.5")), deferrable=True)
    await dead.commit(_commit("a", 2), deferrable=True)
    assert dead.deferred == 2 and not pool.journal
    if dead._drainer is not None:  # SIGKILL: the process and its memory are gone
        dead._drainer.cancel()
    pool.refuse = False
    reborn = Journal(pool, spool=Spool(spool_path))  # type: ignore[arg-type]
    assert reborn.restored == 2
    assert await reborn.write_restored() == 2
    assert sorted(pool.journal) == [("a", 1), ("a", 2)]
    assert not spool_path.exists()  # nothing is buffered any more
    again = Journal(pool, spool=Spool(spool_path))  # type: ignore[arg-type]
    assert again.restored == 0


async def test_a_spooled_commit_already_written_is_not_written_twice(tmp_path: Path) -> None:
    """The process died after its commit reached PostgreSQL but before the spool was
    acknowledged: the next process recognises it (same content) and moves on."""
    pool = FakePool()
    spool = Spool(tmp_path / "h.spool")
    commit = _commit("a", 1, x=1)
    spool.append(commit)
    await Journal(pool).commit(commit)  # written, but the ack never happened
    reborn = Journal(pool, spool=Spool(tmp_path / "h.spool"))  # type: ignore[arg-type]
    assert await reborn.write_restored() == 1
    assert len(pool.journal) == 1 and reborn.forks == 0


async def test_a_torn_last_spool_record_is_ignored(tmp_path: Path) -> None:
    """A crash in the middle of appending: that commit's caller never went on, so the
    record is dropped and the ones before it are kept."""
    spool = Spool(tmp_path / "h.spool")
    spool.append(_commit("a", 1))
    spool.append(_commit("a", 2))
    data = (tmp_path / "h.spool").read_bytes()
    (tmp_path / "h.spool").write_bytes(data[:-3])
    restored = Spool(tmp_path / "h.spool").load()
    assert [c.events[0].seq for c in restored] == [1]


async def test_a_busy_database_that_still_answers_is_not_an_outage() -> None:
    """Commits queue behind slow group transactions (each under the timeout, together
    over it): every commit is written, none is refused, the journal never stalls."""
    pool = FakePool()
    pool.delay = 0.12  # each transaction takes 0.12 s; the timeout is 0.2 s
    journal = Journal(pool, commit_timeout_s=0.2)  # type: ignore[arg-type]

    async def one(i: int) -> None:
        await asyncio.sleep(i * 0.05)  # arrivals spread over several flushes
        await journal.commit(_commit(f"s{i}", 1))

    await asyncio.gather(*(one(i) for i in range(12)))
    assert len(pool.journal) == 12 and journal.deferred == 0
