"""API keys: what one looks like, its hash, its scopes, and managing them (`outbox api-keys`).

A key is ``obx_`` and 43 URL-safe characters (32 random bytes). The database
keeps its SHA-256 only (``outbox.api_keys``, sql/api_keys.sql): 256 random bits
cannot be guessed, so a fast hash is enough and lets the server find a key by
its hash in one index lookup. The key itself never leaves the process that
received it: not to the database, not to a log line.

Creating, listing and revoking keys is for whoever owns the schema (the CLI's
connection); the API's own role can only ask ``outbox.api_authenticate``.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from psycopg.rows import dict_row

from outbox.errors import NotFound, ValidationError
from outbox.sql import query

#: What a key may be allowed to do. ``admin`` is every other scope.
SCOPES: dict[str, str] = {
    "admin": "everything below",
    "devices": "register and deactivate push devices (a mobile app's key)",
    "enqueue": "enqueue notifications (one or bulk) and cancel them",
    "read": "read recipients, a notification's status and its timeline",
    "recipients": "create, update and erase recipients; set their preferences",
}

PREFIX = "obx_"
# 32 random bytes in URL-safe base64 without padding: 43 characters.
_KEY = re.compile(r"^obx_[A-Za-z0-9_-]{43}$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
# What `list` shows of a key: "obx_" and 8 characters, not enough to use it.
SHOWN = 12
# The longest a key may be made to last (longer: leave it without an expiry).
MAX_EXPIRES_IN = timedelta(days=3650)


def new_key() -> str:
    """A fresh random key."""
    return PREFIX + secrets.token_urlsafe(32)


def looks_like_key(text: str) -> bool:
    """Whether ``text`` has the form of a key (checked before any database round trip)."""
    return _KEY.match(text) is not None


def key_hash(key: str) -> bytes:
    """The SHA-256 of ``key``: what the database stores and looks keys up by."""
    return hashlib.sha256(key.encode("ascii")).digest()


def allows(scopes: Iterable[str], needed: str) -> bool:
    """Whether a key with ``scopes`` may do what ``needed`` covers."""
    held = set(scopes)
    return "admin" in held or needed in held


def check_scopes(scopes: Sequence[str]) -> list[str]:
    """``scopes`` sorted and without repeats; ValidationError naming an unknown one."""
    if not scopes:
        raise ValidationError(f"give at least one scope ({', '.join(SCOPES)})", field="scopes")
    for scope in scopes:
        if scope not in SCOPES:
            raise ValidationError(
                f"unknown scope {scope!r} (expected one of {', '.join(SCOPES)})", field="scopes"
            )
    return sorted(set(scopes))


@dataclass(frozen=True, slots=True)
class Created:
    """A key just created: ``key`` is shown once and is stored nowhere."""

    id: int
    name: str
    scopes: list[str]
    key: str
    expires_at: datetime | None = None


def create(
    conn: Any,
    name: str,
    scopes: Sequence[str],
    *,
    created_by: str | None = None,
    rate_per_second: float | None = None,
    burst: float | None = None,
    expires_in: timedelta | None = None,
) -> Created:
    """Create a key named ``name`` with ``scopes``, in the caller's transaction.

    ``rate_per_second`` and ``burst`` give this key its own rate limit instead of
    every key's (``outbox.rate_limits``, scope ``api_key``). ``expires_in``: the
    key stops working that long from now (refused as a revoked key is); None, it
    works until revoked. ValidationError names a bad name, scope, limit or
    expiry, or a name a live key already has.
    """
    import psycopg

    if not _NAME.match(name):
        raise ValidationError(
            f"name {name!r} must be 1 to 64 of a-z, 0-9, '_', '.', '-' (starting with a letter "
            "or digit)",
            field="name",
        )
    checked = check_scopes(scopes)
    if (rate_per_second is None) != (burst is None):
        raise ValidationError("give both rate_per_second and burst, or neither", field="burst")
    if rate_per_second is not None and not 1e-9 <= rate_per_second < float("inf"):
        raise ValidationError(
            f"rate_per_second must be positive, got {rate_per_second}", field="rate_per_second"
        )
    if burst is not None and not 1 <= burst < float("inf"):
        raise ValidationError(f"burst must be at least 1, got {burst}", field="burst")
    if expires_in is not None and not timedelta(0) < expires_in <= MAX_EXPIRES_IN:
        raise ValidationError(
            f"expires_in must be more than 0 and at most {MAX_EXPIRES_IN.days} days, "
            f"got {expires_in}",
            field="expires_in",
        )
    key = new_key()
    params = {
        "name": name,
        "prefix": key[:SHOWN],
        "key_hash": key_hash(key),
        "scopes": checked,
        "created_by": created_by,
        "expires_in": None if expires_in is None else expires_in.total_seconds(),
    }
    try:
        with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            cur.execute(query("api_key_create"), params)
            row = cur.fetchone()
            if rate_per_second is not None:
                cur.execute(
                    query("api_key_rate_limit"),
                    {
                        "key_id": row["id"],
                        "rate_per_second": rate_per_second,
                        "burst": burst,
                        "description": f"API key {name}",
                    },
                )
    except psycopg.errors.UniqueViolation:
        raise ValidationError(
            f"a live key is already named {name!r}: revoke it first, or choose another name",
            field="name",
        ) from None
    return Created(row["id"], row["name"], list(row["scopes"]), key, row["expires_at"])


def list_keys(conn: Any) -> list[dict[str, Any]]:
    """Every key (live first, newest first) without its hash: id, name, prefix, scopes, times."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query("api_key_list"))
        return cur.fetchall()


def revoke(conn: Any, key: str) -> dict[str, Any]:
    """Revoke the live key named ``key`` (or with that id); NotFound if there is none."""
    key_id = int(key) if key.isdigit() and len(key) <= 18 else None
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query("api_key_revoke"), {"name": key, "key_id": key_id})
        row = cur.fetchone()
    if row is None:
        raise NotFound(f"no live API key named {key!r} (`outbox api-keys list` shows them)")
    return row
