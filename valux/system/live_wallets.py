"""The API's side of live wallets (``/api/v1/wallets``): made, looked up and driven here,
kept and used by the wallet host of their slot.

Where the key is, at each step:

- **create / import**: the secret is made (or parsed) in the API process, encrypted
  under the owner's passphrase (scrypt + AES-GCM, :mod:`valux.custody.keys`) off the
  event loop, and wiped; only the encrypted record (ciphertext, salt, KDF parameters)
  travels to the wallet host, which journals it in the wallet's stream.
- **unlock**: the passphrase travels to the wallet host, which decrypts the record there
  (:class:`~valux.custody.vault.KeyVault`); the key never comes back.
- **export**: the record comes back, is decrypted here with the passphrase the owner
  gives, the key text is answered once and wiped; the export is journaled in the wallet
  and written to the audit log.

A wallet is placed on the slot an agent would take next (its agent is then created on
the same slot, in the same process). Every call is scoped to the wallet's owner: another
user's wallet answers 404, as an absent one does.
"""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import asyncpg
from ray.exceptions import RayError, RayTaskError

from valux.api.users import SYSTEM_OWNER
from valux.custody.keys import (
    ScryptParams,
    SecretKey,
    address_of,
    decrypt,
    encrypt,
    encrypted_key_from_dict,
    export_text,
    import_secret,
    new_secret,
)
from valux.custody.live import LIVE_VENUES
from valux.errors import Conflict, FieldError, InvalidRequest, NotFound
from valux.hosting.handles import agent_host_handle
from valux.hosting.peers import PEER_ERRORS

if TYPE_CHECKING:
    from valux.system.backend import RayBackend

CHAIN_VENUES = {"solana": "jupiter", "arbitrum": "uniswap"}
"""The venue a wallet on each chain trades through."""

_WALLET_ROW = (
    "SELECT w.id, w.agent_id, w.host_slot, w.chain, w.address, w.venue,"
    " coalesce(w.owner_id, o.owner_id) AS owner_id, w.deleted_at"
    " FROM wallets w LEFT JOIN agent_owners o ON o.agent_id = w.agent_id AND w.agent_id <> ''"
    " WHERE w.id = $1"
)


