"""Key custody at rest: round trips on both chains, wrong passphrases and tampering fail
cleanly, Phantom / Solana CLI / hex imports, errors that never echo the secret, and keystore
v3 files that eth_account itself opens."""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
import pickle

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from solders.keypair import Keypair

from valux.custody.keys import (
    DEFAULT_SCRYPT,
    Chain,
    EncryptedEvmKey,
    EncryptedSolanaKey,
    InvalidKeyRecord,
    InvalidPassphrase,
    InvalidSecret,
    KeyCustodyError,
    ScryptParams,
    SecretKey,
    WrongPassphrase,
    address_of,
    decrypt,
    encrypt,
    encrypted_key_from_dict,
    export_text,
    import_secret,
    new_secret,
    signer_of,
)

CHEAP = ScryptParams(n=2**4, r=8, p=1)
PASS = "correct horse battery staple"


def _leaks(message: str, secret_text: str, window: int = 8) -> bool:
    """Whether any ``window``-long run of the secret's text appears in ``message``."""
    compact = "".join(secret_text.split())
    return any(compact[i : i + window] in message for i in range(max(1, len(compact) - window + 1)))


@pytest.mark.parametrize("chain", list(Chain))
def test_round_trip_through_a_stored_dict(chain: Chain) -> None:
    """new → encrypt → to_dict → JSON → from_dict → decrypt gives back the same key and
    address, and the stored dict holds only str and int values."""
    secret = new_secret(chain)
    record = encrypt(secret, PASS, scrypt=CHEAP)
    row = record.to_dict()
    assert all(type(v) in (str, int) for v in row.values())
    assert row["chain"] == chain.value and row["address"] == address_of(secret)
    restored = encrypted_key_from_dict(json.loads(json.dumps(row)))
    assert restored == record
    opened = decrypt(restored, PASS)
    assert opened == secret and opened.chain is chain


def test_solana_record_fields_are_exactly_the_documented_ones() -> None:
    """A Solana record stores chain, address, kdf name and params, salt, nonce,
    ciphertext and version — nothing else, and no plaintext."""
    secret = new_secret(Chain.SOLANA)
    row = encrypt(secret, PASS, scrypt=CHEAP).to_dict()
    assert set(row) == {
        "version",
        "chain",
        "address",
        "kdf",
        "kdf_n",
        "kdf_r",
        "kdf_p",
        "salt",
        "nonce",
        "ciphertext",
    }
    assert (row["kdf"], row["kdf_n"], row["kdf_r"], row["kdf_p"]) == ("scrypt", 16, 8, 1)
    assert not _leaks(json.dumps(row), export_text(secret))


def test_evm_record_carries_the_keystore_and_checksummed_address() -> None:
    """An EVM record is version, chain, the checksummed address and the keystore JSON."""
    secret = new_secret(Chain.ARBITRUM)
    record = encrypt(secret, PASS, scrypt=CHEAP)
    assert isinstance(record, EncryptedEvmKey)
    assert set(record.to_dict()) == {"version", "chain", "address", "keystore"}
    assert record.address == Account.from_key(secret.reveal()).address
    assert record.address != record.address.lower()


def test_default_scrypt_cost_is_memory_hard() -> None:
    """Without parameters, keys are derived with scrypt n=2**17, r=8, p=1 (128 MiB)."""
    assert (DEFAULT_SCRYPT.n, DEFAULT_SCRYPT.r, DEFAULT_SCRYPT.p) == (2**17, 8, 1)
    assert DEFAULT_SCRYPT.memory_bytes == 128 * 2**20


@pytest.mark.parametrize("chain", list(Chain))
def test_wrong_passphrase_is_its_own_error_and_says_nothing_more(chain: Chain) -> None:
    """A wrong passphrase raises WrongPassphrase (code WRONG_PASSPHRASE) with one fixed
    message: no passphrase, no key, no detail to probe; it pickles with its chain."""
    record = encrypt(new_secret(chain), PASS, scrypt=CHEAP)
    with pytest.raises(WrongPassphrase) as caught:
        decrypt(record, "correct horse battery stapler")
    err = caught.value
    assert err.code == "WRONG_PASSPHRASE" and isinstance(err, KeyCustodyError)
    assert "stapler" not in str(err) and PASS not in str(err)
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is WrongPassphrase and again.message == err.message
    assert again.chain == chain


