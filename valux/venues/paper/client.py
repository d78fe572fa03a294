"""The wallet host's side of the paper exchange: the :class:`~valux.venues.base.Venue`
interface over calls to the exchange actor, micro-batched per loop turn (one call per
method for every wallet of the host), plus the account calls custody audits use."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from valux.hosting.batching import PeerBatcher
from valux.hosting.peers import Peers, PeerUnavailable
from valux.venues.base import OrderIntent, OrderStatus, Quote, Side, VenueUnavailable


class ExchangeClient:
    """A :class:`~valux.venues.base.Venue` that is the exchange actor ``name``."""

    def __init__(self, peers: Peers, name: str = "paper", *, timeout_s: float = 30.0) -> None:
        """``timeout_s`` bounds every call: an exchange that does not answer leaves the
        order's outcome unknown (the wallet queries it again by intent id), never a wallet
        waiting forever with its mailbox held."""
        self.name = name
        self._calls = PeerBatcher(peers, "exchange", timeout_s=timeout_s)

    async def quote(self, side: Side, token: str, amount: Decimal) -> Quote:
        try:
            answer: Quote | BaseException = await self._calls.call(
                self.name, "quote", (Side(side).value, token, amount)
            )
        except PeerUnavailable as exc:
            raise VenueUnavailable(f"no quote: {exc}", self.name) from exc
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def submit(self, intent: OrderIntent) -> OrderStatus:
        status: OrderStatus = await self._calls.call(self.name, "submit", intent)
        return status

    async def status(self, intent_id: str) -> OrderStatus:
        status: OrderStatus = await self._calls.call(self.name, "status", intent_id)
        return status

    async def deposit(self, ref: str, account: str, asset: str, amount: Decimal) -> Any:
        return await self._calls.call(self.name, "deposit", (ref, account, asset, amount))

    async def balances(self, account: str) -> dict[str, Decimal]:
        balances: dict[str, Decimal] = await self._calls.call(self.name, "balances", account)
        return balances
