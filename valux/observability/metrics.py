"""Prometheus metrics, every name prefixed ``valux_``.

Each process (the API and every Ray actor) records into its own registry. The
API's ``/metrics`` asks each actor for :func:`collect_families` (one call per
actor per scrape) and merges the families, labelling each sample with the
process it came from.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric

REGISTRY = CollectorRegistry(auto_describe=True)

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
_EVAL_BUCKETS = (
    0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1,
)  # fmt: skip

SIGNAL_TO_FILL_SECONDS = Histogram(
    "valux_signal_to_fill_seconds",
    "From a signal entering an agent host to the buy's fill journaled and armed",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
TICK_TO_EXIT_SECONDS = Histogram(
    "valux_tick_to_exit_seconds",
    "From a tick entering its feed to the exit's fill acknowledged to the evaluator",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
EVALUATION_SECONDS = Histogram(
    "valux_evaluation_seconds",
    "Evaluation time of one tick batch over all armed positions of an evaluator",
    buckets=_EVAL_BUCKETS,
    registry=REGISTRY,
)
JOURNAL_COMMIT_SECONDS = Histogram(
    "valux_journal_commit_seconds",
    "Duration of one group-commit transaction",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
JOURNAL_EVENTS = Counter(
    "valux_journal_events", "Events appended to the journal", registry=REGISTRY
)
BREAKER_TRIPS = Counter(
    "valux_breaker_trips",
    "Breakers that put an agent in REDUCING (alerts)",
    ["breaker"],
    registry=REGISTRY,
)
TRADING_STATES = Gauge(
    "valux_agents_trading_state",
    "Agents by effective trading state (ACTIVE / REDUCING / HALTED)",
    ["state"],
    registry=REGISTRY,
)
UNPROTECTED_LOCKED = Gauge(
    "valux_positions_unprotected_locked_key",
    "Open positions whose live wallet's key is locked: their exits cannot sign (alert)",
    registry=REGISTRY,
)
CUSTODY_MISMATCHES = Counter(
    "valux_custody_mismatches",
    "Reconciliation found a wallet that its agent's positions or its journal do not explain"
    " (alerts)",
    registry=REGISTRY,
)
RECONCILE_RESOLVED = Counter(
    "valux_reconcile_resolved",
    "In-flight intents the reconciler resolved by querying, by outcome",
    ["outcome"],
    registry=REGISTRY,
)
GLOBAL_STATE_FANOUT_SECONDS = Histogram(
    "valux_global_state_fanout_seconds",
    "From a global trading-state change to every agent host having applied it",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
ESCALATIONS = Counter(
    "valux_escalations",
    "Children marked failed after exceeding their restart intensity (alerts)",
    ["kind"],
    registry=REGISTRY,
)
ACTOR_RESTARTS = Counter(
    "valux_actor_restarts",
    "Restarts of supervised actors",
    ["kind"],
    registry=REGISTRY,
)
OPEN_POSITIONS = Gauge(
    "valux_open_positions", "Open positions held by this process's agents", registry=REGISTRY
)
ARMED_POSITIONS = Gauge(
    "valux_armed_positions", "Positions armed at this evaluator", registry=REGISTRY
)
TICKS = Counter("valux_ticks", "Price ticks processed", ["source"], registry=REGISTRY)
ORDERS = Counter(
    "valux_orders", "Order intents by side and outcome", ["side", "state"], registry=REGISTRY
)
SIGNALS = Counter(
    "valux_signal_outcomes", "Per-agent signal outcomes", ["status"], registry=REGISTRY
)


def collect_families() -> list[Metric]:
    """This process's metric families (picklable, for the API to merge)."""
    return list(REGISTRY.collect())
