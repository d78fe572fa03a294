"""Users on the real system: sign-in flows, webhooks, per-user state, admin routes, audit.

Against the session's runtime (Ray, PostgreSQL, Redis): the admin it created at its first
start (helpers.Api signs in with its one-time password), users who register, a wallet
that signs in with SIWE through a real Redis nonce, a signed webhook that buys, a user
halting all of their agents and no one else's, and the audit log in PostgreSQL.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from eth_account import Account
from eth_account.messages import encode_defunct
from solders.keypair import Keypair

from tests.integration.helpers import Api, admin_credentials
from valux.auth import siwe, siws
from valux.auth.webhooks import HEADER, sign

HOLD = {
    "stop_loss": {"enabled": True, "default_percentage": -50, "mode": "fixed"},
    "take_profit": {"enabled": False},
    "stale_trade": {"enabled": False},
}


async def _user(port: int) -> Api:
    async with Api(port, login=False) as anon:
        session = await anon.register()
    api = Api(port, token=session.access_token)
    await api.__aenter__()
    return api


async def test_the_admin_signs_in_with_its_one_time_password_and_users_see_only_theirs(
    runtime: Any,
) -> None:
    """The runtime's first start made the admin (u_admin); its password logs in; an agent the
    admin creates is not in a new user's list, and the user cannot reach it."""
    email, _ = admin_credentials(runtime.port)
    async with Api(runtime.port) as admin:
        me = await admin.get("/api/v1/auth/me")
        assert me == {**me, "id": "u_admin", "email": email, "role": "admin"}
        agent = await admin.post("/api/v1/agents", {"name": "admins"}, 201)
    user = await _user(runtime.port)
    try:
        assert agent["id"] not in {a["id"] for a in await user.get("/api/v1/agents")}
        await user.request("GET", f"/api/v1/agents/{agent['id']}", 404)
        assert (await user.get("/api/v1/auth/me"))["role"] == "user"
    finally:
        await user.__aexit__(None, None, None)


async def test_wallet_sign_in_with_siwe_and_siws_through_redis_nonces(runtime: Any) -> None:
    """A fresh EVM key and a fresh Solana keypair each sign in with a nonce from Redis (a new
    user each); replaying the same signed message is 401 NONCE_INVALID."""
    domain = f"127.0.0.1:{runtime.port}"
    async with Api(runtime.port, login=False) as anon:
        account = Account.create()
        nonce = (await anon.get("/api/v1/auth/nonce"))["nonce"]
        text = siwe.build_message(
            domain=domain, address=account.address, uri=f"http://{domain}/", chain_id=42161,
            nonce=nonce, issued_at=datetime.now(UTC) - timedelta(seconds=1),
        )  # fmt: skip
        body = {
            "message": text,
            "signature": Account.sign_message(
                encode_defunct(text=text), account.key
            ).signature.hex(),
        }
        first = await anon.post("/api/v1/auth/login", body, 200)
        replay = await anon.post("/api/v1/auth/login", body, 401)
        assert replay["error"]["code"] == "NONCE_INVALID"

        keypair = Keypair()
        nonce = (await anon.get("/api/v1/auth/nonce"))["nonce"]
        text = siws.build_message(
            domain=domain, address=str(keypair.pubkey()), chain_id="mainnet", nonce=nonce,
            issued_at=datetime.now(UTC) - timedelta(seconds=1),
        )  # fmt: skip
        second = await anon.post(
            "/api/v1/auth/login",
            {"message": text, "signature": str(keypair.sign_message(text.encode()))},
            200,
        )
        assert first["user_id"] != second["user_id"]
    async with Api(runtime.port, token=first["access_token"]) as wallet_user:
        me = await wallet_user.get("/api/v1/auth/me")
        assert me["identities"][0]["subject"] == account.address


