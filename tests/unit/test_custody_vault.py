"""The key vault: signers by purpose, TTL that stops entries but keeps exits of open
positions until a forced lock, locks that zero the key, and backoff after wrong
passphrases — all on a fake clock."""

from __future__ import annotations

import pickle

import pytest
from eth_account.signers.local import LocalAccount
from solders.keypair import Keypair

from valux.custody.keys import (
    Chain,
    EncryptedKey,
    InvalidKeyRecord,
    ScryptParams,
    SecretKey,
    WrongPassphrase,
    address_of,
    encrypt,
    export_text,
    new_secret,
)
from valux.custody.vault import KeyState, KeyVault, Locked, Purpose, UnlockBackoff
from valux.errors import InvalidRequest

CHEAP = ScryptParams(n=2**4, r=8, p=1)
PASS = "hunter2 but longer"
T0 = 1_700_000_000.0


class FakeClock:
    """Wall-clock seconds that move only when a test says so."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _setup(chain: Chain = Chain.SOLANA) -> tuple[KeyVault, FakeClock, EncryptedKey, SecretKey]:
    clock = FakeClock()
    secret = new_secret(chain)
    return KeyVault(clock=clock), clock, encrypt(secret, PASS, scrypt=CHEAP), secret


def _buffer(vault: KeyVault, wallet_id: str) -> bytearray:
    """The vault's own key buffer (private: kept to check that it is zeroed later)."""
    buffer: bytearray = vault._held[wallet_id].secret._buffer
    return buffer


def test_unlocked_key_signs_entries_and_exits() -> None:
    """After unlock, both purposes get the wallet's signer (a solders Keypair for Solana,
    an eth_account LocalAccount for EVM) and status says unlocked until the TTL."""
    for chain in Chain:
        vault, _, record, secret = _setup(chain)
        status = vault.unlock("w1", record, PASS, 60)
        assert status.state is KeyState.UNLOCKED
        assert (status.unlocked_at, status.expires_at) == (T0, T0 + 60)
        assert status.address == address_of(secret) and status.chain is chain
        for purpose in ("entry", Purpose.EXIT):
            signer = vault.signer("w1", purpose)
            if chain is Chain.SOLANA:
                assert isinstance(signer, Keypair) and str(signer.pubkey()) == record.address
            else:
                assert isinstance(signer, LocalAccount) and signer.address == record.address


def test_never_unlocked_wallet_is_locked_for_everything() -> None:
    """A wallet the vault never saw is locked; signer raises Locked naming it and why."""
    vault, _, _, _ = _setup()
    assert vault.status("w9").state is KeyState.LOCKED
    with pytest.raises(Locked) as caught:
        vault.signer("w9", "exit")
    assert caught.value.wallet_id == "w9" and "not been unlocked" in caught.value.reason
    assert "w9" in str(caught.value) and caught.value.code == "KEY_LOCKED"


def test_ttl_expiry_without_open_positions_wipes_the_key() -> None:
    """When the TTL runs out and the wallet has no open position, the key is wiped and
    neither entries nor exits can be signed; the reason names the expiry."""
    vault, clock, record, _ = _setup()
    vault.unlock("w1", record, PASS, 60)
    buffer = _buffer(vault, "w1")
    clock.advance(59.9)
    vault.signer("w1", "entry")
    clock.advance(0.1)
    status = vault.status("w1")
    assert status.state is KeyState.LOCKED and "expired" in (status.reason or "")
    assert buffer == bytearray(len(buffer))
    for purpose in Purpose:
        with pytest.raises(Locked, match="expired"):
            vault.signer("w1", purpose)


