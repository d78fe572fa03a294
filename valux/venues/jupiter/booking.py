"""What a landed swap really moved for one wallet, from ``getTransaction``'s metadata.

Contract (:func:`swap_flows`, pure): from a ``getTransaction`` answer (``json`` or
``jsonParsed`` encoding; v0 loaded addresses included) and the wallet's address:

- ``fee`` — ``meta.fee``: the signature fees plus the priority fee, paid by the fee payer.
- ``wallet_lamports_delta`` — the wallet account's own lamports, post − pre.
- ``token_deltas`` — per mint, the change of the base units held in the token accounts
  *owned by the wallet* (``pre``/``postTokenBalances`` entries whose ``owner`` is the
  wallet; an account created in the transaction counts from 0, a closed one to 0).
  Wrapped SOL is the mint :data:`~valux.venues.jupiter.chain.WSOL_MINT`.
- ``owned_accounts_lamports_delta`` — the lamports of those token accounts, post − pre
  (rent deposited into a new account, rent returned by a closed one, wrapped SOL).

From these, exactly (all in lamports):

- ``liquid_delta`` = wallet lamports + wrapped-SOL units: the SOL the wallet can spend,
  what ``getBalance`` plus its wSOL holding show. A buy's debit is ``−liquid_delta``, a
  sell's credit ``+liquid_delta``.
- ``rent_delta`` = owned accounts' lamports − wrapped-SOL units: rent newly locked in the
  wallet's token accounts (negative when an account was closed and its rent returned).
  An account created and closed inside the transaction (the temporary wSOL account of
  ``wrapAndUnwrapSol``) appears in neither list and costs nothing.
- ``swap_lamports`` = ``|estate_delta + fee|`` with ``estate_delta`` = wallet lamports +
  owned accounts' lamports: the SOL that went into the swap (buy) or came out of it
  (sell), fees and rent excluded.

So a buy's ``−liquid_delta = swap_lamports + fee + rent_delta`` and a sell's
``liquid_delta = swap_lamports − fee − rent_delta``, to the lamport.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from valux.venues.jupiter.chain import WSOL_MINT

__all__ = ["SwapFlows", "swap_flows"]


@dataclass(frozen=True, slots=True)
class SwapFlows:
    """What one transaction moved for one wallet (module contract)."""

    fee: int
    err: Any
    wallet_lamports_delta: int
    owned_accounts_lamports_delta: int
    token_deltas: Mapping[str, int] = field(default_factory=dict)
    decimals: Mapping[str, int] = field(default_factory=dict)
    programs: tuple[str, ...] = ()
    """The program id of each top-level instruction (to name a failing one)."""
    slot: int = 0
    block_time: int | None = None

    @property
    def wsol_delta(self) -> int:
        return self.token_deltas.get(WSOL_MINT, 0)

    @property
    def liquid_delta(self) -> int:
        return self.wallet_lamports_delta + self.wsol_delta

    @property
    def rent_delta(self) -> int:
        return self.owned_accounts_lamports_delta - self.wsol_delta

    @property
    def estate_delta(self) -> int:
        return self.wallet_lamports_delta + self.owned_accounts_lamports_delta

    @property
    def swap_lamports(self) -> int:
        return abs(self.estate_delta + self.fee)

    def token_delta(self, mint: str) -> int:
        return self.token_deltas.get(mint, 0)


def _keys(tx: Mapping[str, Any]) -> list[str]:
    transaction = tx.get("transaction")
    message = transaction.get("message") if isinstance(transaction, Mapping) else None
    if not isinstance(message, Mapping):
        raise ValueError("getTransaction answer without transaction.message (use json)")
    keys: list[str] = []
    for key in message.get("accountKeys") or []:
        keys.append(str(key["pubkey"]) if isinstance(key, Mapping) else str(key))
    meta = tx.get("meta")
    loaded = meta.get("loadedAddresses") if isinstance(meta, Mapping) else None
    if isinstance(loaded, Mapping):
        keys += [str(k) for k in loaded.get("writable") or []]
        keys += [str(k) for k in loaded.get("readonly") or []]
    return keys


def _programs(tx: Mapping[str, Any], keys: list[str]) -> tuple[str, ...]:
    message = tx["transaction"]["message"]
    out: list[str] = []
    for ix in message.get("instructions") or []:
        if not isinstance(ix, Mapping):
            continue
        if "programIdIndex" in ix and isinstance(ix["programIdIndex"], int):
            index = ix["programIdIndex"]
            out.append(keys[index] if 0 <= index < len(keys) else "?")
        else:
            out.append(str(ix.get("programId", "?")))
    return tuple(out)


def swap_flows(tx: Mapping[str, Any], wallet: str) -> SwapFlows:
    """The flows of ``tx`` for ``wallet`` (module contract). Raises ValueError when the
    answer lacks what is needed (not a ``json``/``jsonParsed`` answer, no metadata, the
    wallet not among its accounts)."""
    meta = tx.get("meta")
    if not isinstance(meta, Mapping):
        raise ValueError("getTransaction answer without meta")
    keys = _keys(tx)
    if wallet not in keys:
        raise ValueError(f"the wallet {wallet} is not an account of this transaction")
    pre = [int(v) for v in meta.get("preBalances") or []]
    post = [int(v) for v in meta.get("postBalances") or []]
    index = keys.index(wallet)
    if len(pre) != len(post) or index >= len(pre):
        raise ValueError("pre/postBalances do not match the account keys")
    owned: set[int] = set()
    deltas: dict[str, int] = {}
    decimals: dict[str, int] = {}
    sides = ((meta.get("preTokenBalances") or [], -1), (meta.get("postTokenBalances") or [], 1))
    for entries, sign in sides:
        for entry in entries:
            if not isinstance(entry, Mapping) or entry.get("owner") != wallet:
                continue
            account = int(entry["accountIndex"])
            mint = str(entry["mint"])
            amount = entry.get("uiTokenAmount") or {}
            owned.add(account)
            deltas[mint] = deltas.get(mint, 0) + sign * int(amount.get("amount", 0))
            if "decimals" in amount:
                decimals[mint] = int(amount["decimals"])
    owned_lamports = sum(post[i] - pre[i] for i in owned if i < len(pre))
    return SwapFlows(
        fee=int(meta.get("fee", 0)),
        err=meta.get("err"),
        wallet_lamports_delta=post[index] - pre[index],
        owned_accounts_lamports_delta=owned_lamports,
        token_deltas=deltas,
        decimals=decimals,
        programs=_programs(tx, keys),
        slot=int(tx.get("slot", 0)),
        block_time=tx.get("blockTime") if isinstance(tx.get("blockTime"), int) else None,
    )
