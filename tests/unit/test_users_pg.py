"""Users in PostgreSQL (no Ray): the store contract, migration 0008, and RayBackend's scoping.

PostgreSQL is the server at ``DATABASE_URL`` when set, else
``postgresql://postgres@127.0.0.1:5432/postgres`` when one answers, else an embedded one;
every test module works in a scratch database of its own (:mod:`valux.ops.scratch_db`),
dropped afterwards. The store contract runs against both :class:`PgUserStore` and
:class:`MemoryUserStore`, so the fake the HTTP tests use behaves as the real one.
RayBackend's reads are pure SQL, and its scoped commands refuse another user's resource
before any actor call, so they are tested here without Ray.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest

from tests.unit.pg_support import postgres_for_tests
from valux.api.models import SignalIn
from valux.api.security import AuthConfig
from valux.api.testing import api_client
from valux.api.users import SYSTEM_OWNER, MemoryUserStore, UserStore
from valux.api.users_pg import PgUserStore
from valux.auth.api_keys import generate_api_key
from valux.auth.audit import AuditEvent
from valux.auth.tokens import Role, issue_refresh_token
from valux.config.settings import load_settings
from valux.errors import ConfigurationError, Conflict, NotFound
from valux.ops.scratch_db import scratch_database
from valux.persistence.migrations import apply_migrations, bundled_migrations
from valux.system.backend import RayBackend

NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL server to make scratch databases on."""
    yield from postgres_for_tests(tmp_path_factory)