def test_tampered_ciphertext_does_not_decrypt() -> None:
    """Flipping one bit of a Solana ciphertext makes the AEAD refuse it (WrongPassphrase:
    tampering and a wrong passphrase look the same, by design)."""
    record = encrypt(new_secret(Chain.SOLANA), PASS, scrypt=CHEAP)
    assert isinstance(record, EncryptedSolanaKey)
    row = record.to_dict()
    blob = bytearray(base64.b64decode(str(row["ciphertext"])))
    blob[5] ^= 0x01
    row["ciphertext"] = base64.b64encode(bytes(blob)).decode()
    with pytest.raises(WrongPassphrase):
        decrypt(encrypted_key_from_dict(row), PASS)


def test_solana_blob_moved_to_another_wallet_row_does_not_decrypt() -> None:
    """The associated data binds the ciphertext to its address: wallet A's salt, nonce
    and ciphertext under wallet B's address fail, even with A's right passphrase."""
    a = encrypt(new_secret(Chain.SOLANA), PASS, scrypt=CHEAP)
    b = encrypt(new_secret(Chain.SOLANA), PASS, scrypt=CHEAP)
    swapped = dataclasses.replace(a, address=b.address)
    with pytest.raises(WrongPassphrase):
        decrypt(swapped, PASS)


def test_solana_kdf_parameters_are_bound_too() -> None:
    """Lowering the stored scrypt cost does not yield the key (the AAD covers it)."""
    record = encrypt(new_secret(Chain.SOLANA), PASS, scrypt=ScryptParams(n=2**5, r=8, p=1))
    assert isinstance(record, EncryptedSolanaKey)
    cheaper = dataclasses.replace(record, kdf_n=2**4)
    with pytest.raises(WrongPassphrase):
        decrypt(cheaper, PASS)


def test_evm_keystore_moved_to_another_address_is_refused() -> None:
    """Keystore v3 does not authenticate its address: a keystore under another wallet's
    address is refused, whether or not the keystore's own address field was edited."""
    a = encrypt(new_secret(Chain.ARBITRUM), PASS, scrypt=CHEAP)
    b = encrypt(new_secret(Chain.ARBITRUM), PASS, scrypt=CHEAP)
    assert isinstance(a, EncryptedEvmKey)
    with pytest.raises(InvalidKeyRecord, match="address"):
        decrypt(dataclasses.replace(a, address=b.address), PASS)
    edited = json.loads(a.keystore)
    edited["address"] = b.address.lower().removeprefix("0x")
    forged = dataclasses.replace(a, address=b.address, keystore=json.dumps(edited))
    with pytest.raises(InvalidKeyRecord, match="another address"):
        decrypt(forged, PASS)


@pytest.mark.parametrize("chain", list(Chain))
def test_expected_address_is_checked_before_any_derivation(chain: Chain) -> None:
    """decrypt(..., expected_address=) refuses a record stored on another wallet's row."""
    record = encrypt(new_secret(chain), PASS, scrypt=CHEAP)
    other = address_of(new_secret(chain))
    with pytest.raises(InvalidKeyRecord, match=other):
        decrypt(record, PASS, expected_address=other)
    assert decrypt(record, PASS, expected_address=record.address).chain is chain


def test_keystore_opens_with_eth_account_directly() -> None:
    """The stored keystore is plain v3 (scrypt): Account.decrypt opens it with the same
    passphrase, and its address field is the key's."""
    secret = new_secret(Chain.ARBITRUM)
    record = encrypt(secret, PASS, scrypt=CHEAP)
    assert isinstance(record, EncryptedEvmKey)
    keystore = json.loads(record.keystore)
    assert keystore["version"] == 3 and keystore["crypto"]["kdf"] == "scrypt"
    assert bytes(Account.decrypt(record.keystore, PASS)) == secret.reveal()
    assert "0x" + keystore["address"].lower() == record.address.lower()


def test_keystore_made_by_eth_account_is_read() -> None:
    """A record around a keystore written by Account.encrypt itself decrypts too."""
    account = Account.create()
    keystore = Account.encrypt(account.key, PASS, kdf="scrypt", iterations=16)
    record = EncryptedEvmKey(
        version=1, chain=Chain.ARBITRUM, address=account.address, keystore=json.dumps(keystore)
    )
    assert decrypt(record, PASS).reveal() == bytes(account.key)


def test_passphrase_is_unicode_normalised() -> None:
    """The composed and decomposed spellings of the same passphrase open the same key."""
    composed, decomposed = "caf\u00e9-wallet", "cafe\u0301-wallet"
    for chain in Chain:
        secret = new_secret(chain)
        assert decrypt(encrypt(secret, composed, scrypt=CHEAP), decomposed) == secret


