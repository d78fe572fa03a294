"""Request models of the HTTP API: the single source of validation and of OpenAPI.

Every body and query string the API accepts is one frozen pydantic model with
``extra="forbid"``; the handlers validate with it and :mod:`valux.api.openapi`
renders its JSON schema, so the documentation cannot drift from the checks.

Money and sizes are :class:`~decimal.Decimal`, accepted as JSON strings or
numbers. Bodies are parsed with ``json.loads(parse_float=Decimal)`` so a number
such as ``0.1`` is never rounded through a float on the way in. Integers that
mean counts (``strength``, ``holder_count``) are strict: ``"3"`` or ``3.0`` are
refused rather than guessed at.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
"""Identifiers chosen by clients (signal, agent ids): 1–128 of ``[A-Za-z0-9._:-]``."""

ID_RE = re.compile(ID_PATTERN)

# Guards against absurd magnitudes (``1e999999``) that are valid decimals but make
# arithmetic slow or meaningless downstream.
_MAX_EXPONENT = 40
_MAX_DIGITS = 60


def _bounded(value: Decimal) -> Decimal:
    sign, digits, exponent = value.as_tuple()
    del sign
    if not isinstance(exponent, int):  # pragma: no cover - NaN/Inf refused earlier
        raise ValueError("must be a finite number")
    if len(digits) > _MAX_DIGITS or abs(exponent) > _MAX_EXPONENT:
        raise ValueError("number has too many digits or too large an exponent")
    if value.adjusted() > 18:
        raise ValueError("must be below 1e19")
    return value


Id = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
"""A client-chosen identifier."""

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Token = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^\S+$")]
"""A token address or symbol: 1–64 characters without whitespace."""

Asset = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,32}$")]

PositiveDecimal = Annotated[
    Decimal,
    Field(gt=0, allow_inf_nan=False, json_schema_extra={"examples": ["1.5"]}),
    AfterValidator(_bounded),
]
"""A Decimal > 0, given as a JSON string (preferred) or number."""

NonNegativeDecimal = Annotated[
    Decimal,
    Field(ge=0, allow_inf_nan=False, json_schema_extra={"examples": ["0"]}),
    AfterValidator(_bounded),
]
"""A Decimal ≥ 0, given as a JSON string (preferred) or number."""

StrictCount = Annotated[int, Field(strict=True, ge=0)]

EventType = Literal["prices", "position", "trade"]
"""The kinds of WebSocket events (one Redis channel each)."""


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Query(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------- agents


class AgentCreate(_Body):
    """Body of ``POST /api/v1/agents``."""

    name: Name = Field(description="Display name, 1–100 characters.")
    config: dict[str, Any] | None = Field(
        default=None,
        description=(
            "Trading config, in valux snake_case or the reference camelCase shape; "
            "validated by the engine. Missing sections take the defaults."
        ),
    )
    balance: NonNegativeDecimal = Field(
        default=Decimal(0), description="Starting paper balance in the quote currency."
    )
    id: Id | None = Field(default=None, description="Client-chosen agent id; generated if absent.")
    venue: Literal["paper", "jupiter", "uniswap"] = Field(
        default="paper",
        description="Where it trades: ``paper`` (a paper wallet of its own holding ``balance``),"
        " ``jupiter`` (Solana) or ``uniswap`` (Arbitrum), from the live wallet ``wallet_id``;"
        " a live agent's signals name token mints / addresses.",
    )
    wallet_id: Id | None = Field(
        default=None, description="The live wallet of a ``jupiter`` agent (POST /api/v1/wallets)."
    )

    @model_validator(mode="after")
    def _wallet_for_live(self) -> AgentCreate:
        if (self.venue == "paper") != (self.wallet_id is None):
            raise ValueError("wallet_id is required for a live venue and absent for paper")
        if self.venue != "paper" and self.balance:
            raise ValueError("a live agent's balance is its wallet's: fund the wallet instead")
        return self


Passphrase = Annotated[str, StringConstraints(min_length=8, max_length=1024)]
"""A wallet passphrase: 8 characters or more (it is the only thing between a stolen
database and the keys)."""


class WalletCreate(_Body):
    """Body of ``POST /api/v1/wallets``: a new wallet, or an imported key."""

    chain: Literal["solana", "arbitrum"] = Field(description="The chain the wallet lives on.")
    passphrase: Passphrase = Field(description="Encrypts the key at rest (scrypt + AES-GCM).")
    secret: str | None = Field(
        default=None,
        max_length=4096,
        description="A key to import: Solana, a base58 secret or a CLI JSON keypair; Arbitrum,"
        " a 0x-hex private key. Absent: a new key is made.",
    )
    agent_id: Id | None = Field(
        default=None, description="The agent (not yet created) this wallet is for."
    )


class WalletUnlock(_Body):
    """Body of ``POST /api/v1/wallets/{id}/unlock``."""

    passphrase: Passphrase
    ttl_s: float | None = Field(
        default=None, gt=0, description="How long the unlock lasts (default custody.unlock_ttl_s)."
    )


class WalletLock(_Body):
    """Body of ``POST /api/v1/wallets/{id}/lock`` (may be empty)."""

    force: bool = Field(
        default=False,
        description="Wipe the key even while positions are open (their exits then fail).",
    )


class WalletExport(_Body):
    """Body of ``POST /api/v1/wallets/{id}/export``."""

    passphrase: Passphrase
    confirm: Literal[True] = Field(description="Must be true: the key is shown once.")


class SpendPolicyIn(_Body):
    """Body of ``PUT /api/v1/wallets/{id}/policy``: the wallet's spend policy (every limit
    must be said; ``null`` = no limit)."""

    max_per_order: Decimal | None = Field(description="Largest buy, in the quote asset.")
    max_per_day: Decimal | None = Field(description="Most spent on buys per UTC day.")
    allowed_tokens: list[Token] | None = Field(default=None, description="Mints; null = any.")
    max_price_impact: Decimal | None = Field(default=None, description="Fraction, e.g. 0.02.")
    max_exit_price_impact: Decimal | None = None
    max_priority_fee_lamports: int | None = None
    allowed_contracts: list[Token] | None = Field(
        default=None, description="EVM: every contract a swap may call or approve; null = any."
    )


class AgentPatch(_Body):
    """Body of ``PATCH /api/v1/agents/{id}``: at least one field."""

    name: Name | None = None
    config: dict[str, Any] | None = Field(
        default=None,
        description="Partial config, deep-merged into the current one (arrays replace).",
    )

    @model_validator(mode="after")
    def _not_empty(self) -> AgentPatch:
        if self.name is None and self.config is None:
            raise ValueError("give at least one of name, config")
        return self


class DepositIn(_Body):
    """Body of ``POST /api/v1/agents/{id}/wallet/deposit`` (paper wallets only)."""

    amount: PositiveDecimal
    asset: Asset = "SOL"


class StateIn(_Body):
    """Body of ``POST /api/v1/agents/{id}/state`` and ``POST /api/v1/risk/state``.

    ``ACTIVE``: normal trading. ``REDUCING``: no entries, every exit runs (what pause
    means). ``HALTED``: nothing runs, exits included; ``/health/ready`` lists the positions
    this leaves unprotected."""

    state: Literal["ACTIVE", "REDUCING", "HALTED"]
    reason: Annotated[str, StringConstraints(max_length=500)] | None = None


# -------------------------------------------------------------------- signals


class SignalMetrics(_Body):
    """Token metrics a signal may carry, used by the agents' metric bounds."""

    market_cap: NonNegativeDecimal | None = None
    liquidity: NonNegativeDecimal | None = None
    holder_count: StrictCount | None = None


