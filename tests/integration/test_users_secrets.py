"""No secret appears in any log of the run: the credentials this test creates are looked for
in every file of the Ray session's log directory (every actor's and worker's output) and in
everything this process wrote to stdout and stderr.

Run it late in a session (it is named so it sorts after most modules): the more the
session has logged, the more it proves. It scans for its own secrets only, and for the
admin's one-time password.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.helpers import Api, admin_credentials, wait_for
from valux.auth.webhooks import HEADER, sign

HOLD = {
    "stop_loss": {"enabled": True, "default_percentage": -50, "mode": "fixed"},
    "take_profit": {"enabled": False},
    "stale_trade": {"enabled": False},
}


def _ray_log_dir() -> Path:
    from ray._private import worker

    node = worker._global_node
    assert node is not None, "Ray is not initialised in this process"
    return Path(node.get_logs_dir_path())


def _files_containing(root: Path, needles: list[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        try:
            text = path.read_bytes().decode("utf-8", errors="replace")
        except OSError:
            continue
        hits = [n[:6] + "…" for n in needles if n in text]
        if hits:
            found[str(path)] = hits
    return found


async def test_no_secret_of_a_session_appears_in_any_log(
    runtime: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    """A user registers, logs in, refreshes, makes an API key and a webhook, trades through
    both, changes the password and logs out — with the actors at work in between. None of
    the passwords, tokens, keys, webhook secrets or the admin's password is in a log."""
    secrets: list[str] = [admin_credentials(runtime.port)[1]]
    token = f"SEC{uuid.uuid4().hex[:6]}"
    other = f"SEW{uuid.uuid4().hex[:6]}"  # one position per token: the webhook buys another
    password = f"secret passphrase {uuid.uuid4().hex}"
    new_password = f"next passphrase {uuid.uuid4().hex}"
    secrets += [password, new_password]
    async with Api(runtime.port) as admin:
        await admin.ticks([(token, 1.0), (other, 1.0)])
    async with Api(runtime.port, login=False) as anon:
        session = await anon.register(password=password)
        _, login = await anon.request(
            "POST", "/api/v1/auth/login", 200,
            {"email": (await _me(runtime.port, session.access_token))["email"],
             "password": password},
        )  # fmt: skip
        _, fresh = await anon.request(
            "POST", "/api/v1/auth/refresh", 200, {"refresh_token": login["refresh_token"]}
        )
        secrets += [session.access_token, session.refresh_token]
        secrets += [login["access_token"], login["refresh_token"]]
        secrets += [fresh["access_token"], fresh["refresh_token"]]
    async with Api(runtime.port, token=fresh["access_token"]) as user:
        agent = await user.post("/api/v1/agents", {"name": "s", "balance": "5", "config": HOLD},
                                201)  # fmt: skip
        key = await user.post("/api/v1/keys", {"name": "bot"}, 201)
        hook = await user.post("/api/v1/webhooks", {"name": "tv"}, 201)
        secrets += [key["key"], hook["secret"]]
        async with aiohttp.ClientSession() as http:
            signal = {"id": f"k-{uuid.uuid4().hex}", "token": token, "strength": 5,
                      "type": "buy", "size": "1", "agents": [agent["id"]]}  # fmt: skip
            base = f"http://127.0.0.1:{runtime.port}"
            async with http.post(f"{base}/api/v1/signals", json=signal,
                                 headers={"X-API-Key": key["key"]}) as r:  # fmt: skip
                assert r.status == 201, await r.text()
            raw = json.dumps({**signal, "id": f"w-{uuid.uuid4().hex}", "token": other}).encode()
            header = sign(hook["secret"], raw, int(time.time()))
            secrets.append(header.split("v1=")[1])
            async with http.post(f"{base}{hook['url']}", data=raw,
                                 headers={HEADER: header,
                                          "Content-Type": "application/json"}) as r:  # fmt: skip
                assert r.status == 201, await r.text()
        await wait_for(
            lambda: user.get(f"/api/v1/positions?agent={agent['id']}&status=open"),
            lambda ps: len(ps) == 2,
        )
        await user.post(
            "/api/v1/auth/password",
            {"current_password": password, "new_password": new_password},
            200,
        )  # signs out every session, this one included
    email = (await _me_by_key(runtime.port, key["key"]))["email"]
    async with Api(runtime.port, login=False) as anon:
        _, again = await anon.request(
            "POST", "/api/v1/auth/login", 200, {"email": email, "password": new_password}
        )
        secrets += [again["access_token"], again["refresh_token"]]
    async with Api(runtime.port, token=again["access_token"]) as user:
        await user.post("/api/v1/auth/logout", {"everywhere": True}, 200)
    await asyncio.sleep(1.0)  # let the actors' log lines reach their files
    found = _files_containing(_ray_log_dir(), secrets)
    out, err = capfd.readouterr()
    captured = [s[:6] + "…" for s in secrets if s in out or s in err]
    assert found == {} and captured == []


async def _me(port: int, token: str) -> Any:
    async with Api(port, token=token) as api:
        return await api.get("/api/v1/auth/me")


async def _me_by_key(port: int, key: str) -> Any:
    async with Api(port, login=False) as api:
        _, me = await api.request("GET", "/api/v1/auth/me", 200, None, {"X-API-Key": key})
        return me
