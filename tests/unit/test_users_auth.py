"""Sign-in, sessions, keys, webhooks and rate limits through the HTTP layer (FakeBackend).

Login nonces and rate-limit windows live in a real Redis: ``REDIS_URL`` when set, else
``redis://127.0.0.1:6379/0`` when one answers, else an embedded one (as the integration
tests do). Each app has a Redis key prefix of its own, so tests never share a window.
Wallet logins are signed by a fresh eth-account key (SIWE) or a fresh solders keypair
(SIWS) per test.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from eth_account import Account
from eth_account.messages import encode_defunct
from solders.keypair import Keypair

from tests.unit.redis_support import redis_for_tests
from valux.api.auth_service import BOOTSTRAP
from valux.api.security import AuthConfig
from valux.api.testing import FakeBackend, api_client, sign_in
from valux.api.users import MemoryUserStore
from valux.auth import siwe, siws
from valux.auth.passwords import LockoutPolicy
from valux.auth.tokens import Role, issue_access_token
from valux.auth.webhooks import HEADER, sign

Client = TestClient[web.Request, web.Application]
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """REDIS_URL, else a local Redis that answers, else an embedded one."""
    yield from redis_for_tests(tmp_path_factory)


@asynccontextmanager
async def app(
    redis_url: str | None, *, user: str | None = None, role: Role = Role.USER, **config: Any
) -> AsyncIterator[tuple[Client, FakeBackend]]:
    """An app over a fake whose AuthConfig has ``config``; its client signed in as ``user``
    (None: no credentials)."""
    fake = FakeBackend(auth_config=AuthConfig.for_tests(**config))
    async with api_client(fake, redis_url=redis_url, user=user, role=role) as client:
        yield client, fake


def store(fake: FakeBackend) -> MemoryUserStore:
    assert isinstance(fake.users, MemoryUserStore)
    return fake.users


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def register(client: Client, email: str | None = None) -> dict[str, Any]:
    email = email or f"u{uuid.uuid4().hex[:8]}@example.com"
    r = await client.post("/api/v1/auth/register", json={"email": email, "password": PASSWORD})
    assert r.status == 201, await r.text()
    return {**(await r.json()), "email": email}


def error(body: dict[str, Any]) -> tuple[str, list[str]]:
    err = body["error"]
    return err["code"], [e["field"] for e in err.get("errors", [])]


# ---------------------------------------------------------------- passwords


async def test_register_login_me_and_logout(redis_url: str) -> None:
    """Register answers 201 with tokens; login answers {access_token, refresh_token,
    expires_in}; /me shows the user and its password identity (no hash); logout revokes the
    access token at once and ends the session's refresh token."""
    async with app(redis_url) as (client, fake):
        reg = await register(client)
        assert reg["user"]["email"] == reg["email"] and reg["user"]["role"] == "user"
        r = await client.post(
            "/api/v1/auth/login", json={"email": reg["email"].upper(), "password": PASSWORD}
        )
        assert r.status == 200
        session = await r.json()
        assert set(session) >= {"access_token", "refresh_token", "expires_in", "token_type"}
        assert session["expires_in"] == 900 and session["token_type"] == "Bearer"
        me = await (
            await client.get("/api/v1/auth/me", headers=bearer(session["access_token"]))
        ).json()
        assert me["email"] == reg["email"]
        assert [i["kind"] for i in me["identities"]] == ["password"]
        assert "hash" not in json.dumps(me) and "argon2" not in json.dumps(me)
        r = await client.post(
            "/api/v1/auth/logout",
            json={"refresh_token": session["refresh_token"]},
            headers=bearer(session["access_token"]),
        )
        assert r.status == 200 and (await r.json())["logged_out"] is True
        r = await client.get("/api/v1/auth/me", headers=bearer(session["access_token"]))
        assert r.status == 401 and error(await r.json())[0] == "TOKEN_INVALID"
        r = await client.post(
            "/api/v1/auth/refresh", json={"refresh_token": session["refresh_token"]}
        )
        assert r.status == 401 and error(await r.json())[0] == "REFRESH_TOKEN_INVALID"
        assert {"user_created", "login_ok", "logout"} <= set(store(fake).events())


