"""What the HTTP price sources (DexScreener, Jupiter Price, Pyth Hermes) share.

The interface a PriceFeed actor hosts (:class:`PriceSource`):

- ``await source.run(emit, stop)`` fetches prices until ``stop`` is set, handing
  every batch of valid ticks to ``await emit(batch)`` (one call per response or
  stream event, never one per tick; empty batches are not emitted). Setting
  ``stop`` ends ``run`` at its next ``await`` — an ``emit`` in progress is
  cancelled with it. ``run`` returns normally only when stopped; it raises the
  :class:`RequestRejected` that left it nothing to fetch (every request refused
  with a 4xx other than 429), and whatever ``emit`` raises (``emit`` should
  catch its own delivery errors: a source does not retry a batch).
- ``await source.poll_once()`` makes one round of requests (for Pyth: one
  ``/latest`` snapshot) and returns a :class:`PollResult`: the ticks, the
  retryable error that ended the round early (if any) and the requests refused
  for good in this round. It never raises :class:`FeedError`; ``run`` is
  ``poll_once`` (or the stream) plus pacing and backoff.
- ``source.stale(now, max_age_s)`` lists the followed tokens whose last valid
  tick is older than ``max_age_s`` seconds at ``now``, or that never ticked —
  a token a source keeps omitting goes stale like a dead source.
- ``source.status()`` is a JSON-able summary for health checks (counters, the
  last error, refused requests). It never contains an API key.

Rules every source keeps:

- Every emitted price is quote per token, validated by
  :func:`valux.feeds.ticks.price_problem` (finite, > 0) and every ``ts`` by
  :func:`~valux.feeds.ticks.ts_problem`; an entry that fails is skipped and
  counted, never emitted. Response numbers are parsed as :class:`Decimal`
  (``parse_float=Decimal``) and converted with Decimal arithmetic
  (:func:`usd_to_quote`); the only float is the tick's price itself.
- HTTP outcomes (:func:`fetch_json`): 2xx with a JSON body → the body; 429 →
  :class:`RateLimited` (with ``Retry-After`` in seconds when the server sent
  one, as seconds or an HTTP date); 5xx → :class:`FeedServerError`; a
  connection error or timeout → :class:`FeedConnectionError`; an unreadable
  body → :class:`FeedResponseError`; any other status (4xx, unfollowed 3xx) →
  :class:`RequestRejected`. :func:`should_retry` tells the retryable ones.
- After a retryable failure the next attempt waits :meth:`Backoff.delay`:
  exponential in the number of consecutive failures, capped, and never
  shorter than the server's ``Retry-After``. A success resets the count.
- Time comes from an injected ``clock`` (unix seconds, for tick stamps,
  staleness and pacing) and ``sleep``; tests pass fakes and run in
  milliseconds.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from decimal import Decimal, InvalidOperation
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, Protocol

import aiohttp
from yarl import URL

from valux.errors import FieldError, ValuxError
from valux.feeds.ticks import Tick, price_problem, token_problem, ts_problem

__all__ = [
    "Backoff",
    "Clock",
    "Emit",
    "FeedConnectionError",
    "FeedError",
    "FeedResponseError",
    "FeedServerError",
    "Freshness",
    "HttpPriceSource",
    "PollRequest",
    "PollResult",
    "PollingSource",
    "PriceSource",
    "RateLimited",
    "RequestRejected",
    "Sleep",
    "address_problem",
    "check_base_url",
    "check_common",
    "check_tokens",
    "chunked",
    "fetch_json",
    "loads_json",
    "normalise_address",
    "parse_retry_after",
    "quote_tick",
    "should_retry",
    "status_error",
    "to_decimal",
    "token_map",
    "usd_to_quote",
]

Clock = Callable[[], float]
"""Unix seconds now (``time.time`` in production)."""

Sleep = Callable[[float], Awaitable[None]]
"""Wait this many seconds (``asyncio.sleep`` in production)."""

Emit = Callable[[list[Tick]], Awaitable[None]]
"""Where a source hands its tick batches (the PriceFeed actor's router)."""

_BODY_EXCERPT = 200  # characters of an error body quoted in a RequestRejected message


# ------------------------------------------------------------------- errors


class FeedError(ValuxError):
    """A price source could not get prices from its service.

    ``source`` names the source (``"dexscreener"``…), ``url`` the request
    (never carrying a key: keys travel in headers), ``status`` the HTTP status
    when there was one, ``retry_after_s`` the server's ``Retry-After``.
    """

    code = "FEED_ERROR"
    retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        source: str = "",
        url: str = "",
        status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.source = source
        self.url = url
        self.status = status
        self.retry_after_s = retry_after_s

    def __reduce__(
        self,
    ) -> tuple[type[FeedError], tuple[str, str, str, int | None, float | None]]:
        return (type(self), (self.message, self.source, self.url, self.status, self.retry_after_s))


class RateLimited(FeedError):
    """HTTP 429: back off, at least ``retry_after_s`` when the server said so."""

    code = "FEED_RATE_LIMITED"
    retryable = True


class FeedServerError(FeedError):
    """HTTP 5xx: the service is failing; back off and try again."""

    code = "FEED_SERVER_ERROR"
    retryable = True


class FeedConnectionError(FeedError):
    """No answer: connection refused or reset, DNS, timeout, a stream cut short."""

    code = "FEED_CONNECTION_ERROR"
    retryable = True


class FeedResponseError(FeedError):
    """An answer that is not the JSON shape expected (a proxy's HTML page, a cut body)."""

    code = "FEED_RESPONSE_ERROR"
    retryable = True


class RequestRejected(FeedError):
    """A 4xx other than 429 (or another unexpected status): asking again will not help.

    The request is not polled again; the message quotes the status and the
    start of the body so the operator sees *why* (an unknown feed id, a bad key).
    """

    code = "FEED_REQUEST_REJECTED"


def should_retry(exc: BaseException) -> bool:
    """Whether a source should try ``exc``'s request again after a backoff."""
    return isinstance(exc, FeedError) and exc.retryable


# ------------------------------------------------------------------- backoff


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """Exponential backoff: ``initial_s · factor^(failures − 1)``, at most ``max_s``.

    A server's ``Retry-After`` raises the wait to its value (itself capped at
    ``max_retry_after_s``, so a bogus header cannot park a feed for a day).
    No jitter: one process polls each source, and tests stay exact.
    """

    initial_s: float = 0.5
    factor: float = 2.0
    max_s: float = 30.0
    max_retry_after_s: float = 300.0

    def __post_init__(self) -> None:
        for name in ("initial_s", "max_s", "max_retry_after_s"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"Backoff.{name} must be a finite number ≥ 0, got {value!r}")
        if not math.isfinite(self.factor) or self.factor < 1:
            raise ValueError(f"Backoff.factor must be a finite number ≥ 1, got {self.factor!r}")

    def delay(self, failures: int, retry_after_s: float | None = None) -> float:
        """Seconds to wait after ``failures`` (≥ 1) consecutive failures."""
        exponent = min(max(failures, 1) - 1, 64)  # 2.0**64 s is already past any cap
        wait = min(self.max_s, self.initial_s * self.factor**exponent)
        if retry_after_s is not None:
            wait = max(wait, min(retry_after_s, self.max_retry_after_s))
        return wait


def parse_retry_after(value: str | None, now: float) -> float | None:
    """``Retry-After`` as seconds from ``now``: delta-seconds or an HTTP date; ``None`` if
    absent or unreadable. A date in the past gives 0."""
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # RFC 9110 dates are GMT
            when = when.replace(tzinfo=UTC)
        return max(0.0, when.timestamp() - now)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


# ------------------------------------------------------------------- numbers


def to_decimal(value: object) -> Decimal | None:
    """A finite :class:`Decimal` from a JSON number or numeric string; ``None`` otherwise.

    Booleans, NaN, infinities, empty or non-numeric strings and other types give
    ``None``. (Floats are accepted through their shortest repr, for callers that
    did not parse with ``parse_float=Decimal``.)
    """
    if isinstance(value, bool):
        return None
    try:
        if isinstance(value, Decimal):
            number = value
        elif isinstance(value, int):
            number = Decimal(value)
        elif isinstance(value, float):
            number = Decimal(repr(value))
        elif isinstance(value, str):
            number = Decimal(value.strip())
        else:
            return None
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def usd_to_quote(price_usd: Decimal, quote_usd: Decimal) -> Decimal:
    """A token's price in the quote asset from USD prices of both: ``price_usd / quote_usd``.

    valux prices are quote per token (SOL or WETH per token). A token at 0.5 USD
    with SOL at 125 USD costs 0.5 / 125 = 0.004 SOL.

    Raises:
        ValueError: ``quote_usd`` is not > 0.
    """
    if not quote_usd > 0:
        raise ValueError(f"the quote asset's USD price must be > 0, got {quote_usd}")
    return price_usd / quote_usd


def quote_tick(token: str, price: Decimal | None, ts: float) -> Tick | None:
    """A :class:`Tick` if ``price`` (as float) and ``ts`` pass the tick rules, else ``None``."""
    if price is None:
        return None
    try:
        as_float = float(price)
    except (OverflowError, ValueError):
        return None
    if price_problem(as_float) is not None or ts_problem(ts) is not None:
        return None
    return Tick(token=token, price=as_float, ts=float(ts))


def chunked(items: Sequence[str], size: int) -> list[list[str]]:
    """``items`` in consecutive runs of at most ``size`` (order kept)."""
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


# ------------------------------------------------------------------- HTTP


def status_error(
    source: str, url: str, status: int, body: bytes, retry_after: str | None, now: float
) -> FeedError:
    """The :class:`FeedError` for a non-2xx ``status`` (``body``: its start is quoted)."""
    excerpt = body[:_BODY_EXCERPT].decode("utf-8", "replace").strip()
    if status == 429:
        wait = parse_retry_after(retry_after, now)
        said = f" (Retry-After {wait:g} s)" if wait is not None else ""
        return RateLimited(f"{source}: rate limited{said}: {url}", source, url, status, wait)
    if 500 <= status <= 599:
        return FeedServerError(f"{source}: HTTP {status} from {url}", source, url, status)
    return RequestRejected(
        f"{source}: HTTP {status} from {url}: {excerpt or '(empty body)'}", source, url, status
    )


def loads_json(body: bytes | str) -> Any:
    """JSON with every non-integer number as a Decimal (no float money)."""
    return json.loads(body, parse_float=Decimal, parse_constant=Decimal)


async def fetch_json(
    session: aiohttp.ClientSession,
    url: str,
    *,
    source: str,
    headers: Mapping[str, str],
    timeout_s: float,
    clock: Clock,
) -> Any:
    """GET ``url`` (already percent-encoded) and return its JSON body, numbers as Decimal.

    Raises the :class:`FeedError` subclass the module docstring maps each outcome to.
    """
    try:
        async with session.get(
            URL(url, encoded=True),
            headers=dict(headers),
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as response:
            body = await response.read()
            status = response.status
            retry_after = response.headers.get("Retry-After")
    except (aiohttp.ClientError, TimeoutError) as exc:
        detail = str(exc) or type(exc).__name__
        raise FeedConnectionError(f"{source}: {detail}: {url}", source, url) from exc
    if not 200 <= status <= 299:
        raise status_error(source, url, status, body, retry_after, clock())
    try:
        return loads_json(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FeedResponseError(
            f"{source}: the body is not JSON ({exc}): {url}", source, url, status
        ) from exc


def check_base_url(base_url: object) -> str | None:
    """Why ``base_url`` is not an ``http(s)://host[:port][/path]`` URL, or ``None``."""
    if not isinstance(base_url, str):
        return "must be a string"
    try:
        parsed = URL(base_url)
    except ValueError:
        return "is not a URL"
    if parsed.scheme not in ("http", "https") or not parsed.host:
        return "must be an http:// or https:// URL with a host"
    if parsed.query_string or parsed.fragment:
        return "must not carry a query or fragment"
    return None


def _check_positive(errors: list[FieldError], name: str, value: object) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        errors.append(FieldError(name, "must be a finite number > 0"))


# ------------------------------------------------------------------- staleness


class Freshness:
    """The time of the last valid tick of every followed token."""

    def __init__(self, tokens: Iterable[str]) -> None:
        self._last: dict[str, float | None] = dict.fromkeys(tokens)

    def mark(self, ticks: Iterable[Tick]) -> None:
        """Record ``ticks`` (a tick older than the token's last one does not move it back)."""
        last = self._last
        for tick in ticks:
            seen = last.get(tick.token)
            if seen is None or tick.ts > seen:
                last[tick.token] = tick.ts

    def last_update(self) -> dict[str, float | None]:
        """Token → ts of its last valid tick (``None``: never), a copy."""
        return dict(self._last)

    def stale(self, now: float, max_age_s: float) -> list[str]:
        """Tokens (in following order) never ticked or last ticked more than ``max_age_s``
        before ``now``."""
        return [t for t, ts in self._last.items() if ts is None or now - ts > max_age_s]


# ------------------------------------------------------------------- the interface


@dataclass(frozen=True, slots=True)
class PollResult:
    """One round: valid ticks, the retryable error that cut it short, requests refused."""

    ticks: list[Tick]
    error: FeedError | None = None
    rejected: tuple[FeedError, ...] = ()


class PriceSource(Protocol):
    """What a PriceFeed actor needs from a source (see the module docstring)."""

    name: str

    @property
    def tokens(self) -> tuple[str, ...]: ...

    async def run(self, emit: Emit, stop: asyncio.Event) -> None: ...

    async def poll_once(self) -> PollResult: ...

    def stale(self, now: float, max_age_s: float) -> list[str]: ...

    def last_update(self) -> dict[str, float | None]: ...

    def status(self) -> dict[str, Any]: ...


_SOLANA_ADDRESS = re.compile(r"[1-9A-HJ-NP-Za-km-z]{32,44}")
_EVM_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


def address_problem(value: object, chain: str) -> str | None:
    """Why ``value`` is not a token address on ``chain`` (``solana``: base58, 32–44
    characters; ``arbitrum``: 0x + 40 hex digits), or ``None``."""
    if not isinstance(value, str):
        return "must be a string"
    if chain == "solana" and not _SOLANA_ADDRESS.fullmatch(value):
        return "must be a base58 Solana address (32–44 characters)"
    if chain == "arbitrum" and not _EVM_ADDRESS.fullmatch(value):
        return "must be a 0x-prefixed 40-hex-digit address"
    return None


def normalise_address(address: str) -> str:
    """The form addresses are compared in: EVM addresses lower-case, base58 as is."""
    return address.lower() if address.startswith(("0x", "0X")) else address


def token_map(tokens: Mapping[str, str] | Sequence[str]) -> dict[str, str]:
    """``{valux token name: id at the source}``; a plain sequence names each token by its id."""
    if isinstance(tokens, Mapping):
        return dict(tokens)
    if isinstance(tokens, str):  # one id, not a sequence of characters
        return {tokens: tokens}
    return {t: t for t in tokens}


def check_tokens(
    errors: list[FieldError], tokens: Mapping[str, str], id_problem: Callable[[str], str | None]
) -> None:
    """Append a FieldError for every bad name, bad id, duplicate id or empty mapping."""
    if not tokens:
        errors.append(FieldError("tokens", "must name at least one token"))
    seen: dict[str, str] = {}
    for name, ident in tokens.items():
        if msg := token_problem(name):
            errors.append(FieldError(f"tokens[{name!r}]", f"name {msg}"))
        if msg := id_problem(ident):
            errors.append(FieldError(f"tokens[{name!r}]", msg))
            continue
        key = normalise_address(ident)
        if key in seen:
            errors.append(FieldError(f"tokens[{name!r}]", f"same id as {seen[key]!r}"))
        seen[key] = name


class HttpPriceSource:
    """Base of the HTTP sources: configuration, error reporting, staleness, ``run``.

    Subclasses implement :meth:`_loop` (fetch and emit forever) and
    :meth:`poll_once`. Not thread-safe; one event loop drives a source.
    """

    name: str = "http"

    def __init__(
        self,
        session: aiohttp.ClientSession,
        tokens: Iterable[str],
        *,
        base_url: str,
        headers: Mapping[str, str],
        backoff: Backoff,
        request_timeout_s: float,
        clock: Clock,
        sleep: Sleep,
        on_error: Callable[[FeedError], None] | None,
    ) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self._headers = dict(headers)  # may hold an API key: never logged or reported
        self.backoff = backoff
        self.request_timeout_s = float(request_timeout_s)
        self.clock = clock
        self.sleep = sleep
        self.on_error = on_error
        self._freshness = Freshness(tokens)
        self.failures = 0
        """Consecutive failed attempts (rounds, or connects for a stream); 0 after a success."""
        self.errors = 0
        self.ticks_emitted = 0
        self.skipped = 0
        """Entries of answers that were dropped: unparseable, or a price or ts that fails the
        tick rules."""
        self.last_error: FeedError | None = None
        self.last_success_at: float | None = None

    @property
    def tokens(self) -> tuple[str, ...]:
        """Followed valux token names, in configuration order."""
        return tuple(self._freshness.last_update())

    # -- staleness ------------------------------------------------------

    def stale(self, now: float, max_age_s: float) -> list[str]:
        """Tokens with no valid tick within ``max_age_s`` of ``now`` (or none ever)."""
        return self._freshness.stale(now, max_age_s)

    def last_update(self) -> dict[str, float | None]:
        """Token → ts of its last valid tick (``None``: never)."""
        return self._freshness.last_update()

    # -- bookkeeping ----------------------------------------------------

    def _accept(self, ticks: list[Tick]) -> None:
        self._freshness.mark(ticks)
        self.ticks_emitted += len(ticks)

    def _report(self, exc: FeedError) -> None:
        self.errors += 1
        self.last_error = exc
        if self.on_error is not None:
            self.on_error(exc)

    def _get(self, url: str) -> Awaitable[Any]:
        return fetch_json(
            self.session,
            url,
            source=self.name,
            headers=self._headers,
            timeout_s=self.request_timeout_s,
            clock=self.clock,
        )

    def status(self) -> dict[str, Any]:
        """Counters and the last error, for a health check (no secrets)."""
        return {
            "source": self.name,
            "tokens": len(self._freshness.last_update()),
            "ticks": self.ticks_emitted,
            "skipped": self.skipped,
            "errors": self.errors,
            "consecutive_failures": self.failures,
            "last_error": None if self.last_error is None else self.last_error.message,
            "last_success_at": self.last_success_at,
        }

    # -- the loop -------------------------------------------------------

    async def poll_once(self) -> PollResult:
        raise NotImplementedError

    async def _loop(self, emit: Emit, stop: asyncio.Event) -> None:
        """Fetch and emit forever; return once ``stop`` is seen set (checked after every
        emit and before every wait)."""
        raise NotImplementedError

    async def run(self, emit: Emit, stop: asyncio.Event) -> None:
        """Fetch and ``emit`` until ``stop`` is set (contract: the module docstring)."""
        if stop.is_set():
            return
        loop_task = asyncio.ensure_future(self._loop(emit, stop))
        stop_task = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({loop_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (loop_task, stop_task):
                task.cancel()
            await asyncio.gather(loop_task, stop_task, return_exceptions=True)
        if not loop_task.cancelled() and (exc := loop_task.exception()) is not None:
            raise exc


@dataclass(slots=True)
class PollRequest:
    """One batched request of a polling source and whether it is still polled."""

    names: list[str]
    url: str
    rejected: FeedError | None = field(default=None)


class PollingSource(HttpPriceSource):
    """A source polled in rounds: each round sends every live request once, in order.

    A retryable error ends the round (the requests after it wait for the next
    round: a 429 is about the client, not one request) and the next round
    starts after :meth:`Backoff.delay`; otherwise rounds start ``interval_s``
    apart. A request refused for good is dropped from later rounds; when none
    is left, ``run`` raises that refusal.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        tokens: Iterable[str],
        *,
        interval_s: float,
        base_url: str,
        headers: Mapping[str, str],
        backoff: Backoff,
        request_timeout_s: float,
        clock: Clock,
        sleep: Sleep,
        on_error: Callable[[FeedError], None] | None,
    ) -> None:
        super().__init__(
            session,
            tokens,
            base_url=base_url,
            headers=headers,
            backoff=backoff,
            request_timeout_s=request_timeout_s,
            clock=clock,
            sleep=sleep,
            on_error=on_error,
        )
        self.interval_s = float(interval_s)
        self._requests: list[PollRequest] = []

    @property
    def request_urls(self) -> list[str]:
        """The URL of every request a round sends (refused ones included)."""
        return [r.url for r in self._requests]

    async def _poll(self, request: PollRequest) -> list[Tick]:
        """Fetch one request and turn its answer into valid ticks (raises FeedError)."""
        raise NotImplementedError

    async def poll_once(self) -> PollResult:
        """One round over the live requests (see the class docstring); never raises
        :class:`FeedError`."""
        ticks: list[Tick] = []
        rejected: list[FeedError] = []
        error: FeedError | None = None
        for request in self._requests:
            if request.rejected is not None:
                continue
            try:
                ticks.extend(await self._poll(request))
            except FeedError as exc:
                self._report(exc)
                if should_retry(exc):
                    error = exc
                    break
                request.rejected = exc
                rejected.append(exc)
        if error is None:
            self.failures = 0
            self.last_success_at = self.clock()
        else:
            self.failures += 1
        self._accept(ticks)
        return PollResult(ticks, error, tuple(rejected))

    async def _loop(self, emit: Emit, stop: asyncio.Event) -> None:
        while True:
            started = self.clock()
            result = await self.poll_once()
            if result.ticks:
                await emit(result.ticks)
            if stop.is_set():
                return
            live = [r for r in self._requests if r.rejected is None]
            if not live:
                refused = self._requests[-1].rejected if self._requests else None
                raise refused or RequestRejected(f"{self.name}: nothing to poll", self.name)
            if result.error is not None:
                delay = self.backoff.delay(self.failures, result.error.retry_after_s)
            else:
                elapsed = self.clock() - started
                delay = min(self.interval_s, max(0.0, self.interval_s - elapsed))
            await self.sleep(delay)

    def status(self) -> dict[str, Any]:
        """The base counters plus the refused requests and why."""
        out = super().status()
        out["interval_s"] = self.interval_s
        out["requests"] = len(self._requests)
        out["rejected"] = [
            {"tokens": r.names, "error": r.rejected.message}
            for r in self._requests
            if r.rejected is not None
        ]
        return out


def check_common(
    errors: list[FieldError],
    *,
    base_url: object,
    request_timeout_s: object,
    interval_s: object | None = None,
) -> None:
    """Append FieldErrors for the settings every HTTP source shares."""
    if msg := check_base_url(base_url):
        errors.append(FieldError("base_url", msg))
    _check_positive(errors, "request_timeout_s", request_timeout_s)
    if interval_s is not None:
        _check_positive(errors, "interval_s", interval_s)
