"""Prometheus metrics: what each worker exports on ``settings.metrics_port``.

Three kinds, each cheap where it is updated:

* counters and histograms, updated in memory on the worker's hot path (one
  ``inc()`` / ``observe()`` per result, never a database query);
* queue gauges (depth, oldest due age), refreshed by :class:`QueueGauges` from
  ONE query every ``interval_seconds`` in the worker's housekeeping, so the
  database sees the same small load whatever the delivery rate;
* the breaker gauge, set by the circuit breaker through
  :func:`set_breaker_state`.

Label sets are bounded, so a metric never grows a series per message: channel
(email, sms, push), provider (the providers configured, plus the pseudo
providers ``router``, ``worker`` and ``none`` used when no provider was
called), outcome (:data:`OUTCOMES`), status (pending, processing). Nothing
derived from a message, a recipient or an error text is ever a label, and no
secret can reach a metric.

Every worker exports the queue gauges (they describe the shared queue, not the
worker): aggregate them with ``max`` across instances, not ``sum``.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import start_http_server as _start_http_server

from outbox.settings import CHANNELS
from outbox.sql import query

__all__ = [
    "BREAKER_STATES",
    "OUTCOMES",
    "QueueGauges",
    "observe_provider_call",
    "record_config_error",
    "record_fenced",
    "record_result",
    "serve",
    "set_breaker_state",
]

#: Every value of the ``outcome`` label of ``outbox_deliveries_total``.
OUTCOMES = ("sent", "retried", "dead", "expired", "suppressed", "deferred", "cancelled", "fenced")

# A recorded decision's event kind -> its outcome label. Anything else is counted
# as "other" rather than minting a new label value.
_KIND_OUTCOME = {
    "sent": "sent",
    "retry": "retried",
    "dead": "dead",
    "expired": "expired",
    "suppressed": "suppressed",
    "deferred": "deferred",
    # Cancelled by the application while in flight: the result was not a send.
    "cancelled": "cancelled",
}

#: The breaker gauge's values: a number, so alerts can say ``== 2`` (open).
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}

# The statuses the queue gauges report (finished rows are history, not queue).
QUEUE_STATUSES = ("pending", "processing")

# Seconds. End-to-end spans a login code (sub-second) to a backed-off retry (an hour).
_LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600)
# Provider calls: an HTTP round trip, up to the provider timeout.
_CALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

DELIVERIES = Counter(
    "outbox_deliveries",
    "Delivery attempt results recorded by this worker, by channel, provider and outcome "
    "(fenced: dropped because the lease was lost).",
    ["channel", "provider", "outcome"],
)
LATENCY = Histogram(
    "outbox_delivery_latency_seconds",
    "End to end: from when a notification became due (enqueued, or its send_at) until a "
    "provider accepted it. Retries, deferrals and queueing all count.",
    ["channel"],
    buckets=_LATENCY_BUCKETS,
)
PROVIDER_CALL = Histogram(
    "outbox_provider_call_seconds",
    "Duration of one provider send call, by provider and outcome kind "
    "(sent, retry, permanent, dead_destination, config, unknown, error).",
    ["provider", "outcome"],
    buckets=_CALL_BUCKETS,
)
QUEUE_DEPTH = Gauge(
    "outbox_queue_depth",
    "Unfinished deliveries by channel and status (pending includes those scheduled for later).",
    ["channel", "status"],
)
QUEUE_DUE = Gauge(
    "outbox_queue_due",
    "Pending deliveries that are due now, by channel: the backlog the workers have to catch up.",
    ["channel"],
)
OLDEST_DUE = Gauge(
    "outbox_oldest_pending_age_seconds",
    "Age of the oldest due pending delivery, by channel (0 when none is due): how far behind "
    "the workers are.",
    ["channel"],
)
GAUGES_UPDATED = Gauge(
    "outbox_queue_gauges_updated_timestamp_seconds",
    "Unix time the queue gauges were last refreshed from the database (stale = not refreshing).",
)
BREAKER = Gauge(
    "outbox_provider_breaker_state",
    "Circuit breaker state per provider: 0 closed, 1 half-open, 2 open.",
    ["provider"],
)
CONFIG_ERRORS = Counter(
    "outbox_provider_config_errors",
    "Provider answers classified as config (credentials, account or sender setup broken). "
    "Each one opens the provider's circuit breaker; alert on any increase: only a person fixes it.",
    ["provider"],
)


def _outcome(kind: str) -> str:
    return _KIND_OUTCOME.get(kind, "other")


# The labelled series, looked up once each: labels() costs more than the update.
@functools.cache
def _deliveries(channel: str, provider: str, outcome: str) -> Any:
    return DELIVERIES.labels(channel, provider, outcome)


@functools.cache
def _latency(channel: str) -> Any:
    return LATENCY.labels(channel)


@functools.cache
def _provider_call(provider: str, outcome: str) -> Any:
    return PROVIDER_CALL.labels(provider, outcome)


def record_result(
    channel: str, provider: str | None, kind: str, latency_seconds: float | None = None
) -> None:
    """Count one recorded result (``kind`` is the decision's event kind: sent, retry, ...).

    ``latency_seconds`` (due -> accepted) is observed for sends only.
    """
    _deliveries(channel, provider or "none", _outcome(kind)).inc()
    if kind == "sent" and latency_seconds is not None:
        # Clocks of the worker and the database may differ by a little: never negative.
        _latency(channel).observe(max(latency_seconds, 0.0))


def record_fenced(channel: str, provider: str | None) -> None:
    """Count one result dropped because this worker no longer held the lease."""
    _deliveries(channel, provider or "none", "fenced").inc()


def observe_provider_call(provider: str, outcome: str, seconds: float) -> None:
    """Time one ``provider.send`` call; ``outcome`` is the Outcome kind, or ``error``."""
    _provider_call(provider, outcome).observe(seconds)


def set_breaker_state(provider: str, state: str | int) -> None:
    """Export a provider's circuit breaker state: closed, half_open or open (or 0, 1, 2).

    The circuit breaker calls this on every transition; an unknown state is a
    bug in the caller and raises ValueError naming it.
    """
    if isinstance(state, str):
        try:
            value = BREAKER_STATES[state.replace("-", "_")]
        except KeyError:
            raise ValueError(
                f"unknown breaker state {state!r}; expected one of {sorted(BREAKER_STATES)}"
            ) from None
    elif state in BREAKER_STATES.values():
        value = state
    else:
        raise ValueError(f"unknown breaker state {state!r}; expected 0, 1 or 2")
    BREAKER.labels(provider).set(value)


def record_config_error(provider: str, count: int = 1) -> None:
    """Count ``count`` config outcomes of ``provider``.

    The worker also logs provider.misconfigured for them.
    """
    CONFIG_ERRORS.labels(provider).inc(count)


def serve(port: int, addr: str = "0.0.0.0", registry: CollectorRegistry = REGISTRY) -> Any:
    """Serve /metrics over HTTP on a daemon thread; return the server (``.server_address``).

    Port 0 picks a free port (tests). Call ``.shutdown()`` on the result to stop it.
    """
    server, _thread = _start_http_server(port, addr=addr, registry=registry)
    return server


class QueueGauges:
    """Refreshes the queue gauges from one query (``queue_gauges``) at most every interval.

    The worker's housekeeping calls :meth:`tick` every few seconds; tests call
    :meth:`run_once` directly. The query reads only the partial indexes of
    unfinished rows, so its cost does not grow with the history kept.
    """

    def __init__(
        self,
        interval_seconds: float = 15.0,
        channels: Iterable[str] = CHANNELS,
        clock: Any = time.monotonic,
    ) -> None:
        if interval_seconds <= 0:
            raise ValueError(f"interval_seconds must be positive, got {interval_seconds}")
        self.interval_seconds = interval_seconds
        self.channels = tuple(channels)
        self.clock = clock
        # When the next refresh is due (monotonic seconds); 0: at the first tick.
        self._next = 0.0

    async def tick(self, conn: Any) -> bool:
        """Refresh if the interval has passed; whether it did."""
        now = self.clock()
        if now < self._next:
            return False
        self._next = now + self.interval_seconds
        await self.run_once(conn)
        return True

    async def run_once(self, conn: Any) -> dict[str, Any]:
        """Query the queue and set every gauge (zero where nothing is queued); return the values.

        ``conn`` is an async psycopg connection (the worker's housekeeping one).
        """
        cur = await conn.execute(query("queue_gauges"))
        rows = await cur.fetchall()
        depth = {(c, s): 0 for c in self.channels for s in QUEUE_STATUSES}
        due = dict.fromkeys(self.channels, 0)
        oldest = dict.fromkeys(self.channels, 0.0)
        for row in rows:
            channel, status, total, n_due, age = _fields(row)
            depth[(channel, status)] = total
            if status == "pending":
                due[channel] = n_due
                oldest[channel] = age or 0.0
        # Every combination is set, so a drained queue shows 0 rather than a stale value.
        for (channel, status), value in depth.items():
            QUEUE_DEPTH.labels(channel, status).set(value)
        for channel in due:
            QUEUE_DUE.labels(channel).set(due[channel])
            OLDEST_DUE.labels(channel).set(oldest[channel])
        GAUGES_UPDATED.set_to_current_time()
        return {"depth": depth, "due": due, "oldest_due_age_seconds": oldest}


def _fields(row: Any) -> tuple[str, str, int, int, float | None]:
    if isinstance(row, dict):
        return (
            row["channel"],
            row["status"],
            row["total"],
            row["due"],
            row["oldest_due_age_seconds"],
        )
    return tuple(row)
