"""Typed start-up settings: defaults, then a TOML file, then the environment, then flags.

Every section is a frozen pydantic model that rejects unknown keys, so a typo
fails at start-up instead of silently falling back to a default. The layering is
a small explicit function (no pydantic-settings) so that every value remembers
where it came from, and a bad configuration produces ONE
:class:`~valux.errors.ConfigurationError` that lists every problem, each with
its dotted key, what is wrong and its source::

    invalid settings (2 problems):
      - api.port: Input should be less than or equal to 65535 (got 70000 from env VALUX_API__PORT)
      - api.prot: unknown setting; did you mean api.port? (from file valux.toml)

Layers, lowest to highest precedence:

1. the defaults written below;
2. an optional TOML file (``load_settings(config_file=...)``);
3. the environment: ``VALUX_<SECTION>__<FIELD>`` (double underscore between
   levels, case-insensitive, e.g. ``VALUX_API__PORT=9000``,
   ``VALUX_FEEDS__SIMULATED__SEED=7``, ``VALUX_DATA_DIR=/srv/valux``), plus the
   well-known ``DATABASE_URL``, ``REDIS_URL`` and ``RAY_ADDRESS``. The specific
   ``VALUX_DATABASE__URL`` beats the generic ``DATABASE_URL`` when both are set.
   A value that starts with ``[`` or ``{`` is parsed as JSON (for lists such as
   ``VALUX_FEEDS__SIMULATED__TOKENS``); an empty value means "unset" (``None``)
   for optional settings;
4. flag overrides from the command line, passed by the caller as a mapping of
   dotted keys (``{"api.port": 0}``); wrap a value in :class:`FromFlag` to name
   the flag in error messages (``FromFlag(0, "--port")``).
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TypeAlias
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from valux.errors import ConfigurationError

__all__ = [
    "ApiSettings",
    "AuthSettings",
    "CustodySettings",
    "DatabaseSettings",
    "FeedSettings",
    "FromFlag",
    "HostingSettings",
    "JournalSettings",
    "JupiterSettings",
    "LoggingSettings",
    "ManualFeedSettings",
    "PaperVenueSettings",
    "PlacementSettings",
    "RaySettings",
    "ReconcileSettings",
    "RedisSettings",
    "ReplayFeedSettings",
    "Settings",
    "SimToken",
    "SimulatedFeedSettings",
    "SolanaSettings",
    "SupervisionSettings",
    "VenueSettings",
    "env_var_for",
    "load_settings",
    "redact_url",
]

ENV_PREFIX = "VALUX_"
# Generic variables other tools also read; the VALUX_ spelling wins over these.
WELL_KNOWN_ENV: dict[str, tuple[str, ...]] = {
    "DATABASE_URL": ("database", "url"),
    "REDIS_URL": ("redis", "url"),
    "RAY_ADDRESS": ("ray", "address"),
}

Port = Annotated[int, Field(ge=0, le=65535)]
PositiveFloat = Annotated[float, Field(gt=0)]


class _Section(BaseModel):
    """Base of every settings model: frozen, keyword-only, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    @field_validator("*", mode="before")
    @classmethod
    def _empty_string_is_none(cls, value: Any, info: ValidationInfo) -> Any:
        """An empty string (``VALUX_RAY__ADDRESS=``) unsets an optional setting."""
        if value == "" and info.field_name is not None:
            annotation = cls.model_fields[info.field_name].annotation
            if _admits_none(annotation):
                return None
        return value


