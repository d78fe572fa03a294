"""WalletHost: hosts the Wallet logical actors of one slot and their venue client.

It runs inside the agent host of the same slot (:meth:`AgentHost.before_recovery`), on
that host's journal: an agent's buy reaches its wallet with no Ray hop, and both are
recovered by one process. The wallet stays the single writer of its books, intents and
(on a chain) key and nonce; only this object touches them.

Contract (in addition to :class:`~valux.hosting.host.Host`):
- ``execute`` takes a batch of order intents (from many agents, one call per
  agent host per loop turn) and runs each in its wallet's mailbox: known intent
  → recorded answer; otherwise journal ``intent_submitted``, send to the venue,
  journal the outcome, answer.
- After a restart, every intent left pending is resolved by querying the venue
  before the host serves: filled → applied once; not found → sent again under
  the same id; unknown → kept pending and re-queried in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import time
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from valux.actors.exchange import make_paper_venue
from valux.config.settings import Settings
from valux.custody.keys import KeyCustodyError, encrypted_key_from_dict
from valux.custody.live import LIVE_VENUES, LiveVenues, policy_refusal
from valux.custody.policy import SpendPolicy, SpendRefused
from valux.custody.vault import KeyVault, Locked
from valux.custody.wallet import Wallet
from valux.errors import Conflict, InvalidRequest, NotFound
from valux.hosting.host import Host, StaleEntity
from valux.hosting.peers import Peers
from valux.observability.metrics import ORDERS
from valux.persistence.journal import DATABASE_DOWN
from valux.persistence.store import Query, Store
from valux.schema.messages import OrderRequest, OrderResult
from valux.venues.base import (
    OrderIntent,
    OrderRejected,
    OrderState,
    OrderStatus,
    Quote,
    Side,
    Venue,
)
from valux.venues.paper.client import ExchangeClient
from valux.venues.paper.prices import PriceLookup

_RESOLVE_INTERVAL_S = 1.0
_RESUBMIT_AFTER_S = 30.0  # a pending intent the venue has never seen is sent again after this
WALLET_INTENTS = Query(
    "wallet_intents",
    "SELECT intent_id, state, base_amount, quote_amount, price, fee, network_fee, reason, ts"
    " FROM wallet_intents WHERE intent_id = ANY($1::text[])",
    keys=lambda ids: (("wallet_intents", i) for i in ids),
)
WALLET_BALANCES = Query(
    "wallet_balances",
    "SELECT wallet_id, asset, amount FROM balances WHERE wallet_id = ANY($1::text[])",
)
WALLET_IDS = Query("wallet_ids", "SELECT id FROM wallets WHERE host_slot = $1")
QUOTE_DECIMALS = 9  # SOL's lamports; amounts in the quote asset are whole base units


class WalletHost(Host[Wallet]):
    """Many wallets in one process; see the module docstring for the contract."""

    kind = "wallet"
    entity_type = Wallet

    # Ray runs an async constructor to completion before the actor takes its first call,
    # which is exactly the recovery contract; mypy only knows synchronous constructors.
    async def __init__(  # type: ignore[misc]
        self,
        slot: int,
        settings: Settings,
        database_url: str | None,
        redis_url: str | None,
        *,
        store: Store | None = None,
        peers: Peers | None = None,
        inner: bool = False,
    ) -> None:
        self._resolver: asyncio.Task[None] | None = None
        self._stopping = False
        self._chain_checked: dict[str, float] = {}  # wallet id -> monotonic time
        await super().__init__(
            slot, settings, database_url, redis_url, store=store, peers=peers, inner=inner
        )

    def connect_peers(self) -> None:
        self.venue = ExchangeClient(self.peers, "paper")
        # Live wallets: keys decrypted only here, each wallet's chain venue (custody.live).
        self.vault = KeyVault()
        self.live = LiveVenues(self.settings, self.vault, self._journal_attempt, self._get)
        # Quotes (PS-9 price impact) are computed here with the exchange's own pricing and
        # the evaluators' prices, as a DEX aggregator quotes off-venue: advisory, one Ray
        # hop fewer per buy; the fill itself is always the exchange's.
        self.quoter = make_paper_venue(
            self.settings,
            PriceLookup(self.settings.hosting.evaluators, self.peers),
            ledger=None,
        )

    async def entity_ids(self) -> list[str]:
        rows = await self.store.fetch(WALLET_IDS, self.slot)
        return [r["id"] for r in rows]

    async def after_recovery(self) -> None:
        for wallet in self.entities.values():  # keys start locked: no unlock survives a restart
            self.vault.set_open_positions(wallet.id, wallet.holds_tokens())
        for wallet_id, intent_id in [(w.id, i) for w in self.entities.values() for i in w.pending]:
            try:
                async with self.mailbox(wallet_id):
                    wallet = self.entities[wallet_id]
                    if intent_id in wallet.pending:  # not found → sent again, same id
                        await self._resolve(wallet, intent_id, resubmit=True)
            except Exception as exc:  # the permanent resolver tries again
                self.log.warning("resolve_failed", intent_id=intent_id, error=repr(exc))
        self._ensure_resolver()

    # -- commands -----

    async def create_wallet(
        self,
        wallet_id: str,
        agent_id: str,
        initial: Decimal,
        quote_asset: str,
        live: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Create (idempotently) a wallet: a paper one credited with its starting balance,
        or (``live``: ``{chain, venue, address, key}``) one on a chain, whose key record is
        encrypted at rest (ciphertext, salt and KDF parameters only, made by the caller:
        the key itself never reaches this process but through :meth:`unlock`)."""
        async with self.mailbox(wallet_id):
            wallet = self.entities.get(wallet_id)
            if wallet is None:
                wallet = Wallet(wallet_id)
                created: dict[str, Any] = {
                    "agent_id": agent_id,
                    "venue": self.venue.name,
                    "quote_asset": quote_asset,
                    "host_slot": self.slot,
                    "ts": time.time(),
                }
                if live is not None:
                    created.update(
                        chain=live["chain"],
                        venue=live["venue"],
                        address=live["address"],
                        key=live["key"],
                        owner=live.get("owner"),
                    )
                await self.persist(wallet, [("wallet_created", created)])
                self.entities[wallet_id] = wallet
                if initial > 0 and live is None:
                    await self._deposit(wallet, f"{wallet_id}:initial", quote_asset, initial)
            return self._view(wallet)

    def _view(self, wallet: Wallet) -> dict[str, Any]:
        """The wallet's JSON with its key's lock state (never the key)."""
        view = wallet.view()
        if wallet.venue in LIVE_VENUES:
            view["key"] = self.vault.status(wallet.id).to_dict()
        return view

    async def deposit(self, wallet_id: str, asset: str, amount: Decimal) -> dict[str, Any]:
        async with self.mailbox(wallet_id):
            wallet = self._get(wallet_id)
            if wallet.venue != "paper":
                raise Conflict(
                    "deposits are only possible on paper wallets: fund a live wallet on its "
                    "chain (its audit books what arrives as a deposit)"
                )
            await self._deposit(wallet, f"{wallet_id}:{uuid.uuid4().hex}", asset, amount)
            return self._view(wallet)

    async def _deposit(self, wallet: Wallet, ref: str, asset: str, amount: Decimal) -> None:
        """Funds reach the venue account first (a faucet, a transfer), then the books; a
        crash between the two leaves the venue ahead, which the custody audit reports."""
        await self.venue.deposit(ref, wallet.id, asset, amount)
        await self.persist(wallet, [("deposited", {"asset": asset, "amount": amount, "ref": ref})])

    async def describe(self, wallet_ids: list[str]) -> list[dict[str, Any] | None]:
        return [self._view(w) if (w := self.entities.get(i)) else None for i in wallet_ids]

    async def balances(self, wallet_ids: list[str]) -> list[dict[str, Decimal]]:
        return [dict(self._get(i).balances) for i in wallet_ids]

    async def quote_balances(self, wallet_ids: list[str]) -> list[Decimal]:
        """Each wallet's quote-asset balance (a buy's sizing needs only that, not every
        token the wallet holds)."""
        return [(w := self._get(i)).balance(w.quote_asset) for i in wallet_ids]

    async def buy_impacts(self, buys: list[tuple[str, str, Decimal]]) -> list[float]:
        """The price impact (a fraction) the wallet's venue quotes for buying each
        ``(wallet_id, token, amount of quote)`` now (PS-9); places nothing. A batch per
        call, like ``execute``."""
        quotes = await asyncio.gather(*(self._quote(self._get(w), t, a) for w, t, a in buys))
        return [q.price_impact for q in quotes]

    async def _quote(self, wallet: Wallet, token: str, amount: Decimal) -> Quote:
        quoter = await self.live.venue(wallet) if wallet.venue in LIVE_VENUES else self.quoter
        return await quoter.quote(Side.BUY, token, amount)

    async def _venue(self, wallet: Wallet) -> Venue:
        return await self.live.venue(wallet) if wallet.venue in LIVE_VENUES else self.venue

    async def execute(self, orders: list[OrderRequest]) -> list[OrderResult]:
        """Execute a batch of intents, each in its wallet's mailbox, concurrently.

        While PostgreSQL is unreachable the record of intents older than the wallet's
        memory cannot be read: buys are then refused (entries wait for the database), and
        sales go on — exits must run, and a sale is only ever asked for an open position,
        whose intent cannot be one the wallet finished long ago."""
        try:
            durable = await self._durable_outcomes([(o.wallet_id, o.intent_id) for o in orders])
        except DATABASE_DOWN as exc:
            why = f"entry refused: database unreachable ({type(exc).__name__})"
            return list(
                await asyncio.gather(
                    *(
                        self._execute_one(o, {}) if o.side == "sell" else _refused(o, why)
                        for o in orders
                    )
                )
            )
        return list(await asyncio.gather(*(self._execute_one(o, durable) for o in orders)))

    async def resolve(self, intent_ids: list[tuple[str, str]]) -> list[OrderResult | None]:
        """Answer (wallet_id, intent_id) queries from the record; query the venue if pending."""
        durable = await self._durable_outcomes(intent_ids)
        out: list[OrderResult | None] = []
        for wallet_id, intent_id in intent_ids:
            if wallet_id not in self.entities:
                out.append(None)
                continue
            async with self.mailbox(wallet_id):
                wallet = self.entities[wallet_id]
                if intent_id in wallet.pending:
                    await self._resolve(wallet, intent_id, resubmit=False)
                out.append(wallet.known_result(intent_id) or durable.get(intent_id))
        return out

    async def void(self, items: list[tuple[str, str, str]]) -> list[OrderResult]:
        """(wallet_id, intent_id, reason): fence an intent its agent gives up on as never
        received. An intent the wallet knows is answered as it stands (the order did arrive
        meanwhile); an unknown one is journaled ``intent_voided``, so a late arrival of it
        is refused. Only buys are voided: sales and rule orders keep their id on a retry."""
        durable = await self._durable_outcomes([(w, i) for w, i, _ in items])
        out: list[OrderResult] = []
        for wallet_id, intent_id, reason in items:
            async with self.mailbox(wallet_id):
                wallet = self._get(wallet_id)
                known = wallet.known_result(intent_id) or durable.get(intent_id)
                if known is None:
                    event = {"intent_id": intent_id, "reason": reason, "ts": time.time()}
                    await self.persist(wallet, [("intent_voided", event)])
                    known = wallet.known_result(intent_id)
                    assert known is not None
                out.append(known)
        return out

    async def audit(self, items: list[tuple[str, dict[str, Decimal]]]) -> list[dict[str, Any]]:
        """(wallet_id, tokens its agent's open positions hold): the custody audit of
        :mod:`valux.trading.reconciliation`, each in its wallet's mailbox.

        ``busy`` while the wallet has an intent in flight, or while the journal holds
        commits it has not written yet (an outage: its sums lag the memory by them); else
        ``ok``, or ``mismatch`` with the evidence: a token held other than the positions
        say, or a balance in memory that differs from the journal's sum of deposits and
        fills."""
        if self.store.deferred:
            return [{"status": "busy", "evidence": []} for _ in items]
        seen = {w: e.seq for w, _ in items if (e := self.entities.get(w)) is not None}
        journal = await self._journal_balances([w for w, _ in items])
        out: list[dict[str, Any]] = []
        for wallet_id, held in items:
            async with self.mailbox(wallet_id):
                wallet = self._get(wallet_id)
                if wallet.pending or self.store.deferred:  # (buffered meanwhile)
                    out.append({"status": "busy", "evidence": []})
                    continue
                if wallet.seq != seen.get(wallet_id):  # it moved since the batch read: re-read
                    fresh = await self._journal_balances([wallet_id])
                    journal[wallet_id] = fresh.get(wallet_id, {})
                journaled = journal.setdefault(wallet_id, {})
                venue = await self._account(wallet, journaled)
                evidence = _custody_evidence(wallet, held, journaled, venue)
                out.append({"status": "mismatch" if evidence else "ok", "evidence": evidence})
        return out

    async def _account(self, wallet: Wallet, journaled: dict[str, Decimal]) -> dict[str, Decimal]:
        """What the venue account holds, as the audit compares it with the books.

        Paper: the exchange's account. A live wallet: its on-chain balances, read at most
        every ``custody.chain_audit_every_s`` (in between, the books stand). Quote asset
        found on chain beyond the books is an external deposit: booked as one. Tokens
        beyond the books (an airdrop, dust) are left alone; only a shortfall, which nothing
        the wallet journaled explains, is reported. ``journaled`` (the journal's sums, read
        before) gains what this books."""
        if wallet.venue not in LIVE_VENUES:
            return await self.venue.balances(wallet.id)
        books = {a: v for a, v in wallet.balances.items() if v}
        now = time.monotonic()
        if now - self._chain_checked.get(wallet.id, -math.inf) < (
            self.settings.custody.chain_audit_every_s
        ):
            return books
        chain = await self.live.holdings(wallet)
        self._chain_checked[wallet.id] = now
        quote = wallet.quote_asset
        surplus = chain.get(quote, Decimal(0)) - wallet.balance(quote)
        if surplus > 0:
            self.log.info("chain_deposit_booked", wallet_id=wallet.id, amount=str(surplus))
            deposit = {"asset": quote, "amount": surplus, "ref": f"{wallet.id}:chain:{now}"}
            await self.persist(wallet, [("deposited", deposit)])
            journaled[quote] = journaled.get(quote, Decimal(0)) + surplus
            books[quote] = wallet.balance(quote)
        return {a: min(v, chain.get(a, Decimal(0))) for a, v in books.items()}

    async def _journal_balances(self, wallet_ids: list[str]) -> dict[str, dict[str, Decimal]]:
        balances: dict[str, dict[str, Decimal]] = {}
        for row in await self.store.fetch(WALLET_BALANCES, wallet_ids):
            balances.setdefault(row["wallet_id"], {})[row["asset"]] = Decimal(row["amount"])
        return balances

    # -- custody (live wallets) -----

    async def unlock(
        self, wallet_id: str, passphrase: str, ttl_s: float | None = None
    ) -> dict[str, Any]:
        """Decrypt the wallet's key into this process for ``ttl_s`` seconds (default
        ``custody.unlock_ttl_s``). Wrong passphrases are counted, with backoff; the
        passphrase and the key go nowhere else."""
        custody = self.settings.custody
        ttl = custody.unlock_ttl_s if ttl_s is None else ttl_s
        if not 0 < ttl <= custody.max_unlock_ttl_s:
            raise InvalidRequest(f"ttl_s must be in (0, {custody.max_unlock_ttl_s:g}] seconds")
        async with self.mailbox(wallet_id):
            wallet = self._live(wallet_id)
            record = encrypted_key_from_dict(wallet.key or {})
            # scrypt takes ~0.4 s: off the event loop, the host's other wallets keep trading
            status = await asyncio.to_thread(
                self.vault.unlock, wallet_id, record, passphrase, ttl,
                expected_address=wallet.address,
            )  # fmt: skip
            self.vault.set_open_positions(wallet_id, wallet.holds_tokens())
            self.log.info("wallet_unlocked", wallet_id=wallet_id, ttl_s=ttl)
            return status.to_dict()

    async def lock(self, wallet_id: str, force: bool = False) -> dict[str, Any]:
        """Stop entries now; wipe the key unless open positions still need it for their
        exits (``force`` wipes it whatever is open: those exits then fail, named)."""
        async with self.mailbox(wallet_id):
            self._live(wallet_id)
            reason = "forced lock" if force else "locked by its owner"
            status = self.vault.lock(wallet_id, force=force, reason=reason)
            self.log.info("wallet_locked", wallet_id=wallet_id, force=force)
            return status.to_dict()

    async def custody_status(self, wallet_ids: list[str]) -> list[dict[str, Any] | None]:
        """Each live wallet's key state (None for a paper or unknown wallet): locked,
        unlocked until, or signing exits only while its positions are open."""
        out: list[dict[str, Any] | None] = []
        for wallet_id in wallet_ids:
            wallet = self.entities.get(wallet_id)
            live = wallet is not None and not wallet.deleted and wallet.venue in LIVE_VENUES
            if wallet is not None and live:
                self.vault.set_open_positions(wallet_id, wallet.holds_tokens())
            out.append(self.vault.status(wallet_id).to_dict() if live else None)
        return out

    async def chain_balances(self, wallet_ids: list[str]) -> list[dict[str, str] | None]:
        """What each live wallet holds on chain now (None for a paper wallet; ``error``
        when the node cannot be asked): SOL (wrapped included) and each token by mint."""
        out: list[dict[str, str] | None] = []
        for wallet_id in wallet_ids:
            wallet = self._get(wallet_id)
            if wallet.venue not in LIVE_VENUES:
                out.append(None)
                continue
            try:
                held = await self.live.holdings(wallet)
            except Exception as exc:
                out.append({"error": f"{type(exc).__name__}: {exc}"})
                continue
            out.append({asset: str(amount) for asset, amount in sorted(held.items())})
        return out

    def key_state(self, wallet_id: str) -> dict[str, Any] | None:
        """The key state of a live wallet (None: paper or unknown), for health."""
        wallet = self.entities.get(wallet_id)
        if wallet is None or wallet.deleted or wallet.venue not in LIVE_VENUES:
            return None
        self.vault.set_open_positions(wallet_id, wallet.holds_tokens())
        return self.vault.status(wallet_id).to_dict()

    async def set_policy(self, wallet_id: str, policy: dict[str, Any] | None) -> dict[str, Any]:
        """Replace the wallet's spend policy (None removes it); journaled, checked before
        every signature (and on paper, before every order)."""
        async with self.mailbox(wallet_id):
            wallet = self._get(wallet_id)
            stored: dict[str, Any] | None = None
            if policy is not None:
                fields = {k: v for k, v in policy.items() if k != "quote_asset"}
                try:
                    model = SpendPolicy.model_validate(
                        {"quote_asset": wallet.quote_asset, **fields}
                    )
                except ValueError as exc:
                    raise InvalidRequest(f"invalid spend policy: {exc}") from None
                stored = model.model_dump(mode="json", exclude={"quote_asset"})
            await self.persist(wallet, [("policy_set", {"policy": stored, "ts": time.time()})])
            return self._view(wallet)

    async def key_record(self, wallet_id: str) -> dict[str, Any]:
        """The wallet's encrypted key record (ciphertext, salt, KDF parameters) for an
        export, which decrypts it with the owner's passphrase where it is asked for."""
        return dict(self._live(wallet_id).key or {})

    async def record_export(self, wallet_id: str, actor: str) -> None:
        """Journal that the key was exported (and by whom): the audit trail."""
        async with self.mailbox(wallet_id):
            wallet = self._live(wallet_id)
            await self.persist(wallet, [("key_exported", {"by": actor, "ts": time.time()})])

    async def delete_wallet(self, wallet_id: str) -> dict[str, Any]:
        """Delete a wallet that holds no token and has nothing in flight (refused, named,
        otherwise); its key is wiped and its stream kept for the audit trail."""
        async with self.mailbox(wallet_id):
            wallet = self._get(wallet_id)
            if wallet.pending:
                raise Conflict(f"wallet {wallet_id} has orders in flight: wait for them")
            if wallet.holds_tokens():
                held = sorted(
                    a for a, v in wallet.balances.items() if v and a != wallet.quote_asset
                )
                raise Conflict(
                    f"wallet {wallet_id} still holds {', '.join(held)}: close its positions first"
                )
            await self.persist(wallet, [("wallet_deleted", {"ts": time.time()})])
            self.vault.lock(wallet_id, force=True, reason="wallet deleted")
            self.live.forget(wallet_id)
            return self._view(wallet)

    async def link_agent(self, wallet_id: str, agent_id: str) -> dict[str, Any]:
        """Make ``agent_id`` the wallet's agent (a live wallet made on its own, before its
        agent). One agent per wallet: another agent's wallet is refused."""
        async with self.mailbox(wallet_id):
            wallet = self._get(wallet_id)
            if wallet.deleted:
                raise NotFound(f"wallet {wallet_id} not found")
            if wallet.agent_id and wallet.agent_id != agent_id:
                raise Conflict(f"wallet {wallet_id} belongs to agent {wallet.agent_id}")
            if wallet.agent_id != agent_id:
                await self.persist(wallet, [("wallet_linked", {"agent_id": agent_id})])
            return self._view(wallet)

    def _live(self, wallet_id: str) -> Wallet:
        wallet = self._get(wallet_id)
        if wallet.venue not in LIVE_VENUES or wallet.key is None:
            raise Conflict(f"wallet {wallet_id} is a paper wallet: it has no key")
        return wallet

    async def _journal_attempt(
        self, wallet_id: str, intent_id: str, attempt: dict[str, Any]
    ) -> None:
        """The venue signed a transaction for ``intent_id``: journal it before it is sent
        (the caller, inside the venue's submit, holds the wallet's mailbox). A sale's may
        be spooled while PostgreSQL is down, like the sale itself."""
        wallet = self._get(wallet_id)
        side = wallet.pending.get(intent_id, {}).get("side")
        event = {"intent_id": intent_id, "attempt": attempt}
        await self.persist(wallet, [("attempt_signed", event)], deferrable=side == "sell")

    async def _with_fee_paid(self, wallet: Wallet, result: OrderResult) -> OrderResult:
        """A failed swap that landed still paid its network fee: book it."""
        swap = await self.live.venue_for(wallet).result(result.intent_id)
        paid = swap.fee_paid_lamports if swap is not None else 0
        if not paid:
            return result
        return dataclasses.replace(result, network_fee=Decimal(paid).scaleb(-QUOTE_DECIMALS))

    # -- internals -----

    def _get(self, wallet_id: str) -> Wallet:
        wallet = self.entities.get(wallet_id)
        if wallet is None or wallet.deleted:
            raise NotFound(f"wallet {wallet_id} not found")
        return wallet

    async def _durable_outcomes(self, items: list[tuple[str, str]]) -> dict[str, OrderResult]:
        """How (wallet_id, intent_id)s that left their wallet's memory ended, from
        ``wallet_intents``: one query for the batch, none for intents still in memory."""
        unknown = [
            intent_id
            for wallet_id, intent_id in items
            if (w := self.entities.get(wallet_id)) is not None and w.known_result(intent_id) is None
        ]
        if not unknown:
            return {}
        rows = await self.store.fetch(WALLET_INTENTS, unknown)
        return {r["intent_id"]: _recorded(r) for r in rows if r["state"] != "pending"}

    async def _execute_one(
        self, order: OrderRequest, durable: dict[str, OrderResult]
    ) -> OrderResult:
        async with self.mailbox(order.wallet_id):
            wallet = self._get(order.wallet_id)
            known = wallet.known_result(order.intent_id) or durable.get(order.intent_id)
            if known is not None:
                return known
            decision = wallet.reserve(order)
            if isinstance(decision, OrderResult):
                ORDERS.labels(order.side, "rejected").inc()
                return decision
            try:
                await self.persist(wallet, [decision], deferrable=order.side == "sell")
                status = await self._submit(wallet, order.intent_id)
                return await self._settle(wallet, status)
            except StaleEntity:
                await self.reload(wallet.id)
                raise

    async def _submit(self, wallet: Wallet, intent_id: str) -> OrderStatus:
        data = wallet.pending[intent_id]
        intent = OrderIntent(
            intent_id=intent_id,
            wallet_id=wallet.id,
            side=Side(data["side"]),
            token=data["token"],
            quote_asset=wallet.quote_asset,
            amount=data["amount"],
            reference_price=data.get("reference_price"),
            reference_ts=data.get("reference_ts"),
            created_at=data["submitted_at"],
        )
        try:
            if wallet.venue not in LIVE_VENUES and wallet.policy is not None:
                refusal = await self._paper_refusal(wallet, intent)
                if refusal is not None:
                    return OrderStatus.failed(intent_id, refusal)
            if wallet.venue in LIVE_VENUES:  # an EVM wallet's policy, before it signs
                refusal = await self.live.refusal(wallet, intent)
                if refusal is not None:
                    return OrderStatus.failed(intent_id, refusal)
            return await (await self._venue(wallet)).submit(intent)
        except (Locked, SpendRefused, KeyCustodyError, OrderRejected) as exc:  # nothing signed
            self.log.warning("order_refused", intent_id=intent_id, code=exc.code)
            return OrderStatus.failed(intent_id, f"{exc.code}: {exc.message}")
        except Exception as exc:  # transport trouble: the outcome is unknown, query later
            self.log.warning("venue_submit_error", intent_id=intent_id, error=str(exc))
            return OrderStatus.unknown(intent_id, str(exc))

    async def _paper_refusal(self, wallet: Wallet, intent: OrderIntent) -> str | None:
        """The spend policy of a paper wallet, on the quoter's price impact (a live wallet's
        runs in its venue, on the swap as built, before it is signed)."""
        impact: float | None = None
        if intent.side is Side.BUY:
            try:
                impact = (
                    await self.quoter.quote(Side.BUY, intent.token, intent.amount)
                ).price_impact
            except Exception:  # no quote: the policy's impact cap then refuses, naming why
                impact = None
        return policy_refusal(wallet, intent, price_impact=impact)

    async def _settle(self, wallet: Wallet, status: OrderStatus) -> OrderResult:
        state = status.state
        if state in (OrderState.FILLED, OrderState.FAILED):
            result = OrderResult(
                intent_id=status.intent_id,
                state="filled" if state == OrderState.FILLED else "failed",
                base_amount=status.base_amount,
                quote_amount=status.quote_amount,
                price=status.price,
                fee=status.fee,
                network_fee=status.network_fee,
                reason=status.reason,
                ts=status.ts,
                tx_id=status.tx_id if wallet.venue in LIVE_VENUES else None,  # a signature
            )
            side = wallet.pending[status.intent_id]["side"]
            if state == OrderState.FAILED and wallet.venue == "jupiter":  # its fee is in SOL
                result = await self._with_fee_paid(wallet, result)
            await self.persist(wallet, [wallet.outcome_event(result)], deferrable=side == "sell")
            ORDERS.labels(side, result.state).inc()
            self.vault.set_open_positions(wallet.id, wallet.holds_tokens())
            return result
        self._ensure_resolver()
        return OrderResult(status.intent_id, "unknown", reason=status.reason, ts=time.time())

    async def _resolve(self, wallet: Wallet, intent_id: str, *, resubmit: bool) -> None:
        """Settle a pending intent by querying the venue (caller holds the mailbox)."""
        try:
            status = await (await self._venue(wallet)).status(intent_id)
        except Exception as exc:
            self.log.warning("venue_status_error", intent_id=intent_id, error=str(exc))
            return
        if status.state == OrderState.NOT_FOUND:
            if not resubmit:
                return
            status = await self._submit(wallet, intent_id)
        await self._settle(wallet, status)

    async def stop_background(self) -> None:
        self._stopping = True  # see Reconciler.stop: a swallowed cancellation ends it too
        resolver, self._resolver = self._resolver, None
        if resolver is not None:
            resolver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await resolver
        await self.live.close()
        await super().stop_background()

    def _ensure_resolver(self) -> None:
        """The resolver is permanent: started after recovery, restarted if it ever ended."""
        if self._stopping:
            return
        if self._resolver is None or self._resolver.done():
            if self._resolver is not None and not self._resolver.cancelled():
                error = self._resolver.exception()
                self.log.error("alert_resolver_restarted", error=repr(error))
            self._resolver = asyncio.get_running_loop().create_task(self._resolve_loop())

    async def _resolve_loop(self) -> None:
        """Re-query intents whose outcome is unknown until each one is settled, forever.

        One intent's trouble never ends the loop: each resolution is tried on its own,
        its error logged, and the round goes on."""
        while not self._stopping:
            await asyncio.sleep(_RESOLVE_INTERVAL_S)
            try:
                await self.resolve_pending()
            except Exception as exc:  # pragma: no cover - resolve_pending isolates each intent
                self.log.error("resolve_round_failed", error=repr(exc))

    async def resolve_pending(self) -> int:
        """One round: query the venue for every intent still pending; returns how many."""
        todo = [(w.id, i) for w in list(self.entities.values()) for i in list(w.pending)]
        for wallet_id, intent_id in todo:
            try:
                async with self.mailbox(wallet_id):
                    wallet = self.entities.get(wallet_id)
                    intent = wallet.pending.get(intent_id) if wallet is not None else None
                    if wallet is None or intent is None:
                        continue  # settled meanwhile
                    age = time.time() - intent["submitted_at"]
                    await self._resolve(wallet, intent_id, resubmit=age > _RESUBMIT_AFTER_S)
            except StaleEntity:
                await self.reload(wallet_id)
            except Exception as exc:
                self.log.warning("resolve_failed", intent_id=intent_id, error=repr(exc))
        return len(todo)


