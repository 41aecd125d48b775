"""One delivery, from claimed row to decision: render, check limits, route, send.

No database here but the start mark: the claim loop hands each admitted row to
:meth:`Sender.deliver` in a task of its own, and the decision goes to the
recorder. Just before the provider call, ``begin`` (workers/starts.py) commits
the attempt's 'processing' event, together with the other sends starting at
that moment; then the provider call, which never runs inside a database
transaction.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from outbox import metrics
from outbox.channel_limits import check_limits
from outbox.providers.base import Message, Outcome
from outbox.providers.router import Router
from outbox.templates import TemplateError
from outbox.workers.breaker import Breakers
from outbox.workers.decide import (
    Decision,
    RetryPolicy,
    cancel_requested_before_sending,
    decide,
    deferred_unless_expired,
    failed_before_sending,
    not_started,
)
from outbox.workers.delivery import ClaimedDelivery, Leases
from outbox.workers.rendering import Renderer

# A start mark that failed (not a lost lease): claimed again after this long.
START_FAILED_RETRY_SECONDS = 1.0


class Sender:
    """Turns a claimed delivery into a provider call and the call's outcome into a Decision."""

    def __init__(
        self,
        router: Router,
        breakers: Breakers,
        leases: Leases,
        policy: RetryPolicy,
        renderer: Renderer,
        begin: Callable[[ClaimedDelivery], Awaitable[bool]],
        *,
        clock: Callable[[], datetime],
        rand: Callable[[], float],
        max_sms_segments: int,
        log: Any,
    ) -> None:
        self.router = router
        self.breakers = breakers
        self.leases = leases
        self.policy = policy
        self.renderer = renderer
        # Commits the attempt's start mark (Starts.begin); False: it must not start.
        self.begin = begin
        self.clock = clock
        self.rand = rand
        self.max_sms_segments = max_sms_segments
        self._log = log

    async def deliver(self, row: ClaimedDelivery) -> Decision:
        """Send ``row`` once; its decision. A bug here becomes an ``unknown`` outcome,
        never a lost delivery."""
        try:
            return await self._attempt(row)
        except Exception as exc:  # noqa: BLE001 - a bug must not lose the delivery
            self._log.exception(
                "delivery.worker_error",
                delivery_id=row.id,
                message_id=row.message_id,
                channel=row.channel,
                provider=None,
                attempt=row.attempts,
            )
            outcome = Outcome.unknown(f"worker error: {type(exc).__name__}")
            return self.decide(row, "worker", outcome)

    async def _attempt(self, row: ClaimedDelivery) -> Decision:
        if row.template_id is None:
            return failed_before_sending(
                f"no active version of template {row.template_key!r} for {row.channel} "
                f"(locale {row.locale})",
                template=row.template_key,
            )
        template = row.template
        if template is None:
            # Its contents could not be read after the claim (a version removed with
            # its guard trigger disabled): nothing to render, so it fails with why.
            return failed_before_sending(
                f"template version {row.template_id} of {row.template_key!r} not found",
                template=row.template_key,
            )
        try:
            # Off the loop when it takes more than a moment (workers/rendering.py).
            rendered = await self.renderer.render(template, row.data)
            check_limits(
                row.channel,
                rendered,
                row.data,
                template=template,
                max_sms_segments=self.max_sms_segments,
            )
        except TemplateError as exc:
            return failed_before_sending(str(exc), template=template.key, version=template.version)

        message = Message(
            delivery_id=row.id,
            notification_id=row.notification_id,
            message_id=row.message_id,
            channel=row.channel,
            destination=row.destination,
            attempt=row.attempts,
            priority=row.priority,
            body=rendered.body,
            subject=rendered.subject,
            html_body=rendered.html_body,
            title=rendered.title,
            data=row.data,
            expires_at=row.expires_at,
            device_platform=row.device_platform,
            device_environment=row.device_environment,
        )
        if row.expired(self.clock()):
            # Claimed in time, but rendering or the gate took it past its expiry.
            return Decision.expired("expired before it could be sent")
        if not self.leases.may_start(row.id):
            # outbox.cancel was called since the claim; the last moment to hear it.
            return cancel_requested_before_sending()
        provider = self.router.choose(message)
        if provider is None:
            return self._no_provider(row, message)
        if not await self.begin(row):
            # The lease is gone (the result will be dropped), or the mark failed: no
            # call without a committed mark, else a crash now could duplicate uncounted.
            return not_started(
                "not started: lease lost or start not recorded", START_FAILED_RETRY_SECONDS
            )
        if not self.leases.may_start(row.id):
            # A cancel heard while the mark was written: the call is still not made.
            return cancel_requested_before_sending()
        # Again: a send of the same group may have opened a breaker meanwhile.
        provider = self.router.choose(message)
        if provider is None:
            return self._no_provider(row, message)
        self.breakers.sending(provider.name)
        self.leases.started(row.id)
        began, kind = time.perf_counter(), "error"
        try:
            outcome = await provider.send(message)
            kind = outcome.kind.value
            self.breakers.observe(provider.name, kind)
        finally:
            metrics.observe_provider_call(provider.name, kind, time.perf_counter() - began)
        return self.decide(row, provider.name, outcome)

    def _no_provider(self, row: ClaimedDelivery, message: Message) -> Decision:
        """Every provider that could send ``message`` has its breaker open: wait, attempt
        refunded."""
        names = [p.name for p in self.router.candidates(message)]
        if not names:
            # Nothing is configured for it at all (e.g. a device platform not listed):
            # a configuration problem, paused like one.
            return self.decide(
                row,
                "router",
                Outcome.config(
                    f"no provider configured for {row.channel}"
                    + (f" on {row.device_platform}" if row.device_platform else "")
                ),
            )
        # Until the first of them may take traffic again, spread by up to 10% so
        # that a backlog deferred together does not all come back in the same second.
        delay = self.breakers.wait_seconds(names) * (1.0 + 0.1 * self.rand())
        return deferred_unless_expired(
            row.expires_at,
            self.clock(),
            delay,
            "provider unavailable (circuit breaker open)",
            f"expires while every provider is unavailable: {', '.join(names)}",
            providers=names,
        )

    def decide(self, row: ClaimedDelivery, provider: str, outcome: Outcome) -> Decision:
        return decide(
            outcome,
            provider=provider,
            attempt=row.attempts,
            max_attempts=row.max_attempts,
            expires_at=row.expires_at,
            now=self.clock(),
            rand=self.rand(),
            policy=self.policy,
        )