async def test_registration_checks_password_email_and_the_switch(redis_url: str) -> None:
    """A weak password is 400 naming `password`; a taken e-mail 409 naming `email`; with
    open registration off, 403 REGISTRATION_CLOSED."""
    async with app(redis_url) as (client, _):
        r = await client.post(
            "/api/v1/auth/register", json={"email": "a@example.com", "password": "short"}
        )
        assert r.status == 400 and error(await r.json()) == ("WEAK_PASSWORD", ["password"])
        await register(client, "taken@example.com")
        r = await client.post(
            "/api/v1/auth/register", json={"email": "TAKEN@example.com", "password": PASSWORD}
        )
        assert r.status == 409 and error(await r.json())[1] == ["email"]
    async with app(redis_url, open_registration=False) as (client, _):
        r = await client.post(
            "/api/v1/auth/register", json={"email": "b@example.com", "password": PASSWORD}
        )
        assert r.status == 403 and error(await r.json())[0] == "REGISTRATION_CLOSED"


async def test_wrong_password_and_unknown_email_look_the_same(redis_url: str) -> None:
    """Both are 401 INVALID_CREDENTIALS with the same message and a WWW-Authenticate header;
    both are audited as login_failed."""
    async with app(redis_url) as (client, fake):
        reg = await register(client)
        answers = []
        for email in (reg["email"], "nobody@example.com"):
            r = await client.post("/api/v1/auth/login", json={"email": email, "password": "x"})
            assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
            answers.append((await r.json())["error"]["message"])
        assert answers[0] == answers[1]
        assert store(fake).events().count("login_failed") == 2


async def test_five_failures_lock_the_account_then_it_unlocks(redis_url: str) -> None:
    """The 5th wrong password locks the account (401 ACCOUNT_LOCKED with Retry-After); while
    locked even the right password is refused; once the lock ends it logs in. The lockout is
    audited."""
    policy = LockoutPolicy(max_failures=5, lock_for=timedelta(seconds=1.5))
    async with app(redis_url, lockout=policy) as (client, fake):
        reg = await register(client)
        bad = {"email": reg["email"], "password": "wrong password"}
        codes = []
        for _ in range(5):
            r = await client.post("/api/v1/auth/login", json=bad)
            codes.append(error(await r.json())[0])
        assert codes == ["INVALID_CREDENTIALS"] * 4 + ["ACCOUNT_LOCKED"]
        assert int(r.headers["Retry-After"]) >= 1
        good = {"email": reg["email"], "password": PASSWORD}
        r = await client.post("/api/v1/auth/login", json=good)
        assert r.status == 401 and error(await r.json())[0] == "ACCOUNT_LOCKED"
        assert "lockout" in store(fake).events()
        await asyncio.sleep(1.6)
        assert (await client.post("/api/v1/auth/login", json=good)).status == 200


async def test_refresh_rotates_and_a_reused_token_revokes_its_family(redis_url: str) -> None:
    """A refresh answers a new pair; the old refresh token presented again is 401
    REFRESH_TOKEN_REUSED and revokes the whole family (the newer token fails too), audited as
    refresh_reuse; another login's family is untouched."""
    async with app(redis_url) as (client, fake):
        reg = await register(client)
        other = await (
            await client.post(
                "/api/v1/auth/login", json={"email": reg["email"], "password": PASSWORD}
            )
        ).json()
        first = reg["refresh_token"]
        r = await client.post("/api/v1/auth/refresh", json={"refresh_token": first})
        assert r.status == 200
        second = (await r.json())["refresh_token"]
        assert second != first
        me = await client.get("/api/v1/auth/me", headers=bearer((await r.json())["access_token"]))
        assert me.status == 200
        r = await client.post("/api/v1/auth/refresh", json={"refresh_token": first})
        assert r.status == 401 and error(await r.json()) == (
            "REFRESH_TOKEN_REUSED",
            ["refresh_token"],
        )
        r = await client.post("/api/v1/auth/refresh", json={"refresh_token": second})
        assert r.status == 401 and error(await r.json())[0] == "REFRESH_TOKEN_INVALID"
        r = await client.post(
            "/api/v1/auth/refresh", json={"refresh_token": other["refresh_token"]}
        )
        assert r.status == 200
        assert "refresh_reuse" in store(fake).events()