async def _refused(order: OrderRequest, reason: str) -> OrderResult:
    return OrderResult(order.intent_id, "failed", reason=reason, ts=time.time())


def _recorded(row: Mapping[str, Any]) -> OrderResult:
    """An outcome from ``wallet_intents`` (a voided intent answers as failed)."""
    return OrderResult(
        intent_id=row["intent_id"],
        state="filled" if row["state"] == "filled" else "failed",
        base_amount=Decimal(row["base_amount"]),
        quote_amount=Decimal(row["quote_amount"]),
        price=Decimal(row["price"]),
        fee=Decimal(row["fee"]),
        network_fee=Decimal(row["network_fee"]),
        reason=row["reason"],
        ts=float(row["ts"]),
    )


def _custody_evidence(
    wallet: Wallet,
    held: dict[str, Decimal],
    journal: dict[str, Decimal],
    venue: dict[str, Decimal],
) -> list[str]:
    """What does not add up between a wallet, its agent's positions, its journal and what
    the venue says the account holds."""
    evidence: list[str] = []
    memory = {a: v for a, v in wallet.balances.items() if v}
    tokens = {a for a in memory if a != wallet.quote_asset} | set(held)
    for token in sorted(tokens):
        have, want = memory.get(token, Decimal(0)), held.get(token, Decimal(0))
        if have != want:
            evidence.append(f"{token}: wallet holds {have}, open positions hold {want}")
    for asset in sorted(set(memory) | {a for a, v in journal.items() if v}):
        have, want = memory.get(asset, Decimal(0)), journal.get(asset, Decimal(0))
        if have != want:
            evidence.append(f"{asset}: wallet memory {have}, journal (deposits + fills) {want}")
    for asset in sorted(set(memory) | {a for a, v in venue.items() if v}):
        have, want = memory.get(asset, Decimal(0)), venue.get(asset, Decimal(0))
        if have != want:
            evidence.append(f"{asset}: wallet memory {have}, venue account {want}")
    return evidence
