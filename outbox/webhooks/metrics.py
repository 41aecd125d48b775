"""Prometheus counters of the webhooks service.

Labels are closed sets: ``provider`` is one of the four receipt endpoints'
provider names, ``reason`` one of :attr:`Rejected.STATUS`'s keys, ``result``
one of :data:`RESULTS`. Nothing from a request (an address, an id, a status
string) ever becomes a label value.

The counters live in a registry of their own, :data:`REGISTRY`, which the
webhooks app serves at ``GET /metrics`` (with the process collector: memory,
CPU, open files). Kept apart from the default registry on purpose: the
worker's metrics and these never share an exposition, so neither process
exports the other's always-zero series, even when both modules are imported
in one process (the demo, the tests).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, ProcessCollector

from outbox.webhooks.base import CHANNELS, Rejected

PROVIDERS = tuple(CHANNELS)
REASONS = tuple(Rejected.STATUS)
RESULTS = (
    "applied",  # moved its delivery forward (delivered or dead)
    "applied_late",  # moved it on a later try: the receipt had beaten the worker's record
    "recorded",  # new, recorded as an event; nothing to move (or not allowed to)
    "duplicate",  # seen before (same provider event id): nothing changed
    "unmatched",  # new, but no delivery of ours has that id (recorded all the same)
    # new, naming one of our deliveries that another provider sent, or to another
    # address: recorded, nothing changed (someone else's system, or a forgery)
    "mismatched",
    "refused",  # new, with a value the database would not store: recorded bare, nothing changed
)

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)

REJECTED = Counter(
    "outbox_webhook_requests_rejected",
    "Webhook requests refused with a 4xx, nothing written: unsigned, forged, stale, "
    "malformed, oversize, or for a provider whose secret is not configured.",
    ["provider", "reason"],
    registry=REGISTRY,
)
FAILED = Counter(
    "outbox_webhook_requests_failed",
    "Webhook requests answered 503 because the database was unavailable "
    "(the provider retries them).",
    ["provider"],
    registry=REGISTRY,
)
RECEIPTS = Counter(
    "outbox_webhook_receipts",
    "Receipts (provider events) in accepted webhook requests, by what they did.",
    ["provider", "result"],
    registry=REGISTRY,
)

# Every series exists from the start at 0, so rate() and absent-data alerts work
# before the first rejection.
for _p in PROVIDERS:
    FAILED.labels(_p)
    for _r in REASONS:
        REJECTED.labels(_p, _r)
    for _r in RESULTS:
        RECEIPTS.labels(_p, _r)


def rejected(provider: str, reason: str) -> None:
    """Count a refused request."""
    REJECTED.labels(_provider(provider), reason if reason in REASONS else "malformed").inc()


def failed(provider: str) -> None:
    """Count a request the database could not take."""
    FAILED.labels(_provider(provider)).inc()


def receipt(provider: str, result: str, count: int = 1) -> None:
    """Count receipts by result."""
    if result not in RESULTS:
        raise ValueError(f"unknown receipt result {result!r}")
    if count:
        RECEIPTS.labels(_provider(provider), result).inc(count)


def _provider(name: str) -> str:
    if name not in PROVIDERS:
        raise ValueError(f"unknown webhook provider {name!r}")
    return name
