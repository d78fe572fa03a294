"""PaperExchangeHost: the paper venue in a process of its own (a Ray actor).

Contract:
- Owns the paper exchange (:mod:`valux.venues.paper.exchange`): its order book, its
  accounts (one per wallet) and their durable record. It outlives any wallet host, as a
  real exchange outlives a trader's process: a wallet that dies with an order in flight
  asks here after restarting and gets the truth.
- Every method takes a batch (one call per wallet host per loop turn).
- An outcome and its account movements are durable before the answer; on restart the
  constructor loads the accounts, and recorded outcomes are read back on demand.
- Prices come from the stop-loss evaluators (the latest tick of the token), or from the
  order's reference price (the tick that triggered an exit).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from collections.abc import Awaitable
from decimal import Decimal
from typing import Any

import asyncpg
import structlog

from valux.config.secrets import with_password
from valux.config.settings import Settings
from valux.hosting.host import node_id
from valux.hosting.naming import exchange_name
from valux.hosting.peers import Peers, RayPeers
from valux.observability.logging import configure_logging
from valux.observability.metrics import collect_families
from valux.persistence.journal import DATABASE_DOWN
from valux.persistence.starts import record_start
from valux.venues.base import OrderIntent, OrderStatus, Quote, Side, VenueError, VenueUnavailable
from valux.venues.paper.exchange import ExchangeLedger, PaperExchange
from valux.venues.paper.prices import PriceLookup
from valux.venues.paper.venue import PaperVenue

QUOTE_DECIMALS = 9  # SOL's lamports; amounts in the quote asset are whole base units


class _Record:
    """The venue's ledger hook: outcome → account movements → one durable write."""

    def __init__(self, ledger: ExchangeLedger | None) -> None:
        self.exchange: PaperExchange | None = None
        self.ledger = ledger

    async def load(self, intent_id: str) -> OrderStatus | None:
        return None if self.ledger is None else await self.ledger.load(intent_id)

    async def record(self, intent: OrderIntent, status: OrderStatus) -> None:
        assert self.exchange is not None
        moves = self.exchange.on_outcome(intent, status)
        if self.ledger is not None:
            await self.ledger.record(status, moves)


def make_paper_venue(
    settings: Settings, prices: PriceLookup, ledger: Any, rng: random.Random | None = None
) -> PaperVenue:
    paper = settings.venue.paper
    return PaperVenue(
        prices.price,
        fee_bps=paper.fee_bps,
        slippage_bps_per_unit=paper.slippage_bps_per_unit,
        depth_quote=paper.depth_quote,
        latency_ms=paper.latency_ms,
        failure_rate=paper.failure_rate,
        unknown_rate=paper.unknown_rate,
        network_fee=paper.network_fee,
        rng=rng or random.Random(),
        # Whole lamports: every balance is then an exact sum of its fills and fees.
        quote_decimals=QUOTE_DECIMALS,
        ledger=ledger,
        # Backtests: fills carry the replayed market's time, not the wall clock's.
        clock=prices.market_time if paper.simulated_clock else time.time,
    )


