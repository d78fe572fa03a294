"""The Wallet's custody state folds from its journal: chain, address and the encrypted key
record from its creation, the spend policy, today's buys (a failed buy gives its amount
back; a new UTC day starts at zero), signed attempts of an intent, deletion; and all of it
survives a snapshot."""

from __future__ import annotations

from decimal import Decimal

from valux.custody.wallet import Wallet

DAY1 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
DAY2 = DAY1 + 86_400


def _wallet() -> Wallet:
    w = Wallet("w1")
    w.apply("wallet_created", {"agent_id": "a1", "venue": "jupiter", "quote_asset": "SOL",
                               "host_slot": 0, "ts": DAY1, "chain": "solana",
                               "address": "Addr1", "key": {"ciphertext": "xx"}})  # fmt: skip
    w.apply("deposited", {"asset": "SOL", "amount": Decimal(10), "ref": "r1"})
    return w


def _buy(w: Wallet, intent_id: str, amount: str, at: float) -> None:
    w.apply("intent_submitted", {
        "intent_id": intent_id, "agent_id": "a1", "position_id": intent_id, "side": "buy",
        "token": "MINT", "amount": Decimal(amount), "reason": "signal", "reserved_asset": "SOL",
        "reserved": Decimal(amount), "submitted_at": at})  # fmt: skip


def test_daily_spend_counts_buys_of_the_day_and_returns_failed_ones() -> None:
    """Two buys on day 1 count 3 SOL; the failed one gives its 1 back; day 2 starts at 0."""
    w = _wallet()
    _buy(w, "i1", "2", DAY1 + 10)
    _buy(w, "i2", "1", DAY1 + 20)
    assert w.spent_on("2026-01-01") == Decimal(3)
    w.apply("intent_failed", {"intent_id": "i2", "state": "failed", "reason": "x",
                              "ts": DAY1 + 21})  # fmt: skip
    assert w.spent_on("2026-01-01") == Decimal(2) and w.spent_on("2026-01-02") == 0
    _buy(w, "i3", "4", DAY2 + 5)
    assert (w.spent_day, w.spent) == ("2026-01-02", Decimal(4))


def test_custody_state_survives_a_snapshot() -> None:
    """Chain, address, key record, policy, attempts, spend and deletion round-trip."""
    w = _wallet()
    w.apply("policy_set", {"policy": {"max_per_order": "1"}})
    _buy(w, "i1", "2", DAY1 + 10)
    w.apply("attempt_signed", {"intent_id": "i1", "attempt": {"signature": "sig1"}})
    w.apply("attempt_signed", {"intent_id": "i1", "attempt": {"signature": "sig2"}})
    w.apply("wallet_deleted", {"ts": DAY1 + 30})
    copy = Wallet.restore("w1", w.to_snapshot(), 7)
    assert (copy.chain, copy.address, copy.key) == ("solana", "Addr1", {"ciphertext": "xx"})
    assert copy.policy == {"max_per_order": "1"} and copy.deleted
    assert [a["signature"] for a in copy.pending["i1"]["attempts"]] == ["sig1", "sig2"]
    assert (copy.spent_day, copy.spent) == ("2026-01-01", Decimal(2))
    assert copy.view()["chain"] == "solana" and not copy.holds_tokens()