async def test_expired_and_forged_access_tokens_are_401(redis_url: str) -> None:
    """An expired token is 401 TOKEN_EXPIRED (refresh and retry); one signed with another key
    is 401 TOKEN_INVALID; a malformed Authorization header too."""
    async with app(redis_url) as (client, fake):
        user, _ = await sign_in(fake, "u_exp")
        old = issue_access_token(
            fake.auth_config.signing_key,
            subject=user.id,
            role=Role.USER,
            now=datetime.now(UTC) - timedelta(hours=1),
        ).token
        r = await client.get("/api/v1/agents", headers=bearer(old))
        assert r.status == 401 and error(await r.json())[0] == "TOKEN_EXPIRED"
        forged = issue_access_token(os.urandom(64), subject=user.id, role=Role.ADMIN).token
        r = await client.get("/api/v1/agents", headers=bearer(forged))
        assert r.status == 401 and error(await r.json())[0] == "TOKEN_INVALID"
        r = await client.get("/api/v1/agents", headers={"Authorization": "Basic abc"})
        assert r.status == 401 and error(await r.json())[1] == ["Authorization"]


async def test_password_change_signs_out_every_session(redis_url: str) -> None:
    """Changing the password needs the current one (401 if wrong), meets the minimum (400),
    and revokes every refresh token of the user; the new password logs in."""
    async with app(redis_url) as (client, _):
        reg = await register(client)
        h = bearer(reg["access_token"])
        r = await client.post(
            "/api/v1/auth/password",
            json={"current_password": "nope", "new_password": "a brand new passphrase"},
            headers=h,
        )
        assert r.status == 401
        r = await client.post(
            "/api/v1/auth/password",
            json={"current_password": PASSWORD, "new_password": "short"},
            headers=h,
        )
        assert r.status == 400 and error(await r.json())[0] == "WEAK_PASSWORD"
        r = await client.post(
            "/api/v1/auth/password",
            json={"current_password": PASSWORD, "new_password": "a brand new passphrase"},
            headers=h,
        )
        assert r.status == 200
        r = await client.post("/api/v1/auth/refresh", json={"refresh_token": reg["refresh_token"]})
        assert r.status == 401
        r = await client.post(
            "/api/v1/auth/login",
            json={"email": reg["email"], "password": "a brand new passphrase"},
        )
        assert r.status == 200


async def test_first_start_creates_the_admin_once_with_a_one_time_password() -> None:
    """The app's start gives the first admin (u_admin, owner of pre-user data) the configured
    e-mail and a random password, readable once; a second start over the same store creates
    none; the password logs in as admin."""
    fake = FakeBackend(auth_config=AuthConfig.for_tests(admin_email="root@example.com"))
    async with api_client(fake, user=None) as client:
        boot = client.app[BOOTSTRAP]  # type: ignore[index]
        creds = boot.take()
        assert creds is not None and creds[0] == "root@example.com" and len(creds[1]) >= 20
        assert boot.take() is None
        r = await client.post("/api/v1/auth/login", json={"email": creds[0], "password": creds[1]})
        assert r.status == 200 and (await r.json())["role"] == "admin"
        assert (await r.json())["user_id"] == "u_admin"
    async with api_client(fake, user=None) as client:
        assert client.app[BOOTSTRAP].take() is None  # type: ignore[index]


# ------------------------------------------------------------------- wallets


def _siwe_message(port: int, address: str, nonce: str, **changes: Any) -> str:
    fields: dict[str, Any] = {
        "domain": f"127.0.0.1:{port}",
        "address": address,
        "uri": f"http://127.0.0.1:{port}/login",
        "chain_id": 1,
        "nonce": nonce,
        "issued_at": datetime.now(UTC) - timedelta(seconds=2),
        "statement": "Sign in to valux.",
    }
    fields.update(changes)
    return siwe.build_message(**fields)


def _siws_message(port: int, address: str, nonce: str, **changes: Any) -> str:
    fields: dict[str, Any] = {
        "domain": f"127.0.0.1:{port}",
        "address": address,
        "uri": f"http://127.0.0.1:{port}/login",
        "chain_id": "devnet",
        "nonce": nonce,
        "issued_at": datetime.now(UTC) - timedelta(seconds=2),
    }
    fields.update(changes)
    return siws.build_message(**fields)


async def nonce(client: Client) -> str:
    r = await client.get("/api/v1/auth/nonce")
    assert r.status == 200, await r.text()
    body = await r.json()
    assert body["expires_in"] == 300
    return str(body["nonce"])


