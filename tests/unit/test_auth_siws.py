"""Sign-In with Solana (valux.auth.siws): the wallet-standard message, verified with ed25519."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from solders.keypair import Keypair

from valux.auth import siws
from valux.auth.errors import SignInError, SignInFailure

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DOMAIN = "app.example"
NONCE = "oBbLoEldZs42"


@pytest.fixture(scope="module")
def keypair() -> Keypair:
    return Keypair()


def _message(keypair: Keypair, **changes: Any) -> str:
    fields: dict[str, Any] = {
        "domain": DOMAIN,
        "address": str(keypair.pubkey()),
        "chain_id": "devnet",
        "nonce": NONCE,
        "issued_at": NOW - timedelta(seconds=5),
        "uri": "https://app.example/login",
        "statement": "Sign in to valux.",
    }
    fields.update(changes)
    return siws.build_message(**fields)


def _sign(keypair: Keypair, text: str) -> str:
    return str(keypair.sign_message(text.encode("utf-8")))


def _verify(text: str, signature: str | bytes, **changes: Any) -> Any:
    expected: dict[str, Any] = {"domain": DOMAIN, "nonce": NONCE, "chain_id": "devnet", "now": NOW}
    expected.update(changes)
    return siws.verify(text, signature, **expected)


def _fails(reason: SignInFailure, text: str, signature: str | bytes, **changes: Any) -> None:
    with pytest.raises(SignInError) as info:
        _verify(text, signature, **changes)
    assert info.value.reason is reason, info.value.message
    assert info.value.code == f"SIWS_{reason.value}"


def test_a_valid_solana_login_verifies(keypair: Keypair) -> None:
    """A message signed by a fresh keypair verifies, with the signature as base58 or raw bytes."""
    text = _message(keypair)
    assert text.startswith("app.example wants you to sign in with your Solana account:\n")
    message = _verify(text, _sign(keypair, text), uri="https://app.example/login")
    assert message.address == str(keypair.pubkey())
    assert (message.chain_id, message.nonce, message.version) == ("devnet", NONCE, "1")
    raw = bytes(keypair.sign_message(text.encode()))
    assert _verify(text, raw).address == str(keypair.pubkey())


def test_a_signature_by_another_key_is_refused(keypair: Keypair) -> None:
    """The same message signed by a different keypair fails with SIWS_BAD_SIGNATURE."""
    text = _message(keypair)
    _fails(SignInFailure.BAD_SIGNATURE, text, _sign(Keypair(), text))


def test_a_tampered_message_is_refused(keypair: Keypair) -> None:
    """Changing the message after signing (another domain here) breaks the ed25519 signature."""
    text = _message(keypair)
    signature = _sign(keypair, text)
    tampered = text.replace("Sign in to valux.", "Sign in to valux!")
    _fails(SignInFailure.BAD_SIGNATURE, tampered, signature)
    _fails(SignInFailure.BAD_SIGNATURE, text, "1111")
    _fails(SignInFailure.BAD_SIGNATURE, text, b"\x00" * 63)


def test_the_layout_follows_the_wallet_standard(keypair: Keypair) -> None:
    """One blank line before the fields when there is no statement (unlike EIP-4361's two)."""
    address = str(keypair.pubkey())
    text = _message(keypair, statement=None, uri=None)
    assert text == (
        f"app.example wants you to sign in with your Solana account:\n{address}\n\n"
        "Version: 1\nChain ID: devnet\nNonce: oBbLoEldZs42\nIssued At: 2026-03-01T11:59:55Z"
    )
    assert _verify(text, _sign(keypair, text)).statement is None


def test_phantom_style_maximal_message_parses(keypair: Keypair) -> None:
    """A message with every field, milliseconds and resources (as Phantom builds them) parses."""
    address = str(keypair.pubkey())
    text = (
        f"app.example wants you to sign in with your Solana account:\n{address}\n\n"
        "Clicking Sign or Approve only means you have proved this wallet is owned by you.\n\n"
        "URI: https://app.example/\nVersion: 1\nChain ID: mainnet\nNonce: oBbLoEldZs\n"
        "Issued At: 2026-03-01T11:59:00.000Z\nExpiration Time: 2026-03-01T12:10:00.000Z\n"
        "Not Before: 2026-03-01T11:58:00.000Z\nRequest ID: abc123\n"
        "Resources:\n- https://example.com\n- https://phantom.app/"
    )
    message = siws.parse_message(text)
    assert message.statement.startswith("Clicking Sign")
    assert message.chain_id == "mainnet" and message.request_id == "abc123"
    assert message.resources == ("https://example.com", "https://phantom.app/")
    assert message.issued_at == datetime(2026, 3, 1, 11, 59, tzinfo=UTC)


def test_minimal_messages_parse_but_valux_requires_nonce_chain_and_time(keypair: Keypair) -> None:
    """Domain + address is valid SIWS, but verifying requires Nonce, Chain ID and Issued At."""
    address = str(keypair.pubkey())
    minimal = f"app.example wants you to sign in with your Solana account:\n{address}"
    message = siws.parse_message(minimal)
    assert message.nonce is None and message.chain_id is None
    with pytest.raises(SignInError) as info:
        _verify(minimal, _sign(keypair, minimal))
    assert info.value.code == "SIWS_MALFORMED" and "Nonce" in info.value.message
    statement_only = minimal + "\n\nHello there."
    assert siws.parse_message(statement_only).statement == "Hello there."


def test_solana_chain_names_compare_with_and_without_the_prefix(keypair: Keypair) -> None:
    """``solana:devnet`` equals ``devnet``; mainnet is another chain (SIWS_CHAIN_MISMATCH)."""
    text = _message(keypair, chain_id="solana:devnet")
    signature = _sign(keypair, text)
    assert _verify(text, signature, chain_id="devnet")
    _fails(SignInFailure.CHAIN_MISMATCH, text, signature, chain_id="mainnet")
    local = _message(keypair, chain_id="localnet")
    assert _verify(local, _sign(keypair, local), chain_id="localnet")


@pytest.mark.parametrize(
    ("old", "new", "code"),
    [
        pytest.param("Chain ID: devnet", "Chain ID: 1", "SIWS_MALFORMED", id="evm-chain"),
        pytest.param("Solana account", "Ethereum account", "SIWS_MALFORMED", id="eth-header"),
        pytest.param("Sign in to valux.\n\n", "Sign in to valux.\n", "SIWS_MALFORMED", id="blank"),
        pytest.param("Nonce: oBbLoEldZs42", "Nonce: short", "SIWS_MALFORMED", id="short-nonce"),
        pytest.param("ADDRESS", "0OIl" + "1" * 40, "SIWS_INVALID_ADDRESS", id="not-base58"),
        pytest.param("ADDRESS", "z" * 44, "SIWS_INVALID_ADDRESS", id="not-32-bytes"),
    ],
)
def test_malformed_solana_messages_are_refused(
    keypair: Keypair, old: str, new: str, code: str
) -> None:
    """Wrong chain syntax, header, blank lines, nonce or address are refused with their code."""
    text = _message(keypair).replace(str(keypair.pubkey()), "ADDRESS")
    assert old in text
    text = text.replace(old, new).replace("ADDRESS", str(keypair.pubkey()))
    with pytest.raises(SignInError) as info:
        siws.parse_message(text)
    assert info.value.code == code


def test_shared_checks_apply_to_solana_too(keypair: Keypair) -> None:
    """Domain, nonce and expiry checks come from the shared skeleton, with SIWS_ codes."""
    other = _message(keypair, domain="evil.example")
    _fails(SignInFailure.DOMAIN_MISMATCH, other, _sign(keypair, other))
    text = _message(keypair)
    _fails(SignInFailure.NONCE_MISMATCH, text, _sign(keypair, text), nonce="AnotherNonce1")
    expired = _message(keypair, expiration_time=NOW - timedelta(seconds=1))
    _fails(SignInFailure.EXPIRED, expired, _sign(keypair, expired))