def test_ttl_expiry_with_open_positions_keeps_exits_until_a_forced_lock() -> None:
    """Past the TTL with positions open: entries are refused, exits still sign; a plain
    lock changes nothing for exits; a forced lock zeroes the key and refuses exits too."""
    vault, clock, record, _ = _setup()
    vault.set_open_positions("w1", True)
    vault.unlock("w1", record, PASS, 60)
    buffer = _buffer(vault, "w1")
    clock.advance(61)
    with pytest.raises(Locked, match="exits only") as caught:
        vault.signer("w1", "entry")
    assert caught.value.purpose == "entry"
    assert vault.signer("w1", "exit") is not None
    status = vault.status("w1")
    assert status.state is KeyState.EXITS_ONLY and status.expires_at == T0 + 60
    clock.advance(3600)
    assert vault.lock("w1").state is KeyState.EXITS_ONLY
    assert vault.signer("w1", "exit") is not None
    assert vault.sweep() == []
    status = vault.lock("w1", force=True, reason="operator panic button")
    assert status.state is KeyState.LOCKED and status.reason == "operator panic button"
    assert buffer == bytearray(len(buffer))
    with pytest.raises(Locked, match="panic"):
        vault.signer("w1", "exit")


def test_plain_lock_keeps_exits_only_while_positions_are_open() -> None:
    """A plain lock with open positions stops entries at once but keeps exits; when the
    wallet reports no open positions the key is wiped."""
    vault, _, record, _ = _setup()
    vault.unlock("w1", record, PASS, 600)
    vault.set_open_positions("w1", True)
    buffer = _buffer(vault, "w1")
    status = vault.lock("w1")
    assert status.state is KeyState.EXITS_ONLY and status.expires_at == T0
    with pytest.raises(Locked):
        vault.signer("w1", "entry")
    vault.signer("w1", "exit")
    status = vault.set_open_positions("w1", False)
    assert status.state is KeyState.LOCKED and "no open positions" in (status.reason or "")
    assert buffer == bytearray(len(buffer))


def test_plain_lock_without_positions_wipes_the_bytes() -> None:
    """lock() on a wallet with no open position overwrites its key bytes with zeros and
    drops them; locking again is a no-op."""
    for chain in Chain:
        vault, _, record, secret = _setup(chain)
        vault.unlock("w1", record, PASS, 600)
        buffer = _buffer(vault, "w1")
        assert buffer == bytearray(secret.reveal())
        assert vault.lock("w1").state is KeyState.LOCKED
        assert buffer == bytearray(len(buffer)) and "w1" not in vault._held
        assert vault.lock("w1").state is KeyState.LOCKED


def test_unlock_again_restores_entries_and_wipes_the_old_copy() -> None:
    """Unlocking a wallet that is exits-only restarts the TTL with entries allowed; the
    buffer of the key held before is zeroed."""
    vault, clock, record, _ = _setup()
    vault.set_open_positions("w1", True)
    vault.unlock("w1", record, PASS, 10)
    old = _buffer(vault, "w1")
    clock.advance(20)
    assert vault.status("w1").state is KeyState.EXITS_ONLY
    status = vault.unlock("w1", record, PASS, 10)
    assert status.state is KeyState.UNLOCKED and status.expires_at == clock.now + 10
    assert old == bytearray(len(old)) and _buffer(vault, "w1") is not old
    vault.signer("w1", "entry")


def test_sweep_wipes_expired_idle_keys_only() -> None:
    """sweep() wipes keys past their TTL that no exit needs, keeps exits-only keys and
    keys still within their TTL, and returns the wallet ids it wiped."""
    clock = FakeClock()
    vault = KeyVault(clock=clock)
    record = encrypt(new_secret(Chain.SOLANA), PASS, scrypt=CHEAP)
    for wallet_id, ttl in (("idle", 10), ("holding", 10), ("fresh", 100)):
        vault.unlock(wallet_id, record, PASS, ttl)
    vault.set_open_positions("holding", True)
    clock.advance(50)
    assert vault.sweep() == ["idle"]
    assert vault.status("holding").state is KeyState.EXITS_ONLY
    assert vault.status("fresh").state is KeyState.UNLOCKED
    assert sorted(vault.lock_all(reason="host stopping")) == ["fresh", "holding"]
    assert vault.status("holding").reason == "host stopping"


