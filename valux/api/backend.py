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

Ownership: every agent belongs to a user, and with it its wallet, positions,
trades and signal outcomes; signals belong to the user who sent them (signal
ids are per user). Every resource method takes ``owner``: the API always passes
the caller's user id, and the method must then act only on that user's
resources — another user's agent, position or signal is ``NotFound``, exactly
like one that does not exist, and lists leave them out. ``owner=None`` is for
in-process tools only (backtests, benchmarks): no scoping, and what they create
belongs to the first admin (:data:`valux.api.users.SYSTEM_OWNER`).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

from valux.api.models import SignalIn
from valux.api.security import AuthConfig
from valux.api.users import UserStore
from valux.feeds.ticks import Tick

__all__ = ["Backend", "SignalIn", "Tick"]


@runtime_checkable
class Backend(Protocol):
    """The engine as the API sees it. All methods are async and return JSON-safe data."""

    manual_feed_enabled: bool
    """Whether ``POST /api/v1/feeds/manual/ticks`` is served (setting ``feeds.manual.enabled``)."""

    @property
    def users(self) -> UserStore:
        """Users, sessions, API keys, webhooks and the audit log."""
        ...

    @property
    def auth_config(self) -> AuthConfig:
        """How the API authenticates (signing key, lifetimes, allowlists, limits)."""
        ...

    # ownership ---------------------------------------------------------------
    async def agent_owner(self, agent_id: str) -> str | None:
        """The user id owning ``agent_id`` (deleted agents too), or None if unknown.
        Used to route WebSocket events to their owner only."""
        ...

    # agents ------------------------------------------------------------------
    async def create_agent(
        self,
        *,
        name: str,
        config: Mapping[str, Any] | None,
        balance: Decimal,
        agent_id: str | None,
        owner: str | None = None,
        venue: str = "paper",
        wallet_id: str | None = None,
    ) -> dict[str, Any]:
        """Create an agent (and its paper wallet holding ``balance``, or on the live wallet
        ``wallet_id`` for ``venue`` ``jupiter``); return it.

        ``config`` is the raw object the client sent (snake_case or reference
        camelCase; JSON numbers with a fraction arrive as ``Decimal``, integers
        as ``int``). Raise ``InvalidRequest``/``ConfigurationError`` if it is
        invalid and ``Conflict`` if ``agent_id`` exists. The result must carry
        ``"id"``.
        """
        ...

    async def list_agents(self, *, owner: str | None = None) -> list[dict[str, Any]]:
        """Every agent, summarised."""
        ...

    async def get_agent(self, agent_id: str, *, owner: str | None = None) -> dict[str, Any]:
        """One agent with its config and state; ``NotFound`` if absent."""
        ...

    async def update_agent(
        self,
        agent_id: str,
        *,
        name: str | None,
        config_patch: Mapping[str, Any] | None,
        owner: str | None = None,
    ) -> dict[str, Any]:
        """Rename and/or deep-merge a partial config; return the updated agent."""
        ...

    async def delete_agent(self, agent_id: str, *, owner: str | None = None) -> dict[str, Any]:
        """Delete an agent; ``Conflict`` if it still holds open positions."""
        ...

    async def pause_agent(self, agent_id: str, *, owner: str | None = None) -> dict[str, Any]:
        """Set the agent REDUCING: no new entries, exits keep running; return it."""
        ...

    async def resume_agent(self, agent_id: str, *, owner: str | None = None) -> dict[str, Any]:
        """Set the agent ACTIVE (lifting a quarantine too); return it."""
        ...

    async def set_agent_state(
        self,
        agent_id: str,
        *,
        state: str,
        reason: str | None,
        owner: str | None = None,
    ) -> dict[str, Any]:
        """Set the agent's own trading state (ACTIVE / REDUCING / HALTED); return it."""
        ...

    async def set_user_state(self, *, owner: str, state: str, reason: str | None) -> dict[str, Any]:
        """Set the trading state of every agent ``owner`` has (through the per-agent state
        path); ``{"state", "reason", "agents": [ids set], "failed": [ids not reached]}``."""
        ...

    # risk --------------------------------------------------------------------
    async def get_global_state(self) -> dict[str, Any]:
        """The global trading state ``{state, reason, updated_at}``."""
        ...

    async def set_global_state(self, *, state: str, reason: str | None) -> dict[str, Any]:
        """Journal the global trading state and apply it on every agent host in one round;
        returns it with ``hosts`` reached and the fan-out ``latency_ms``."""
        ...

    # wallets -----------------------------------------------------------------
    async def get_wallet(self, agent_id: str, *, owner: str | None = None) -> dict[str, Any]:
        """The agent's wallet: venue, balances per asset (never key material)."""
        ...

    async def deposit(
        self, agent_id: str, *, asset: str, amount: Decimal, owner: str | None = None
    ) -> dict[str, Any]:
        """Credit a paper wallet; ``Conflict`` for a live wallet. Returns the wallet."""
        ...

    # live wallets (valux.system.live_wallets) ----------------------------------
    async def create_live_wallet(
        self,
        *,
        chain: str,
        passphrase: str,
        secret: str | None,
        agent_id: str | None,
        owner: str | None = None,
    ) -> dict[str, Any]:
        """Create (or import ``secret``) and encrypt a wallet's key; return the wallet."""
        ...

    async def list_live_wallets(self, *, owner: str | None = None) -> list[dict[str, Any]]:
        """The owner's live wallets."""
        ...

    async def get_live_wallet(self, wallet_id: str, *, owner: str | None = None) -> dict[str, Any]:
        """One live wallet with its on-chain balances (``on_chain``)."""
        ...

    async def unlock_wallet(
        self, wallet_id: str, *, passphrase: str, ttl_s: float | None, owner: str | None = None
    ) -> dict[str, Any]:
        """Decrypt the key in its wallet host; the key state."""
        ...

    async def lock_wallet(
        self, wallet_id: str, *, force: bool, owner: str | None = None
    ) -> dict[str, Any]:
        """Lock the key (exits only while positions are open, unless ``force``)."""
        ...

    async def set_wallet_policy(
        self, wallet_id: str, *, policy: dict[str, Any] | None, owner: str | None = None
    ) -> dict[str, Any]:
        """Replace the wallet's spend policy; the wallet."""
        ...

    async def export_wallet(
        self, wallet_id: str, *, passphrase: str, owner: str | None = None
    ) -> dict[str, Any]:
        """The key as text, once; the export is journaled."""
        ...

    async def delete_wallet(self, wallet_id: str, *, owner: str | None = None) -> dict[str, Any]:
        """Delete a wallet that holds no token and has nothing in flight."""
        ...

    # signals -----------------------------------------------------------------
    async def post_signal(self, signal: SignalIn, *, owner: str | None = None) -> dict[str, Any]:
        """Fan a signal out to its agents.

        Returns ``{"signal_id", "duplicate": bool, "outcomes": [{"agent_id",
        "status": "bought"|"ineligible"|"failed", "reason", "position_id", ...}]}``;
        a signal id seen before returns the first result with ``duplicate: true``.
        """
        ...

    async def get_signal(self, signal_id: str, *, owner: str | None = None) -> dict[str, Any]:
        """The stored result of a signal; ``NotFound`` if never seen."""
        ...

    # positions and trades ----------------------------------------------------
    async def list_positions(
        self,
        *,
        agent_id: str | None,
        status: str | None,
        limit: int,
        offset: int,
        owner: str | None = None,
    ) -> list[dict[str, Any]]:
        """Positions, newest first; ``status`` is ``"open"``, ``"closed"`` or ``None`` (all)."""
        ...

    async def get_position(self, position_id: str, *, owner: str | None = None) -> dict[str, Any]:
        """One position; ``NotFound`` if absent."""
        ...

    async def close_position(self, position_id: str, *, owner: str | None = None) -> dict[str, Any]:
        """Sell the whole position now; ``Conflict`` if it is already closed."""
        ...

    async def list_trades(
        self,
        *,
        agent_id: str | None,
        limit: int,
        offset: int,
        owner: str | None = None,
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
