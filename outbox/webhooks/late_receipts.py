"""Receipts that beat the worker: held in memory and applied again for a while.

A provider can report "delivered" before the worker has recorded "sent": the
worker records results in batches after the provider answered, and Twilio's
callbacks follow its answer within milliseconds. Such a receipt is recorded
(as an event) at once, but its delivery is still 'processing' (or its provider
message id is not stored yet), and a receipt moves only a 'sent' delivery: the
worker holds the lease, and nothing else may write its row.

So the service keeps these receipts for ``late_receipt_s`` (default 120 s, past
a 30 s lease and a retry) and applies them again every
``late_retry_interval_s``. They are in memory only: a restart forgets them, and
the delivery then stays 'sent' with its receipt visible in its events. That
loss needs a restart inside a window of seconds; a table scanned on a timer
would cost every deployment, always.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import replace

from outbox.webhooks.base import Receipt
from outbox.webhooks.store import Outcome


class LateReceipts:
    """Receipts waiting for their delivery to be 'sent', each with a deadline (monotonic s)."""

    def __init__(self, keep_s: float, limit: int) -> None:
        self.keep_s = keep_s
        self.limit = limit
        # (provider, event id) -> (receipt, deadline); insertion order = oldest first.
        self._held: OrderedDict[tuple[str, str], tuple[Receipt, float]] = OrderedDict()
        self.dropped = 0  # given up: deadline passed or over the limit

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, outcomes: Iterable[Outcome], now: float) -> int:
        """Keep the outcomes that are waiting; return how many were added."""
        added = 0
        for outcome in outcomes:
            if not outcome.waiting or self.keep_s <= 0:
                continue
            receipt = outcome.receipt
            if outcome.delivery_id is not None:
                # Matched once: keep matching that delivery, even if a later attempt
                # stores another provider message id.
                receipt = replace(receipt, delivery_id=outcome.delivery_id)
            self._held[(receipt.provider, receipt.event_id)] = (receipt, now + self.keep_s)
            added += 1
        while len(self._held) > self.limit:
            self._held.popitem(last=False)
            self.dropped += 1
        return added

    def due(self, now: float) -> list[Receipt]:
        """Everything held, after dropping receipts whose deadline has passed."""
        for key in [k for k, (_, deadline) in self._held.items() if deadline <= now]:
            del self._held[key]
            self.dropped += 1
        return [receipt for receipt, _ in self._held.values()]

    def settle(self, outcomes: Iterable[Outcome]) -> None:
        """Forget the receipts that moved their delivery, or never can."""
        for outcome in outcomes:
            if not outcome.waiting:
                self._held.pop((outcome.receipt.provider, outcome.receipt.event_id), None)
