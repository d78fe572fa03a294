"""No secret reaches a log: every credential a full sign-in session creates is looked for in
everything the process logged at debug level (structlog JSON, stdlib logging, aiohttp's
access log, stdout and stderr) and in the audit log.

The integration test ``tests/integration/test_users_secrets.py`` does the same over the
whole system's logs (Ray workers included).
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import structlog
from eth_account import Account
from eth_account.messages import encode_defunct

from tests.unit.redis_support import redis_for_tests
from valux.api.auth_service import BOOTSTRAP
from valux.api.security import AuthConfig
from valux.api.testing import FakeBackend, api_client
from valux.api.users import MemoryUserStore
from valux.auth import siwe
from valux.auth.webhooks import HEADER, sign
from valux.observability.logging import configure_logging


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """REDIS_URL, else a local Redis that answers, else an embedded one."""
    yield from redis_for_tests(tmp_path_factory)


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """valux's own logging at debug level, into a buffer; restored afterwards."""
    stream = io.StringIO()
    configure_logging("debug", "json", process="api", stream=stream)
    try:
        yield stream
    finally:
        root = logging.getLogger()
        for handler in [h for h in root.handlers if getattr(h, "stream", None) is stream]:
            root.removeHandler(handler)
        root.setLevel(logging.WARNING)
        structlog.reset_defaults()


async def test_no_credential_of_a_full_session_appears_in_any_log(
    redis_url: str,
    log_stream: io.StringIO,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Register, fail and succeed at logging in, sign in with a wallet, refresh, reuse a
    refresh token, make and use an API key and a webhook, change the password, log out:
    none of the passwords, tokens, keys, secrets or signatures is in any log line."""
    caplog.set_level(logging.DEBUG)
    secrets: list[str] = []
    fake = FakeBackend(auth_config=AuthConfig.for_tests())
    async with api_client(fake, redis_url=redis_url, user=None) as client:
        boot = client.app[BOOTSTRAP]  # type: ignore[index]
        assert boot.password is not None
        secrets.append(boot.password)
        password = "my very secret passphrase 7"
        secrets.append(password)
        reg = await (
            await client.post(
                "/api/v1/auth/register", json={"email": "s@example.com", "password": password}
            )
        ).json()
        secrets += [reg["access_token"], reg["refresh_token"]]
        wrong = "a wrong secret passphrase 8"
        secrets.append(wrong)
        await client.post("/api/v1/auth/login", json={"email": "s@example.com", "password": wrong})
        login = await (
            await client.post(
                "/api/v1/auth/login", json={"email": "s@example.com", "password": password}
            )
        ).json()
        secrets += [login["access_token"], login["refresh_token"]]
        h = {"Authorization": f"Bearer {login['access_token']}"}

        account = Account.create()
        nonce = (await (await client.get("/api/v1/auth/nonce")).json())["nonce"]
        text = siwe.build_message(
            domain=f"127.0.0.1:{client.port}", address=account.address,
            uri=f"http://127.0.0.1:{client.port}/", chain_id=1, nonce=nonce,
            issued_at=datetime.now(UTC) - timedelta(seconds=1),
        )  # fmt: skip
        signature = Account.sign_message(encode_defunct(text=text), account.key).signature.hex()
        secrets += [signature, account.key.hex()]
        wallet = await (
            await client.post("/api/v1/auth/login", json={"message": text, "signature": signature})
        ).json()
        secrets += [wallet["access_token"], wallet["refresh_token"]]

        fresh = await (
            await client.post("/api/v1/auth/refresh", json={"refresh_token": reg["refresh_token"]})
        ).json()
        secrets += [fresh["access_token"], fresh["refresh_token"]]
        await client.post("/api/v1/auth/refresh", json={"refresh_token": reg["refresh_token"]})

        key = await (await client.post("/api/v1/keys", json={"name": "bot"}, headers=h)).json()
        secrets.append(key["key"])
        await client.get("/api/v1/agents", headers={"X-API-Key": key["key"]})
        await client.delete(f"/api/v1/keys/{key['id']}", headers=h)
        await client.get("/api/v1/agents", headers={"X-API-Key": key["key"]})

        hook = await (await client.post("/api/v1/webhooks", json={"name": "tv"}, headers=h)).json()
        secrets.append(hook["secret"])
        raw = json.dumps({"id": "s1", "token": "T", "strength": 3, "type": "t"}).encode()
        good = sign(hook["secret"], raw, int(time.time()))
        secrets.append(good.split("v1=")[1])
        ct = {"Content-Type": "application/json"}
        await client.post(hook["url"], data=raw, headers={**ct, HEADER: good})
        await client.post(hook["url"], data=raw, headers={**ct, HEADER: sign("whsec_x", raw, 1)})

        new_password = "the next secret passphrase 9"
        secrets.append(new_password)
        await client.post(
            "/api/v1/auth/password",
            json={"current_password": password, "new_password": new_password},
            headers=h,
        )
        await client.post("/api/v1/auth/logout", json={"everywhere": True}, headers=h)
    out, err = capfd.readouterr()
    logged = "\n".join([log_stream.getvalue(), caplog.text, out, err])
    assert "login_failed" in logged or "admin_bootstrapped" in logged  # the capture works
    audit = json.dumps(fake.users.audit_rows if isinstance(fake.users, MemoryUserStore) else [])
    for secret in secrets:
        assert secret not in logged, f"a secret ({secret[:6]}…) was logged"
        assert secret not in audit, f"a secret ({secret[:6]}…) is in the audit log"