async def test_siwe_login_by_a_fresh_eth_account_key(redis_url: str) -> None:
    """A fresh key signs an EIP-4361 message with a nonce from /nonce: the first login creates
    the user (identity siwe = the checksummed address), a second login is the same user."""
    async with app(redis_url) as (client, fake):
        account = Account.create()
        port = client.port
        users = set()
        for _ in range(2):
            text = _siwe_message(port, account.address, await nonce(client))
            sig = Account.sign_message(encode_defunct(text=text), account.key).signature.hex()
            r = await client.post("/api/v1/auth/login", json={"message": text, "signature": sig})
            assert r.status == 200, await r.text()
            users.add((await r.json())["user_id"])
        assert len(users) == 1
        me = await (
            await client.get("/api/v1/auth/me", headers=bearer((await r.json())["access_token"]))
        ).json()
        assert me["identities"][0]["kind"] == "siwe"
        assert me["identities"][0]["subject"] == account.address and me["email"] is None
        created = [r for r in store(fake).audit_rows if r["event"] == "user_created"]
        assert [r["detail"]["method"] for r in created] == ["bootstrap", "siwe"]


async def test_siws_login_by_a_fresh_solders_keypair(redis_url: str) -> None:
    """A fresh ed25519 keypair signs a Sign-In-With-Solana message (base58 signature)."""
    async with app(redis_url) as (client, _):
        keypair = Keypair()
        text = _siws_message(client.port, str(keypair.pubkey()), await nonce(client))
        sig = str(keypair.sign_message(text.encode()))
        r = await client.post("/api/v1/auth/login", json={"message": text, "signature": sig})
        assert r.status == 200, await r.text()
        me = await (
            await client.get("/api/v1/auth/me", headers=bearer((await r.json())["access_token"]))
        ).json()
        assert [(i["kind"], i["subject"]) for i in me["identities"]] == [
            ("siws", str(keypair.pubkey()))
        ]


async def test_replayed_nonce_expired_message_and_wrong_domain_are_refused(
    redis_url: str,
) -> None:
    """The same signed message twice: the second is 401 NONCE_INVALID (single use). A message
    whose Expiration Time has passed: SIWE_EXPIRED. One for another domain: SIWE_DOMAIN_MISMATCH;
    for another chain: SIWE_CHAIN_MISMATCH; signed by another key: SIWE_BAD_SIGNATURE; a nonce
    valux never issued: NONCE_INVALID. Each failure names the `message` field."""
    async with app(redis_url) as (client, fake):
        account, port = Account.create(), client.port

        def signed(text: str, key: Any = None) -> dict[str, str]:
            k = account.key if key is None else key
            return {
                "message": text,
                "signature": Account.sign_message(encode_defunct(text=text), k).signature.hex(),
            }

        body = signed(_siwe_message(port, account.address, await nonce(client)))
        assert (await client.post("/api/v1/auth/login", json=body)).status == 200
        cases = {
            "replayed": (body, "NONCE_INVALID"),
            "expired": (
                signed(_siwe_message(port, account.address, await nonce(client),
                                     expiration_time=datetime.now(UTC) - timedelta(seconds=1))),
                "SIWE_EXPIRED",
            ),
            "domain": (
                signed(_siwe_message(port, account.address, await nonce(client),
                                     domain="evil.example")),
                "SIWE_DOMAIN_MISMATCH",
            ),
            "chain": (
                signed(_siwe_message(port, account.address, await nonce(client), chain_id=56)),
                "SIWE_CHAIN_MISMATCH",
            ),
            "signer": (
                signed(_siwe_message(port, account.address, await nonce(client)),
                       Account.create().key),
                "SIWE_BAD_SIGNATURE",
            ),
            "unissued nonce": (
                signed(_siwe_message(port, account.address, "NeverIssued12345678")),
                "NONCE_INVALID",
            ),
        }  # fmt: skip
        for what, (payload, code) in cases.items():
            r = await client.post("/api/v1/auth/login", json=payload)
            assert r.status == 401, what
            assert error(await r.json()) == (code, ["message"]), what
        assert store(fake).events().count("login_failed") >= 4


async def test_siws_replay_expiry_and_domain_are_refused(redis_url: str) -> None:
    """The same checks for Sign-In-With-Solana: replay, expiry, wrong domain."""
    async with app(redis_url) as (client, _):
        keypair, port = Keypair(), client.port
        address = str(keypair.pubkey())

        def signed(text: str) -> dict[str, str]:
            return {"message": text, "signature": str(keypair.sign_message(text.encode()))}

        body = signed(_siws_message(port, address, await nonce(client)))
        assert (await client.post("/api/v1/auth/login", json=body)).status == 200
        replay = await client.post("/api/v1/auth/login", json=body)
        assert error(await replay.json())[0] == "NONCE_INVALID"
        old = signed(_siws_message(port, address, await nonce(client),
                                   issued_at=datetime.now(UTC) - timedelta(hours=1)))  # fmt: skip
        assert error(await (await client.post("/api/v1/auth/login", json=old)).json())[0] == (
            "SIWS_EXPIRED"
        )
        other = signed(_siws_message(port, address, await nonce(client), domain="evil.example"))
        r = await client.post("/api/v1/auth/login", json=other)
        assert error(await r.json())[0] == "SIWS_DOMAIN_MISMATCH"


