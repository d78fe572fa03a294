"""The API process's Prometheus metrics and the ``/metrics`` exposition.

Each app gets its *own* :class:`~prometheus_client.CollectorRegistry` (two apps
in one process, as in tests, never collide). Exposed:

- ``valux_api_requests_total{method, route, status}`` — a counter per route
  template (``/api/v1/agents/{id}``, never the concrete path, so cardinality
  stays bounded; unmatched paths count as ``route="unmatched"``);
- ``valux_api_request_seconds{method, route}`` — latency histogram;
- ``valux_api_ws_*`` — WebSocket hub gauges/counters, read from the hub;
- ``valux_api_actor_metrics_up`` — 0 when the last scrape of the actors failed;
- the backend's ``actor_metrics()`` families, through :class:`ActorMetricsCollector`.

Every exposed name starts with ``valux_``; an actor family that does not is
renamed with the prefix rather than dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from valux.api.ws import WsHub

PREFIX = "valux_"

LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


def _prefixed(metric: Metric) -> Metric:
    if metric.name.startswith(PREFIX):
        return metric
    renamed = Metric(PREFIX + metric.name, metric.documentation, metric.type, metric.unit)
    renamed.samples = [s._replace(name=PREFIX + s.name) for s in metric.samples]
    return renamed


class ActorMetricsCollector(Collector):
    """Yields the families last fetched from the backend.

    ``collect()`` is synchronous but ``actor_metrics()`` is a coroutine, so the
    ``/metrics`` handler awaits the backend, stores the families with
    :meth:`set` and renders the registry *without an await in between* — so
    concurrent scrapes cannot see each other's families.
    """

    def __init__(self) -> None:
        self._families: list[Metric] = []

    def set(self, families: Iterable[Any]) -> None:
        self._families = [_prefixed(f) for f in families if isinstance(f, Metric)]

    def collect(self) -> Iterator[Metric]:
        yield from self._families


class HubCollector(Collector):
    """WebSocket hub gauges, read at scrape time from :meth:`WsHub.status`."""

    def __init__(self, status: Callable[[], dict[str, Any]]) -> None:
        self._status = status

    def collect(self) -> Iterator[Metric]:
        s = self._status()
        yield GaugeMetricFamily(
            "valux_api_ws_clients", "Connected WebSocket clients", value=s["clients"]
        )
        yield GaugeMetricFamily(
            "valux_api_ws_redis_connected",
            "1 when the hub's Redis subscription is up",
            value=1 if s["redis_connected"] else 0,
        )
        yield CounterMetricFamily(
            "valux_api_ws_messages_dropped",
            "Messages dropped because a client's send queue was full",
            value=s["messages_dropped"],
        )
        yield CounterMetricFamily(
            "valux_api_ws_clients_disconnected_slow",
            "Clients disconnected (1008) for falling behind",
            value=s["clients_disconnected_slow"],
        )
        yield CounterMetricFamily(
            "valux_api_ws_messages_received",
            "Messages received from Redis pub/sub",
            value=s["messages_received"],
        )


class ApiMetrics:
    """The instruments of one app and the rendering of ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "valux_api_requests",
            "HTTP requests served, by route template, method and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "valux_api_request_seconds",
            "HTTP request latency by route template and method",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.actor_metrics_up = Gauge(
            "valux_api_actor_metrics_up",
            "1 when the last collection of the actors' metrics succeeded",
            registry=self.registry,
        )
        self.actors = ActorMetricsCollector()
        self.registry.register(self.actors)

    def watch_hub(self, hub: WsHub) -> None:
        """Expose the hub's counters."""
        self.registry.register(HubCollector(hub.status))

    def observe(self, *, method: str, route: str, status: int, seconds: float | None) -> None:
        """Record one finished request (``seconds=None`` for long-lived ones)."""
        self.requests.labels(method, route, str(status)).inc()
        if seconds is not None:
            self.latency.labels(method, route).observe(seconds)

    def render(self, actor_families: Iterable[Any] | None) -> tuple[bytes, str]:
        """The exposition text and its content type. ``None`` = the actors failed."""
        self.actor_metrics_up.set(0 if actor_families is None else 1)
        self.actors.set(actor_families or ())
        try:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        finally:
            self.actors.set(())
