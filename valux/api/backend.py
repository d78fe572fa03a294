"""What the HTTP API needs from the engine: the :class:`Backend` protocol.

The API never touches actors. The integrator implements this protocol over Ray
actor handles (``await handle.method.remote(...)``, never ``ray.get``); the unit
tests implement it in memory (:mod:`valux.api.testing`).

Contract for implementers:

- Every method is a coroutine and must not block the event loop.
- Return values are JSON-safe: dicts, lists, str, int, float, bool, None.
  Money is already rendered as a decimal *string* (``"1.25"``); timestamps as
  ISO-8601 strings or unix seconds.
- Failures are raised as :mod:`valux.errors` classes: ``InvalidRequest``
  (400, with field errors), ``NotFound`` (404), ``Conflict`` (409),
  ``Unavailable`` (503), ``ConfigurationError`` (400) and any other
  ``ValuxError`` (422). Anything else becomes a logged 500.
- The API bounds every call with its request timeout (503 when exceeded); a
  call may therefore have run even though the client saw 503, which is why
  signals carry a client-chosen id.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

from valux.api.models import SignalIn
from valux.feeds.ticks import Tick

__all__ = ["Backend", "SignalIn", "Tick"]


@runtime_checkable
class Backend(Protocol):
    """The engine as the API sees it. All methods are async and return JSON-safe data."""

    manual_feed_enabled: bool
    """Whether ``POST /api/v1/feeds/manual/ticks`` is served (setting ``feeds.manual.enabled``)."""

    # agents ------------------------------------------------------------------
    async def create_agent(
        self,
        *,
        name: str,
        config: Mapping[str, Any] | None,
        balance: Decimal,
        agent_id: str | None,
    ) -> dict[str, Any]:
        """Create an agent (and its paper wallet holding ``balance``); return it.

        ``config`` is the raw object the client sent (snake_case or reference
        camelCase; JSON numbers with a fraction arrive as ``Decimal``, integers
        as ``int``). Raise ``InvalidRequest``/``ConfigurationError`` if it is
        invalid and ``Conflict`` if ``agent_id`` exists. The result must carry
        ``"id"``.
        """
        ...

    async def list_agents(self) -> list[dict[str, Any]]:
        """Every agent, summarised."""
        ...

    async def get_agent(self, agent_id: str) -> dict[str, Any]:
        """One agent with its config and state; ``NotFound`` if absent."""
        ...

    async def update_agent(
        self, agent_id: str, *, name: str | None, config_patch: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        """Rename and/or deep-merge a partial config; return the updated agent."""
        ...

    async def delete_agent(self, agent_id: str) -> dict[str, Any]:
        """Delete an agent; ``Conflict`` if it still holds open positions."""
        ...

    async def pause_agent(self, agent_id: str) -> dict[str, Any]:
        """Stop new entries for the agent (exits keep running); return it."""
        ...

    async def resume_agent(self, agent_id: str) -> dict[str, Any]:
        """Allow new entries again; return the agent."""
        ...

    # wallets -----------------------------------------------------------------
    async def get_wallet(self, agent_id: str) -> dict[str, Any]:
        """The agent's wallet: venue, balances per asset (never key material)."""
        ...

    async def deposit(self, agent_id: str, *, asset: str, amount: Decimal) -> dict[str, Any]:
        """Credit a paper wallet; ``Conflict`` for a live wallet. Returns the wallet."""
        ...

    # signals -----------------------------------------------------------------
    async def post_signal(self, signal: SignalIn) -> dict[str, Any]:
        """Fan a signal out to its agents.

        Returns ``{"signal_id", "duplicate": bool, "outcomes": [{"agent_id",
        "status": "bought"|"ineligible"|"failed", "reason", "position_id", ...}]}``;
        a signal id seen before returns the first result with ``duplicate: true``.
        """
        ...

    async def get_signal(self, signal_id: str) -> dict[str, Any]:
        """The stored result of a signal; ``NotFound`` if never seen."""
        ...

    # positions and trades ----------------------------------------------------
    async def list_positions(
        self, *, agent_id: str | None, status: str | None, limit: int, offset: int
    ) -> list[dict[str, Any]]:
        """Positions, newest first; ``status`` is ``"open"``, ``"closed"`` or ``None`` (all)."""
        ...

    async def get_position(self, position_id: str) -> dict[str, Any]:
        """One position; ``NotFound`` if absent."""
        ...

    async def close_position(self, position_id: str) -> dict[str, Any]:
        """Sell the whole position now; ``Conflict`` if it is already closed."""
        ...

    async def list_trades(
        self, *, agent_id: str | None, limit: int, offset: int
    ) -> list[dict[str, Any]]:
        """Fills (buys and sells), newest first."""
        ...

    # prices and feeds --------------------------------------------------------
    async def prices(self) -> dict[str, Any]:
        """Latest price per token with its source and age."""
        ...

    async def push_manual_ticks(self, ticks: list[Tick]) -> int:
        """Hand validated ticks to the manual feed; return how many were accepted."""
        ...

    # health and observability -----------------------------------------------
    async def health_ready(self) -> tuple[bool, list[str]]:
        """``(True, [])`` when every open position is armed and every feed is fresh,
        else ``(False, reasons)``."""
        ...

    async def health_status(self) -> dict[str, Any]:
        """A detailed, human-oriented status of the engine's components."""
        ...

    async def supervisors(self) -> dict[str, Any]:
        """The supervision tree: children, liveness, restart counts, escalations."""
        ...

    async def actor_metrics(self) -> list[Any]:
        """Prometheus ``Metric`` families collected from the actors (may be empty)."""
        ...
