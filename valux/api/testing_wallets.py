"""The live-wallet part of :class:`~valux.api.testing.FakeBackend`: in memory, with the
real custody code (key records, the vault, its backoff), so the API's routes, status
codes and scoping can be tested without Ray or a chain."""

from __future__ import annotations

import itertools
from typing import Any

from valux.custody.keys import (
    ScryptParams,
    address_of,
    decrypt,
    encrypt,
    export_text,
    import_secret,
    new_secret,
)
from valux.custody.policy import SpendPolicy
from valux.custody.vault import KeyVault
from valux.errors import Conflict, InvalidRequest, NotFound

_FAST = ScryptParams(n=2**10)


class FakeLiveWallets:
    """Live wallets kept in memory (keys encrypted, unlocked in a real :class:`KeyVault`)."""

    agents: dict[str, dict[str, Any]]
    owners: dict[str, str]

    def __init__(self) -> None:
        self.live: dict[str, dict[str, Any]] = {}
        self.vault = KeyVault()
        self._wallet_ids = itertools.count(1)

    def _enter(self, method: str, **kwargs: Any) -> None:  # overridden by FakeBackend
        raise NotImplementedError

    def _live_wallet(self, wallet_id: str, owner: str | None) -> dict[str, Any]:
        wallet = self.live.get(wallet_id)
        if wallet is None or wallet["owner"] != owner:
            raise NotFound(f"wallet {wallet_id} not found")
        return wallet

    def _live_view(self, wallet: dict[str, Any]) -> dict[str, Any]:
        status = self.vault.status(wallet["id"]).to_dict()
        public = {k: v for k, v in wallet.items() if k not in ("record", "owner")}
        return {**public, "key": status, "locked": status["state"] == "locked"}

    async def create_live_wallet(
        self,
        *,
        chain: str,
        passphrase: str,
        secret: str | None,
        agent_id: str | None,
        owner: str | None = None,
    ) -> dict[str, Any]:
        self._enter("create_live_wallet", chain=chain, agent_id=agent_id, owner=owner)
        if agent_id is not None and (agent_id in self.agents or agent_id in self.owners):
            raise Conflict(f"agent {agent_id} exists with its wallet (or is taken)")
        key = import_secret(chain, secret) if secret is not None else new_secret(chain)
        try:
            record = encrypt(key, passphrase, scrypt=_FAST)
            address = address_of(key)
        finally:
            key.wipe()
        if any(w["address"] == address for w in self.live.values()):
            raise Conflict(f"a wallet for {address} exists already")
        wallet_id = f"w-live-{next(self._wallet_ids)}"
        self.live[wallet_id] = {
            "id": wallet_id,
            "chain": chain,
            "venue": "jupiter",
            "address": address,
            "agent_id": agent_id,
            "policy": None,
            "balances": {"SOL": "0"},
            "record": record,
            "owner": owner,
        }
        return self._live_view(self.live[wallet_id])

    async def list_live_wallets(self, *, owner: str | None = None) -> list[dict[str, Any]]:
        self._enter("list_live_wallets", owner=owner)
        return [self._live_view(w) for w in self.live.values() if w["owner"] == owner]

    async def get_live_wallet(self, wallet_id: str, *, owner: str | None = None) -> dict[str, Any]:
        self._enter("get_live_wallet", wallet_id=wallet_id, owner=owner)
        return {**self._live_view(self._live_wallet(wallet_id, owner)), "on_chain": {"SOL": "0"}}

    async def unlock_wallet(
        self, wallet_id: str, *, passphrase: str, ttl_s: float | None, owner: str | None = None
    ) -> dict[str, Any]:
        self._enter("unlock_wallet", wallet_id=wallet_id, owner=owner)
        wallet = self._live_wallet(wallet_id, owner)
        status = self.vault.unlock(wallet_id, wallet["record"], passphrase, ttl_s or 3600.0)
        return {"id": wallet_id, "key": status.to_dict()}

    async def lock_wallet(
        self, wallet_id: str, *, force: bool, owner: str | None = None
    ) -> dict[str, Any]:
        self._enter("lock_wallet", wallet_id=wallet_id, force=force, owner=owner)
        self._live_wallet(wallet_id, owner)
        return {"id": wallet_id, "key": self.vault.lock(wallet_id, force=force).to_dict()}

    async def set_wallet_policy(
        self, wallet_id: str, *, policy: dict[str, Any] | None, owner: str | None = None
    ) -> dict[str, Any]:
        self._enter("set_wallet_policy", wallet_id=wallet_id, policy=policy, owner=owner)
        wallet = self._live_wallet(wallet_id, owner)
        if policy is not None:
            try:
                SpendPolicy.model_validate({"quote_asset": "SOL", **policy})
            except ValueError as exc:
                raise InvalidRequest(f"invalid spend policy: {exc}") from None
        wallet["policy"] = policy
        return self._live_view(wallet)

    async def export_wallet(
        self, wallet_id: str, *, passphrase: str, owner: str | None = None
    ) -> dict[str, Any]:
        self._enter("export_wallet", wallet_id=wallet_id, owner=owner)
        wallet = self._live_wallet(wallet_id, owner)
        secret = decrypt(wallet["record"], passphrase)
        try:
            text = export_text(secret)
        finally:
            secret.wipe()
        return {"id": wallet_id, "chain": wallet["chain"], "address": wallet["address"],
                "secret": text}  # fmt: skip

    async def delete_wallet(self, wallet_id: str, *, owner: str | None = None) -> dict[str, Any]:
        self._enter("delete_wallet", wallet_id=wallet_id, owner=owner)
        wallet = self._live_wallet(wallet_id, owner)
        self.vault.lock(wallet_id, force=True)
        del self.live[wallet_id]
        return self._live_view(wallet)
