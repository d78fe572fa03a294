"""Sign-In with Ethereum (valux.auth.siwe): the EIP-4361 grammar and every verification failure."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount

from valux.auth import siwe
from valux.auth.errors import SignInError, SignInFailure

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DOMAIN = "app.example"
NONCE = "Q7mXoR3kPz9aLw2B"

EIP_EXAMPLE = """\
example.com wants you to sign in with your Ethereum account:
0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2

I accept the ExampleOrg Terms of Service: https://example.com/tos

URI: https://example.com/login
Version: 1
Chain ID: 1
Nonce: 32891756
Issued At: 2021-09-30T16:25:24Z
Resources:
- ipfs://bafybeiemxf5abjwjbikoz4mc3a3dla6ual3jsgpdr4cjr3oz3evfyavhwq/
- https://example.com/my-web2-claim.json"""


@pytest.fixture(scope="module")
def account() -> LocalAccount:
    return Account.create()


def _message(account: LocalAccount, **changes: Any) -> str:
    fields: dict[str, Any] = {
        "domain": DOMAIN,
        "address": account.address,
        "uri": "https://app.example/login",
        "chain_id": 42161,
        "nonce": NONCE,
        "issued_at": NOW - timedelta(seconds=30),
        "statement": "Sign in to valux.",
    }
    fields.update(changes)
    return siwe.build_message(**fields)


def _sign(account: LocalAccount, text: str) -> str:
    return Account.sign_message(encode_defunct(text=text), private_key=account.key).signature.hex()


def _verify(text: str, signature: str | bytes, **changes: Any) -> Any:
    expected: dict[str, Any] = {
        "domain": DOMAIN,
        "nonce": NONCE,
        "chain_id": 42161,
        "now": NOW,
    }
    expected.update(changes)
    return siwe.verify(text, signature, **expected)


def _fails(reason: SignInFailure, text: str, signature: str | bytes, **changes: Any) -> None:
    with pytest.raises(SignInError) as info:
        _verify(text, signature, **changes)
    assert info.value.reason is reason, info.value.message
    assert info.value.code == f"SIWE_{reason.value}"


# -- the happy path and the grammar -------------------------------------------------


def test_a_valid_login_verifies_and_returns_the_fields(account: LocalAccount) -> None:
    """A message signed by a fresh key verifies; the result names the address and its fields."""
    text = _message(account, expiration_time=NOW + timedelta(minutes=5))
    message = _verify(text, _sign(account, text), uri="https://app.example/login")
    assert message.address == account.address
    assert (message.domain, message.chain_id, message.nonce) == (DOMAIN, "42161", NONCE)
    assert message.issued_at == NOW - timedelta(seconds=30)
    assert message.issued_at.tzinfo is not None
    assert message.statement == "Sign in to valux."


def test_the_signature_may_be_hex_with_or_without_0x_or_bytes(account: LocalAccount) -> None:
    """Wallets send the 65-byte signature in several spellings; all verify."""
    text = _message(account)
    sig = Account.sign_message(encode_defunct(text=text), private_key=account.key).signature
    for spelling in (sig.hex(), "0x" + sig.hex(), bytes(sig)):
        assert _verify(text, spelling).address == account.address


def test_the_eip_example_message_parses() -> None:
    """The example message of EIP-4361 parses into its fields (aware Issued At, two resources)."""
    message = siwe.parse_message(EIP_EXAMPLE)
    assert message.domain == "example.com" and message.scheme is None
    assert message.address == "0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2"
    assert message.statement == "I accept the ExampleOrg Terms of Service: https://example.com/tos"
    assert (message.uri, message.version, message.chain_id) == (
        "https://example.com/login",
        "1",
        "1",
    )
    assert message.nonce == "32891756"
    assert message.issued_at == datetime(2021, 9, 30, 16, 25, 24, tzinfo=UTC)
    assert message.resources == (
        "ipfs://bafybeiemxf5abjwjbikoz4mc3a3dla6ual3jsgpdr4cjr3oz3evfyavhwq/",
        "https://example.com/my-web2-claim.json",
    )


