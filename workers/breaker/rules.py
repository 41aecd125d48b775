"""Circuit breaker rules: pure functions of (breaker, what happened, now).

One breaker per provider, shared by every worker on every host: its state is a
row of ``outbox.provider_breakers``, changed only by the SQL functions of
``sql/breaker.sql``, which apply exactly these rules under a row lock
(``tests/integration/test_breaker.py`` runs both on the same random histories
and compares them). This module is the readable statement of the rules, the
worker's local view uses :func:`may_send`, and the unit tests pin each rule.

::

                 N consecutive transient failures,
                 or one config outcome
      closed ───────────────────────────────────▶ open ◀─────────────┐
        ▲                                          │                 │ probe failed:
        │ probe succeeded                          │ retry_at passed │ cool-down doubled
        │                                          ▼ (one worker     │ (capped)
        └────────────────────────────────────── half_open ───────────┘
                                                 claims the probe)

* **closed**: traffic flows. Transient failures (``retry``, ``unknown``) are
  counted; any answer that shows the provider working (``sent``, and also
  ``permanent`` / ``dead_destination``: the provider understood us and said
  no) resets the count. ``failure_threshold`` consecutive failures open it; a
  single ``config`` outcome opens it at once (a revoked key fails every
  message alike, so waiting for more evidence only burns attempts).
* **open**: the router skips the provider until ``retry_at``. Results of sends
  that were already in flight when it opened change nothing.
* **half_open**: after ``retry_at`` one worker claims the probe (for
  ``probe_seconds``; if it sends nothing in that time, another worker may claim
  it) and sends ONE message through the provider. Only that worker's results
  decide: a success closes the breaker; a failure opens it again with the
  cool-down doubled, up to ``cooldown_cap_seconds``.

"Consecutive" is counted per recorded batch: a batch's results are folded
into a :class:`Tally` in the order they finished, so only the failures after
the batch's last success continue the run of failures.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

__all__ = [
    "CLOSED",
    "HALF_OPEN",
    "OPEN",
    "STATES",
    "Breaker",
    "BreakerPolicy",
    "Tally",
    "claim_probe",
    "may_send",
    "record",
    "tally",
]

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
STATES = (CLOSED, OPEN, HALF_OPEN)

# Outcome kinds (outbox.providers.base.OutcomeKind values) by what they say about
# the provider itself, not about the message.
HEALTHY_KINDS = frozenset({"sent", "permanent", "dead_destination"})
FAILURE_KINDS = frozenset({"retry", "unknown"})
CONFIG_KINDS = frozenset({"config"})


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """The breaker's knobs (settings ``OUTBOX_BREAKER_*``), validated at construction."""

    # Consecutive transient failures that open a closed breaker. Not fewer: a provider
    # failing 20% of requests at random (degraded, but worth using) gives 5 in a row once
    # per ~3,000 sends, a breaker flapping every few seconds at volume; 10 in a row once
    # per ~10 million. A provider that is down fails 10 sends in well under a second.
    failure_threshold: int = 10
    # The first cool-down; each failed probe doubles it, up to the cap.
    cooldown_seconds: float = 30.0
    cooldown_cap_seconds: float = 600.0
    # How long a claimed probe is reserved for its worker. Long enough for one
    # provider call and its record; short enough that a worker that died, or has
    # no traffic for this provider, does not hold the provider closed for long.
    probe_seconds: float = 15.0

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ValueError(f"failure_threshold must be at least 1, got {self.failure_threshold}")
        for name in ("cooldown_seconds", "cooldown_cap_seconds", "probe_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.cooldown_cap_seconds < self.cooldown_seconds:
            raise ValueError(
                f"cooldown_cap_seconds ({self.cooldown_cap_seconds}) must be at least "
                f"cooldown_seconds ({self.cooldown_seconds})"
            )

    def cooldown(self, trips: int) -> float:
        """Seconds a breaker stays open after its ``trips``-th opening in a row (1, 2, ...)."""
        # The exponent is bounded so that a provider broken for days cannot overflow it.
        return min(
            self.cooldown_cap_seconds, self.cooldown_seconds * 2.0 ** min(max(trips, 1) - 1, 30)
        )


@dataclass(frozen=True, slots=True)
class Breaker:
    """One provider's breaker: the columns of ``outbox.provider_breakers``."""

    state: str = CLOSED
    # Consecutive transient failures counted while closed (kept while open, to show
    # how it opened; 0 again once it closes).
    failures: int = 0
    # Openings since it was last closed: sets the cool-down (doubling per failed probe).
    trips: int = 0
    opened_at: datetime | None = None
    retry_at: datetime | None = None
    # The last failure's reason (why it opened, when open). Kept after closing.
    reason: str | None = None
    # half_open only: the worker that may send the probe, and until when.
    probe_owner: str | None = None
    probe_expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Tally:
    """One provider's results in one recorded batch."""

    # Answers showing the provider works: sent, permanent, dead_destination.
    successes: int = 0
    # Transient failures (retry, unknown) after the batch's last success; all of
    # them when the batch had no success.
    failures: int = 0
    # config outcomes (anywhere in the batch).
    configs: int = 0
    # The reason of the last failure or config outcome (config wins).
    reason: str | None = None

    @property
    def failed(self) -> bool:
        return self.failures > 0 or self.configs > 0


def tally(results: Iterable[tuple[str, str | None]]) -> Tally:
    """Fold (outcome kind, reason) results, in the order they finished, into a Tally."""
    successes = failures = configs = 0
    reason: str | None = None
    config_reason: str | None = None
    for kind, why in results:
        if kind in HEALTHY_KINDS:
            successes += 1
            failures = 0
        elif kind in FAILURE_KINDS:
            failures += 1
            reason = why or reason
        elif kind in CONFIG_KINDS:
            configs += 1
            config_reason = why or config_reason
    return Tally(successes, failures, configs, config_reason or reason)


def _open(
    b: Breaker, trips: int, reason: str | None, now: datetime, policy: BreakerPolicy
) -> Breaker:
    return Breaker(
        state=OPEN,
        failures=b.failures,
        trips=trips,
        opened_at=now,
        retry_at=now + timedelta(seconds=policy.cooldown(trips)),
        reason=reason or b.reason,
    )


def record(b: Breaker, t: Tally, *, worker: str, now: datetime, policy: BreakerPolicy) -> Breaker:
    """The breaker after ``worker`` recorded the results ``t`` at ``now``."""
    if b.state == CLOSED:
        if t.configs:
            return _open(b, 1, t.reason, now, policy)
        failures = t.failures if t.successes else b.failures + t.failures
        if failures >= policy.failure_threshold:
            return _open(replace(b, failures=failures), 1, t.reason, now, policy)
        return replace(b, failures=failures, reason=t.reason or b.reason)
    if b.state == HALF_OPEN and b.probe_owner == worker:
        if t.failed:
            return _open(b, b.trips + 1, t.reason, now, policy)
        if t.successes:
            return Breaker(state=CLOSED, reason=b.reason)
    # Open, someone else's probe, or nothing that decides: results of sends that
    # began before the breaker opened say nothing new.
    return b


def claim_probe(b: Breaker, *, worker: str, now: datetime, policy: BreakerPolicy) -> Breaker:
    """The breaker after ``worker`` asked for the probe at ``now`` (unchanged if it may not)."""
    due = (b.state == OPEN and b.retry_at is not None and b.retry_at <= now) or (
        b.state == HALF_OPEN and b.probe_expires_at is not None and b.probe_expires_at <= now
    )
    if not due:
        return b
    return replace(
        b,
        state=HALF_OPEN,
        probe_owner=worker,
        probe_expires_at=now + timedelta(seconds=policy.probe_seconds),
    )


def may_send(b: Breaker, worker: str) -> bool:
    """Whether ``worker`` may route a message to the provider (the probe counts once: the
    caller tracks that it was used)."""
    return b.state == CLOSED or (b.state == HALF_OPEN and b.probe_owner == worker)
