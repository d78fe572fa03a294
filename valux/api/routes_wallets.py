"""Live wallets: ``/api/v1/wallets...`` (create or import, unlock, lock, policy, export,
delete). The key never appears in an answer but the one ``export`` gives, once."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from valux.api.auth_service import AUTH
from valux.api.http import ip, json_response, owner, path_id, read_body
from valux.api.keys import BACKEND
from valux.api.models import SpendPolicyIn, WalletCreate, WalletExport, WalletLock, WalletUnlock
from valux.api.routes import ARRAY_OF_OBJECTS, OBJECT, Reply, Route
from valux.auth.audit import AuditEvent

WALLET = Reply(
    "The wallet: address, key state (`locked`, `key.state`: locked / unlocked / exits_only),"
    " journaled balances, policy; `on_chain` balances on its own page. Never key material.",
    schema=OBJECT,
)
KEY = Reply("The wallet's key state.", schema=OBJECT)


async def _audit(request: web.Request, event: AuditEvent, detail: dict[str, Any]) -> None:
    who = owner(request)
    await request.app[AUTH].audit(event, user_id=who, actor_id=who, ip=ip(request), detail=detail)


async def create_wallet(request: web.Request) -> web.Response:
    body = await read_body(request, WalletCreate)
    wallet = await request.app[BACKEND].create_live_wallet(
        chain=body.chain,
        passphrase=body.passphrase,
        secret=body.secret,
        agent_id=body.agent_id,
        owner=owner(request),
    )
    headers = {"Location": f"/api/v1/wallets/{wallet['id']}"}
    return json_response(wallet, status=201, headers=headers)


async def list_wallets(request: web.Request) -> web.Response:
    return json_response(await request.app[BACKEND].list_live_wallets(owner=owner(request)))


async def get_wallet(request: web.Request) -> web.Response:
    wallet_id = path_id(request)
    return json_response(
        await request.app[BACKEND].get_live_wallet(wallet_id, owner=owner(request))
    )


async def unlock_wallet(request: web.Request) -> web.Response:
    wallet_id = path_id(request)
    body = await read_body(request, WalletUnlock)
    try:
        status = await request.app[BACKEND].unlock_wallet(
            wallet_id, passphrase=body.passphrase, ttl_s=body.ttl_s, owner=owner(request)
        )
    except Exception as exc:
        await _audit(
            request,
            AuditEvent.WALLET_UNLOCK,
            {"wallet_id": wallet_id, "ok": False, "error": getattr(exc, "code", "error")},
        )
        raise
    await _audit(request, AuditEvent.WALLET_UNLOCK, {"wallet_id": wallet_id, "ok": True})
    return json_response(status)


async def lock_wallet(request: web.Request) -> web.Response:
    wallet_id = path_id(request)
    body = await read_body(request, WalletLock) if request.can_read_body else WalletLock()
    status = await request.app[BACKEND].lock_wallet(
        wallet_id, force=body.force, owner=owner(request)
    )
    await _audit(request, AuditEvent.WALLET_LOCK, {"wallet_id": wallet_id, "force": body.force})
    return json_response(status)


async def set_policy(request: web.Request) -> web.Response:
    wallet_id = path_id(request)
    body = await read_body(request, SpendPolicyIn)
    policy = body.model_dump(mode="json")
    wallet = await request.app[BACKEND].set_wallet_policy(
        wallet_id, policy=policy, owner=owner(request)
    )
    await _audit(
        request, AuditEvent.SPEND_POLICY_CHANGED, {"wallet_id": wallet_id, "policy": policy}
    )
    return json_response(wallet)


async def export_wallet(request: web.Request) -> web.Response:
    wallet_id = path_id(request)
    body = await read_body(request, WalletExport)
    exported = await request.app[BACKEND].export_wallet(
        wallet_id, passphrase=body.passphrase, owner=owner(request)
    )
    await _audit(request, AuditEvent.KEY_EXPORT, {"wallet_id": wallet_id})
    return json_response(exported, headers={"Cache-Control": "no-store"})


async def delete_wallet(request: web.Request) -> web.Response:
    wallet_id = path_id(request)
    return json_response(await request.app[BACKEND].delete_wallet(wallet_id, owner=owner(request)))


_W = "/api/v1/wallets"
ROUTES = [
    Route("POST", _W, create_wallet, "createWallet", "Create or import a live wallet",
          "wallets", {201: WALLET}, body=WalletCreate, errors=(409,),
          description="The key is made (or parsed) and encrypted under the passphrase in the "
                      "API process; only its ciphertext, salt and KDF parameters are stored. "
                      "The wallet starts locked."),
    Route("GET", _W, list_wallets, "listWallets", "List your live wallets", "wallets",
          {200: Reply("Every live wallet of the caller.", schema=ARRAY_OF_OBJECTS)}),
    Route("GET", _W + "/{id}", get_wallet, "getLiveWallet",
          "A live wallet with its on-chain and journaled balances", "wallets", {200: WALLET}),
    Route("POST", _W + "/{id}/unlock", unlock_wallet, "unlockWallet",
          "Unlock the key in its wallet host for ttl_s seconds", "wallets", {200: KEY},
          body=WalletUnlock, errors=(403, 409, 429),
          description="A wrong passphrase is 403 WRONG_PASSPHRASE; after 3 in a row each "
                      "attempt waits longer (429 UNLOCK_BACKOFF with Retry-After)."),
    Route("POST", _W + "/{id}/lock", lock_wallet, "lockWallet",
          "Lock the key (exits of open positions still sign unless force)", "wallets",
          {200: KEY}, body=WalletLock, errors=(409,)),
    Route("PUT", _W + "/{id}/policy", set_policy, "setSpendPolicy",
          "Replace the wallet's spend policy", "wallets", {200: WALLET}, body=SpendPolicyIn),
    Route("POST", _W + "/{id}/export", export_wallet, "exportWallet",
          "Export the key once (passphrase and confirm: true); audited", "wallets",
          {200: Reply("`{id, chain, address, secret}`: the key as text.", schema=OBJECT)},
          body=WalletExport, errors=(403,)),
    Route("DELETE", _W + "/{id}", delete_wallet, "deleteWallet",
          "Delete a wallet (refused while it holds tokens or has orders in flight)",
          "wallets", {200: WALLET}, errors=(409,)),
]  # fmt: skip