def test_scheme_port_optional_fields_and_offsets_parse() -> None:
    """An explicit scheme and port, the optional fields, and a +02:00 offset are understood."""
    text = EIP_EXAMPLE.replace("example.com wants", "https://example.com:3388 wants").replace(
        "Issued At: 2021-09-30T16:25:24Z",
        "Issued At: 2021-09-30T18:25:24.5+02:00\n"
        "Expiration Time: 2021-09-30T16:30:00Z\n"
        "Not Before: 2021-09-30T16:25:00Z\n"
        "Request ID: req-7:abc@x",
    )
    message = siwe.parse_message(text)
    assert (message.scheme, message.domain) == ("https", "example.com:3388")
    assert message.issued_at == datetime(2021, 9, 30, 16, 25, 24, 500000, tzinfo=UTC)
    assert message.expiration_time == datetime(2021, 9, 30, 16, 30, tzinfo=UTC)
    assert message.not_before == datetime(2021, 9, 30, 16, 25, tzinfo=UTC)
    assert message.request_id == "req-7:abc@x"


def test_without_a_statement_there_are_two_blank_lines(account: LocalAccount) -> None:
    """Per the ABNF, no statement means address, two empty lines, then URI; and it round-trips."""
    text = _message(account, statement=None)
    assert f"{account.address}\n\n\nURI: " in text
    assert siwe.parse_message(text).statement is None
    assert _verify(text, _sign(account, text)).statement is None
    one_blank = text.replace("\n\n\nURI", "\n\nURI")
    with pytest.raises(SignInError) as info:
        siwe.parse_message(one_blank)
    assert info.value.code == "SIWE_MALFORMED"


def test_build_then_parse_gives_back_every_field(account: LocalAccount) -> None:
    """The builder's output parses back to the same fields (what clients will sign)."""
    text = _message(
        account,
        scheme="https",
        expiration_time=NOW + timedelta(minutes=5),
        not_before=NOW - timedelta(minutes=1),
        request_id="r-1",
        resources=["https://app.example/terms"],
    )
    message = siwe.parse_message(text)
    assert message.scheme == "https"
    assert message.expiration_time == NOW + timedelta(minutes=5)
    assert message.not_before == NOW - timedelta(minutes=1)
    assert message.request_id == "r-1"
    assert message.resources == ("https://app.example/terms",)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        pytest.param("Version: 1", "Version: 2", id="version-2"),
        pytest.param("Nonce: 32891756", "Nonce: 1234567", id="nonce-7-chars"),
        pytest.param("Nonce: 32891756", "Nonce: 3289-1756", id="nonce-not-alphanumeric"),
        pytest.param("Issued At: 2021-09-30T16:25:24Z", "Issued At: 2021-09-30 16:25", id="time"),
        pytest.param(
            "Issued At: 2021-09-30T16:25:24Z", "Issued At: 2021-09-30T16:25:24", id="naive"
        ),
        pytest.param(
            "Issued At: 2021-09-30T16:25:24Z", "Issued At: 2021-02-30T16:25:24Z", id="feb30"
        ),
        pytest.param("Issued At: 2021-09-30T16:25:24Z\n", "", id="no-issued-at"),
        pytest.param("Chain ID: 1", "Chain ID: one", id="chain-not-digits"),
        pytest.param("Chain ID: 1\n", "", id="no-chain-id"),
        pytest.param("URI: https://example.com/login", "URI: not a uri", id="bad-uri"),
        pytest.param("Version: 1\nChain ID: 1", "Chain ID: 1\nVersion: 1", id="order"),
        pytest.param("\n\nI accept", "\nI accept", id="no-blank-line"),
        pytest.param("Terms of Service:", "Terms of Service:\n", id="statement-newline"),
        pytest.param("Terms of Service", "Terms of Service 100%", id="statement-percent"),
        pytest.param("Ethereum account:", "Solana account:", id="solana-header"),
        pytest.param("example.com wants", "example .com wants", id="domain-space"),
        pytest.param("- https://example.com/my-web2", "* https://example.com/my-web2", id="bullet"),
        pytest.param("claim.json", "claim.json\n", id="trailing-newline"),
        pytest.param("claim.json", "claim.json\nExtra: 1", id="unknown-field"),
        pytest.param("\n", "\r\n", id="crlf"),
    ],
)
def test_malformed_messages_are_refused(old: str, new: str) -> None:
    """Off the ABNF (version, short nonce, bad time, field order, blank lines) is SIWE_MALFORMED."""
    assert old in EIP_EXAMPLE
    with pytest.raises(SignInError) as info:
        siwe.parse_message(EIP_EXAMPLE.replace(old, new, 1 if old != "\n" else -1))
    assert info.value.code == "SIWE_MALFORMED"
    assert info.value.message.startswith("line ")