class PaperExchangeHost:
    """The paper exchange as a Ray actor; see the module docstring for the contract."""

    # Ray runs an async constructor to completion before the actor takes its first call,
    # which is exactly the recovery contract; mypy only knows synchronous constructors.
    async def __init__(  # type: ignore[misc]
        self,
        venue_name: str,
        settings: Settings,
        database_url: str | None,
        *,
        peers: Peers | None = None,
        pool: asyncpg.Pool | None = None,
    ) -> None:
        self.name = venue_name
        self.settings = settings
        self.incarnation = uuid.uuid4().hex
        self.started_at = time.time()
        configure_logging(settings.logging.level, settings.logging.format, process="exchange")
        self.log = structlog.get_logger("valux.exchange")
        self.peers: Peers = peers if peers is not None else RayPeers(settings.ray.namespace)
        url = settings.venue.paper.database_url or database_url
        if pool is None and url is not None:
            pool = await asyncpg.create_pool(
                with_password(url), min_size=1, max_size=2, command_timeout=10
            )
        self.pool = pool
        if pool is not None:
            try:
                await record_start(pool, exchange_name(venue_name), self.incarnation)
            except Exception as exc:
                self.log.warning("start_not_recorded", error=str(exc))
        self.prices = PriceLookup(
            settings.hosting.evaluators,
            self.peers,
            market_time=settings.venue.paper.simulated_clock,
        )
        timeout = settings.journal.commit_timeout_ms / 1000
        ledger = ExchangeLedger(pool, timeout) if pool is not None else None
        record = _Record(ledger)
        self.exchange = PaperExchange(make_paper_venue(settings, self.prices, record), ledger)
        record.exchange = self.exchange
        await self.exchange.load()
        self.log.info("exchange_ready", accounts=len(self.exchange.accounts))

    # -- trading -----

    async def quote(self, items: list[tuple[str, str, Decimal]]) -> list[Quote | VenueError]:
        """(side, token, amount) → a quote, or the venue's error saying why there is none."""

        async def one(side: str, token: str, amount: Decimal) -> Quote | VenueError:
            try:
                return await self.exchange.venue.quote(Side(side), token, amount)
            except VenueError as exc:
                return exc
            except Exception as exc:  # the price source failed
                return VenueUnavailable(f"no quote: {type(exc).__name__}: {exc}", self.name)

        return list(await asyncio.gather(*(one(*item) for item in items)))

    async def submit(self, intents: list[OrderIntent]) -> list[OrderStatus]:
        """Each intent executed once; UNKNOWN (query again) when its record cannot be read."""
        for intent in intents:
            if intent.reference_price is not None:
                self.prices.remember(intent.token, intent.reference_price, intent.reference_ts)
        return list(
            await asyncio.gather(
                *(
                    self._unknown_if_unreadable(i.intent_id, self.exchange.submit(i))
                    for i in intents
                )
            )
        )

    async def status(self, intent_ids: list[str]) -> list[OrderStatus]:
        calls = (self._unknown_if_unreadable(i, self.exchange.venue.status(i)) for i in intent_ids)
        return list(await asyncio.gather(*calls))

    async def _unknown_if_unreadable(
        self, intent_id: str, call: Awaitable[OrderStatus]
    ) -> OrderStatus:
        """Each intent of a batch on its own: one whose outcome cannot be told now — its
        record in an unreachable database, no price for its token, any other trouble — is
        UNKNOWN (the wallet asks again by intent id), never a guess, and never the reason
        the other intents of its batch go unanswered."""
        try:
            return await call
        except DATABASE_DOWN as exc:
            self.log.warning("exchange_books_unreachable", intent_id=intent_id, error=repr(exc))
            why = f"exchange books unreachable ({type(exc).__name__})"
        except VenueError as exc:
            why = exc.message
        except Exception as exc:
            self.log.error("exchange_order_error", intent_id=intent_id, error=repr(exc))
            why = f"exchange error: {type(exc).__name__}: {exc}"
        return OrderStatus.unknown(intent_id, why, time.time())

    # -- accounts -----

    async def deposit(self, items: list[tuple[str, str, str, Decimal]]) -> list[dict[str, Any]]:
        """(ref, account, asset, amount): credit once per ref; the account's balances."""
        return [await self.exchange.deposit(*item) for item in items]

    async def balances(self, accounts: list[str]) -> list[dict[str, Decimal]]:
        return [self.exchange.balances(a) for a in accounts]

    # -- supervision surface -----

    async def ping(self) -> dict[str, Any]:
        ledger = self.exchange.ledger
        return {
            "kind": "exchange",
            "pid": os.getpid(),
            "node": node_id(),
            "venue": self.name,
            "incarnation": self.incarnation,
            "started_at": self.started_at,
            "accounts": len(self.exchange.accounts),
            "unsynced": 0 if ledger is None else ledger.unsynced,
            "inflight": self.exchange.inflight(),
        }

    async def metrics(self) -> list[Any]:
        return collect_families()

    async def shutdown(self) -> dict[str, Any]:
        if self.pool is not None:
            await self.pool.close()
        return {"accounts": len(self.exchange.accounts)}
