"""What a claimed delivery becomes, given what happened: a pure function.

No I/O, no clock, no randomness of its own: ``now`` and ``rand`` are passed in,
so every rule here is tested directly (tests/unit/test_decide.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from outbox.providers.base import Outcome, OutcomeKind
from outbox.schedule import backoff_delay, past_expiry

# A provider's Retry-After is honoured up to a day: a larger (or non-finite) value is
# a provider's bug, and the database could not even store ``now() + inf``.
MAX_RETRY_AFTER_SECONDS = 86_400.0


@dataclass(frozen=True, slots=True)
class Decision:
    """The row update and event for one delivery attempt."""

    status: str  # sent | pending | dead | expired | suppressed
    kind: str  # the event: sent, retry, dead, expired, deferred, suppressed
    delay: float | None = None  # seconds until the next attempt (pending only)
    error: str | None = None
    provider: str | None = None
    provider_message_id: str | None = None
    refund: int = 0  # 1: this attempt does not count (deferral, provider misconfigured)
    in_doubt: int = 0  # 1: the provider may have accepted it anyway
    dead_destination: bool = False  # deactivate the device / suppress the address
    detail: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def expired(cls, why: str, **fields: Any) -> Decision:
        """Never send late: it expired (``why``) before it could be sent. Every such
        decision is made here, so the status, the event and the shape agree."""
        return cls("expired", "expired", error=why, **fields)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base_seconds: float
    cap_seconds: float
    config_pause_seconds: float


def decide(
    outcome: Outcome,
    *,
    provider: str,
    attempt: int,
    max_attempts: int,
    expires_at: datetime | None,
    now: datetime,
    rand: float,
    policy: RetryPolicy,
) -> Decision:
    """Map a provider outcome for attempt ``attempt`` to the delivery's next state.

    * sent: sent.
    * retry / unknown: back to pending after exponential backoff with full jitter
      (at least the provider's Retry-After); dead once ``max_attempts`` is used up;
      expired if the next attempt would come after ``expires_at``. Unknown outcomes
      count as in doubt (the provider may have accepted the message).
    * permanent, dead destination: dead at once, with the reason.
    * config: pending after a pause, the attempt refunded (a broken credential must
      not burn every message's attempts).
    """
    detail = {"provider": provider, "outcome": outcome.kind.value, **outcome.detail}
    reason = f"{provider}: {outcome.reason}" if outcome.reason else provider
    kind = outcome.kind

    if kind is OutcomeKind.SENT:
        return Decision(
            "sent",
            "sent",
            provider=provider,
            provider_message_id=outcome.provider_message_id,
            detail=detail,
        )

    if past_expiry(expires_at, now) or (
        expires_at is not None and outcome.detail.get("error") == "expired"
    ):
        # Whatever went wrong, the message no longer matters: expired, not dead or
        # retried (a dead destination is still retired). Adapters that refuse to send
        # what cannot arrive in time (Twilio's validity period is at least 1 s) say
        # so with error="expired" (outbox.providers.transport.expired_outcome).
        return Decision.expired(
            f"expired before it could be sent; last error: {reason}",
            provider=provider,
            dead_destination=kind is OutcomeKind.DEAD_DESTINATION,
            in_doubt=1 if kind is OutcomeKind.UNKNOWN else 0,
            detail=detail,
        )

    if kind in (OutcomeKind.PERMANENT, OutcomeKind.DEAD_DESTINATION):
        return Decision(
            "dead",
            "dead",
            error=reason,
            provider=provider,
            dead_destination=kind is OutcomeKind.DEAD_DESTINATION,
            detail=detail,
        )

    if kind is OutcomeKind.CONFIG:
        delay = max(policy.config_pause_seconds, _retry_after(outcome))
        return _pending_or_expired(delay, reason, provider, expires_at, now, detail, refund=1)

    # RETRY or UNKNOWN
    in_doubt = 1 if kind is OutcomeKind.UNKNOWN else 0
    if attempt >= max_attempts:
        exhausted = f"attempts exhausted ({attempt}/{max_attempts}): {reason}"
        return Decision(
            "dead", "dead", error=exhausted, provider=provider, in_doubt=in_doubt, detail=detail
        )
    delay = max(
        backoff_delay(attempt, policy.base_seconds, policy.cap_seconds, rand), _retry_after(outcome)
    )
    return _pending_or_expired(delay, reason, provider, expires_at, now, detail, in_doubt=in_doubt)


def _retry_after(outcome: Outcome) -> float:
    value = outcome.retry_after
    if value is None or math.isnan(value):
        return 0.0
    return min(max(value, 0.0), MAX_RETRY_AFTER_SECONDS)


def _pending_or_expired(
    delay: float,
    reason: str,
    provider: str,
    expires_at: datetime | None,
    now: datetime,
    detail: dict[str, Any],
    *,
    refund: int = 0,
    in_doubt: int = 0,
) -> Decision:
    if past_expiry(expires_at, now + timedelta(seconds=delay)):
        # It would only be tried after it stopped mattering: never send late.
        return Decision.expired(
            f"expires before the next attempt; last error: {reason}",
            provider=provider,
            in_doubt=in_doubt,
            detail=detail,
        )
    detail = {**detail, "retry_in_seconds": round(delay, 3)}
    return Decision(
        "pending",
        "retry",
        delay=delay,
        error=reason,
        provider=provider,
        refund=refund,
        in_doubt=in_doubt,
        detail=detail,
    )


def failed_before_sending(reason: str, **detail: Any) -> Decision:
    """A delivery that cannot be sent at all (template error, no template): dead, with why."""
    return Decision("dead", "dead", error=reason, detail=detail)


def cancel_requested_before_sending() -> Decision:
    """outbox.cancel asked a claimed delivery to stop before its provider call: the call is
    not made, and the attempt does not count.

    Pending with no delay, as far as the worker knows: the database, which holds
    the request (cancel_requested_at), records it cancelled instead. A stray
    NOTIFY without a request behind it only costs a deferral of no time.
    """
    return not_started("cancel requested before sending")


def not_started(why: str, delay: float = 0.0) -> Decision:
    """A claimed delivery whose provider call was not made after all: pending again after
    ``delay`` seconds, the attempt not counted."""
    return Decision("pending", "deferred", delay=delay, error=why, refund=1, detail={"reason": why})


def deferred(delay: float, why: str, **detail: Any) -> Decision:
    """Not now (rate limit, quiet hours): pending later, the attempt not counted."""
    return Decision(
        "pending",
        "deferred",
        delay=max(delay, 0.0),
        refund=1,
        detail={"reason": why, "retry_in_seconds": round(delay, 3), **detail},
    )


def deferred_unless_expired(
    expires_at: datetime | None,
    now: datetime,
    delay: float,
    why: str,
    expires_why: str,
    **detail: Any,
) -> Decision:
    """Deferred by ``delay`` seconds from ``now``, or expired (``expires_why``) if it could
    only go at or after ``expires_at``: expiry wins over every wait."""
    if past_expiry(expires_at, now + timedelta(seconds=delay)):
        return Decision.expired(expires_why)
    return deferred(delay, why, **detail)