def _admits_none(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return type(None) in typing.get_args(annotation)
    return annotation is type(None)


def _cross_field_error(message: str, *fields: str) -> PydanticCustomError:
    """A model-level error that names the fields involved, so each one's source is shown."""
    # Braces would be read as template placeholders by pydantic.
    template = message.replace("{", "{{").replace("}", "}}")
    return PydanticCustomError("cross_field", template, {"fields": fields})


def _expand_user(value: Any) -> Any:
    return Path(value).expanduser() if isinstance(value, str | Path) else value


# --------------------------------------------------------------------------- ray


class RaySettings(_Section):
    """How valux finds or starts Ray."""

    address: str | None = None
    """Address of an existing cluster (``auto``, ``host:6379``, ``ray://…``); env ``RAY_ADDRESS``.
    None = start a local Ray instance."""
    namespace: str = Field(default="valux", min_length=1)
    dashboard_host: str = Field(default="127.0.0.1", min_length=1)
    """Localhost unless the operator opts in (the dashboard can control the cluster)."""
    dashboard_port: Port = 8265


# ---------------------------------------------------------------------- database


class DatabaseSettings(_Section):
    """PostgreSQL holding the journal, snapshots and read models."""

    url: str | None = None
    """``postgresql://user:password@host:5432/db``; env ``DATABASE_URL``.
    None = the embedded PostgreSQL under ``data_dir/postgres``."""
    pool_min_size: int = Field(default=1, ge=0)
    pool_max_size: int = Field(default=4, ge=1)
    connect_timeout_s: PositiveFloat = 10.0
    api_command_timeout_s: PositiveFloat = 10.0
    """The API's bound on PostgreSQL: a query it leaves unanswered this long, a new
    connection it does not accept this fast, a wait this long for a free connection of
    the pool fail (a call so answers within two to three times this), and the request
    answers 503 (database unreachable) instead of waiting out a hung database (a
    blackhole) up to the request timeout. A write that timed out
    may still have been applied. Migrations at start are not bounded by it."""

    @field_validator("url")
    @classmethod
    def _postgres_scheme(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("postgres", "postgresql"):
            raise ValueError("must be a postgresql:// or postgres:// URL")
        return value

    @model_validator(mode="after")
    def _pool_bounds(self) -> Self:
        if self.pool_min_size > self.pool_max_size:
            raise _cross_field_error(
                f"pool_min_size ({self.pool_min_size}) must not exceed "
                f"pool_max_size ({self.pool_max_size})",
                "pool_min_size",
                "pool_max_size",
            )
        return self


# ------------------------------------------------------------------------- redis


class RedisSettings(_Section):
    """Redis shared by API processes (nonces, rate limits, pub/sub fan-out)."""

    url: str | None = None
    """``redis://…``, ``rediss://…`` or ``unix:///path``; env ``REDIS_URL``.
    None = the embedded Redis under ``data_dir/redis``."""

    @field_validator("url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value


# --------------------------------------------------------------------------- api


class ApiSettings(_Section):
    """The aiohttp API."""

    host: str = Field(default="127.0.0.1", min_length=1)
    port: Port = 8080
    """0 = pick a free port (the chosen one is logged)."""
    shutdown_timeout_s: PositiveFloat = 10.0
    max_body_bytes: int = Field(default=1_048_576, ge=1)
    actor_retry_s: float = Field(default=8.0, ge=0)
    """How long a request waits for a restarting actor (about 2 s here) before it answers
    503 with ``Retry-After``."""
    allowed_hosts: tuple[str, ...] = ("127.0.0.1", "localhost", "::1")
    """Host names the API answers to (the ``Host`` header, port ignored): anything else is
    refused with 400, which stops DNS rebinding. ``api.host`` is added when it is one
    address; ``.example.com`` also matches its subdomains; ``*`` matches every host.
    ``/health/live`` and ``/health/ready`` answer any host (probes)."""
    cors_origins: tuple[str, ...] = ()
    """Browser origins (``https://app.example``) allowed to call the API cross-origin
    (CORS) and to send state-changing requests and WebSocket handshakes with an ``Origin``
    header. Empty: same-origin pages and non-browser clients only."""
    trust_forwarded_for: bool = False
    """Take the client address for rate limits and the audit log from the first
    ``X-Forwarded-For`` entry (only behind a reverse proxy that sets it)."""
    manual_feed_max_skew_s: float = Field(default=5.0, ge=0)
    """Timestamps pushed to the manual price feed are clamped to now ± this many seconds,
    so a caller cannot move the rules' clock."""

    @field_validator("allowed_hosts", "cors_origins")
    @classmethod
    def _lower(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(v.strip().lower().rstrip("/") for v in values if v.strip())

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        for value in values:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.path:
                raise ValueError(f"{value!r} is not an origin like https://app.example")
        return values


# -------------------------------------------------------------------------- auth

_EMAIL = r"^[^@\s]{1,64}@[^@\s]{1,255}$"


class AuthSettings(_Section):
    """Users, sessions, API keys and webhooks (README, "Security model")."""

    key_file: Path | None = None
    """The JWT signing key (64 random bytes, mode 0600), created on first start; it also
    encrypts webhook secrets at rest. None = ``data_dir/auth/jwt.key``. Every API process
    must read the same key; deleting it signs everyone out and voids webhook secrets."""
    access_token_ttl_s: int = Field(default=900, ge=60, le=86_400)
    refresh_token_ttl_days: int = Field(default=30, ge=1, le=365)
    open_registration: bool = True
    """``POST /api/v1/auth/register`` creates accounts; false: only ``valux user create``
    (and a first wallet sign-in, see ``wallet_signup``) does."""
    wallet_signup: bool = True
    """A first wallet sign-in (SIWE / SIWS) creates its user."""
    admin_email: str = Field(default="admin@localhost", pattern=_EMAIL)
    """The e-mail of the admin created at first start (its password is printed once)."""
    max_failed_logins: int = Field(default=5, ge=1)
    """Failed password logins within ``lockout_minutes`` that lock the account."""
    lockout_minutes: float = Field(default=15.0, gt=0)
    password_time_cost: int = Field(default=3, ge=1)
    """argon2id passes (RFC 9106: 3 passes over 64 MiB, 4 lanes)."""
    password_memory_kib: int = Field(default=65_536, ge=8)
    password_parallelism: int = Field(default=4, ge=1)
    signin_domains: tuple[str, ...] = ()
    """Domains (``app.example``, ``localhost:5173``) a SIWE / SIWS message may name. Empty:
    the request's ``Host`` and the hosts of ``api.cors_origins``."""
    siwe_chain_ids: tuple[int, ...] = (1, 42161)
    """EVM chains a Sign-In-With-Ethereum message may be bound to."""
    siws_chains: tuple[str, ...] = ("mainnet", "devnet")
    """Solana clusters a Sign-In-With-Solana message may be bound to."""
    nonce_ttl_s: int = Field(default=300, ge=30, le=3600)
    webhook_window_s: int = Field(default=300, ge=10, le=3600)
    """How far a webhook's signed timestamp may be from now (replay window)."""
    rate_limit_window_s: float = Field(default=60.0, gt=0)
    auth_per_ip: int = Field(default=60, ge=1)
    """Requests to the auth routes per client address per window."""
    auth_per_account: int = Field(default=10, ge=1)
    """Login attempts per e-mail or wallet address per window."""
    signals_per_ip: int = Field(default=6000, ge=1)
    signals_per_user: int = Field(default=3000, ge=1)

    @field_validator("key_file", mode="before")
    @classmethod
    def _expand(cls, value: Any) -> Any:
        return _expand_user(value)

    @field_validator("signin_domains")
    @classmethod
    def _domains(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(v.strip().lower() for v in values if v.strip())

    @field_validator("siws_chains")
    @classmethod
    def _chains(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        known = ("mainnet", "testnet", "devnet", "localnet")
        out = tuple(v.removeprefix("solana:") for v in values)
        bad = [v for v in out if v not in known]
        if bad:
            raise ValueError(f"unknown Solana cluster {bad[0]!r}; use {', '.join(known)}")
        return out


# ---------------------------------------------------------------------- hosting


class HostingSettings(_Section):
    """How many logical actors one Ray actor process hosts (DESIGN.md, "Logical actors")."""

    agents_per_host: int = Field(default=200, ge=1)
    """1 = one process per agent, visible one by one in the Ray dashboard. Each agent's
    wallet lives in its agent's host process."""
    evaluators: int = Field(default=2, ge=1)


# -------------------------------------------------------------------- placement

ActorKind: TypeAlias = Literal["root", "supervisor", "agent", "evaluator", "exchange", "feed"]


class PlacementSettings(_Section):
    """Where each kind of actor runs on a cluster of several nodes (README, "Operations").
    Nothing to set on one machine."""

    resources: dict[ActorKind, dict[str, float]] = Field(default_factory=dict)
    """Ray custom resources each kind of actor asks for, e.g. ``{"evaluator":
    {"valux_eval": 0.01}}``: only nodes started with ``ray start --resources
    '{"valux_eval": 100}'`` then run evaluators. A kind not named runs anywhere."""
    spread_agent_hosts: bool = True
    """Place agent hosts with Ray's ``SPREAD`` strategy, over every node that may run them
    (else Ray packs them where it likes)."""

    @field_validator("resources")
    @classmethod
    def _amounts(cls, value: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        for kind, wanted in value.items():
            for name, amount in wanted.items():
                if not name or amount <= 0:
                    raise ValueError(f"{kind}: resource {name!r} needs an amount > 0")
        return value


# ---------------------------------------------------------------------- journal


class JournalSettings(_Section):
    """Snapshot cadence and group commit of journal appends."""

    snapshot_every_events: int = Field(default=100, ge=1)
    snapshot_every_s: PositiveFloat = 60.0
    group_commit_window_ms: float = Field(default=0.0, ge=0)
    commit_timeout_ms: float = Field(default=2000.0, gt=0)
    """PostgreSQL answering nothing for this long is a database outage (a hang): the
    commit waiting buffers (an exit) or is refused (an entry), and later commits do not
    wait. A database that is busy but still answering is waited for; a single group
    transaction must never legitimately take this long."""
    spool: bool = True
    """Mirror the outage buffer on local disk (``data_dir/spool``, fsync'd before an exit
    proceeds), so a host that dies during an outage and restarts on the same machine
    writes its buffered exits first instead of losing them."""


class ReconcileSettings(_Section):
    """The permanent reconciliation of every agent host (valux.trading.reconciliation)."""

    interval_s: PositiveFloat = 1.0
    """How often a round runs."""
    pending_after_s: float = Field(default=2.0, ge=0)
    """An intent in flight longer than this is resolved by querying its wallet."""
    audit_every_s: PositiveFloat = 10.0
    """How often each agent's custody is audited (wallet vs positions vs journal)."""


# ------------------------------------------------------------------ supervision


class SupervisionSettings(_Section):
    """Restart intensity (at most R restarts in T seconds), hang detection, shutdown."""

    restart_intensity: int = Field(default=5, ge=0)
    restart_period_s: PositiveFloat = 60.0
    ping_interval_s: PositiveFloat = 2.0
    ping_timeout_s: PositiveFloat = 5.0
    step_timeout_s: PositiveFloat = 10.0
    """Time allowed for each step of an orderly shutdown."""


# ------------------------------------------------------------------------ feeds


class SimToken(_Section):
    """One token of the simulated feed: a geometric Brownian motion priced in the quote asset."""

    symbol: str = Field(min_length=1, max_length=32, pattern=r"^\S+$")
    start_price: Decimal = Field(gt=0)
    drift: float = 0.0
    """Annualised drift (0.1 = +10 % a year on average)."""
    volatility: float = Field(default=0.5, ge=0)
    """Annualised volatility (0.5 = 50 %)."""


def _default_sim_tokens() -> tuple[SimToken, ...]:
    # Prices in SOL, roughly where these traded with SOL near $150.
    return (
        SimToken(symbol="BONK", start_price=Decimal("0.00000015"), volatility=1.5),
        SimToken(symbol="WIF", start_price=Decimal("0.012"), volatility=1.4),
        SimToken(symbol="JUP", start_price=Decimal("0.0055"), volatility=0.9),
        SimToken(symbol="POPCAT", start_price=Decimal("0.0035"), volatility=1.6),
        SimToken(symbol="PYTH", start_price=Decimal("0.0021"), volatility=0.9),
    )


class SimulatedFeedSettings(_Section):
    """Seeded random-walk prices: the zero-configuration default feed."""

    enabled: bool = True
    seed: int = 42
    interval_ms: int = Field(default=200, ge=1)
    tokens: tuple[SimToken, ...] = Field(default_factory=_default_sim_tokens)

    @field_validator("tokens")
    @classmethod
    def _unique_symbols(cls, tokens: tuple[SimToken, ...]) -> tuple[SimToken, ...]:
        symbols = [t.symbol for t in tokens]
        duplicates = sorted({s for s in symbols if symbols.count(s) > 1})
        if duplicates:
            raise ValueError(f"duplicate token symbols: {', '.join(duplicates)}")
        return tokens


class ManualFeedSettings(_Section):
    """Prices pushed by an operator through the API (tests, demos)."""

    enabled: bool = False


class ReplayFeedSettings(_Section):
    """Replay of recorded ticks from a CSV or Parquet file."""

    path: Path | None = None
    """None = replay disabled. A relative path is relative to the working directory."""
    speed: float = Field(default=1.0, ge=0)
    """1 = real time, 10 = ten times faster, 0 = as fast as possible."""

    @field_validator("path", mode="before")
    @classmethod
    def _expand(cls, value: Any) -> Any:
        return _expand_user(value)


class HttpFeedSettings(_Section):
    """A price API polled over HTTP (Jupiter Price API v3, DexScreener) or streamed (Pyth
    Hermes): one PriceFeed actor each, when enabled."""

    enabled: bool = False
    url: str | None = None
    """Base URL; None = the public service (Jupiter: ``jupiter.price_url`` or
    ``jupiter.url``)."""
    interval_s: PositiveFloat = 2.0
    """Seconds between polls (a 429 backs off, honouring ``Retry-After``)."""
    tokens: dict[str, str] = Field(default_factory=dict)
    """Always followed: ``{name: address}`` (Pyth: ``{name: feed id}``); ticks carry the
    name. A mint named by itself (``{mint: mint}``) is what a live agent's positions use."""
    follow_positions: bool = True
    """Also follow every token with open positions whose name is an address of the
    source's chain (a live agent's mints), refreshed every ``refresh_s``."""
    refresh_s: PositiveFloat = 2.0


class PythFeedSettings(HttpFeedSettings):
    """Pyth Hermes' SSE stream (``tokens``: ``{name: feed id}``, priced in the quote asset
    through ``quote_feed``, SOL/USD by default); it follows no positions (mints have no
    Pyth feed)."""

    follow_positions: bool = False
    quote_feed: str = "ef0d8b6fda2ceba41da15d4095d1da392a0d2f8ed0c6c7bc0f4cfac8c280b56d"


class DexScreenerFeedSettings(HttpFeedSettings):
    """DexScreener's token pairs (and the market cap and liquidity eligibility reads) on
    ``chain``: ``solana`` (mints, priced in SOL) or ``arbitrum`` (token addresses, priced
    in WETH)."""

    interval_s: PositiveFloat = 1.0
    chain: Literal["solana", "arbitrum"] = "solana"


class FeedSettings(_Section):
    """Price sources."""

    simulated: SimulatedFeedSettings = Field(default_factory=SimulatedFeedSettings)
    manual: ManualFeedSettings = Field(default_factory=ManualFeedSettings)
    replay: ReplayFeedSettings = Field(default_factory=ReplayFeedSettings)
    jupiter: HttpFeedSettings = Field(default_factory=HttpFeedSettings)
    dexscreener: DexScreenerFeedSettings = Field(default_factory=DexScreenerFeedSettings)
    pyth: PythFeedSettings = Field(default_factory=PythFeedSettings)
    uniswap: HttpFeedSettings = Field(default_factory=lambda: HttpFeedSettings(interval_s=1.0))
    """Uniswap V3 pool prices from ``slot0`` on the ``evm`` chain: ``tokens`` are ``{name:
    pool address}``; open positions' token addresses are followed through their deepest
    WETH pool; ``url`` a ``ws://`` endpoint to follow new blocks (else polled)."""
    stale_after_s: PositiveFloat = 10.0
    """A feed whose last tick is older than this is not fresh (readiness fails)."""
    on_silent: Literal["keep", "exit"] = "keep"
    """A token with open positions and no tick for ``stale_after_s``: ``keep`` its last
    stops (and report the positions as unprotected in health), or ``exit`` them at the
    last price."""


# ------------------------------------------------------------------------ venue


class PaperVenueSettings(_Section):
    """The paper venue: simulated fills with fees, size-dependent slippage and failures."""

    fee_bps: int = Field(default=30, ge=0, le=10_000)
    slippage_bps_per_unit: float = Field(default=10.0, ge=0)
    """Slippage in bps per unit of ``size / depth_quote``: it grows with order size."""
    depth_quote: Decimal = Field(default=Decimal("1000"), gt=0)
    latency_ms: float = Field(default=0.0, ge=0)
    failure_rate: float = Field(default=0.0, ge=0, le=1)
    unknown_rate: float = Field(default=0.0, ge=0, le=1)
    """Share of orders whose outcome is unknown at first and must be resolved by querying."""
    network_fee: Decimal = Field(default=Decimal("0.000005"), ge=0)
    """Per-transaction network fee in the quote asset."""
    simulated_clock: bool = False
    """Stamp fills with market-data time (the timestamp of the newest price the exchange
    has seen) instead of wall time: backtests run on the replayed file's clock."""
    database_url: str | None = None
    """Where the paper exchange keeps its books; unset: valux's own database. (A chaos run
    points it past the proxy that cuts valux off from PostgreSQL: an exchange's books do
    not go down with its client's.)"""

    @model_validator(mode="after")
    def _rates_sum(self) -> Self:
        if self.failure_rate + self.unknown_rate > 1:
            raise _cross_field_error(
                f"failure_rate + unknown_rate ({self.failure_rate} + {self.unknown_rate}) "
                "must not exceed 1",
                "failure_rate",
                "unknown_rate",
            )
        return self


class VenueSettings(_Section):
    """Where orders go."""

    kind: Literal["paper"] = "paper"
    paper: PaperVenueSettings = Field(default_factory=PaperVenueSettings)
    quote_asset: str = Field(default="SOL", min_length=1)


# ----------------------------------------------------------------------- chains


class SolanaSettings(_Section):
    """The Solana RPC that live (Jupiter) wallets send, confirm and read through."""

    rpc_url: str = "https://api.mainnet-beta.solana.com"
    """A JSON-RPC endpoint (``valux sandbox`` prints a local one)."""
    timeout_s: PositiveFloat = 10.0
    confirm_poll_s: PositiveFloat = 0.2
    """How often a sent transaction's status is asked for until it lands (a slot is
    ~0.4 s: polling slower adds up to this much to every swap)."""
    rebroadcast_s: PositiveFloat = 2.0
    """How often an unconfirmed transaction is sent again (the same bytes)."""


class JupiterSettings(_Section):
    """Jupiter's Swap API (``/swap/v1``) and Price API (``/price/v3``)."""

    url: str = "https://api.jup.ag"
    price_url: str | None = None
    """Price API base URL (``/price/v3`` is appended); None = ``url``."""
    api_key: str | None = None
    """Sent as ``x-api-key``. A secret: give it through the environment
    (``VALUX_JUPITER__API_KEY``); actors read it from theirs, never from their arguments."""
    slippage_bps: int = Field(default=50, ge=0, lt=10_000)
    """Default slippage bound of a swap (an agent's ``purchaseLimits`` may not widen it)."""
    priority_level: Literal["medium", "high", "veryHigh"] = "veryHigh"
    max_priority_fee_lamports: int = Field(default=1_000_000, ge=0)
    """Cap of the priority fee Jupiter may set (and the wallet checks)."""


class EvmSettings(_Section):
    """The EVM chain (Arbitrum One) live Uniswap wallets trade on. Defaults: Arbitrum
    mainnet's Uniswap V3 deployment; ``valux sandbox`` prints its own."""

    rpc_url: str = "https://arb1.arbitrum.io/rpc"
    """JSON-RPC endpoint (HTTP)."""
    chain_id: int = Field(default=42161, ge=1)
    """Transactions are signed for this chain only; a node on another is refused."""
    router: str = "0x68b3465833fb72A70ecDF485E0e4C7bD8665Fc45"
    """SwapRouter02."""
    quoter: str = "0x61fFE014bA17989E743c5F6cB21bF9697530B21e"
    """QuoterV2."""
    factory: str | None = "0x1F98431c8aD98523631AE4a59f267346ea31F984"
    """The V3 factory (pools for prices and mid prices)."""
    weth: str = "0x82aF49447D8a07e3bd95BD0d56f35241523fBab1"
    quote_asset: str = Field(default="WETH", min_length=1)
    """What EVM wallets are quoted in: its symbol, and ``quote_token`` its address (None:
    WETH's)."""
    quote_token: str | None = None
    slippage_bps: int = Field(default=50, ge=0, lt=10_000)
    confirm_poll_s: PositiveFloat = 0.25
    """How often a sent transaction's receipt is asked for."""
    replace_after_blocks: int = Field(default=3, ge=1)
    """A transaction not mined after this many blocks is replaced (same nonce, ≥ 10 %
    more fee)."""
    timeout_s: PositiveFloat = 10.0


class CustodySettings(_Section):
    """Keys of live wallets (README, "Security model")."""

    unlock_ttl_s: PositiveFloat = 3600.0
    """How long an unlock lasts by default (new entries stop after it; exits of open
    positions still sign until a forced lock)."""
    max_unlock_ttl_s: PositiveFloat = 86_400.0
    scrypt_n: int = Field(default=2**17, ge=2**10)
    """scrypt cost of new key records (2**17: OWASP's minimum, ~0.4 s here)."""
    chain_audit_every_s: PositiveFloat = 30.0
    """How often a live wallet's on-chain balances are compared with its journal."""


# ---------------------------------------------------------------------- logging


class LoggingSettings(_Section):
    """structlog output of every valux process."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"

    @field_validator("level", "format", mode="before")
    @classmethod
    def _case(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


# --------------------------------------------------------------------- settings


def _default_data_dir() -> Path:
    return Path("~/.valux").expanduser()


class Settings(_Section):
    """All start-up settings of valux. Build it with :func:`load_settings`."""

    ray: RaySettings = Field(default_factory=RaySettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    data_dir: Path = Field(default_factory=_default_data_dir)
    """Embedded PostgreSQL and Redis data, caches. ``~`` is expanded."""
    hosting: HostingSettings = Field(default_factory=HostingSettings)
    placement: PlacementSettings = Field(default_factory=PlacementSettings)
    journal: JournalSettings = Field(default_factory=JournalSettings)
    reconcile: ReconcileSettings = Field(default_factory=ReconcileSettings)
    supervision: SupervisionSettings = Field(default_factory=SupervisionSettings)
    feeds: FeedSettings = Field(default_factory=FeedSettings)
    venue: VenueSettings = Field(default_factory=VenueSettings)
    solana: SolanaSettings = Field(default_factory=SolanaSettings)
    jupiter: JupiterSettings = Field(default_factory=JupiterSettings)
    custody: CustodySettings = Field(default_factory=CustodySettings)
    evm: EvmSettings = Field(default_factory=EvmSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)

    _sources: dict[str, str] = PrivateAttr(default_factory=dict)

    @field_validator("data_dir", mode="before")
    @classmethod
    def _expand(cls, value: Any) -> Any:
        return _expand_user(value)

    def __eq__(self, other: object) -> bool:
        """Equal when every setting is equal, wherever the values came from."""
        if not isinstance(other, Settings):
            return NotImplemented
        return type(self) is type(other) and self.__dict__ == other.__dict__

    def __hash__(self) -> int:
        return hash(tuple(self.__dict__.values()))

    def source_of(self, key: str) -> str:
        """Where the value of the dotted ``key`` came from: ``env DATABASE_URL``, ``default``…"""
        return _source_for(self._sources, tuple(key.split(".")))

    def redacted(self) -> dict[str, Any]:
        """All settings as JSON-ready data, passwords in URLs replaced by ``***``.

        Safe to log at start-up.
        """
        data = self.model_dump(mode="json")
        for section in ("database", "redis"):
            url = data[section]["url"]
            if url is not None:
                data[section]["url"] = redact_url(url)
        if self.ray.address is not None:
            data["ray"]["address"] = redact_url(self.ray.address)
        return data


def redact_url(url: str) -> str:
    """``postgresql://u:secret@h/db`` → ``postgresql://u:***@h/db``; other URLs unchanged."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    if not password:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{user}:***@{host}" + (f":{port}" if port is not None else "")
    return urlunsplit(parts._replace(netloc=netloc))


def env_var_for(key: str) -> str:
    """The environment variable that sets the dotted ``key``: ``api.port`` → ``VALUX_API__PORT``."""
    return ENV_PREFIX + "__".join(part.upper() for part in key.split("."))


# --------------------------------------------------------------------- layering


@dataclass(frozen=True)
class FromFlag:
    """A flag override that remembers its flag, for error messages: ``FromFlag(0, "--port")``."""

    value: Any
    flag: str


KeyPath = tuple[str, ...]


class _Layers:
    """The merged raw data of all layers, and the source of every value set."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.sources: dict[str, str] = {}
        self.problems: list[str] = []

    def set(self, path: KeyPath, value: Any, source: str) -> None:
        node = self.data
        for depth, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None or not isinstance(child, dict):
                if child is not None:
                    # A scalar set by a lower layer is replaced by this table.
                    self._forget(path[: depth + 1])
                child = {}
                node[part] = child
            node = child
        if isinstance(value, Mapping):
            for key, item in value.items():
                self.set((*path, str(key)), item, source)
            return
        self._forget(path)
        node[path[-1]] = value
        self.sources[".".join(path)] = source

    def _forget(self, path: KeyPath) -> None:
        """Drop the sources recorded at and below ``path`` (they are being replaced)."""
        prefix = ".".join(path)
        for key in [k for k in self.sources if k == prefix or k.startswith(prefix + ".")]:
            del self.sources[key]


def _source_for(sources: Mapping[str, str], path: KeyPath) -> str:
    for end in range(len(path), 0, -1):
        source = sources.get(".".join(path[:end]))
        if source is not None:
            return source
    prefix = ".".join(path) + "."
    below = sorted({s for k, s in sources.items() if k.startswith(prefix)})
    if below:
        return "; ".join(below)
    return "default"


def _read_toml(config_file: Path) -> dict[str, Any]:
    try:
        text = config_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigurationError(f"config file {config_file} does not exist") from None
    except IsADirectoryError:
        raise ConfigurationError(f"config file {config_file} is a directory") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"config file {config_file} cannot be read: {exc}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # The message ends with "(at line L, column C)".
        raise ConfigurationError(f"config file {config_file} is not valid TOML: {exc}") from None


def _parse_env_value(raw: str) -> Any:
    stripped = raw.strip()
    if stripped[:1] in ("[", "{"):
        try:
            return json.loads(stripped)
        except json.JSONDecodeError:
            return raw  # validation reports it against the expected type
    return raw


_ENV_SEGMENT = re.compile(r"^[a-z][a-z0-9_]*$")


def _env_layer(env: Mapping[str, str], layers: _Layers) -> None:
    # Generic spellings first so that the specific VALUX_ spelling wins.
    for name, path in WELL_KNOWN_ENV.items():
        value = env.get(name)
        if value is not None and value != "":
            layers.set(path, value, f"env {name}")
    for name in sorted(env):
        if not name.upper().startswith(ENV_PREFIX):
            continue
        parts = tuple(name[len(ENV_PREFIX) :].lower().split("__"))
        if not all(_ENV_SEGMENT.match(part) for part in parts):
            layers.problems.append(
                f"env {name}: not a setting name (use VALUX_<SECTION>__<FIELD>, "
                "e.g. VALUX_API__PORT)"
            )
            continue
        layers.set(parts, _parse_env_value(env[name]), f"env {name}")


def _override_layer(overrides: Mapping[str, Any], layers: _Layers) -> None:
    for key, raw in overrides.items():
        if isinstance(raw, FromFlag):
            value, source = raw.value, f"flag {raw.flag}"
        else:
            value, source = raw, f"override {key}"
        parts = tuple(key.split("."))
        if not all(parts):
            layers.problems.append(f"{source}: {key!r} is not a dotted setting name")
            continue
        layers.set(parts, value, source)


def _all_keys(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    for name, field in model.model_fields.items():
        yield prefix + name
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _all_keys(annotation, f"{prefix}{name}.")


def _dotted(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def _show(value: Any, key: str) -> str:
    if isinstance(value, str) and key.endswith("url"):
        value = redact_url(value)
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _field_source(field: str, source: str) -> str:
    return f"{field} default" if source == "default" else f"{field} from {source}"


def _describe(error: ErrorDetails, sources: Mapping[str, str]) -> str:
    loc = tuple(error["loc"])
    key = _dotted(loc) or "(settings)"
    path = tuple(str(p) for p in loc if isinstance(p, str))
    source = _source_for(sources, path)
    if error["type"] == "extra_forbidden":
        message = "unknown setting"
        parent = ".".join(path[:-1])
        known = list(_all_keys(Settings))
        # Not the enclosing section itself ("journal" for "journal.x").
        candidates = [k for k in known if not key.startswith(k + ".")]
        close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.75)
        if close:
            suggestion = close[0]
            if source.startswith(f"env {ENV_PREFIX}"):
                suggestion = env_var_for(suggestion)
            message += f"; did you mean {suggestion}?"
        elif parent and parent in known:
            siblings = [k.rsplit(".", 1)[-1] for k in known if k.startswith(parent + ".")]
            siblings = [s for s in siblings if "." not in s]
            message += f" in {parent} (known: {', '.join(siblings)})"
        return f"{key}: {message} (from {source})"
    message = error["msg"].removeprefix("Value error, ")
    fields = (error.get("ctx") or {}).get("fields")
    if error["type"] == "cross_field" and fields:
        where = "; ".join(_field_source(f, _source_for(sources, (*path, f))) for f in fields)
        return f"{key}: {message} ({where})"
    if source == "default":
        return f"{key}: {message} (default)"
    if error["type"] == "missing" or isinstance(error["input"], Mapping):
        return f"{key}: {message} (from {source})"
    return f"{key}: {message} (got {_show(error['input'], key)} from {source})"


def load_settings(
    *,
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build :class:`Settings` from defaults, ``config_file``, ``env`` and ``overrides``.

    ``env`` defaults to ``os.environ``. ``overrides`` maps dotted keys to values
    (plain or :class:`FromFlag`) and wins over everything else.

    Raises :class:`~valux.errors.ConfigurationError` with one line per problem
    (unknown key, invalid value, malformed environment name) naming the dotted
    key, what is wrong and the value's source; a missing or unparsable config
    file is reported on its own, naming the file (and line).
    """
    layers = _Layers()
    if config_file is not None:
        for key, value in _read_toml(config_file).items():
            layers.set((key,), value, f"file {config_file}")
    _env_layer(os.environ if env is None else env, layers)
    if overrides:
        _override_layer(overrides, layers)

    problems = list(layers.problems)
    settings: Settings | None = None
    try:
        settings = Settings.model_validate(layers.data)
    except ValidationError as exc:
        problems.extend(_describe(error, layers.sources) for error in exc.errors())
    if problems or settings is None:
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ConfigurationError(f"invalid settings ({count}):\n{lines}")
    settings._sources = dict(layers.sources)
    return settings
