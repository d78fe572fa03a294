"""The chaos run's checks fail when what they guard is broken (each fed a snapshot with one
violation, and a clean one that passes): a check that cannot fail proves nothing."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench import chaos_checks as checks
from bench.chaos_checks import (
    Quiet,
    Snapshot,
    check_armed,
    check_balances,
    check_custody,
    check_duplicates,
    check_lost,
    check_pending,
)

D = Decimal


def _snapshot(**changes: Any) -> Snapshot:
    """One agent with one open position of 2 TKN, consistent everywhere."""
    base: dict[str, Any] = {
        "agents": {"a": {"wallet_id": "w"}},
        "wallets": {"w": {"wallet_id": "w", "balances": {"SOL": "8", "TKN": "2"}}},
        "open_positions": {"a": [{"id": "p1", "token": "TKN", "remaining": "2"}]},
        "in_flight": Quiet(),
        "venue_moves": {"w": {"SOL": D(8), "TKN": D(2)}},
        "venue_accounts": {"w": {"SOL": D(8), "TKN": D(2)}},
        "read_model": {"w": {"SOL": D(8), "TKN": D(2)}},
        "opened": Counter({("a", "s1"): 1}),
        "pending_rows": [],
        "undecided": [],
        "venue_says": {},
        "closed_ids": {"p0"},
        "armed": {"p1"},
    }
    base.update(changes)
    return Snapshot(**base)


def test_a_consistent_snapshot_passes_every_check() -> None:
    snap = _snapshot()
    acked = {("a", "s0"): "p0", ("a", "s1"): "p1"}
    assert check_custody(snap, "SOL") == []
    assert check_balances(snap) == []
    assert check_pending(snap) == []
    assert check_duplicates(snap) == []
    assert check_lost(snap, acked) == []
    assert check_armed(snap) == []


def test_tokens_the_positions_do_not_explain_fail_custody() -> None:
    snap = _snapshot(open_positions={"a": [{"id": "p1", "token": "TKN", "remaining": "1.5"}]})
    [evidence] = check_custody(snap, "SOL")
    assert "holds TKN 2" in evidence and "hold 1.5" in evidence


def test_a_wallet_behind_the_exchange_fails_balances() -> None:
    """The reported mismatch: the exchange filled a sale the wallet never booked."""
    snap = _snapshot(venue_moves={"w": {"SOL": D("9.5")}}, venue_accounts={"w": {"SOL": D("9.5")}})
    found = check_balances(snap)
    assert len(found) == 2  # wallet memory and read model both differ from the exchange
    assert all("deposits + fills at the exchange {SOL 9.5}" in line for line in found)


def test_anything_in_flight_or_undecided_fails_pending() -> None:
    snap = _snapshot(
        in_flight=Quiet(wallets={"w": ["i1"]}, agents={"a": ["i1"]}),
        venue_says={"i1": "pending "},
        pending_rows=["wallet_intents i2 of w still pending"],
        undecided=["signal s9: agent a has no recorded outcome"],
    )
    found = check_pending(snap)
    assert len(found) == 4 and "the exchange says pending" in found[0]


def test_two_openings_for_one_signal_fail_duplicates() -> None:
    [evidence] = check_duplicates(_snapshot(opened=Counter({("a", "s1"): 2})))
    assert "signal s1 opened 2 positions for agent a" in evidence


def test_an_acknowledged_buy_that_vanished_is_lost() -> None:
    [evidence] = check_lost(_snapshot(), {("a", "s7"): "p7"})
    assert "p7" in evidence and "neither held nor closed" in evidence


def test_an_open_position_no_evaluator_holds_is_unarmed() -> None:
    [evidence] = check_armed(_snapshot(armed=set()))
    assert "p1" in evidence and "not armed" in evidence


def test_logged_alerts_counts_alert_and_fork_events_of_every_file(tmp_path: Path) -> None:
    worker = tmp_path / "worker-1.err"
    worker.write_text(
        '{"event": "alert_custody_mismatch", "slot": 0}\n'
        '{"event": "journal_fork_rebased", "stream": "agent:a"}\n'
        '{"event": "order_refused"}\nnot json at all\n'
    )
    api = tmp_path / "api-1.log"
    api.write_text('{"event": "alert_custody_mismatch"}\n')
    counts = checks.logged_alerts([worker, api, tmp_path / "missing.err"])
    assert counts == {"alert_custody_mismatch": 2, "journal_fork_rebased": 1}