def test_empty_passphrase_is_refused() -> None:
    """Encrypting under an empty passphrase raises InvalidPassphrase."""
    with pytest.raises(InvalidPassphrase):
        encrypt(new_secret(Chain.SOLANA), "", scrypt=CHEAP)


def test_phantom_base58_import_and_export() -> None:
    """A Phantom-style base58 keypair imports to the same 64 bytes and address, and
    export_text gives that text back."""
    keypair = Keypair()
    text = str(keypair)
    secret = import_secret(Chain.SOLANA, f"  {text}\n")
    assert secret.reveal() == bytes(keypair)
    assert address_of(secret) == str(keypair.pubkey())
    assert export_text(secret) == text


def test_solana_cli_json_keypair_import() -> None:
    """A Solana CLI keypair file (a JSON array of 64 ints, any layout) imports."""
    keypair = Keypair()
    text = json.dumps(list(bytes(keypair)), indent=2)
    secret = import_secret("solana", text)
    assert secret.reveal() == bytes(keypair) and address_of(secret) == str(keypair.pubkey())


def _mismatched_keypair() -> str:
    one, two = Keypair(), Keypair()
    return json.dumps(list(bytes(one)[:32] + bytes(two.pubkey())))


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda: str(Keypair().pubkey()), "size of a public address"),
        (lambda: str(Keypair())[:-1] + "0", "base58 alphabet"),
        (lambda: str(Keypair())[:40], "decodes to"),
        (lambda: json.dumps(list(bytes(Keypair()))[:63]), "found 63"),
        (lambda: json.dumps([*list(bytes(Keypair()))[:63], 256]), "other values"),
        (lambda: json.dumps({"secret": list(bytes(Keypair()))}), "JSON array of 64"),
        (lambda: "[" + ",".join(map(str, bytes(Keypair()))), "not valid JSON"),
        (_mismatched_keypair, "public half does not match"),
        (lambda: " ".join(["abandon"] * 11 + ["about"]), "seed phrase"),
        (lambda: "   ", "empty"),
    ],
    ids=[
        "address",
        "bad-char",
        "short",
        "json-63",
        "json-256",
        "json-object",
        "json-broken",
        "halves-mismatch",
        "seed-phrase",
        "empty",
    ],
)
def test_bad_solana_input_says_why_without_echoing_it(make: object, says: str) -> None:
    """Each malformed Solana secret raises InvalidSecret (code INVALID_SECRET) saying
    what was expected, and no 8-character run of the input is in the message."""
    text = make()  # type: ignore[operator]
    with pytest.raises(InvalidSecret) as caught:
        import_secret(Chain.SOLANA, text)
    message = str(caught.value)
    assert says in message and caught.value.code == "INVALID_SECRET"
    if text.strip() and "abandon" not in text:
        assert not _leaks(message, text), message


def test_evm_hex_import_with_and_without_prefix() -> None:
    """An EVM key imports from 64 hex digits with or without 0x (either case); export is
    0x-hex; the address is the checksummed one eth_account derives."""
    account = Account.create()
    hexkey = bytes(account.key).hex()
    for text in (hexkey, "0x" + hexkey, "0X" + hexkey.upper()):
        secret = import_secret(Chain.ARBITRUM, text)
        assert address_of(secret) == account.address
        assert export_text(secret) == "0x" + hexkey


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("0x" + "ab" * 31, "got 62 characters"),
        ("0x" + "zz" * 32, "non-hex"),
        ("00" * 32, "out of range"),
        ("ff" * 32, "out of range"),
        ("legal winner thank year wave sausage worth useful legal winner thank yellow", "seed"),
    ],
    ids=["short", "non-hex", "zero", "over-order", "seed-phrase"],
)
def test_bad_evm_input_says_why_without_echoing_it(text: str, says: str) -> None:
    """Malformed EVM keys raise InvalidSecret with the reason and none of the text."""
    with pytest.raises(InvalidSecret) as caught:
        import_secret(Chain.ARBITRUM, text)
    assert says in str(caught.value)
    if "legal" not in text:
        assert not _leaks(str(caught.value), text.removeprefix("0x"))


def test_secret_is_never_shown_pickled_or_copied() -> None:
    """repr and str of a SecretKey show chain and size only; pickling and copying raise,
    so a secret cannot leave the process as a Ray argument by accident."""
    for chain in Chain:
        secret = new_secret(chain)
        shown = repr(secret) + str(secret) + f"{secret}"
        assert chain.value in shown and "hidden" in shown
        assert not _leaks(shown, export_text(secret).removeprefix("0x"))
        assert secret.reveal().hex() not in shown
        with pytest.raises(TypeError):
            pickle.dumps(secret)
        with pytest.raises(TypeError):
            copy.copy(secret)
        with pytest.raises(TypeError):
            copy.deepcopy({"k": secret})