@pytest.mark.parametrize(
    "address",
    [
        pytest.param("0xc02aaa39b223fe8d0a0e5c4f27ead9083c756cc2", id="all-lowercase"),
        pytest.param("0xC02AAA39B223FE8D0A0E5C4F27EAD9083C756CC2", id="all-uppercase"),
        pytest.param("0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756cC2", id="one-case-flipped"),
        pytest.param("0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc", id="too-short"),
        pytest.param("C02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2xx", id="no-0x"),
    ],
)
def test_an_address_without_a_valid_eip55_checksum_is_refused(address: str) -> None:
    """The address must be 0x + 40 hex digits in its EIP-55 checksummed form."""
    text = EIP_EXAMPLE.replace("0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2", address)
    with pytest.raises(SignInError) as info:
        siwe.parse_message(text)
    assert info.value.code == "SIWE_INVALID_ADDRESS"


def test_a_badly_checksummed_address_fails_verification_even_if_signed(
    account: LocalAccount,
) -> None:
    """The signer's address written in lowercase is refused, though the signature matches."""
    text = _message(account).replace(account.address, account.address.lower())
    _fails(SignInFailure.INVALID_ADDRESS, text, _sign(account, text))


def test_the_builder_refuses_values_the_grammar_refuses(account: LocalAccount) -> None:
    """Building with a short nonce or a statement with a newline raises SIWE_MALFORMED."""
    with pytest.raises(SignInError, match="line"):
        _message(account, nonce="short")
    with pytest.raises(SignInError):
        _message(account, statement="two\nlines")
    with pytest.raises(ValueError, match="naive"):
        _message(account, issued_at=datetime(2026, 1, 1))  # noqa: DTZ001 - the point


# -- each verification failure has its own code ------------------------------------


def test_a_signature_by_another_key_is_refused(account: LocalAccount) -> None:
    """A well-formed message signed by a different key fails with SIWE_BAD_SIGNATURE."""
    text = _message(account)
    _fails(SignInFailure.BAD_SIGNATURE, text, _sign(Account.create(), text))


def test_a_message_altered_after_signing_is_refused(account: LocalAccount) -> None:
    """Changing one field after signing (the chain id here) breaks the signature."""
    text = _message(account)
    signature = _sign(account, text)
    _fails(
        SignInFailure.BAD_SIGNATURE,
        text.replace("Chain ID: 42161", "Chain ID: 1"),
        signature,
        chain_id=1,
    )


@pytest.mark.parametrize("signature", ["", "0x", "0x1234", "zz" * 65, "00" * 65])
def test_unreadable_signatures_are_bad_signatures(account: LocalAccount, signature: str) -> None:
    """Garbage in the signature field is SIWE_BAD_SIGNATURE, never a crash."""
    _fails(SignInFailure.BAD_SIGNATURE, _message(account), signature)


def test_the_wrong_domain_is_refused(account: LocalAccount) -> None:
    """A message for another site (phishing relay) fails with SIWE_DOMAIN_MISMATCH."""
    text = _message(account, domain="evil.example")
    _fails(SignInFailure.DOMAIN_MISMATCH, text, _sign(account, text))
    # host names compare case-insensitively
    upper = _message(account, domain="APP.example")
    assert _verify(upper, _sign(account, upper)).domain == "APP.example"


