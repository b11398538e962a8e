"""Every Prometheus metric the service exports, declared once.

Names follow ``kai_inventory_<subsystem>_<name>_<unit>``; labels take small fixed value sets
only (route template, method, status, outcome, part), never ids. Dashboards and alert rules
in ``deploy/`` may query only what is declared here (a test checks).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily

REGISTRY = CollectorRegistry(auto_describe=True)


class GlobalCounter:
    """A counter whose value is counted elsewhere (by the Redis servers) and read at scrape time:
    ``set(value)`` stores the last value read, ``collect`` exports it as a counter family
    (``<name>_total``; no ``_created``). A prometheus_client ``Counter`` can only be
    incremented, and this process does not see the increments."""

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry) -> None:
        self.name = name
        self.documentation = documentation
        self._value = 0.0
        registry.register(self)

    def set(self, value: float) -> None:
        self._value = float(value)

    def describe(self) -> list[CounterMetricFamily]:
        return [CounterMetricFamily(self.name, self.documentation)]

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(self.name, self.documentation, value=self._value)


_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

HTTP_REQUEST_DURATION = Histogram(
    "kai_inventory_http_request_duration_seconds",
    "HTTP request latency by route template, method and status.",
    ["route", "method", "status"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
HOLDS = Counter(
    "kai_inventory_holds_total",
    "Hold attempts by outcome (held, seats_unavailable, insufficient_inventory, hold_limit, "
    "rate_limited, sale_closed, invalid, error).",
    ["outcome"],
    registry=REGISTRY,
)
HOLDS_LIVE = Gauge(
    "kai_inventory_holds_live", "Holds currently live (held, not yet expired).", registry=REGISTRY
)
HOLDS_EXPIRED = GlobalCounter(
    "kai_inventory_holds_expired",
    "Holds freed by expiry, counted by the Redis servers' scripts since they (re)loaded the "
    "library; every process exports the same total (aggregate with max, not sum).",
    registry=REGISTRY,
)
REAPER_LAG = Gauge(
    "kai_inventory_reaper_lag_seconds",
    "How far past its deadline the oldest unreaped hold is.",
    registry=REGISTRY,
)
CONFIRM_DURATION = Histogram(
    "kai_inventory_confirm_duration_seconds",
    "Confirm latency split into its parts (redis, postgres).",
    ["part"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
BOOKINGS = Counter(
    "kai_inventory_bookings_total",
    "Bookings by outcome (confirmed, cancelled).",
    ["outcome"],
    registry=REGISTRY,
)
RATE_LIMITED = Counter(
    "kai_inventory_rate_limited_total", "Requests refused with 429.", registry=REGISTRY
)
REBUILDS = Counter(
    "kai_inventory_rebuilds_total",
    "Schedules rebuilt in Redis from Postgres, by trigger (startup, lost, restart, operator, "
    "reconcile).",
    ["trigger"],
    registry=REGISTRY,
)
REBUILD_IN_PROGRESS = Gauge(
    "kai_inventory_rebuild_in_progress", "1 while a Redis rebuild is running.", registry=REGISTRY
)
RECONCILED = Counter(
    "kai_inventory_reconciled_total",
    "Confirmed bookings whose Redis mark-sold was finished by reconcile.",
    registry=REGISTRY,
)
DEPENDENCY_UP = Gauge(
    "kai_inventory_dependency_up",
    "1 when the dependency answered its last check (redis, postgres).",
    ["dependency"],
    registry=REGISTRY,
)
DEPENDENCY_ERRORS = Counter(
    "kai_inventory_dependency_errors_total",
    "Calls that failed because a dependency was unreachable (redis, postgres).",
    ["dependency"],
    registry=REGISTRY,
)
WS_CONNECTIONS = Gauge(
    "kai_inventory_ws_connections", "Open WebSocket connections.", registry=REGISTRY
)
WS_SUBSCRIPTIONS = Gauge(
    "kai_inventory_ws_subscriptions", "Active WebSocket subscriptions.", registry=REGISTRY
)
WS_MESSAGES = Counter(
    "kai_inventory_ws_messages_total",
    "WebSocket messages sent, by type (snapshot, update, schedule_status, queue, other).",
    ["type"],
    registry=REGISTRY,
)
WS_RESYNCS = Counter(
    "kai_inventory_ws_resync_snapshots_total",
    "Snapshots sent in place of updates (slow client, version gap, reconnect).",
    ["reason"],
    registry=REGISTRY,
)
WS_DROPPED = Counter(
    "kai_inventory_ws_dropped_updates_total",
    "Queued updates dropped because a client fell behind.",
    registry=REGISTRY,
)
WS_SLOW_CLOSES = Counter(
    "kai_inventory_ws_slow_client_closes_total",
    "Connections closed because the client did not drain in time.",
    registry=REGISTRY,
)
WS_PUSH_LAG = Histogram(
    "kai_inventory_ws_push_lag_seconds",
    "From the change committed in Redis to the frame written to the socket.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0),
    registry=REGISTRY,
)
QUEUE_WAITING = Gauge(
    "kai_inventory_queue_waiting", "Users waiting in sale queues.", registry=REGISTRY
)
QUEUE_ADMITTED = Counter(
    "kai_inventory_queue_admitted_total", "Users admitted from sale queues.", registry=REGISTRY
)
QUEUE_WAIT = Histogram(
    "kai_inventory_queue_wait_seconds",
    "Time from joining a sale queue to admission.",
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 3600),
    registry=REGISTRY,
)


def exported_names() -> set[str]:
    """Every sample name this registry can export (with _bucket/_sum/_count/_total suffixes)."""
    names: set[str] = set()
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            names.add(sample.name)
        names.add(metric.name)
        if metric.type == "histogram":
            names.update({f"{metric.name}_{s}" for s in ("bucket", "sum", "count")})
        elif metric.type == "counter":
            names.add(f"{metric.name}_total")
    return names
