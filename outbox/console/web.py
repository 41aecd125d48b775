"""The console's request and response plumbing: forms, ids, paths, headers, display filters.

No state and no database: what the pages of :mod:`outbox.console.app` share.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request

from outbox import ops

MAX_FORM_BYTES = 64 * 1024
# A confirmation lists what it will change; more ids than this is not something to read.
CONFIRM_MAX_IDS = 500


class BadInput(Exception):
    """A request parameter the console cannot use; the message names it."""


class CsrfRefused(BadInput):
    """A POST whose CSRF token is missing or not the session's."""

    def __init__(self) -> None:
        super().__init__(
            "This form is stale or came from another page (its CSRF token does not match "
            "your session). Reload the page and try again."
        )


def client_of(request: Request) -> dict[str, str]:
    """Where a request came from, for the audit trail: the peer, and any proxy's claim."""
    who = {"from": request.client.host if request.client else "unknown"}
    forwarded = request.headers.get("x-forwarded-for")
    if forwarded:
        # Not verified (anyone can send the header): recorded as the proxy's claim.
        who["forwarded_for"] = forwarded[:200]
    return who


def local_path(path: str | None, root: str) -> str:
    """``path`` if it is a path on this console (no scheme, no host), else the front page."""
    if path and path.startswith("/") and not path.startswith("//") and "\\" not in path:
        return path
    return root + "/"


def parse_ids(values: list[str]) -> list[int]:
    try:
        ids = sorted({int(v) for v in values})
    except ValueError:
        raise BadInput("id: delivery ids are whole numbers") from None
    if not ids:
        raise BadInput("id: choose at least one dead delivery")
    if len(ids) > CONFIRM_MAX_IDS:
        raise BadInput(f"id: at most {CONFIRM_MAX_IDS} deliveries at once, got {len(ids)}")
    if any(i < 1 or i > 2**63 - 1 for i in ids):
        raise BadInput("id: out of range")
    return ids


def ago(value: datetime | float | None) -> str:
    if value is None:
        return ""
    seconds = (datetime.now(UTC) - value).total_seconds() if isinstance(value, datetime) else value
    return duration(seconds) + " ago"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m {seconds % 60:.0f}s"
    if seconds < 86400:
        return f"{seconds // 3600:.0f}h {seconds % 3600 // 60:.0f}m"
    return f"{seconds // 86400:.0f}d {seconds % 86400 // 3600:.0f}h"


def timestamp(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else ""


def as_json(value: Any) -> str:
    return json.dumps(ops.jsonable(value), sort_keys=True, ensure_ascii=False)


def security_headers(nonce: str) -> dict[str, str]:
    return {
        "Content-Security-Policy": (
            "default-src 'none'; style-src 'self'; img-src 'self'; "
            f"script-src 'nonce-{nonce}'; form-action 'self'; frame-ancestors 'none'; "
            "base-uri 'none'"
        ),
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        # Search terms and message ids are in URLs: never sent on to another site.
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }


async def read_form(request: Request) -> dict[str, list[str]]:
    """The urlencoded form of a POST, at most 64 KiB; BadInput otherwise."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise BadInput("expected a form (application/x-www-form-urlencoded)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_FORM_BYTES:
            raise BadInput(f"the form is larger than {MAX_FORM_BYTES} bytes")
        chunks.append(chunk)
    try:
        text = b"".join(chunks).decode("utf-8")
        return parse_qs(text, keep_blank_values=True, max_num_fields=CONFIRM_MAX_IDS + 20)
    except (UnicodeDecodeError, ValueError):
        raise BadInput("the form is not UTF-8 urlencoded text, or has too many fields") from None


def first(values: dict[str, list[str]], name: str) -> str | None:
    got = values.get(name)
    return got[0] if got else None