class LiveWallets:
    """``/api/v1/wallets`` over the running actor system (module docstring)."""

    def __init__(self, backend: RayBackend) -> None:
        self.backend = backend

    @property
    def pool(self) -> asyncpg.Pool:
        return self.backend.pool

    async def _row(self, wallet_id: str, owner: str | None) -> asyncpg.Record:
        row = await self.pool.fetchrow(_WALLET_ROW, wallet_id)
        if row is None or row["deleted_at"] is not None:
            raise NotFound(f"wallet {wallet_id} not found")
        if owner is not None and row["owner_id"] != owner:
            raise NotFound(f"wallet {wallet_id} not found")  # another user's: as if absent
        return row

    async def _call(self, row: asyncpg.Record, method: str, *args: Any) -> Any:
        host = await agent_host_handle(row["host_slot"], self.backend.ns)
        return await host.wallet_call.remote(method, *args)

    # -- commands -----

    async def create(
        self,
        *,
        chain: str,
        passphrase: str,
        secret: str | None,
        agent_id: str | None,
        owner: str | None,
    ) -> dict[str, Any]:
        venue = CHAIN_VENUES.get(chain)
        if venue is None:
            raise InvalidRequest(
                f"unsupported chain {chain!r}",
                [FieldError("chain", f"one of {', '.join(sorted(CHAIN_VENUES))}")],
            )
        who = owner or SYSTEM_OWNER
        if agent_id is not None:
            await self._check_agent_free(agent_id, who)
        key = import_secret(chain, secret) if secret is not None else new_secret(chain)
        try:
            address = address_of(key)
            taken = await self.pool.fetchval(
                "SELECT id FROM wallets WHERE chain = $1 AND address = $2 AND deleted_at IS NULL",
                chain,
                address,
            )
            if taken is not None:
                raise Conflict(f"a wallet for {address} exists already ({taken})")
            record = await asyncio.to_thread(encrypt, key, passphrase, scrypt=self._scrypt())
        finally:
            key.wipe()
        settings = self.backend.settings
        number: int = await self.pool.fetchval("SELECT nextval('agent_seq')")
        slot = number // settings.hosting.agents_per_host
        root = await self.backend._root()
        await root.ensure.remote("agents", slot)
        host = await agent_host_handle(slot, self.backend.ns)
        wallet_id = f"w-{uuid.uuid4().hex[:20]}"
        live = {
            "chain": chain,
            "venue": venue,
            "address": address,
            "key": record.to_dict(),
            "owner": who,
        }
        quote = settings.evm.quote_asset if venue == "uniswap" else "SOL"
        view = await host.wallet_call.remote(
            "create_wallet", wallet_id, agent_id or "", Decimal(0), quote, live
        )
        return _public(view)

    def _scrypt(self) -> ScryptParams:
        return ScryptParams(n=self.backend.settings.custody.scrypt_n)

    async def _check_agent_free(self, agent_id: str, owner: str) -> None:
        """A wallet made for ``agent_id``: the id must be the owner's (or free) and the
        agent not yet created (an agent keeps the wallet it was created with)."""
        holder = await self.pool.fetchval(
            "SELECT owner_id FROM agent_owners WHERE agent_id = $1", agent_id
        )
        if holder is not None and holder != owner:
            raise Conflict(f"agent id {agent_id} is taken; choose another")
        status = await self.pool.fetchval("SELECT status FROM agents WHERE id = $1", agent_id)
        if status is not None and status != "deleted":
            raise Conflict(
                f"agent {agent_id} exists with its wallet; create a new agent with this"
                " wallet's wallet_id instead"
            )

    async def list(self, owner: str | None) -> list[dict[str, Any]]:
        """Every live wallet of ``owner``, its host's view of each. The hosts are asked at
        once; a wallet whose host is restarting is listed from PostgreSQL with
        ``unavailable`` saying so, instead of failing the whole list."""
        rows = await self.pool.fetch(
            "SELECT w.id, w.host_slot, w.agent_id, w.venue, w.chain, w.address FROM wallets w"
            " LEFT JOIN agent_owners o ON o.agent_id = w.agent_id AND w.agent_id <> ''"
            " WHERE w.deleted_at IS NULL AND w.chain <> 'paper'"
            " AND ($1::text IS NULL OR coalesce(w.owner_id, o.owner_id) = $1)"
            " ORDER BY w.created_at, w.id",
            owner,
        )
        by_slot: dict[int, list[asyncpg.Record]] = {}
        for row in rows:
            by_slot.setdefault(row["host_slot"], []).append(row)
        wait_s = self.backend.settings.api.actor_retry_s
        described = await asyncio.gather(
            *(_describe(self.backend.ns, slot, held, wait_s) for slot, held in by_slot.items())
        )
        views = {v["id"]: v for slot_views in described for v in slot_views}
        return [views[row["id"]] for row in rows if row["id"] in views]

    async def get(self, wallet_id: str, owner: str | None) -> dict[str, Any]:
        row = await self._row(wallet_id, owner)
        views = await self._call(row, "describe", [wallet_id])
        if not views or views[0] is None:
            raise NotFound(f"wallet {wallet_id} not found")
        view = _public(views[0])
        if row["venue"] in LIVE_VENUES:
            (chain,) = await self._call(row, "chain_balances", [wallet_id])
            view["on_chain"] = chain
        return view

    async def unlock(
        self, wallet_id: str, passphrase: str, ttl_s: float | None, owner: str | None
    ) -> dict[str, Any]:
        row = await self._row(wallet_id, owner)
        status: dict[str, Any] = await self._call(row, "unlock", wallet_id, passphrase, ttl_s)
        return {"id": wallet_id, "key": status}

    async def lock(self, wallet_id: str, force: bool, owner: str | None) -> dict[str, Any]:
        row = await self._row(wallet_id, owner)
        status: dict[str, Any] = await self._call(row, "lock", wallet_id, force)
        return {"id": wallet_id, "key": status}

    async def set_policy(
        self, wallet_id: str, policy: dict[str, Any] | None, owner: str | None
    ) -> dict[str, Any]:
        row = await self._row(wallet_id, owner)
        return _public(await self._call(row, "set_policy", wallet_id, policy))

    async def export(self, wallet_id: str, passphrase: str, actor: str | None) -> dict[str, Any]:
        """The key, once, as text (base58 for Solana); journaled in the wallet first."""
        row = await self._row(wallet_id, actor)
        record = encrypted_key_from_dict(await self._call(row, "key_record", wallet_id))
        secret: SecretKey = await asyncio.to_thread(
            decrypt, record, passphrase, expected_address=row["address"]
        )
        try:
            await self._call(row, "record_export", wallet_id, actor or SYSTEM_OWNER)
            text = export_text(secret)
        finally:
            secret.wipe()
        return {"id": wallet_id, "chain": row["chain"], "address": row["address"], "secret": text}

    async def delete(self, wallet_id: str, owner: str | None) -> dict[str, Any]:
        row = await self._row(wallet_id, owner)
        return _public(await self._call(row, "delete_wallet", wallet_id))

    async def for_agent(
        self, wallet_id: str, agent_id: str, owner: str | None, venue: str
    ) -> asyncpg.Record:
        """The live wallet an agent is being created on (its slot is the agent's), linked
        to it; ``Conflict`` if it belongs to another agent."""
        row = await self._row(wallet_id, owner)
        if row["venue"] != venue:
            raise InvalidRequest(
                f"wallet {wallet_id} trades on {row['venue']}, not {venue}",
                [FieldError("wallet_id", f"a {venue} wallet (POST /api/v1/wallets)")],
            )
        await self._call(row, "link_agent", wallet_id, agent_id)
        return row