async def test_a_user_links_several_wallets_and_each_logs_into_it(redis_url: str) -> None:
    """A password user links an EVM and a Solana wallet; a wallet login then reaches that
    same user; a wallet linked to someone else is 409."""
    async with app(redis_url) as (client, fake):
        reg = await register(client)
        h = bearer(reg["access_token"])
        account, keypair, port = Account.create(), Keypair(), client.port
        text = _siwe_message(port, account.address, await nonce(client))
        sig = Account.sign_message(encode_defunct(text=text), account.key).signature.hex()
        r = await client.post("/api/v1/auth/wallets", json={"message": text, "signature": sig},
                              headers=h)  # fmt: skip
        assert r.status == 200, await r.text()
        text = _siws_message(port, str(keypair.pubkey()), await nonce(client))
        r = await client.post(
            "/api/v1/auth/wallets",
            json={"message": text, "signature": str(keypair.sign_message(text.encode()))},
            headers=h,
        )
        kinds = [i["kind"] for i in (await r.json())["identities"]]
        assert kinds == ["password", "siwe", "siws"]
        text = _siwe_message(port, account.address, await nonce(client))
        sig = Account.sign_message(encode_defunct(text=text), account.key).signature.hex()
        r = await client.post("/api/v1/auth/login", json={"message": text, "signature": sig})
        assert (await r.json())["user_id"] == reg["user_id"]
        other = await register(client)
        text = _siwe_message(port, account.address, await nonce(client))
        sig = Account.sign_message(encode_defunct(text=text), account.key).signature.hex()
        r = await client.post("/api/v1/auth/wallets", json={"message": text, "signature": sig},
                              headers=bearer(other["access_token"]))  # fmt: skip
        assert r.status == 409
        assert "wallet_linked" in store(fake).events()


async def test_wallet_signup_can_be_switched_off(redis_url: str) -> None:
    """With auth.wallet_signup false an unknown wallet is 403 REGISTRATION_CLOSED."""
    async with app(redis_url, wallet_signup=False) as (client, _):
        account = Account.create()
        text = _siwe_message(client.port, account.address, await nonce(client))
        sig = Account.sign_message(encode_defunct(text=text), account.key).signature.hex()
        r = await client.post("/api/v1/auth/login", json={"message": text, "signature": sig})
        assert r.status == 403 and error(await r.json())[0] == "REGISTRATION_CLOSED"


async def test_login_body_needs_one_complete_pair(redis_url: str) -> None:
    """{email} alone names `password`; {message} alone names `signature`; both kinds mixed is
    400; an unknown field is 400 naming it."""
    async with app(redis_url) as (client, _):
        for body, field in (
            ({"email": "a@example.com"}, "password"),
            ({"message": "x"}, "signature"),
            ({"email": "a@example.com", "password": "p", "message": "m", "signature": "s"},
             "message"),
            ({"user": "a"}, "user"),
        ):  # fmt: skip
            r = await client.post("/api/v1/auth/login", json=body)
            assert r.status == 400 and field in error(await r.json())[1], body


# ---------------------------------------------------------- keys and webhooks


