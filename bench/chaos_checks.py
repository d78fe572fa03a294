"""The chaos run's verdict: what must hold once the load has stopped and the system is quiet.

Each check compares two sources that are written by different code, so that a bug in one
shows up as a difference (none is a property that a primary key or a single writer makes
true by construction). Each returns the evidence of every violation, one line each.

- ``custody``    every wallet's token balances (wallet host memory) equal the sum of its
                 agent's open positions' ``remaining`` (agent host memory), per token.
- ``balances``   every wallet's balances, in its host's memory and in the ``balances``
                 read model, equal what the exchange's own account movements add up to:
                 the initial deposit, other deposits and every fill, exactly in Decimal;
                 and the exchange's account equals its movements.
- ``pending``    nothing awaits an outcome: no wallet intent in flight (memory or
                 ``wallet_intents``), no agent intent in flight, and every agent a signal
                 targeted has its outcome recorded (signals the client gave up on aside).
- ``duplicates`` at most one ``position_opened`` per (signal, agent) in the journal.
- ``lost``       every buy the API acknowledged is a position the agent holds, or one the
                 journal-backed read model shows closed.
- ``unarmed``    every open position is armed at a live evaluator, and none is still open
                 with the latest price at or below its stop (checked while prices move).
- ``http``       no answer the client cannot act on: a 5xx other than 503, a 503 without
                 ``Retry-After``, an unexpected 4xx.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import ray

from valux.config.settings import Settings
from valux.hosting.naming import agent_host_name, evaluator_name, exchange_name
from valux.persistence.codec import decode

CHECKS = ("lost", "duplicates", "custody", "balances", "pending", "unarmed", "http")

_ZERO = Decimal(0)
_AGENTS = "SELECT * FROM agents WHERE status <> 'deleted'"
_VENUE_MOVES = (
    "SELECT account, asset, sum(delta) AS v FROM paper_account_movements GROUP BY account, asset"
)
_VENUE_ACCOUNTS = "SELECT account, asset, amount AS v FROM paper_accounts"
_READ_MODEL = "SELECT wallet_id AS account, asset, amount AS v FROM balances"


@dataclass
class Quiet:
    """What is still in flight, from the actors (empty when the system is quiet)."""

    wallets: dict[str, list[str]] = field(default_factory=dict)  # wallet id -> intent ids
    agents: dict[str, list[str]] = field(default_factory=dict)  # agent id -> intent ids

    @property
    def quiet(self) -> bool:
        return not self.wallets and not self.agents


@dataclass
class Snapshot:
    """The state the checks read, taken at one quiet moment."""

    agents: dict[str, asyncpg.Record]
    wallets: dict[str, dict[str, Any]]  # wallet id -> wallet host view
    open_positions: dict[str, list[dict[str, Any]]]  # agent id -> its open positions
    in_flight: Quiet
    venue_moves: dict[str, dict[str, Decimal]]  # account -> asset -> sum of movements
    venue_accounts: dict[str, dict[str, Decimal]]  # the exchange's paper_accounts rows
    read_model: dict[str, dict[str, Decimal]]  # balances table
    opened: Counter[tuple[str, str]]  # (agent id, signal id) -> position_opened events
    pending_rows: list[str]  # wallet_intents still pending
    undecided: list[str]  # "signal s: agent a has no outcome"
    venue_says: dict[str, str]  # intent id -> the exchange's answer about it (evidence)
    closed_ids: set[str]
    armed: set[str]


async def _actor(name: str, namespace: str) -> Any:
    return await asyncio.to_thread(ray.get_actor, name, namespace=namespace)


async def in_flight(pool: asyncpg.Pool, settings: Settings) -> Quiet:
    """Every intent the actors still hold in flight."""
    ns = settings.ray.namespace
    out = Quiet()
    for slot in await _slots(pool, "agents"):
        health = await (await _actor(agent_host_name(slot), ns)).health.remote()
        out.agents.update(health["in_flight"])
    for slot, ids in (await _wallets_by_slot(pool)).items():
        for view in await _wallet_views(slot, ids, ns):
            if view is not None and view["pending_intents"]:
                out.wallets[view["wallet_id"]] = view["pending_intents"]
    return out


async def snapshot(pool: asyncpg.Pool, settings: Settings, given_up: set[str]) -> Snapshot:
    ns = settings.ray.namespace
    agents = {r["id"]: r for r in await pool.fetch(_AGENTS)}
    quiet = await in_flight(pool, settings)
    wallets: dict[str, dict[str, Any]] = {}
    for slot, ids in (await _wallets_by_slot(pool)).items():
        for view in await _wallet_views(slot, ids, ns):
            if view is not None:
                wallets[view["wallet_id"]] = view
    open_positions: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for slot in await _slots(pool, "agents"):
        for p in await (await _actor(agent_host_name(slot), ns)).open_positions.remote():
            open_positions[p["agent_id"]].append(p)
    armed: set[str] = set()
    for shard in range(settings.hosting.evaluators):
        armed.update(await (await _actor(evaluator_name(shard), ns)).armed_ids.remote())
    opened: Counter[tuple[str, str]] = Counter()
    for row in await pool.fetch(
        "SELECT stream_id, payload FROM journal WHERE event_type = 'position_opened'"
    ):
        data = decode(row["payload"])
        opened[(row["stream_id"].removeprefix("agent:"), data["signal_id"])] += 1
    undecided = []
    everyone = list(agents)
    outcomes = defaultdict(set)
    for r in await pool.fetch("SELECT signal_id, agent_id FROM signal_outcomes"):
        outcomes[r["signal_id"]].add(r["agent_id"])
    for r in await pool.fetch("SELECT id, targets FROM signals"):
        if r["id"] in given_up:
            continue
        targets = everyone if r["targets"] is None else list(r["targets"])
        undecided += [
            f"signal {r['id']}: agent {a} has no recorded outcome"
            for a in targets
            if a in agents and a not in outcomes[r["id"]]
        ]
    return Snapshot(
        agents=agents,
        wallets=wallets,
        open_positions=open_positions,
        in_flight=quiet,
        venue_moves=await _nested(pool, _VENUE_MOVES),
        venue_accounts=await _nested(pool, _VENUE_ACCOUNTS),
        read_model=await _nested(pool, _READ_MODEL),
        opened=opened,
        pending_rows=[
            f"wallet_intents {r['intent_id']} of {r['wallet_id']} still pending"
            for r in await pool.fetch(
                "SELECT intent_id, wallet_id FROM wallet_intents WHERE state = 'pending'"
            )
        ],
        undecided=undecided,
        venue_says=await _venue_says(ns, [i for ids in quiet.wallets.values() for i in ids]),
        closed_ids={
            r["id"] for r in await pool.fetch("SELECT id FROM positions WHERE status = 'closed'")
        },
        armed=armed,
    )


def check_custody(snap: Snapshot, quote_asset: str) -> list[str]:
    found = []
    for agent_id, agent in snap.agents.items():
        wallet = snap.wallets.get(agent["wallet_id"])
        if wallet is None:
            found.append(f"agent {agent_id}: wallet {agent['wallet_id']} not hosted")
            continue
        held: dict[str, Decimal] = defaultdict(Decimal)
        for p in snap.open_positions.get(agent_id, []):
            held[p["token"]] += Decimal(str(p["remaining"]))
        tokens = {a: Decimal(v) for a, v in wallet["balances"].items() if a != quote_asset}
        for token in sorted(set(held) | set(tokens)):
            have, want = tokens.get(token, _ZERO), held.get(token, _ZERO)
            if have != want:
                found.append(
                    f"wallet {wallet['wallet_id']} holds {token} {have}; agent {agent_id}'s"
                    f" open positions hold {want}"
                )
    return found


def check_balances(snap: Snapshot, venue: str = "deposits + fills at the exchange") -> list[str]:
    """``venue`` names what ``snap.venue_moves`` is (the chain, for live wallets)."""
    found = []
    for wallet_id, view in snap.wallets.items():
        moves = _nonzero(snap.venue_moves.get(wallet_id, {}))
        memory = _nonzero({a: Decimal(v) for a, v in view["balances"].items()})
        model = _nonzero(snap.read_model.get(wallet_id, {}))
        account = _nonzero(snap.venue_accounts.get(wallet_id, {}))
        for name, seen in (("wallet memory", memory), ("balances read model", model),
                           ("exchange account", account)):  # fmt: skip
            if seen != moves:
                found.append(f"wallet {wallet_id}: {name} {_show(seen)}; {venue} {_show(moves)}")
    return found


def check_pending(snap: Snapshot) -> list[str]:
    quiet = snap.in_flight
    found = [
        f"wallet {w} has intents in flight: {ids}; the exchange says "
        + "; ".join(snap.venue_says.get(i, "?") for i in ids)
        for w, ids in quiet.wallets.items()
    ]
    found += [f"agent {a} has intents in flight: {ids}" for a, ids in quiet.agents.items()]
    return found + snap.pending_rows + snap.undecided


def check_duplicates(snap: Snapshot) -> list[str]:
    return [
        f"signal {signal} opened {n} positions for agent {agent} (journal)"
        for (agent, signal), n in sorted(snap.opened.items())
        if n > 1
    ]


def check_lost(snap: Snapshot, acked: dict[tuple[str, str], str]) -> list[str]:
    held = {p["id"] for ps in snap.open_positions.values() for p in ps}
    return [
        f"agent {agent}: position {pid} (signal {signal}) acknowledged, neither held nor closed"
        for (agent, signal), pid in sorted(acked.items())
        if pid not in held and pid not in snap.closed_ids
    ]


def check_armed(snap: Snapshot) -> list[str]:
    return [
        f"agent {agent}: open position {p['id']} ({p['token']}) is not armed at any evaluator"
        for agent, positions in sorted(snap.open_positions.items())
        for p in positions
        if p["id"] not in snap.armed
    ]


async def crossed_stops(pool: asyncpg.Pool, settings: Settings) -> list[str]:
    """Open positions whose stop is at or above the token's latest price (the evaluator
    should have sold them), looked at twice 2 s apart so a tick still being handled is
    not counted."""
    first = await _crossed(pool, settings)
    if not first:
        return []
    await asyncio.sleep(2.0)
    second = await _crossed(pool, settings)
    return [line for pid, line in second.items() if pid in first]


async def _crossed(pool: asyncpg.Pool, settings: Settings) -> dict[str, str]:
    ns = settings.ray.namespace
    open_ids = [r["id"] for r in await pool.fetch("SELECT id FROM positions WHERE status = 'open'")]
    crossed = {}
    for shard in range(settings.hosting.evaluators):
        evaluator = await _actor(evaluator_name(shard), ns)
        latest = await evaluator.latest_prices.remote()
        for pid in open_ids:
            state = await evaluator.position_state.remote(pid)
            if state is None or state["stop_pct"] is None or state["token"] not in latest:
                continue
            stop = state["purchase_price"] * (1 + state["stop_pct"] / 100)
            price = latest[state["token"]][0]
            if price <= stop:
                crossed[pid] = f"position {pid} open at {price:.6g} below its stop {stop:.6g}"
    return crossed


async def _venue_says(namespace: str, intent_ids: list[str]) -> dict[str, str]:
    """What the exchange answers about intents a wallet still holds in flight."""
    if not intent_ids:
        return {}
    try:
        exchange = await _actor(exchange_name("paper"), namespace)
        statuses = await asyncio.wait_for(exchange.status.remote(intent_ids), 30)
        info = await asyncio.wait_for(exchange.ping.remote(), 30)
    except Exception as exc:
        return dict.fromkeys(intent_ids, f"(no answer: {exc!r})")
    extra = f" [exchange unsynced={info.get('unsynced')} inflight={info.get('inflight')}]"
    return {s.intent_id: f"{s.state.value} {s.reason or ''}{extra}" for s in statuses}


async def _slots(pool: asyncpg.Pool, table: str) -> list[int]:
    rows = await pool.fetch(f"SELECT DISTINCT host_slot FROM {table}")
    return sorted(r["host_slot"] for r in rows)


async def _wallet_views(slot: int, ids: list[str], ns: str) -> list[dict[str, Any] | None]:
    """The wallets' own views, from the agent host whose process runs them."""
    host = await _actor(agent_host_name(slot), ns)
    views: list[dict[str, Any] | None] = await asyncio.wait_for(
        host.wallet_call.remote("describe", ids), 30
    )
    return views