@pytest.fixture
async def db(admin_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A fresh, migrated database of this test's own."""
    async with scratch_database(admin_url, "valux_users") as url:
        pool = await asyncpg.create_pool(url, min_size=1, max_size=4)
        async with pool.acquire() as conn:
            await apply_migrations(conn)
        try:
            yield pool
        finally:
            await pool.close()


@pytest.fixture(params=["pg", "memory"])
async def users(request: pytest.FixtureRequest, admin_url: str) -> AsyncIterator[UserStore]:
    """The same contract, against PostgreSQL and against the in-memory store."""
    if request.param == "memory":
        yield MemoryUserStore()
        return
    async with scratch_database(admin_url, "valux_users") as url:
        pool = await asyncpg.create_pool(url, min_size=1, max_size=4)
        async with pool.acquire() as conn:
            await apply_migrations(conn)
        try:
            yield PgUserStore(pool)
        finally:
            await pool.close()


# ----------------------------------------------------------------- the contract


async def test_the_first_admin_is_bootstrapped_once(users: UserStore) -> None:
    """bootstrap_admin gives u_admin the e-mail and password once; after that (an admin can
    log in) it creates nothing."""
    first = await users.bootstrap_admin("root@example.com", "$argon2id$x")
    assert first is not None and first.id == SYSTEM_OWNER and first.role is Role.ADMIN
    assert first.email == "root@example.com"
    assert await users.bootstrap_admin("other@example.com", "$argon2id$y") is None
    login = await users.password_login("ROOT@example.com")
    assert login is not None and login.user.id == SYSTEM_OWNER


async def test_an_admin_made_before_the_first_start_becomes_the_first_admin(
    users: UserStore,
) -> None:
    """`valux user create --admin` while u_admin has no identity claims u_admin (and so the
    data from before users); a later admin is a new user; no bootstrap happens after."""
    first = await users.create_user(email="ops@example.com", role=Role.ADMIN, secret_hash="h")
    assert first.id == SYSTEM_OWNER
    second = await users.create_user(email="ops2@example.com", role=Role.ADMIN, secret_hash="h")
    assert second.id != SYSTEM_OWNER and second.is_admin
    assert await users.bootstrap_admin("root@example.com", "h") is None


async def test_emails_and_wallets_are_unique(users: UserStore) -> None:
    """A second account for an e-mail (any case) or a wallet is a Conflict; linking a wallet
    another user holds too; linking one's own again is a no-op."""
    alice = await users.create_user(email="Alice@example.com", role=Role.USER, secret_hash="h")
    with pytest.raises(Conflict):
        await users.create_user(email="alice@EXAMPLE.com", role=Role.USER, secret_hash="h")
    wallet = await users.create_user(email=None, role=Role.USER, wallet=("siwe", "0xAbC"))
    with pytest.raises(Conflict):
        await users.create_user(email=None, role=Role.USER, wallet=("siwe", "0xAbC"))
    with pytest.raises(Conflict):
        await users.link_wallet(alice.id, "siwe", "0xAbC", at=NOW)
    assert await users.link_wallet(alice.id, "siws", "So1", at=NOW) is True
    assert await users.link_wallet(alice.id, "siws", "So1", at=NOW) is False
    assert (await users.wallet_user("siwe", "0xAbC")) == wallet
    kinds = [i.kind for i in await users.identities(alice.id)]
    assert sorted(kinds) == ["password", "siws"]


async def test_refresh_rotation_is_atomic(users: UserStore) -> None:
    """Of two rotations of the same token one wins; revoking the family marks every token of
    it; another family of the user is untouched until all are revoked."""
    user = await users.create_user(email="r@example.com", role=Role.USER, secret_hash="h")
    issued = issue_refresh_token(user.id)
    other = issue_refresh_token(user.id)
    await users.add_refresh_token(issued.record)
    await users.add_refresh_token(other.record)
    child_a = issue_refresh_token(user.id).record
    child_b = issue_refresh_token(user.id).record
    used = replace(issued.record, used_at=NOW)
    won = await asyncio.gather(
        users.rotate_refresh_token(used, replace(child_a, family_id=issued.record.family_id)),
        users.rotate_refresh_token(used, replace(child_b, family_id=issued.record.family_id)),
    )
    assert sorted(won) == [False, True]
    assert await users.revoke_refresh_family(issued.record.family_id, NOW) == 2
    stored = await users.refresh_token(other.record.token_hash)
    assert stored is not None and stored.revoked_at is None
    assert await users.revoke_user_refresh_tokens(user.id, NOW) == 1


async def test_api_keys_and_webhooks_belong_to_their_user(users: UserStore) -> None:
    """A key and a webhook are found by id with their user; only their owner can revoke them
    (another user gets None); a revoked one is kept, marked."""
    alice = await users.create_user(email="a@example.com", role=Role.USER, secret_hash="h")
    bob = await users.create_user(email="b@example.com", role=Role.USER, secret_hash="h")
    key = generate_api_key(["read"])
    await users.add_api_key(alice.id, "k", key.record)
    found = await users.api_key(key.record.prefix)
    assert found is not None and found[1].id == alice.id
    assert await users.revoke_api_key(bob.id, key.record.prefix, NOW) is None
    revoked = await users.revoke_api_key(alice.id, key.record.prefix, NOW)
    assert revoked is not None and revoked.revoked_at is not None
    await users.add_webhook(alice.id, "wh_1", "tv", b"sealed")
    assert await users.revoke_webhook(bob.id, "wh_1", NOW) is None
    assert [w.id for w in await users.list_webhooks(alice.id)] == ["wh_1"]
    assert await users.list_webhooks(bob.id) == []


async def test_audit_rows_are_written_filtered_and_never_hold_a_secret(users: UserStore) -> None:
    """Rows come back newest first and filter by event and user; a detail key naming a
    secret is refused before anything is written."""
    await users.audit(AuditEvent.LOGIN_FAILED, user_id="u1", ip="127.0.0.1", detail={"n": 1})
    await users.audit(AuditEvent.LOGIN_OK, user_id="u1", actor_id="u1", detail={"method": "pw"})
    await users.audit(AuditEvent.LOGIN_OK, user_id="u2")
    rows = await users.audit_log(limit=10, offset=0, event=None, user_id="u1")
    assert [r["event"] for r in rows] == ["login_ok", "login_failed"]
    assert rows[1]["ip"] == "127.0.0.1" and rows[1]["detail"] == {"n": 1}
    assert len(await users.audit_log(limit=10, offset=0, event="login_ok", user_id=None)) == 2
    with pytest.raises(ValueError, match="names a secret"):
        await users.audit(AuditEvent.LOGIN_OK, detail={"password": "hunter2"})
    with pytest.raises(ValueError, match="names a secret"):
        await users.audit(AuditEvent.LOGIN_OK, detail={"nested": {"refresh_token": "x"}})
    assert len(await users.audit_log(limit=10, offset=0, event=None, user_id=None)) == 3


async def test_bootstrap_refuses_an_email_another_user_holds(users: UserStore) -> None:
    """auth.admin_email taken by a plain user stops the bootstrap with a message naming it."""
    await users.create_user(email="root@example.com", role=Role.USER, secret_hash="h")
    with pytest.raises(ConfigurationError, match=r"auth\.admin_email"):
        await users.bootstrap_admin("root@example.com", "h")


async def test_two_processes_bootstrapping_at_once_make_one_admin(db: asyncpg.Pool) -> None:
    """Concurrent bootstraps (two API processes starting together) make exactly one."""
    a, b = PgUserStore(db), PgUserStore(db)
    made = await asyncio.gather(
        a.bootstrap_admin("root@example.com", "h1"), b.bootstrap_admin("root@example.com", "h2")
    )
    assert sum(m is not None for m in made) == 1


# ------------------------------------------------------------------- migration


async def test_data_from_before_users_belongs_to_the_first_admin(admin_url: str) -> None:
    """Agents and signals written before migration 0008 are owned by u_admin after it, and
    the admin bootstrapped at the next start sees them through the scoped backend."""
    async with scratch_database(admin_url, "valux_legacy") as url:
        conn = await asyncpg.connect(url)
        try:
            before = [m for m in bundled_migrations() if m.name < "0008"]
            await apply_migrations(conn, before)
            await conn.execute(
                "INSERT INTO agents (id, name, status, config, seq, host_slot, wallet_id,"
                " wallet_slot, created_at, updated_at) VALUES ('old-agent', 'old', 'active',"
                " '{}', 0, 0, 'w-old', 0, now(), now())"
            )
            await conn.execute(
                "INSERT INTO signals (id, body, targets)"
                " VALUES ('old-signal', '{}', ARRAY['old-agent'])"
            )
            assert "0008_users.sql" in await apply_migrations(conn)
            assert (
                await conn.fetchval(
                    "SELECT owner_id FROM agent_owners WHERE agent_id = 'old-agent'"
                )
                == SYSTEM_OWNER
            )
        finally:
            await conn.close()
        pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
        try:
            backend = _backend(pool, Path("/nonexistent"))
            admin = await backend.users.bootstrap_admin("root@example.com", "h")
            assert admin is not None and admin.id == SYSTEM_OWNER
            assert [a["id"] for a in await backend.list_agents(owner=admin.id)] == ["old-agent"]
            assert await backend.list_agents(owner="u_someone_else") == []
            signal = await backend.get_signal("old-signal", owner=admin.id)
            assert signal["signal_id"] == "old-signal"
        finally:
            await pool.close()


# ------------------------------------------------------------- RayBackend scoping


def _backend(pool: asyncpg.Pool, data_dir: Path) -> RayBackend:
    settings = load_settings(env={}, overrides={"data_dir": data_dir})
    return RayBackend(settings, pool, auth_config=AuthConfig.for_tests())


async def _seed(pool: asyncpg.Pool, owner: str, tag: str) -> dict[str, str]:
    """An agent of ``owner`` with an open position, a trade, a signal and its outcome."""
    agent, position, signal = f"{tag}-agent", f"{tag}-pos", f"{tag}-sig"
    seq = await pool.fetchval("SELECT nextval('agent_seq')")
    await pool.execute(
        "INSERT INTO agents (id, name, status, config, seq, host_slot, wallet_id, wallet_slot,"
        " created_at, updated_at) VALUES ($1, $2, 'active', '{}', $3, 0, $4, 0, now(), now())",
        agent, f"{tag}-name", seq, f"w-{agent}",
    )  # fmt: skip
    await pool.execute("INSERT INTO agent_owners VALUES ($1, $2)", agent, owner)
    await pool.execute(
        "INSERT INTO positions (id, agent_id, wallet_id, token, status, amount, remaining,"
        " purchase_price, invested, host_slot, exit_rules, opened_at) VALUES ($1, $2, $3,"
        " 'TKN', 'open', 1, 1, 1, 1, 0, '{}', now())",
        position, agent, f"w-{agent}",
    )  # fmt: skip
    await pool.execute(
        "INSERT INTO trades (intent_id, agent_id, wallet_id, position_id, side, token,"
        " base_amount, quote_amount, price, fee, network_fee, ts) VALUES ($1, $2, $3, $4,"
        " 'buy', 'TKN', 1, 1, 1, 0, 0, now())",
        f"{tag}-intent", agent, f"w-{agent}", position,
    )  # fmt: skip
    await pool.execute(
        "INSERT INTO signals (owner_id, id, body, targets) VALUES ($1, $2, $3::jsonb, $4)",
        owner, signal, json.dumps({"id": signal}), [agent],
    )  # fmt: skip
    await pool.execute(
        "INSERT INTO signal_outcomes (signal_id, agent_id, status, position_id, created_at)"
        " VALUES ($1, $2, 'bought', $3, now())",
        signal, agent, position,
    )  # fmt: skip
    return {"agent": agent, "position": position, "signal": signal}


async def test_ray_backend_scopes_every_read_to_its_owner(db: asyncpg.Pool, tmp_path: Path) -> None:
    """Lists show only the owner's agents, positions and trades; another user's position,
    signal, agent or wallet is NotFound (before any actor is asked); without an owner
    (in-process tools) everything is visible."""
    store = PgUserStore(db)
    alice = await store.create_user(email="a@example.com", role=Role.USER, secret_hash="h")
    bob = await store.create_user(email="b@example.com", role=Role.USER, secret_hash="h")
    a = await _seed(db, alice.id, "alice")
    b = await _seed(db, bob.id, "bob")
    backend = _backend(db, tmp_path)
    assert [x["id"] for x in await backend.list_agents(owner=alice.id)] == [a["agent"]]
    assert len(await backend.list_agents()) == 2
    for kwargs in ({}, {"agent_id": b["agent"]}):
        rows = await backend.list_positions(status=None, limit=10, offset=0, owner=alice.id,
                                            **{"agent_id": None, **kwargs})  # fmt: skip
        assert {p["id"] for p in rows} <= {a["position"]}
        trades = await backend.list_trades(limit=10, offset=0, owner=alice.id,
                                           **{"agent_id": None, **kwargs})  # fmt: skip
        assert {t["agent_id"] for t in trades} <= {a["agent"]}
    assert (await backend.get_position(a["position"], owner=alice.id))["id"] == a["position"]
    calls = [
        backend.get_position(b["position"], owner=alice.id),
        backend.close_position(b["position"], owner=alice.id),
        backend.get_signal(b["signal"], owner=alice.id),
        backend.get_agent(b["agent"], owner=alice.id),
        backend.get_wallet(b["agent"], owner=alice.id),
        backend.deposit(b["agent"], asset="SOL", amount=Decimal(1), owner=alice.id),
        backend.set_agent_state(b["agent"], state="HALTED", reason=None, owner=alice.id),
        backend.delete_agent(b["agent"], owner=alice.id),
        backend.update_agent(b["agent"], name="x", config_patch=None, owner=alice.id),
    ]
    for call in calls:
        with pytest.raises(NotFound):
            await call
    mine = await backend.get_signal(a["signal"], owner=alice.id)
    assert [o["agent_id"] for o in mine["outcomes"]] == [a["agent"]]
    assert await backend.agent_owner(b["agent"]) == bob.id


async def test_ray_backend_signal_ids_and_agent_ids_per_owner(
    db: asyncpg.Pool, tmp_path: Path
) -> None:
    """A signal naming another user's agent reaches none (no actor is asked); the same id is
    each user's own (not a duplicate across users, a duplicate for its sender); an agent id
    another user holds, even deleted, cannot be taken."""
    store = PgUserStore(db)
    alice = await store.create_user(email="a@example.com", role=Role.USER, secret_hash="h")
    bob = await store.create_user(email="b@example.com", role=Role.USER, secret_hash="h")
    b = await _seed(db, bob.id, "bob")
    backend = _backend(db, tmp_path)
    signal = SignalIn(id=b["signal"], token="TKN", strength=3, type="t", agents=[b["agent"]])
    first = await backend.post_signal(signal, owner=alice.id)
    assert first == {"signal_id": b["signal"], "duplicate": False, "outcomes": []}
    again = await backend.post_signal(signal, owner=alice.id)
    assert again["duplicate"] is True and again["outcomes"] == []
    await db.execute("UPDATE agents SET status = 'deleted' WHERE id = $1", b["agent"])
    with pytest.raises(Conflict, match="taken"):
        await backend.create_agent(
            name="x", config=None, balance=Decimal(0), agent_id=b["agent"], owner=alice.id
        )
    rows = await db.fetch("SELECT owner_id FROM signals WHERE id = $1", b["signal"])
    assert sorted(r["owner_id"] for r in rows) == sorted([alice.id, bob.id])


async def test_set_user_state_for_a_user_without_agents_is_empty(
    db: asyncpg.Pool, tmp_path: Path
) -> None:
    """The user-wide state of a user with no agents touches nothing (and asks no actor)."""
    backend = _backend(db, tmp_path)
    result = await backend.set_user_state(owner="u_nobody", state="HALTED", reason=None)
    assert result == {"state": "HALTED", "reason": None, "agents": [], "failed": []}


# ------------------------------------------------------------------ through HTTP


async def test_password_flow_over_postgres(db: asyncpg.Pool, tmp_path: Path) -> None:
    """register → login → refresh → reuse (family revoked) → the audit log, with the real
    store: the first start bootstrapped the admin, whose one-time password logs in."""
    backend = _backend(db, tmp_path)
    async with api_client(backend, user=None) as client:  # type: ignore[arg-type]
        from valux.api.auth_service import BOOTSTRAP

        creds = client.app[BOOTSTRAP].take()  # type: ignore[index]
        assert creds is not None
        email = f"p{uuid.uuid4().hex[:6]}@example.com"
        r = await client.post(
            "/api/v1/auth/register", json={"email": email, "password": "a long passphrase 9"}
        )
        assert r.status == 201
        first = (await r.json())["refresh_token"]
        r = await client.post("/api/v1/auth/refresh", json={"refresh_token": first})
        assert r.status == 200
        r = await client.post("/api/v1/auth/refresh", json={"refresh_token": first})
        assert r.status == 401 and (await r.json())["error"]["code"] == "REFRESH_TOKEN_REUSED"
        r = await client.post("/api/v1/auth/login", json={"email": creds[0], "password": creds[1]})
        assert r.status == 200
        admin = {"Authorization": f"Bearer {(await r.json())['access_token']}"}
        rows = await (await client.get("/api/v1/audit", headers=admin)).json()
        events = [row["event"] for row in rows]
        assert {"user_created", "refresh_reuse", "login_ok"} <= set(events)
        stored = await db.fetchval("SELECT count(*) FROM refresh_tokens WHERE token_hash = $1",
                                   first)  # fmt: skip
        assert stored == 0  # only hashes are stored
