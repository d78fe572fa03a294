"""Pyth Hermes: streamed oracle prices (SSE), converted to quote per token.

Contract (on top of :mod:`valux.feeds.http_source`):

- Follows Pyth price feeds given as ``{valux token name: feed id}`` (64 hex
  digits, with or without ``0x``, any case). Hermes answers ids without
  ``0x`` in lower case; they are mapped back to the configured names.
- ``quote_feed`` is the quote asset's USD feed (SOL/USD, :data:`SOL_USD_FEED_ID`,
  for SOL-quoted prices; ETH/USD for WETH); ``None`` leaves prices in USD.
- A connection is a snapshot, ``GET /v2/updates/price/latest?ids[]=…&parsed=true``,
  then the stream, ``GET /v2/updates/price/stream`` with the same query: each
  SSE event's ``data:`` carries the same JSON as ``/latest``. Only ``parsed``
  is read (``binary`` is for on-chain verification).
- A parsed item's USD value is ``int(price.price) · 10^price.expo``, exact in
  Decimal; a value ≤ 0, a malformed item or a feed not asked for is skipped.
  An update whose ``publish_time`` is older than the one already held for its
  feed is ignored (a reconnect's snapshot never rolls a price back).
- Price = token USD / quote USD (:func:`~valux.feeds.http_source.usd_to_quote`)
  with the latest value of each; a token ticks when its own feed updates and,
  when the quote feed updates, every token with a known value ticks again
  (its price in the quote moved). ``ts`` is the *older* ``publish_time`` of the
  two inputs, so a token whose own feed went quiet goes stale even while the
  quote keeps moving. A followed quote feed ticks at exactly 1.
- Reconnects: when the stream ends (Hermes closes streams after about a day),
  fails, or stays silent for ``idle_timeout_s`` (a half-open connection), the
  source waits :meth:`~valux.feeds.http_source.Backoff.delay` (the count of
  failures resets once a stream delivers an event; a 429's ``Retry-After``
  is honoured) and connects again, snapshot first. A 4xx other than 429 (an
  unknown feed id, a refused key) is reported and ``run`` raises it: asking
  again cannot help. ``ignore_invalid_ids=True`` asks Hermes to skip unknown
  ids instead (they then just go stale).
- ``api_key`` is sent as ``Authorization: Bearer <key>`` (Hermes requires a key
  since August 2026); never logged, reported or put in a URL.
- All ids travel in one query string; keep a source to about 100 feeds (URL
  length), and run several sources for more.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Final

import aiohttp
from yarl import URL

from valux.errors import FieldError, InvalidRequest
from valux.feeds.http_source import (
    Backoff,
    Clock,
    Emit,
    FeedConnectionError,
    FeedError,
    FeedResponseError,
    HttpPriceSource,
    PollResult,
    Sleep,
    check_common,
    loads_json,
    quote_tick,
    should_retry,
    status_error,
    token_map,
    usd_to_quote,
)
from valux.feeds.ticks import Tick

__all__ = [
    "DEFAULT_BASE_URL",
    "ETH_USD_FEED_ID",
    "SOL_USD_FEED_ID",
    "PythHermesSource",
    "SseParser",
    "normalise_feed_id",
]

DEFAULT_BASE_URL: Final = "https://hermes.pyth.network"
SOL_USD_FEED_ID: Final = "ef0d8b6fda2ceba41da15d4095d1da392a0d2f8ed0c6c7bc0f4cfac8c280b56d"
ETH_USD_FEED_ID: Final = "ff61491a931112ddf1bd8147cd1b641375f79f5825126d665480874634fd0ace"

_FEED_ID = re.compile(r"(?:0[xX])?([0-9a-fA-F]{64})")
_INTEGER = re.compile(r"-?[0-9]{1,40}")
_MAX_EXPO = 64  # Pyth exponents are small negatives (−5 … −10); anything wild is junk
_MAX_EVENT_BYTES = 16 * 1024 * 1024
_ERROR_BODY_BYTES = 4096


def normalise_feed_id(value: object) -> str | None:
    """The feed id as Hermes writes it (64 lower-case hex digits, no ``0x``), or ``None``."""
    if isinstance(value, str) and (match := _FEED_ID.fullmatch(value.strip())):
        return match.group(1).lower()
    return None


class SseParser:
    """Server-sent events from a byte stream: :meth:`feed` returns each completed
    event's data (its ``data:`` lines joined by newlines).

    Lines end in LF or CRLF; a blank line ends an event; ``:`` comments and the
    ``event``/``id``/``retry`` fields are ignored (Hermes sends plain ``data:``
    events). A line longer than ``max_event_bytes`` raises
    :class:`~valux.feeds.http_source.FeedResponseError`.
    """

    def __init__(self, max_event_bytes: int = _MAX_EVENT_BYTES) -> None:
        self.max_event_bytes = max_event_bytes
        self._buffer = b""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[str]:
        """Add bytes; return the data of every event they complete, in order."""
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        if len(self._buffer) > self.max_event_bytes:
            raise FeedResponseError(f"an SSE line exceeds {self.max_event_bytes} bytes")
        events: list[str] = []
        for raw in lines:
            line = raw.removesuffix(b"\r").decode("utf-8", "replace")
            if not line:
                if self._data:
                    events.append("\n".join(self._data))
                    self._data = []
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            if name == "data":
                self._data.append(value.removeprefix(" "))
        return events


def _update(item: object) -> tuple[str, Decimal, int] | None:
    """``(feed id, USD value, publish_time)`` of one parsed item, or ``None`` if malformed."""
    if not isinstance(item, Mapping):
        return None
    feed = normalise_feed_id(item.get("id"))
    price = item.get("price")
    if feed is None or not isinstance(price, Mapping):
        return None
    raw, expo, published = price.get("price"), price.get("expo"), price.get("publish_time")
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = str(raw)
    if (
        not isinstance(raw, str)
        or not _INTEGER.fullmatch(raw)
        or not isinstance(expo, int)
        or isinstance(expo, bool)
        or abs(expo) > _MAX_EXPO
        or not isinstance(published, int)
        or isinstance(published, bool)
    ):
        return None
    return feed, Decimal(int(raw)).scaleb(expo), published


class PythHermesSource(HttpPriceSource):
    """Quote-per-token prices streamed from Pyth Hermes (module docstring)."""

    name = "pyth"

    def __init__(
        self,
        session: aiohttp.ClientSession,
        feeds: Mapping[str, str] | Sequence[str],
        *,
        quote_feed: str | None,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | None = None,
        ignore_invalid_ids: bool = False,
        backoff: Backoff | None = None,
        request_timeout_s: float = 10.0,
        idle_timeout_s: float = 30.0,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        on_error: Callable[[FeedError], None] | None = None,
    ) -> None:
        follow = token_map(feeds)
        errors: list[FieldError] = []
        if not follow:
            errors.append(FieldError("feeds", "must name at least one feed"))
        ids: dict[str, str] = {}  # feed id → name
        for name, ident in follow.items():
            feed = normalise_feed_id(ident)
            if feed is None:
                errors.append(FieldError(f"feeds[{name!r}]", "must be 64 hex digits (0x optional)"))
            elif feed in ids:
                errors.append(FieldError(f"feeds[{name!r}]", f"same feed as {ids[feed]!r}"))
            else:
                ids[feed] = name
        quote = None if quote_feed is None else normalise_feed_id(quote_feed)
        if quote_feed is not None and quote is None:
            errors.append(FieldError("quote_feed", "must be 64 hex digits (0x optional) or None"))
        check_common(errors, base_url=base_url, request_timeout_s=request_timeout_s)
        if not isinstance(idle_timeout_s, int | float) or not idle_timeout_s > 0:
            errors.append(FieldError("idle_timeout_s", "must be a number > 0"))
        if api_key is not None and (not isinstance(api_key, str) or not api_key.strip()):
            errors.append(FieldError("api_key", "must be a non-empty string or None"))
        if errors:
            raise InvalidRequest("invalid Pyth Hermes source settings", errors)
        headers = {"Accept": "application/json"}
        if api_key is not None:
            headers["Authorization"] = f"Bearer {api_key.strip()}"
        super().__init__(
            session,
            follow,
            base_url=base_url,
            headers=headers,
            backoff=backoff or Backoff(),
            request_timeout_s=request_timeout_s,
            clock=clock,
            sleep=sleep,
            on_error=on_error,
        )
        self.quote_feed = quote
        self.idle_timeout_s = float(idle_timeout_s)
        self._name_of = ids
        self._order = list(ids)  # token feeds in configuration order
        self._usd: dict[str, tuple[Decimal, int]] = {}  # feed → (USD value, publish_time)
        asked = list(ids) + ([quote] if quote is not None and quote not in ids else [])
        query = "&".join(f"ids[]={feed}" for feed in asked) + "&parsed=true"
        if ignore_invalid_ids:
            query += "&ignore_invalid_price_ids=true"
        self.latest_url = f"{self.base_url}/v2/updates/price/latest?{query}"
        self.stream_url = f"{self.base_url}/v2/updates/price/stream?{query}"
        self.connected = False
        self.events = 0
        self.connects = 0
        self.rejected: FeedError | None = None

    # -- parsing --------------------------------------------------------

    def _apply(self, data: object, url: str) -> list[Tick]:
        """Fold one ``/latest``-shaped answer into the held values; return the ticks due."""
        parsed = data.get("parsed") if isinstance(data, Mapping) else None
        if not isinstance(parsed, list):
            raise FeedResponseError(f"{self.name}: no 'parsed' list: {url}", self.name, url)
        watched = self._name_of.keys() | ({self.quote_feed} if self.quote_feed else set())
        updated: set[str] = set()
        for item in parsed:
            update = _update(item)
            if update is None or update[1] <= 0:
                self.skipped += 1
                continue
            feed, value, published = update
            if feed not in watched:
                continue
            held = self._usd.get(feed)
            if held is not None and published < held[1]:
                continue  # older than what we have: no rollback
            self._usd[feed] = (value, published)
            updated.add(feed)
        quote_moved = self.quote_feed is not None and self.quote_feed in updated
        due = self._order if quote_moved else [f for f in self._order if f in updated]
        ticks: list[Tick] = []
        for feed in due:
            tick = self._tick(feed)
            if tick is not None:
                ticks.append(tick)
            elif feed in self._usd and (self.quote_feed is None or self.quote_feed in self._usd):
                self.skipped += 1  # both inputs known, yet no valid tick
        self._accept(ticks)
        return ticks

    def _tick(self, feed: str) -> Tick | None:
        held = self._usd.get(feed)
        if held is None:
            return None
        usd, published = held
        name = self._name_of[feed]
        if self.quote_feed is None:
            return quote_tick(name, usd, float(published))
        if feed == self.quote_feed:
            return quote_tick(name, Decimal(1), float(published))
        quote = self._usd.get(self.quote_feed)
        if quote is None:
            return None
        return quote_tick(name, usd_to_quote(usd, quote[0]), float(min(published, quote[1])))

    # -- one snapshot ---------------------------------------------------

    async def _snapshot(self) -> list[Tick]:
        data = await self._get(self.latest_url)
        return self._apply(data, self.latest_url)

    async def poll_once(self) -> PollResult:
        """One ``/latest`` snapshot (what each (re)connect starts with); never raises
        :class:`~valux.feeds.http_source.FeedError`."""
        try:
            ticks = await self._snapshot()
        except FeedError as exc:
            self._report(exc)
            if should_retry(exc):
                self.failures += 1
                return PollResult([], exc)
            self.rejected = exc
            return PollResult([], None, (exc,))
        self.last_success_at = self.clock()
        return PollResult(ticks)

    # -- the stream -----------------------------------------------------

    async def _stream(self, emit: Emit, stop: asyncio.Event) -> None:
        """Read one SSE connection to its end, emitting as events arrive.

        Only the network calls are wrapped, so an exception from ``emit`` is
        never mistaken for a broken connection.
        """
        url = self.stream_url
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.request_timeout_s, sock_read=self.idle_timeout_s
        )
        headers = {**self._headers, "Accept": "text/event-stream"}
        parser = SseParser()
        try:
            response = await self.session.get(
                URL(url, encoded=True), headers=headers, timeout=timeout
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._broken("cannot connect", exc) from exc
        async with response:
            if response.status != 200:
                try:
                    body = await response.content.read(_ERROR_BODY_BYTES)
                except (aiohttp.ClientError, TimeoutError):
                    body = b""
                retry_after = response.headers.get("Retry-After")
                raise status_error(self.name, url, response.status, body, retry_after, self.clock())
            self.connected = True
            self.connects += 1
            try:
                while True:
                    try:
                        chunk = await response.content.readany()
                    except (aiohttp.ClientError, TimeoutError) as exc:
                        raise self._broken("stream broke", exc) from exc
                    if not chunk:
                        return  # the server ended the stream
                    for payload in parser.feed(chunk):
                        await self._event(payload, url, emit)
                        if stop.is_set():
                            return
            finally:
                self.connected = False

    def _broken(self, what: str, exc: BaseException) -> FeedConnectionError:
        detail = str(exc) or type(exc).__name__
        url = self.stream_url
        return FeedConnectionError(f"{self.name}: {what}: {detail}: {url}", self.name, url)

    async def _event(self, payload: str, url: str, emit: Emit) -> None:
        self.events += 1
        self.failures = 0
        self.last_success_at = self.clock()
        try:
            ticks = self._apply(loads_json(payload), url)
        except (ValueError, FeedResponseError) as exc:  # one bad event: skip it, keep reading
            self.skipped += 1
            self._report(
                exc
                if isinstance(exc, FeedError)
                else FeedResponseError(f"{self.name}: event is not JSON: {url}", self.name, url)
            )
            return
        if ticks:
            await emit(ticks)

    async def _loop(self, emit: Emit, stop: asyncio.Event) -> None:
        while True:
            error: FeedError | None = None
            try:
                ticks = await self._snapshot()
                self.last_success_at = self.clock()
                if ticks:
                    await emit(ticks)
                if stop.is_set():
                    return
                await self._stream(emit, stop)
                if stop.is_set():
                    return
            except FeedError as exc:
                self._report(exc)
                if not should_retry(exc):
                    self.rejected = exc
                    raise
                error = exc
            self.failures += 1
            retry_after = None if error is None else error.retry_after_s
            await self.sleep(self.backoff.delay(self.failures, retry_after))

    def status(self) -> dict[str, Any]:
        """The base counters plus the stream's state."""
        out = super().status()
        out["connected"] = self.connected
        out["connects"] = self.connects
        out["events"] = self.events
        out["rejected"] = None if self.rejected is None else self.rejected.message
        return out