class SignalIn(_Body):
    """A trading signal (body of ``POST /api/v1/signals``).

    ``id`` is chosen by the client and makes the call idempotent: the same id
    posted again is answered from the first result.
    """

    id: Id = Field(description="Client-chosen signal id; a repeat is a duplicate.")
    token: Token
    strength: Annotated[int, Field(strict=True, ge=1, le=5)]
    type: Annotated[str, StringConstraints(min_length=1, max_length=50)]
    size: PositiveDecimal | None = Field(
        default=None,
        description="Position size in the quote currency; computed by each agent if absent.",
    )
    metrics: SignalMetrics | None = None
    agents: Annotated[list[Id], Field(min_length=1, max_length=10_000)] | None = Field(
        default=None, description="Restrict the signal to these agent ids."
    )
    user: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None


# ------------------------------------------------------------ positions/trades

Limit = Annotated[int, Field(ge=1, le=1000)]
Offset = Annotated[int, Field(ge=0, le=10_000_000)]


class PositionsQuery(_Query):
    """Query string of ``GET /api/v1/positions``."""

    agent: Id | None = Field(default=None, description="Only this agent's positions.")
    status: Literal["open", "closed"] | None = None
    limit: Limit = 100
    offset: Offset = 0


class TradesQuery(_Query):
    """Query string of ``GET /api/v1/trades``."""

    agent: Id | None = Field(default=None, description="Only this agent's trades.")
    limit: Limit = 100
    offset: Offset = 0