async def test_api_keys_are_shown_once_scoped_and_revocable(redis_url: str) -> None:
    """A key is returned once at creation, never in lists; `read` reads but cannot trade
    (403 INSUFFICIENT_SCOPE); `trade` can; a key cannot manage keys (403 SESSION_REQUIRED);
    a plain user cannot mint an admin key (403); a revoked key is 401; creation and revocation
    are audited."""
    async with app(redis_url) as (client, fake):
        reg = await register(client)
        h = bearer(reg["access_token"])
        r = await client.post("/api/v1/keys", json={"name": "ro", "scopes": ["read"]}, headers=h)
        assert r.status == 201
        ro = await r.json()
        assert ro["key"].startswith("vx_") and ro["scopes"] == ["read"]
        listed = await (await client.get("/api/v1/keys", headers=h)).json()
        assert ro["key"] not in json.dumps(listed) and listed[0]["id"] == ro["id"]
        kh = {"X-API-Key": ro["key"]}
        assert (await client.get("/api/v1/agents", headers=kh)).status == 200
        r = await client.post("/api/v1/agents", json={"name": "x"}, headers=kh)
        assert r.status == 403 and error(await r.json())[0] == "INSUFFICIENT_SCOPE"
        rw = await (await client.post("/api/v1/keys", json={"name": "rw"}, headers=h)).json()
        assert rw["scopes"] == ["read", "trade"]
        r = await client.post("/api/v1/agents", json={"name": "x"},
                              headers=bearer(rw["key"]))  # fmt: skip
        assert r.status == 201
        r = await client.get("/api/v1/keys", headers=kh)
        assert r.status == 403 and error(await r.json())[0] == "SESSION_REQUIRED"
        r = await client.post("/api/v1/keys", json={"name": "a", "scopes": ["admin"]}, headers=h)
        assert r.status == 403
        assert (await client.delete(f"/api/v1/keys/{ro['id']}", headers=h)).status == 200
        r = await client.get("/api/v1/agents", headers=kh)
        assert r.status == 401 and error(await r.json()) == ("API_KEY_INVALID", ["X-API-Key"])
        assert {"api_key_created", "api_key_revoked"} <= set(store(fake).events())


async def test_an_admin_key_with_the_admin_scope_reaches_system_routes(redis_url: str) -> None:
    """An admin's key with `admin` reaches /supervisors; the same admin's `trade` key does not."""
    async with app(redis_url, user="u_root", role=Role.ADMIN) as (client, _):
        admin = await (
            await client.post("/api/v1/keys", json={"name": "ops", "scopes": ["admin"]})
        ).json()
        trade = await (await client.post("/api/v1/keys", json={"name": "t"})).json()
        r = await client.get(
            "/supervisors", headers={"X-API-Key": admin["key"], "Authorization": ""}
        )
        assert r.status == 200
        r = await client.get(
            "/supervisors", headers={"X-API-Key": trade["key"], "Authorization": ""}
        )
        assert r.status == 403 and error(await r.json())[0] == "ADMIN_REQUIRED"


SIGNAL = {"id": "wh-1", "token": "TKN", "strength": 3, "type": "tv"}


async def test_signed_webhook_posts_a_signal_and_bad_or_old_signatures_are_refused(
    redis_url: str,
) -> None:
    """A webhook answers 201 for a body signed with its secret (the signal lands on its
    owner's agents), 200 duplicate for the same id again, 401 WEBHOOK_BAD_SIGNATURE for a
    wrong HMAC, 401 WEBHOOK_OUTSIDE_WINDOW for a signature 10 minutes old, 401
    WEBHOOK_MALFORMED without the header, and 404 once revoked."""
    async with app(redis_url) as (client, fake):
        reg = await register(client)
        h = bearer(reg["access_token"])
        await client.post("/api/v1/agents", json={"name": "a", "id": "wa", "balance": "1"},
                          headers=h)  # fmt: skip
        hook = await (await client.post("/api/v1/webhooks", json={"name": "tv"}, headers=h)).json()
        assert hook["secret"].startswith("whsec_")
        listed = await (await client.get("/api/v1/webhooks", headers=h)).json()
        assert hook["secret"] not in json.dumps(listed)
        url = hook["url"]
        raw = json.dumps(SIGNAL).encode()
        ct = {"Content-Type": "application/json"}

        async def post(header: str | None) -> tuple[int, dict[str, Any]]:
            headers = {**ct, **({HEADER: header} if header is not None else {})}
            r = await client.post(url, data=raw, headers=headers)
            return r.status, await r.json()

        now = int(time.time())
        status, body = await post(sign(hook["secret"], raw, now))
        assert status == 201 and body["outcomes"][0]["agent_id"] == "wa"
        status, body = await post(sign(hook["secret"], raw, now))
        assert status == 200 and body["duplicate"] is True
        status, body = await post(sign("whsec_not_the_secret", raw, now))
        assert status == 401 and error(body) == ("WEBHOOK_BAD_SIGNATURE", ["X-Valux-Signature"])
        status, body = await post(sign(hook["secret"], raw, now - 600))
        assert status == 401 and error(body)[0] == "WEBHOOK_OUTSIDE_WINDOW"
        status, body = await post(None)
        assert status == 401 and error(body)[0] == "WEBHOOK_MALFORMED"
        assert (await client.delete(f"/api/v1/webhooks/{hook['id']}", headers=h)).status == 200
        status, _ = await post(sign(hook["secret"], raw, now))
        assert status == 404
        assert store(fake).events().count("webhook_rejected") == 3