async def _wallets_by_slot(pool: asyncpg.Pool) -> dict[int, list[str]]:
    out: dict[int, list[str]] = defaultdict(list)
    for r in await pool.fetch("SELECT id, host_slot FROM wallets"):
        out[r["host_slot"]].append(r["id"])
    return out


async def _nested(pool: asyncpg.Pool, sql: str) -> dict[str, dict[str, Decimal]]:
    out: dict[str, dict[str, Decimal]] = defaultdict(dict)
    for r in await pool.fetch(sql):
        out[r["account"]][r["asset"]] = Decimal(r["v"])
    return out


def _nonzero(balances: dict[str, Decimal]) -> dict[str, Decimal]:
    return {a: v for a, v in balances.items() if v != 0}


def _show(balances: dict[str, Decimal]) -> str:
    return "{" + ", ".join(f"{a} {v}" for a, v in sorted(balances.items())) + "}"


_LOGGED = re.compile(r'"event": "((?:alert_|journal_fork_)[a-z_]+)"')


def logged_alerts(paths: Iterable[Path]) -> Counter[str]:
    """How often each alert (``alert_*``) and journal fork event the processes logged:
    evidence printed with the run's table, not a check (valux raising an alert is it
    working). Unreadable files are skipped."""
    counts: Counter[str] = Counter()
    for path in paths:
        try:
            with path.open(errors="replace") as lines:
                for line in lines:
                    if "alert_" in line or "journal_fork_" in line:
                        counts.update(_LOGGED.findall(line))
        except OSError:
            continue
    return counts