# ---------------------------------------------------------------------- feeds


class TickIn(_Body):
    """One manual price tick."""

    token: Token
    price: PositiveDecimal = Field(description="Quote currency per token.")
    ts: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = Field(
        default=None, description="Unix time in seconds; the server's clock if absent."
    )


class TicksIn(_Body):
    """Body of ``POST /api/v1/feeds/manual/ticks``."""

    ticks: Annotated[list[TickIn], Field(min_length=1, max_length=10_000)]


# ------------------------------------------------------------------ users and auth

Email = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=3, max_length=254, pattern=r"^[^@\s]{1,64}@[^@\s]+$"
    ),
]
Password = Annotated[str, StringConstraints(min_length=1, max_length=1024)]
"""Any password is accepted for login; a *new* password must also meet the minimum."""
SignInText = Annotated[str, StringConstraints(min_length=1, max_length=4096)]
SignatureText = Annotated[str, StringConstraints(min_length=1, max_length=600)]
RefreshToken = Annotated[
    str, StringConstraints(min_length=16, max_length=256, pattern=r"^[A-Za-z0-9_-]+$")
]
ScopeName = Literal["read", "trade", "admin"]


def _default_scopes() -> list[ScopeName]:
    return ["read", "trade"]


class RegisterIn(_Body):
    """Body of ``POST /api/v1/auth/register``."""

    email: Email
    password: Password = Field(
        description="At least 10 characters; not a common password, not containing the e-mail."
    )


class LoginIn(_Body):
    """Body of ``POST /api/v1/auth/login``: ``{email, password}`` or ``{message, signature}``.

    A wallet login sends the EIP-4361 (Sign-In with Ethereum) or Sign-In with Solana
    message it signed, with a nonce from ``GET /api/v1/auth/nonce``, and the signature
    (EVM: 65 bytes as hex; Solana: 64 bytes as base58)."""

    email: Email | None = None
    password: Password | None = None
    message: SignInText | None = None
    signature: SignatureText | None = None


class WalletIn(_Body):
    """Body of ``POST /api/v1/auth/wallets``: a signed SIWE / SIWS message to link."""

    message: SignInText
    signature: SignatureText


class RefreshIn(_Body):
    """Body of ``POST /api/v1/auth/refresh``."""

    refresh_token: RefreshToken


class LogoutIn(_Body):
    """Body of ``POST /api/v1/auth/logout`` (optional).

    The access token used is revoked at once. ``refresh_token`` ends its session (its
    family); ``everywhere`` ends every session of the user."""

    refresh_token: RefreshToken | None = None
    everywhere: bool = False


class PasswordChangeIn(_Body):
    """Body of ``POST /api/v1/auth/password``; every session is signed out."""

    current_password: Password
    new_password: Password


class ApiKeyIn(_Body):
    """Body of ``POST /api/v1/keys``."""

    name: Name
    scopes: Annotated[list[ScopeName], Field(min_length=1, max_length=3)] = Field(
        default_factory=_default_scopes,
        description="read: GET; trade: also change state (signals, agents); "
        "admin: also the system routes (admins only).",
    )


class WebhookIn(_Body):
    """Body of ``POST /api/v1/webhooks``."""

    name: Name


class AuditQuery(_Query):
    """Query string of ``GET /api/v1/audit``."""

    event: Annotated[str, StringConstraints(pattern=r"^[a-z_]{1,64}$")] | None = Field(
        default=None, description="Only this event (e.g. login_failed)."
    )
    user: Annotated[str, StringConstraints(pattern=ID_PATTERN)] | None = Field(
        default=None, description="Only rows about this user id."
    )
    limit: Limit = 100
    offset: Offset = 0