# ---------------------------------------------------------------- rate limits


async def test_login_rate_limit_per_address_answers_429_with_retry_after(
    redis_url: str,
) -> None:
    """Past auth_per_ip requests in the window the auth routes answer 429 with Retry-After,
    while other routes still answer."""
    async with app(redis_url, user="u_r", auth_per_ip=3) as (client, _):
        body = {"email": "x@example.com", "password": "whatever it is"}
        statuses = [(await client.post("/api/v1/auth/login", json=body)).status for _ in range(4)]
        assert statuses == [401, 401, 401, 429]
        r = await client.get("/api/v1/auth/nonce")
        assert r.status == 429 and int(r.headers["Retry-After"]) >= 1
        assert error(await r.json())[0] == "RATE_LIMITED"
        assert (await client.get("/api/v1/agents")).status == 200


async def test_login_rate_limit_per_account(redis_url: str) -> None:
    """Past auth_per_account attempts for one e-mail, 429 (another e-mail still answers)."""
    async with app(redis_url, auth_per_account=2) as (client, _):
        body = {"email": "target@example.com", "password": "guess guess"}
        statuses = [(await client.post("/api/v1/auth/login", json=body)).status for _ in range(3)]
        assert statuses == [401, 401, 429]
        other = {"email": "other@example.com", "password": "guess guess"}
        assert (await client.post("/api/v1/auth/login", json=other)).status == 401


async def test_signal_rate_limit_per_user_answers_429(redis_url: str) -> None:
    """Past signals_per_user signals in the window, 429 with Retry-After; another user of the
    same address is not limited by it."""
    async with app(redis_url, user="u_sig", signals_per_user=2) as (client, fake):
        for i in range(2):
            r = await client.post("/api/v1/signals", json={**SIGNAL, "id": f"s{i}"})
            assert r.status == 201
        r = await client.post("/api/v1/signals", json={**SIGNAL, "id": "s9"})
        assert r.status == 429 and "Retry-After" in r.headers
        _, other = await sign_in(fake, "u_other")
        r = await client.post("/api/v1/signals", json={**SIGNAL, "id": "s9"}, headers=other)
        assert r.status == 201


async def test_limits_hold_across_two_api_processes(redis_url: str) -> None:
    """Two apps (two API processes) sharing a Redis prefix share one window."""
    config = AuthConfig.for_tests(auth_per_ip=3)
    a, b = FakeBackend(auth_config=config), FakeBackend(auth_config=config)
    async with (
        api_client(a, redis_url=redis_url, user=None) as one,
        api_client(b, redis_url=redis_url, user=None) as two,
    ):
        statuses = [(await c.get("/api/v1/auth/nonce")).status for c in (one, two, one, two)]
    assert statuses == [200, 200, 200, 429]


async def test_redis_down_login_is_503_naming_redis_and_trading_goes_on() -> None:
    """With Redis unreachable: password login and the nonce answer 503 naming Redis; signals,
    agents and positions keep working (their limits fail open)."""
    async with app("redis://127.0.0.1:1/0", user="u_t") as (client, _):
        for method, path, body in (
            ("POST", "/api/v1/auth/login", {"email": "a@example.com", "password": "pw pw pw"}),
            ("GET", "/api/v1/auth/nonce", None),
        ):
            r = await client.request(method, path, json=body)
            assert r.status == 503, await r.text()
            assert "Redis" in (await r.json())["error"]["message"]
        await client.post("/api/v1/agents", json={"name": "a", "id": "ra", "balance": "1"})
        started = time.monotonic()
        for i in range(3):
            r = await client.post("/api/v1/signals", json={**SIGNAL, "id": f"down-{i}"})
            assert r.status == 201
        assert time.monotonic() - started < 2.5  # Redis is skipped after it failed once
        assert (await client.get("/api/v1/positions")).status == 200


# ------------------------------------------------------------ browser safety


