"""The agents' links to their wallets and to the stop-loss evaluators.

Many agents on one host act concurrently and each wants its wallet host or its
token's evaluator. Every call goes through a :class:`~valux.hosting.batching.CallBatcher`
per (remote actor, method): what the agents of a host submit in one event-loop turn
travels as *one* call carrying a list (DESIGN.md, "Hot paths"). The remote side is
reached through :class:`~valux.hosting.peers.Peers`, so the same code runs against Ray
actors and against in-process objects.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from valux.hosting.batching import PeerBatcher
from valux.hosting.peers import Peers
from valux.schema.messages import OrderRequest, OrderResult


class WalletLink:
    """Calls from the agents of one host to their wallets, which live in the same host
    process (the wallet host of the same slot, :meth:`Peers.host_locally`): no Ray hop.
    The calls still go through the peers, so tests can make a wallet unreachable."""

    def __init__(self, peers: Peers, slot: int) -> None:
        # Bounded: a wallet may wait up to 30 s for the exchange; past this the order is
        # in flight as far as the agent knows, and the reconciler resolves it.
        self._calls = PeerBatcher(peers, "wallet", timeout_s=60.0)
        self.slot = slot

    async def execute(self, order: OrderRequest) -> OrderResult:
        result: OrderResult = await self._calls.call(self.slot, "execute", order)
        return result

    async def quote_balance(self, wallet_id: str) -> Decimal:
        """The wallet's balance of its quote asset (what a buy can spend)."""
        balance: Decimal = await self._calls.call(self.slot, "quote_balances", wallet_id)
        return balance

    async def buy_impact(self, wallet_id: str, token: str, amount: Decimal) -> float:
        """The price impact the wallet's venue quotes for buying ``token`` for ``amount``."""
        impact: float = await self._calls.call(self.slot, "buy_impacts", (wallet_id, token, amount))
        return impact

    async def resolve(self, wallet_id: str, intent_id: str) -> OrderResult | None:
        found: OrderResult | None = await self._calls.call(
            self.slot, "resolve", (wallet_id, intent_id)
        )
        return found

    async def void(self, wallet_id: str, intent_id: str, reason: str) -> OrderResult:
        result: OrderResult = await self._calls.call(
            self.slot, "void", (wallet_id, intent_id, reason)
        )
        return result

    async def audit(self, wallet_id: str, held: dict[str, Decimal]) -> dict[str, Any]:
        report: dict[str, Any] = await self._calls.call(self.slot, "audit", (wallet_id, held))
        return report


class EvaluatorLink:
    """Calls from the agents of one host to the stop-loss evaluators (by shard)."""

    def __init__(self, peers: Peers) -> None:
        # Bounded: an evaluator that is restarting re-arms from PostgreSQL first; an arm
        # that times out is retried by the reconciler.
        self._calls = PeerBatcher(peers, "evaluator", timeout_s=10.0)

    async def arm(self, shard: int, spec: dict[str, Any]) -> bool:
        armed: bool = await self._calls.call(shard, "arm", spec)
        return armed

    async def settle(self, shard: int, position_id: str, closed: bool) -> bool:
        settled: bool = await self._calls.call(shard, "settle", (position_id, closed))
        return settled
