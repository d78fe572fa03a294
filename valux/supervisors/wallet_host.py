"""WalletHost: hosts the Wallet logical actors of one slot and their venue client.

Contract (in addition to :class:`~valux.supervisors.host.Host`):
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
import random
import time
from decimal import Decimal
from typing import Any

from valux.actors.wallet import Wallet
from valux.config.settings import Settings
from valux.errors import Conflict, NotFound
from valux.observability.metrics import ORDERS
from valux.schema.messages import OrderRequest, OrderResult
from valux.supervisors.host import Host
from valux.supervisors.prices import PriceLookup
from valux.venues.base import OrderIntent, OrderState, OrderStatus, Side
from valux.venues.paper import PaperVenue
from valux.venues.paper_ledger import PgOrderLedger

_RESOLVE_INTERVAL_S = 1.0
QUOTE_DECIMALS = 9  # SOL's lamports; amounts in the quote asset are whole base units


class WalletHost(Host[Wallet]):
    """Many wallets in one process; see the module docstring for the contract."""

    kind = "wallet"
    entity_type = Wallet

    # Ray runs an async constructor to completion before the actor takes its first call,
    # which is exactly the recovery contract; mypy only knows synchronous constructors.
    async def __init__(  # type: ignore[misc]
        self, slot: int, settings: Settings, database_url: str, redis_url: str | None
    ) -> None:
        self.prices = PriceLookup(
            settings.hosting.evaluators,
            settings.ray.namespace,
            market_time=settings.venue.paper.simulated_clock,
        )
        self._resolver: asyncio.Task[None] | None = None
        await super().__init__(slot, settings, database_url, redis_url)

    def _make_venue(self) -> PaperVenue:
        paper = self.settings.venue.paper
        return PaperVenue(
            self.prices.price,
            fee_bps=paper.fee_bps,
            slippage_bps_per_unit=paper.slippage_bps_per_unit,
            depth_quote=paper.depth_quote,
            latency_ms=paper.latency_ms,
            failure_rate=paper.failure_rate,
            unknown_rate=paper.unknown_rate,
            network_fee=paper.network_fee,
            rng=random.Random(),
            # Whole lamports: every balance is then an exact sum of its fills and fees.
            quote_decimals=QUOTE_DECIMALS,
            ledger=PgOrderLedger(self.pool),
            # Backtests: fills carry the replayed market's time, not the wall clock's.
            clock=self.prices.market_time if paper.simulated_clock else time.time,
        )

    async def entity_ids(self) -> list[str]:
        rows = await self.pool.fetch("SELECT id FROM wallets WHERE host_slot = $1", self.slot)
        return [r["id"] for r in rows]

    async def after_recovery(self) -> None:
        self.venue = self._make_venue()  # needs the pool, which the base class opened
        pending = [(w, i) for w in self.entities.values() for i in list(w.pending)]
        for wallet, intent_id in pending:
            async with self.mailbox(wallet.id):
                await self._resolve(self.entities[wallet.id], intent_id, resubmit=True)
        self._ensure_resolver()

    # -- commands -----

    async def create_wallet(
        self, wallet_id: str, agent_id: str, initial: Decimal, quote_asset: str
    ) -> dict[str, Any]:
        """Create (idempotently) a paper wallet and credit its starting balance."""
        async with self.mailbox(wallet_id):
            wallet = self.entities.get(wallet_id)
            if wallet is None:
                wallet = Wallet(wallet_id)
                events: list[tuple[str, dict[str, Any]]] = [
                    (
                        "wallet_created",
                        {
                            "agent_id": agent_id,
                            "venue": self.venue.name,
                            "quote_asset": quote_asset,
                            "host_slot": self.slot,
                            "ts": time.time(),
                        },
                    )
                ]
                await self.persist(wallet, events)
                self.entities[wallet_id] = wallet
                if initial > 0:
                    await self.persist(
                        wallet, [("deposited", {"asset": quote_asset, "amount": initial})]
                    )
            return wallet.view()

    async def deposit(self, wallet_id: str, asset: str, amount: Decimal) -> dict[str, Any]:
        if self.venue.name != "paper":
            raise Conflict("deposits are only possible on paper wallets")
        async with self.mailbox(wallet_id):
            wallet = self._get(wallet_id)
            await self.persist(wallet, [("deposited", {"asset": asset, "amount": amount})])
            return wallet.view()

    async def describe(self, wallet_ids: list[str]) -> list[dict[str, Any] | None]:
        return [w.view() if (w := self.entities.get(i)) else None for i in wallet_ids]

    async def balances(self, wallet_ids: list[str]) -> list[dict[str, Decimal]]:
        return [dict(self._get(i).balances) for i in wallet_ids]

    async def buy_impacts(self, buys: list[tuple[str, Decimal]]) -> list[float]:
        """The price impact (a fraction) the venue quotes for buying each ``(token, amount
        of quote)`` now (PS-9); places nothing. A batch per call, like ``execute``."""
        quotes = await asyncio.gather(*(self.venue.quote(Side.BUY, t, a) for t, a in buys))
        return [q.price_impact for q in quotes]

    async def execute(self, orders: list[OrderRequest]) -> list[OrderResult]:
        """Execute a batch of intents, each in its wallet's mailbox, concurrently."""
        return list(await asyncio.gather(*(self._execute_one(o) for o in orders)))

    async def resolve(self, intent_ids: list[tuple[str, str]]) -> list[OrderResult | None]:
        """Answer (wallet_id, intent_id) queries from the record; query the venue if pending."""
        out: list[OrderResult | None] = []
        for wallet_id, intent_id in intent_ids:
            wallet = self.entities.get(wallet_id)
            if wallet is None:
                out.append(None)
                continue
            async with self.mailbox(wallet_id):
                wallet = self.entities[wallet_id]
                if intent_id in wallet.pending:
                    await self._resolve(wallet, intent_id, resubmit=False)
                out.append(wallet.known_result(intent_id))
        return out

    # -- internals -----

    def _get(self, wallet_id: str) -> Wallet:
        wallet = self.entities.get(wallet_id)
        if wallet is None:
            raise NotFound(f"wallet {wallet_id} not found")
        return wallet

    async def _execute_one(self, order: OrderRequest) -> OrderResult:
        async with self.mailbox(order.wallet_id):
            wallet = self._get(order.wallet_id)
            known = wallet.known_result(order.intent_id)
            if known is not None:
                return known
            decision = wallet.reserve(order)
            if isinstance(decision, OrderResult):
                ORDERS.labels(order.side, "rejected").inc()
                return decision
            await self.persist(wallet, [decision], deferrable=order.side == "sell")
            if order.reference_price is not None:
                self.prices.remember(order.token, order.reference_price, order.reference_ts)
            status = await self._submit(wallet, order.intent_id)
            return await self._settle(wallet, status)

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
            created_at=data["submitted_at"],
        )
        try:
            return await self.venue.submit(intent)
        except Exception as exc:  # transport trouble: the outcome is unknown, query later
            self.log.warning("venue_submit_error", intent_id=intent_id, error=str(exc))
            return OrderStatus.unknown(intent_id, str(exc))

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
            )
            side = wallet.pending[status.intent_id]["side"]
            await self.persist(wallet, [wallet.outcome_event(result)], deferrable=side == "sell")
            ORDERS.labels(side, result.state).inc()
            return result
        self._ensure_resolver()
        return OrderResult(status.intent_id, "unknown", reason=status.reason, ts=time.time())

    async def _resolve(self, wallet: Wallet, intent_id: str, *, resubmit: bool) -> None:
        """Settle a pending intent by querying the venue (caller holds the mailbox)."""
        try:
            status = await self.venue.status(intent_id)
        except Exception as exc:
            self.log.warning("venue_status_error", intent_id=intent_id, error=str(exc))
            return
        if status.state == OrderState.NOT_FOUND:
            if not resubmit:
                return
            status = await self._submit(wallet, intent_id)
        await self._settle(wallet, status)

    def _ensure_resolver(self) -> None:
        if self._resolver is None or self._resolver.done():
            self._resolver = asyncio.get_running_loop().create_task(self._resolve_loop())

    async def _resolve_loop(self) -> None:
        """Re-query intents whose outcome is unknown until each one is settled."""
        while any(w.pending for w in self.entities.values()):
            await asyncio.sleep(_RESOLVE_INTERVAL_S)
            for wallet in list(self.entities.values()):
                for intent_id in list(wallet.pending):
                    submitted = wallet.pending[intent_id]["submitted_at"]
                    async with self.mailbox(wallet.id):
                        wallet = self.entities[wallet.id]
                        if intent_id in wallet.pending:
                            resubmit = time.time() - submitted > 30 * _RESOLVE_INTERVAL_S
                            await self._resolve(wallet, intent_id, resubmit=resubmit)