def test_wrong_passphrases_back_off_exponentially_and_a_right_one_resets() -> None:
    """Three wrong passphrases are free; then each attempt must wait 2, 4, 8 … s after
    the last, refused with UnlockBackoff saying how long (even the right passphrase);
    a right passphrase after the wait unlocks and clears the count."""
    vault, clock, record, _ = _setup()
    for n in (1, 2, 3):
        with pytest.raises(WrongPassphrase, match=f"{n} failed attempts") as caught:
            vault.unlock("w1", record, "nope", 60)
    assert "2 s" in str(caught.value)  # the third failure announces the first wait
    with pytest.raises(UnlockBackoff) as backoff:
        vault.unlock("w1", record, PASS, 60)
    assert backoff.value.retry_after_s == 2 and backoff.value.failed_attempts == 3
    assert "try again in 2 s" in str(backoff.value) and backoff.value.code == "UNLOCK_BACKOFF"
    assert vault.status("w1").retry_at == T0 + 2
    clock.advance(2)
    with pytest.raises(WrongPassphrase, match=r"4 failed attempts.*4 s"):
        vault.unlock("w1", record, "nope", 60)
    clock.advance(3)
    with pytest.raises(UnlockBackoff) as backoff:
        vault.unlock("w1", record, PASS, 60)
    assert backoff.value.retry_after_s == 1
    clock.advance(1)
    status = vault.unlock("w1", record, PASS, 60)
    assert status.state is KeyState.UNLOCKED and status.failed_attempts == 0
    assert status.retry_at is None
    with pytest.raises(WrongPassphrase, match="1 failed attempts"):
        vault.unlock("w1", record, "nope", 60)


def test_backoff_is_capped_and_per_wallet() -> None:
    """The wait never exceeds max_backoff_s, and one wallet's failures do not delay
    another wallet's unlock."""
    clock = FakeClock()
    vault = KeyVault(clock=clock, max_backoff_s=30)
    record = encrypt(new_secret(Chain.SOLANA), PASS, scrypt=CHEAP)
    for _ in range(12):
        with pytest.raises(WrongPassphrase):
            vault.unlock("w1", record, "nope", 60)
        clock.advance(30)
    clock.advance(-30)
    with pytest.raises(UnlockBackoff) as backoff:
        vault.unlock("w1", record, PASS, 60)
    assert backoff.value.retry_after_s == 30
    assert vault.unlock("w2", record, PASS, 60).state is KeyState.UNLOCKED


def test_broken_record_is_not_counted_as_a_wrong_passphrase() -> None:
    """A record for another address (expected_address) raises InvalidKeyRecord and does
    not count toward the backoff."""
    vault, _, record, _ = _setup()
    other = address_of(new_secret(Chain.SOLANA))
    for _ in range(5):
        with pytest.raises(InvalidKeyRecord):
            vault.unlock("w1", record, PASS, 60, expected_address=other)
    assert vault.status("w1").failed_attempts == 0
    assert vault.unlock("w1", record, PASS, 60, expected_address=record.address).state == (
        KeyState.UNLOCKED
    )


@pytest.mark.parametrize("ttl", [0, -5, float("inf"), float("nan"), 7200])
def test_bad_ttl_is_an_invalid_request(ttl: float) -> None:
    """ttl_s must be a positive finite number no larger than max_ttl_s."""
    vault = KeyVault(clock=FakeClock(), max_ttl_s=3600)
    record = encrypt(new_secret(Chain.SOLANA), PASS, scrypt=CHEAP)
    with pytest.raises(InvalidRequest) as caught:
        vault.unlock("w1", record, PASS, ttl)
    assert caught.value.errors[0].field == "ttl_s"


def test_status_and_repr_never_show_the_key() -> None:
    """status (and its dict) and the vault's repr carry no key material; the vault and
    its errors pickle as documented (errors yes, vault never)."""
    vault, _, record, secret = _setup()
    vault.unlock("w1", record, PASS, 60)
    shown = repr(vault) + repr(vault.status("w1")) + str(vault.status("w1").to_dict())
    text = export_text(secret)
    assert text not in shown and text[:10] not in shown and secret.reveal().hex() not in shown
    with pytest.raises(TypeError):
        pickle.dumps(vault)
    locked = pickle.loads(pickle.dumps(Locked("w1", "expired", "entry")))
    assert (locked.wallet_id, locked.reason, locked.purpose) == ("w1", "expired", "entry")
    backoff = pickle.loads(pickle.dumps(UnlockBackoff("w1", 4.0, 5)))
    assert (backoff.wallet_id, backoff.retry_after_s, backoff.failed_attempts) == ("w1", 4.0, 5)