def test_an_expected_scheme_is_checked(account: LocalAccount) -> None:
    """With scheme='https', an http:// message is refused; a message without scheme means https."""
    http = _message(account, scheme="http")
    _fails(SignInFailure.DOMAIN_MISMATCH, http, _sign(account, http), scheme="https")
    implicit = _message(account)
    assert _verify(implicit, _sign(account, implicit), scheme="https")


def test_the_uri_or_its_origin_is_checked(account: LocalAccount) -> None:
    """``uri`` must match exactly; ``origin`` only scheme, host and port of the message's URI."""
    text = _message(account, uri="https://app.example:443/login?next=/agents")
    signature = _sign(account, text)
    assert _verify(text, signature, origin="https://APP.example")
    _fails(SignInFailure.URI_MISMATCH, text, signature, origin="https://app.example:8443")
    _fails(SignInFailure.URI_MISMATCH, text, signature, origin="http://app.example")
    _fails(SignInFailure.URI_MISMATCH, text, signature, uri="https://app.example/login")


def test_the_wrong_chain_is_refused(account: LocalAccount) -> None:
    """A message bound to Ethereum mainnet does not sign in on Arbitrum (SIWE_CHAIN_MISMATCH)."""
    text = _message(account, chain_id=1)
    _fails(SignInFailure.CHAIN_MISMATCH, text, _sign(account, text), chain_id=42161)


def test_a_mismatched_nonce_is_refused(account: LocalAccount) -> None:
    """A message carrying another login's nonce fails with SIWE_NONCE_MISMATCH."""
    text = _message(account, nonce="SomeOtherNonce123")
    _fails(SignInFailure.NONCE_MISMATCH, text, _sign(account, text))


def test_an_expired_message_is_refused(account: LocalAccount) -> None:
    """Past its Expiration Time, or issued longer ago than max_age, a message is SIWE_EXPIRED."""
    text = _message(account, expiration_time=NOW - timedelta(seconds=1))
    _fails(SignInFailure.EXPIRED, text, _sign(account, text))
    at_expiry = _message(account, expiration_time=NOW)
    _fails(SignInFailure.EXPIRED, at_expiry, _sign(account, at_expiry))
    stale = _message(account, issued_at=NOW - timedelta(minutes=11))
    _fails(SignInFailure.EXPIRED, stale, _sign(account, stale))
    assert _verify(stale, _sign(account, stale), max_age=None)


def test_a_message_not_yet_valid_is_refused(account: LocalAccount) -> None:
    """A future Not Before, or an Issued At beyond the clock skew, is SIWE_NOT_YET_VALID."""
    text = _message(account, not_before=NOW + timedelta(seconds=10))
    _fails(SignInFailure.NOT_YET_VALID, text, _sign(account, text))
    future = _message(account, issued_at=NOW + timedelta(minutes=2))
    _fails(SignInFailure.NOT_YET_VALID, future, _sign(account, future))
    slight = _message(account, issued_at=NOW + timedelta(seconds=20))
    assert _verify(slight, _sign(account, slight))


def test_an_expected_address_is_checked(account: LocalAccount) -> None:
    """When linking a wallet, a message by another address fails with SIWE_ADDRESS_MISMATCH."""
    text = _message(account)
    other = Account.create().address
    _fails(SignInFailure.ADDRESS_MISMATCH, text, _sign(account, text), address=other)


def test_verify_refuses_a_naive_now_and_sign_in_errors_pickle(account: LocalAccount) -> None:
    """``now`` must be aware; a SignInError keeps its code and reason through pickling."""
    text = _message(account)
    with pytest.raises(ValueError, match="naive"):
        _verify(text, _sign(account, text), now=datetime(2026, 3, 1, 12))  # noqa: DTZ001
    err = SignInError("SIWE", SignInFailure.EXPIRED, "too late")
    clone = pickle.loads(pickle.dumps(err))
    assert (clone.code, clone.reason, clone.message) == (
        "SIWE_EXPIRED",
        SignInFailure.EXPIRED,
        "too late",
    )
