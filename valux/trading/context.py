"""What the trading components need from the host they run in.

:class:`~valux.actors.agent_host.AgentHost` is the one implementation; the
components (:mod:`entries <valux.trading.entries>`, :mod:`exits
<valux.trading.exits>`, :mod:`position_rules <valux.trading.position_rules>`,
:mod:`reconciliation <valux.trading.reconciliation>`) see it only through this
protocol, so ``trading`` never imports the actor layer above it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Protocol

from valux.config.settings import Settings
from valux.observability.publisher import RedisPublisher
from valux.persistence.store import Store
from valux.trading.agent import Agent
from valux.trading.links import EvaluatorLink, WalletLink

if TYPE_CHECKING:
    from valux.trading.controls import Controls
    from valux.trading.entries import Entries
    from valux.trading.exits import Exits
    from valux.trading.position_rules import PositionRules
    from valux.trading.reconciliation import Reconciler


class TradingHost(Protocol):
    """The host's side of the trading components (see the module docstring)."""

    slot: int
    settings: Settings
    log: Any
    rng: random.Random
    entities: dict[str, Agent]
    unreadable: dict[str, str]
    safe_state: str | None
    publisher: RedisPublisher
    store: Store
    wallets: WalletLink
    evaluators: EvaluatorLink
    entries: Entries
    exits: Exits
    rules: PositionRules
    reconciler: Reconciler
    controls: Controls

    def mailbox(self, entity_id: str) -> AbstractAsyncContextManager[None]:
        """Exclusive, in-order access to one agent."""
        ...

    async def persist(
        self,
        entity: Agent,
        events: Sequence[tuple[str, dict[str, Any]]],
        *,
        deferrable: bool = False,
    ) -> None:
        """Journal ``events`` of ``entity``, then apply them."""
        ...

    async def entity_failed(self, entity_id: str, exc: BaseException) -> bool:
        """Restart one agent from its journal after its handler raised."""
        ...

    def check_fault(self, entity_id: str) -> None:
        """Raise an injected fault for ``entity_id`` if one is pending."""
        ...

    async def arm_position(
        self,
        agent: Agent,
        position: dict[str, Any],
        *,
        release: bool = False,
        stop: tuple[float, float] | None = None,
    ) -> bool:
        """Arm ``position`` at its token's evaluator."""
        ...

    async def disarm_position(self, token: str, position_id: str, closed: bool) -> None:
        """Forget (``closed``) or release ``position_id`` at its evaluator."""
        ...