async def _describe(
    namespace: str, slot: int, rows: list[asyncpg.Record], wait_s: float
) -> list[dict[str, Any]]:
    """The views of ``rows``' wallets from the host of ``slot``, or each marked
    unavailable: its host is away or has not answered within ``wait_s``."""

    async def ask() -> list[dict[str, Any] | None]:
        host = await agent_host_handle(slot, namespace)
        views: list[dict[str, Any] | None] = await host.wallet_call.remote(
            "describe", [row["id"] for row in rows]
        )
        return views

    try:
        views = await asyncio.wait_for(ask(), max(wait_s, _MIN_WAIT_S))
    except PEER_ERRORS as exc:  # (Ray's own GetTimeoutError among them)
        reason = f"its host is restarting ({type(exc).__name__}); try again shortly"
        return [_unavailable(row, reason) for row in rows]
    except ValueError as exc:  # (a bug in the host would come as RayTaskError: re-raised)
        if isinstance(exc, RayTaskError):
            raise
        return [_unavailable(row, "its host is not running; try again shortly") for row in rows]
    except TimeoutError as exc:
        if isinstance(exc, RayError):  # a timeout inside the host: its bug, not our wait
            raise
        reason = f"its host did not answer within {max(wait_s, _MIN_WAIT_S):g}s; try again shortly"
        return [_unavailable(row, reason) for row in rows]
    return [
        _public(view) if view is not None else _unavailable(row, "its host has not loaded it")
        for row, view in zip(rows, views, strict=True)
    ]


_MIN_WAIT_S = 0.5
"""The least time a host is given to describe its wallets (``api.actor_retry_s`` may be 0)."""


def _unavailable(row: asyncpg.Record, reason: str) -> dict[str, Any]:
    """A wallet as PostgreSQL knows it, for a list whose answer from its host is missing."""
    return {
        "id": row["id"],
        "wallet_id": row["id"],
        "agent_id": row["agent_id"] or None,
        "venue": row["venue"],
        "chain": row["chain"],
        "address": row["address"],
        "unavailable": reason,
    }


def _public(view: dict[str, Any]) -> dict[str, Any]:
    """A wallet's JSON as the API answers it: never key material, ``locked`` spelled out."""
    out = {k: v for k, v in view.items() if k not in ("key_record",)}
    key = out.get("key")
    if isinstance(key, dict):
        out["locked"] = key.get("state") == "locked"
    return out