# ------------------------------------------------------------------ websocket


class SubscribeIn(_Body):
    """A WebSocket client's filter; a missing list means "all"."""

    op: Literal["subscribe"]
    agents: Annotated[list[Id], Field(max_length=10_000)] | None = None
    tokens: Annotated[list[Token], Field(max_length=10_000)] | None = None
    types: list[EventType] | None = None


# -------------------------------------------------------- documented responses


class FieldErrorOut(BaseModel):
    """One invalid field."""

    field: str
    message: str


class ErrorDetail(BaseModel):
    """The content of an error response."""

    code: str = Field(description="Stable machine code, e.g. INVALID_REQUEST, NOT_FOUND.")
    message: str
    errors: list[FieldErrorOut] | None = None
    request_id: str | None = None


class ErrorOut(BaseModel):
    """Every non-2xx response body."""

    error: ErrorDetail


class LiveOut(BaseModel):
    """``GET /health/live``."""

    status: Literal["alive"]


class ReadyOut(BaseModel):
    """``GET /health/ready`` (200 when ready, 503 with reasons when not)."""

    ready: bool
    reasons: list[str] | None = None


class AcceptedOut(BaseModel):
    """``POST /api/v1/feeds/manual/ticks``."""

    accepted: int


class SignalOutcomeOut(BaseModel):
    """What one agent did with a signal."""

    model_config = ConfigDict(extra="allow")

    agent_id: str
    status: Literal["bought", "ineligible", "failed", "pending", "refused"]
    reason: str | None = None
    position_id: str | None = None
    final: bool | None = None
    """True: recorded, a repeat of the signal answers exactly this. False: ``pending`` (a buy
    in flight; ``GET /api/v1/signals/{id}`` shows how it ended) or ``refused`` (the agent
    could not decide now; posting the signal again decides it)."""


class RiskStateOut(BaseModel):
    """``GET/POST /api/v1/risk/state``: the global trading state."""

    model_config = ConfigDict(extra="allow")

    state: Literal["ACTIVE", "REDUCING", "HALTED"]
    reason: str | None = None


class SignalResultOut(BaseModel):
    """The result of a signal; a duplicate returns the first result."""

    model_config = ConfigDict(extra="allow")

    signal_id: str
    duplicate: bool
    outcomes: list[SignalOutcomeOut]


class TokensOut(BaseModel):
    """A login, registration or refresh: the tokens (the refresh token is shown once)."""

    model_config = ConfigDict(extra="allow")

    access_token: str
    token_type: Literal["Bearer"]
    expires_in: int = Field(description="Seconds the access token is valid.")
    refresh_token: str
    refresh_expires_in: int


class NonceOut(BaseModel):
    """``GET /api/v1/auth/nonce``: put it in the SIWE / SIWS message; single use."""

    nonce: str
    expires_in: int


class IdentityOut(BaseModel):
    """One way the user logs in."""

    kind: Literal["password", "siwe", "siws"]
    subject: str
    created_at: str
    last_login_at: str | None = None


class UserOut(BaseModel):
    """``GET /api/v1/auth/me``."""

    id: str
    email: str | None
    role: Literal["user", "admin"]
    created_at: str
    identities: list[IdentityOut]


class ApiKeyOut(BaseModel):
    """An API key's public fields; ``key`` only in the answer that created it."""

    model_config = ConfigDict(extra="allow")

    id: str
    hint: str
    name: str
    scopes: list[str]
    created_at: str
    revoked_at: str | None = None
    key: str | None = None


class WebhookOut(BaseModel):
    """A signal webhook; ``secret`` only in the answer that created it."""

    model_config = ConfigDict(extra="allow")

    id: str
    name: str
    url: str
    created_at: str
    revoked_at: str | None = None
    secret: str | None = None


class UserStateOut(BaseModel):
    """``POST /api/v1/risk/user-state``: the state applied to each of the caller's agents."""

    model_config = ConfigDict(extra="allow")

    state: Literal["ACTIVE", "REDUCING", "HALTED"]
    reason: str | None = None
    agents: list[str]
    failed: list[str]