async def test_a_signed_webhook_buys_for_its_owner_and_refuses_bad_signatures(
    runtime: Any,
) -> None:
    """A TradingView-style webhook: the signed signal buys for the webhook owner's agent; the
    same id again is a duplicate; a wrong HMAC and a 10-minute-old one are 401."""
    token = f"WH{uuid.uuid4().hex[:6]}"
    async with Api(runtime.port) as admin:
        await admin.ticks([(token, 1.0)])
    user = await _user(runtime.port)
    try:
        agent = await user.post("/api/v1/agents", {"name": "tv", "balance": "5", "config": HOLD},
                                201)  # fmt: skip
        hook = await user.post("/api/v1/webhooks", {"name": "tv"}, 201)
        raw = json.dumps({"id": f"tv-{uuid.uuid4().hex}", "token": token, "strength": 5,
                          "type": "buy", "size": "1"}).encode()  # fmt: skip
        url = f"http://127.0.0.1:{runtime.port}{hook['url']}"
        async with aiohttp.ClientSession() as http:

            async def post(header: str) -> tuple[int, Any]:
                headers = {HEADER: header, "Content-Type": "application/json"}
                async with http.post(url, data=raw, headers=headers) as r:
                    return r.status, await r.json()

            now = int(time.time())
            status, body = await post(sign(hook["secret"], raw, now))
            assert status == 201, body
            assert [(o["agent_id"], o["status"]) for o in body["outcomes"]] == [
                (agent["id"], "bought")
            ]
            status, body = await post(sign(hook["secret"], raw, now))
            assert status == 200 and body["duplicate"] is True
            status, body = await post(sign("whsec_wrong", raw, now))
            assert status == 401 and body["error"]["code"] == "WEBHOOK_BAD_SIGNATURE"
            status, body = await post(sign(hook["secret"], raw, now - 600))
            assert status == 401 and body["error"]["code"] == "WEBHOOK_OUTSIDE_WINDOW"
    finally:
        await user.__aexit__(None, None, None)


async def test_a_user_halts_all_of_their_agents_and_no_one_elses(runtime: Any) -> None:
    """POST /api/v1/risk/user-state HALTED sets both of the caller's agents HALTED (through
    the per-agent state path) and leaves another user's agent ACTIVE; back to ACTIVE after.
    The admin reads the change in the audit log."""
    alice, bob = await _user(runtime.port), await _user(runtime.port)
    try:
        mine = [(await alice.post("/api/v1/agents", {"name": f"a{i}"}, 201))["id"]
                for i in range(2)]  # fmt: skip
        theirs = (await bob.post("/api/v1/agents", {"name": "b"}, 201))["id"]
        result = await alice.post(
            "/api/v1/risk/user-state", {"state": "HALTED", "reason": "my kill switch"}, 200
        )
        assert sorted(result["agents"]) == sorted(mine) and result["failed"] == []
        for agent_id in mine:
            agent = await alice.get(f"/api/v1/agents/{agent_id}")
            assert agent["trading_state"] == "HALTED"
        assert (await bob.get(f"/api/v1/agents/{theirs}"))["trading_state"] == "ACTIVE"
        await alice.post("/api/v1/risk/user-state", {"state": "ACTIVE"}, 200)
        me = await alice.get("/api/v1/auth/me")
        async with Api(runtime.port) as admin:
            rows = await admin.get(f"/api/v1/audit?event=user_state_changed&user={me['id']}")
        assert [r["detail"]["state"] for r in rows] == ["ACTIVE", "HALTED"]
    finally:
        await alice.__aexit__(None, None, None)
        await bob.__aexit__(None, None, None)


async def test_system_routes_are_the_admins(runtime: Any) -> None:
    """A user gets 403 on the supervision tree, the global kill switch, the manual feed and
    the audit log; the admin gets through; everyone may read the global state."""
    user = await _user(runtime.port)
    try:
        for method, path, body in (
            ("GET", "/supervisors", None),
            ("GET", "/health/status", None),
            ("GET", "/metrics", None),
            ("POST", "/api/v1/risk/state", {"state": "HALTED"}),
            ("POST", "/api/v1/feeds/manual/ticks", {"ticks": [{"token": "X", "price": 1}]}),
            ("GET", "/api/v1/audit", None),
        ):
            status, answer = await user.request(method, path, None, body)
            assert status == 403, (path, answer)
        assert (await user.get("/api/v1/risk/state"))["state"] in ("ACTIVE", "REDUCING", "HALTED")
        async with Api(runtime.port) as admin:
            assert "supervisors" in await admin.get("/supervisors")
            rows = await admin.get("/api/v1/audit?event=login_ok&limit=5")
            assert rows and all(r["event"] == "login_ok" for r in rows)
    finally:
        await user.__aexit__(None, None, None)


async def test_no_request_without_a_credential_reaches_the_engine(runtime: Any) -> None:
    """Without a token: 401 on agents, signals and the WebSocket; health probes answer."""
    async with Api(runtime.port, login=False) as anon:
        for method, path in (("GET", "/api/v1/agents"), ("POST", "/api/v1/signals")):
            status, body = await anon.request(method, path, None, {})
            assert status == 401, body
        assert (await anon.request("GET", "/health/live"))[0] == 200
        async with aiohttp.ClientSession() as http:
            try:
                await http.ws_connect(f"http://127.0.0.1:{runtime.port}/ws")
            except aiohttp.WSServerHandshakeError as exc:
                assert exc.status == 401
            else:
                raise AssertionError("the WebSocket accepted a client without a credential")
