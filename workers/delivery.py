"""A claimed delivery, as the claim statement returns it, and the leases this worker holds.

:class:`ClaimedDelivery` is one row of the ``claim`` query (sql/queries/worker.sql),
field for field and in the same order, but for the last (the template version's
contents, which store.claim attaches from :class:`TemplateVersions`):
workers/store.py checks the column names once per claim and then builds each
row positionally, so a column
renamed or added in the SQL fails at the first claim, with both lists, rather
than as a missing key somewhere downstream.

The "never send late" rule is :func:`outbox.schedule.past_expiry`: every
check in Python (claim loop, gate, decide, and the provider adapters' last
check before a request) asks it. The claim statement applies the same rule
on the database's clock to the rows it claims; this is the rule for every
later instant (after rendering, after a rate-limit wait, before a retry).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, time
from typing import Any, NamedTuple

from outbox.schedule import past_expiry
from outbox.templates import TemplateVersion


class ClaimedDelivery(NamedTuple):
    """One delivery this worker claimed: what it needs to render, admit, send and record it.

    A NamedTuple, not a frozen dataclass: a claim builds one per row, and a frozen
    dataclass's ``__init__`` sets each of its 29 fields through ``object.__setattr__``
    (3.4 against 0.4 us per row).
    """

    id: int
    notification_id: int
    message_id: str
    channel: str
    destination: str
    # 'processing', or 'expired' when it was past its expiry at claim (never sent).
    status: str
    # The attempt this claim counted: the fencing token for recording its result.
    attempts: int
    max_attempts: int
    priority: int
    expires_at: datetime | None
    # Enqueued, or its scheduled send_at if later: where the latency metric starts.
    due_since: datetime
    data: dict[str, Any]
    template_key: str
    recipient_id: int | None
    # The recipient's locale ('default' for a direct address); the template's may differ.
    locale: str
    # Quiet hours: None for a direct address (no recipient, no known time zone).
    timezone: str | None
    quiet_start: time | None
    quiet_end: time | None
    # A critical category bypasses quiet hours and opt-outs.
    critical: bool
    device_platform: str | None
    device_environment: str | None
    # The active template version resolved along the locale chain; all None when
    # there is none (or the row expired at claim). The claim returns no template
    # text: store.claim attaches the version's contents from the worker's
    # TemplateVersions (``template``, below).
    template_id: int | None
    template_version: int | None
    template_locale: str | None
    content_hash: str | None
    # Why it must not go after all (opt-out, suppressed address, dead device), else None.
    blocked: str | None
    # The configured rate limits (the same on every row): which channels have a
    # per-recipient limit, which providers a per-provider one.
    limited_channels: list[str] | None
    limited_providers: list[str] | None
    # Not a column: the version template_id names, with its contents (one shared
    # object per version), or None when there is none.
    template: TemplateVersion | None = None

    def expired(self, at: datetime) -> bool:
        """Whether it may no longer be sent at ``at`` (:func:`past_expiry`)."""
        return past_expiry(self.expires_at, at)

    def resolved_template(self) -> TemplateVersion:
        """The template version the claim resolved for this delivery."""
        # store.claim attaches one to every row with a template_id; a row without
        # one is refused before rendering.
        assert self.template is not None
        return self.template


#: The claim query's columns, in order.
COLUMNS: tuple[str, ...] = tuple(f for f in ClaimedDelivery._fields if f != "template")

#: Template versions a worker keeps in memory (then it starts again from empty).
TEMPLATE_CACHE_SIZE = 1024


class TemplateVersions:
    """The template versions this worker has rendered, by id: a claim returns only a
    version's id and content hash, and the contents are fetched once per version.

    Versions are immutable (a trigger refuses any change), so an id always names
    the same content; the hash is still compared, because a process can outlive a
    database (tests recreate them) and ids are then reused.
    """

    def __init__(self, size: int = TEMPLATE_CACHE_SIZE) -> None:
        self.size = size
        self._by_id: dict[int, TemplateVersion] = {}

    def get(self, template_id: int | None, content_hash: str | None) -> TemplateVersion | None:
        """The version ``template_id`` if it is known with that content, else None."""
        if template_id is None:
            return None
        found = self._by_id.get(template_id)
        return found if found is not None and found.content_hash == content_hash else None

    def missing(self, wanted: Iterable[tuple[int | None, str | None]]) -> list[int]:
        """The ids among (template id, content hash) pairs whose contents are not known."""
        return sorted({i for i, h in wanted if i is not None and self.get(i, h) is None})

    def add(self, versions: Iterable[TemplateVersion]) -> None:
        """Keep ``versions``: all of them, so a claim finds every one it just read
        (what would pass ``size`` empties the store first)."""
        new = {version.id: version for version in versions}
        if len(self._by_id) + len(new) > self.size:
            self._by_id.clear()
        self._by_id.update(new)


@dataclass(slots=True)
class Held:
    """A delivery this worker claimed and has not recorded yet."""

    attempt: int
    # Cancels are announced by notification (NOTIFY outbox_cancel).
    notification_id: int
    # True once the provider call began: if it is interrupted, the provider may
    # have the message, so releasing it counts the attempt as in doubt.
    started: bool = False
    # True once outbox.cancel asked it to stop: if the provider call has not
    # begun, it does not begin.
    cancel_requested: bool = False


class Leases:
    """The deliveries this worker holds a lease on, from claim until recorded.

    Heartbeats extend exactly these; at shutdown, what is left is given back.
    """

    def __init__(self) -> None:
        self._held: dict[int, Held] = {}

    def hold(self, delivery: ClaimedDelivery) -> None:
        self._held[delivery.id] = Held(delivery.attempts, delivery.notification_id)

    def started(self, delivery_id: int) -> None:
        """The provider call for it began: from now on it may have been sent."""
        held = self._held.get(delivery_id)
        if held is not None:
            held.started = True

    def may_start(self, delivery_id: int) -> bool:
        """False once outbox.cancel asked it to stop: its provider call must not begin."""
        held = self._held.get(delivery_id)
        return held is None or not held.cancel_requested

    def cancel_requested(self, notification_id: int) -> list[int]:
        """outbox.cancel was called for ``notification_id``: mark its deliveries held here
        whose provider call has not begun; their ids."""
        marked = []
        for delivery_id, held in self._held.items():
            if held.notification_id == notification_id and not held.started:
                held.cancel_requested = True
                marked.append(delivery_id)
        return marked

    def forget(self, delivery_id: int) -> None:
        self._held.pop(delivery_id, None)

    def ids(self) -> list[int]:
        return list(self._held)

    def leftovers(self) -> list[tuple[int, int, bool]]:
        """(delivery id, attempt, started) of every lease still held."""
        return [(i, h.attempt, h.started) for i, h in self._held.items()]

    def __len__(self) -> int:
        return len(self._held)
