"""What the sandbox received and what it answered, for tests and the demo.

Each provider request becomes one :class:`Recorded` entry: who it was for,
our ids as the provider saw them (APNs collapse id, FCM collapse key,
SendGrid custom_args, Vonage client-ref, Mandrill metadata), the answer the
fault injector chose and the HTTP status sent. Credentials are never
recorded. Receipts (status callbacks and event webhooks the sandbox sent
back) are recorded alongside.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Recorded:
    """One provider request the sandbox answered."""

    seq: int
    provider: str
    received_at: float  # epoch seconds
    method: str
    path: str
    destination: str | None
    answer: str  # "ok", "timeout", "dead", or the provider's error name
    status: int | None  # None while a "timeout" answer keeps the request open
    provider_message_id: str | None = None
    environment: str | None = None  # APNs: production | sandbox
    ids: dict[str, Any] = field(default_factory=dict)
    fields: dict[str, Any] = field(default_factory=dict)
    # The client's address and port: requests on one connection share it, so
    # tests can see connection reuse and HTTP/2 multiplexing.
    connection: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Receipt:
    """One delivery receipt the sandbox sent back (a status callback or event webhook)."""

    seq: int
    provider: str
    sent_at: float
    url: str
    events: list[str]
    provider_message_id: str | None
    status: int | None  # the receiver's last HTTP status; None if it could not be reached
    error: str | None = None
    attempts: int = 1  # POSTs made: more than one when the receiver failed and it was retried

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Recorder:
    """Thread-safe, in-memory log of requests and receipts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[Recorded] = []
        self._receipts: list[Receipt] = []
        self._seq = 0

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def add(self, **values: Any) -> Recorded:
        """Record one provider request (fields of :class:`Recorded` except seq)."""
        with self._lock:
            entry = Recorded(seq=self._next(), received_at=time.time(), **values)
            self._requests.append(entry)
            return entry

    def add_receipt(self, **values: Any) -> Receipt:
        """Record one receipt sent back (fields of :class:`Receipt` except seq)."""
        with self._lock:
            entry = Receipt(seq=self._next(), sent_at=time.time(), **values)
            self._receipts.append(entry)
            return entry

    def requests(
        self, provider: str | None = None, destination: str | None = None, since: int = 0
    ) -> list[Recorded]:
        """Recorded requests, oldest first, optionally filtered."""
        with self._lock:
            return [
                r
                for r in self._requests
                if r.seq > since
                and (provider is None or r.provider == provider)
                and (destination is None or r.destination == destination)
            ]

    def receipts(self, provider: str | None = None) -> list[Receipt]:
        """Receipts sent back, oldest first."""
        with self._lock:
            return [r for r in self._receipts if provider is None or r.provider == provider]

    def counts(self) -> dict[str, dict[str, Any]]:
        """Per provider: total requests and how many got each answer."""
        with self._lock:
            out: dict[str, dict[str, Any]] = {}
            for provider in sorted({r.provider for r in self._requests}):
                answers = Counter(r.answer for r in self._requests if r.provider == provider)
                out[provider] = {"total": sum(answers.values()), "answers": dict(answers)}
            return out

    def clear(self) -> None:
        """Forget everything recorded."""
        with self._lock:
            self._requests.clear()
            self._receipts.clear()
