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
    status: Literal["bought", "ineligible", "failed"]
    reason: str | None = None
    position_id: str | None = None


class SignalResultOut(BaseModel):
    """The result of a signal; a duplicate returns the first result."""

    model_config = ConfigDict(extra="allow")

    signal_id: str
    duplicate: bool
    outcomes: list[SignalOutcomeOut]