def test_wiped_secret_is_zero_and_unusable() -> None:
    """wipe() zeroes the buffer; the key then refuses to export, sign or encrypt."""
    secret = new_secret(Chain.SOLANA)
    secret.wipe()
    assert secret.wiped and "wiped" in repr(secret)
    assert secret._buffer == bytearray(64)
    for use in (export_text, signer_of, address_of, lambda s: encrypt(s, PASS, scrypt=CHEAP)):
        with pytest.raises(InvalidSecret, match="wiped"):
            use(secret)


def test_signers_match_the_address() -> None:
    """signer_of gives a solders Keypair / eth_account LocalAccount for the same address,
    and the Solana signature verifies against it."""
    sol = new_secret(Chain.SOLANA)
    keypair = signer_of(sol)
    assert isinstance(keypair, Keypair) and str(keypair.pubkey()) == address_of(sol)
    assert keypair.sign_message(b"hi").verify(keypair.pubkey(), b"hi")
    evm = new_secret(Chain.ARBITRUM)
    account = signer_of(evm)
    assert isinstance(account, LocalAccount) and account.address == address_of(evm)


def test_secret_constructor_validates_raw_bytes() -> None:
    """SecretKey checks raw bytes too: a Solana keypair whose halves differ is refused."""
    good = bytes(Keypair())
    with pytest.raises(InvalidSecret, match="public half"):
        SecretKey(Chain.SOLANA, good[:32] + bytes(Keypair().pubkey()))
    with pytest.raises(InvalidSecret, match="32 bytes"):
        SecretKey(Chain.ARBITRUM, b"\x01" * 31)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"version": 2}, "version 2"),
        ({"kdf": "pbkdf2"}, "unsupported key derivation"),
        ({"kdf_n": 2**30}, "parameters are invalid"),
        ({"kdf_n": 1000}, "power of two"),
        ({"nonce": "AAAA"}, "wrong length"),
        ({"salt": "not base64!"}, "parameters are invalid"),
        ({"address": "not-an-address"}, "not a Solana address"),
        ({"chain": "dogecoin"}, "unknown chain"),
        ({"kdf_n": "16"}, "must be int"),
        ({"extra": 1}, "unknown fields"),
    ],
)
def test_malformed_solana_records_are_refused_before_derivation(
    change: dict[str, object], says: str
) -> None:
    """A record with a bad version, KDF, parameter (e.g. an n that would exhaust memory),
    length, address, chain, type or field set raises InvalidKeyRecord when read."""
    row: dict[str, object] = dict(encrypt(new_secret(Chain.SOLANA), PASS, scrypt=CHEAP).to_dict())
    row.update(change)
    with pytest.raises(InvalidKeyRecord, match=says):
        encrypted_key_from_dict(row)


def test_missing_field_and_bad_keystore_are_refused() -> None:
    """A row without its nonce, and an EVM keystore with a pbkdf2 KDF or broken JSON,
    raise InvalidKeyRecord."""
    row = dict(encrypt(new_secret(Chain.SOLANA), PASS, scrypt=CHEAP).to_dict())
    del row["nonce"]
    with pytest.raises(InvalidKeyRecord, match="missing fields"):
        encrypted_key_from_dict(row)
    record = encrypt(new_secret(Chain.ARBITRUM), PASS, scrypt=CHEAP)
    assert isinstance(record, EncryptedEvmKey)
    pbkdf2 = Account.encrypt(new_secret(Chain.ARBITRUM).reveal(), PASS, kdf="pbkdf2", iterations=2)
    for keystore in (json.dumps(pbkdf2), "{not json"):
        with pytest.raises(InvalidKeyRecord, match="keystore"):
            decrypt(dataclasses.replace(record, keystore=keystore), PASS)


def test_custody_errors_pickle_with_their_chain() -> None:
    """Every key error survives a pickle round trip (they cross Ray) with its fields."""
    for cls in (InvalidSecret, InvalidPassphrase, WrongPassphrase, InvalidKeyRecord):
        err = cls("what went wrong", "solana")
        again = pickle.loads(pickle.dumps(err))
        assert type(again) is cls and again.message == err.message and again.chain == "solana"
        assert again.code == cls.code