async def test_a_foreign_origin_cannot_change_state(redis_url: str) -> None:
    """A POST with Origin: https://evil.example is 403 ORIGIN_NOT_ALLOWED (naming Origin) and
    changes nothing; the API's own origin and requests without Origin pass; a GET from a
    foreign page is answered (no state change on GET)."""
    async with app(redis_url, user="u_o") as (client, fake):
        evil = {"Origin": "https://evil.example"}
        for method, path, body in (
            ("POST", "/api/v1/agents", {"name": "x"}),
            ("POST", "/api/v1/risk/user-state", {"state": "HALTED"}),
            ("DELETE", "/api/v1/agents/nope", None),
        ):
            r = await client.request(method, path, json=body, headers=evil)
            assert r.status == 403, path
            assert error(await r.json()) == ("ORIGIN_NOT_ALLOWED", ["Origin"])
        assert fake.agents == {}
        own = {"Origin": f"http://127.0.0.1:{client.port}"}
        assert (await client.post("/api/v1/agents", json={"name": "x"}, headers=own)).status == 201
        assert (await client.get("/api/v1/agents", headers=evil)).status == 200


async def test_cors_allowlist_answers_preflight_and_marks_responses(redis_url: str) -> None:
    """With api.cors_origins = [https://app.example]: its preflight is answered with the allowed
    origin and the Authorization header; its POST passes the Origin check and carries
    Access-Control-Allow-Origin; another origin's preflight is refused."""
    async with app(redis_url, user="u_c", cors_origins=("https://app.example",)) as (client, _):
        pre = {
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        }
        r = await client.options("/api/v1/agents", headers=pre)
        assert r.status == 200
        assert r.headers["Access-Control-Allow-Origin"] == "https://app.example"
        assert "AUTHORIZATION" in r.headers["Access-Control-Allow-Headers"].upper()
        r = await client.post(
            "/api/v1/agents", json={"name": "c"}, headers={"Origin": "https://app.example"}
        )
        assert r.status == 201
        assert r.headers["Access-Control-Allow-Origin"] == "https://app.example"
        r = await client.options(
            "/api/v1/agents", headers={**pre, "Origin": "https://evil.example"}
        )
        assert r.status == 403 and "Access-Control-Allow-Origin" not in r.headers


async def test_websocket_handshake_checks_origin_and_credentials(redis_url: str) -> None:
    """/ws: a foreign Origin is refused (403), no credential is 401, an allowlisted origin with
    the bearer subprotocol (as a browser sends it) connects and gets `valux` selected."""
    async with app(redis_url, user="u_w", cors_origins=("https://app.example",)) as (client, fake):
        _, h = await sign_in(fake, "u_w")
        token = h["Authorization"].removeprefix("Bearer ")
        with pytest.raises(Exception, match="403"):
            await client.ws_connect("/ws", headers={"Origin": "https://evil.example"})
        with pytest.raises(Exception, match="401"):
            await client.ws_connect("/ws", headers={"Authorization": ""})
        async with client.ws_connect(
            "/ws",
            protocols=("valux", f"bearer.{token}"),
            headers={"Origin": "https://app.example", "Authorization": ""},
        ) as ws:
            assert ws.protocol == "valux"
            await ws.send_json({"op": "subscribe"})
            assert (await ws.receive_json(timeout=3))["type"] == "subscribed"


async def test_a_foreign_host_is_refused_but_probes_answer(redis_url: str) -> None:
    """Host: evil.example (DNS rebinding) is 400 HOST_NOT_ALLOWED naming Host; /health/live
    answers any host; localhost with any port passes."""
    async with app(redis_url, user="u_h") as (client, _):
        r = await client.get("/api/v1/agents", headers={"Host": "evil.example"})
        assert r.status == 400 and error(await r.json()) == ("HOST_NOT_ALLOWED", ["Host"])
        r = await client.post("/api/v1/auth/login", json={}, headers={"Host": "evil.example:80"})
        assert r.status == 400
        assert (await client.get("/health/live", headers={"Host": "evil.example"})).status == 200
        assert (await client.get("/api/v1/agents", headers={"Host": "localhost:1"})).status == 200


async def test_every_response_carries_the_security_headers(redis_url: str) -> None:
    """nosniff, DENY framing, no referrer, a deny-all CSP and no-store, on success and error."""
    async with app(redis_url, user="u_s") as (client, _):
        for path in ("/api/v1/agents", "/api/v1/nothing", "/openapi.json"):
            r = await client.get(path)
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            assert r.headers["X-Frame-Options"] == "DENY"
            assert r.headers["Referrer-Policy"] == "no-referrer"
            assert "default-src 'none'" in r.headers["Content-Security-Policy"]
            assert r.headers["Cache-Control"] == "no-store"
