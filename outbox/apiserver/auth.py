"""Who is asking: the API key of a request, its scope, its rate limit.

Every endpoint but ``/healthz`` and ``/openapi.json`` depends on
:func:`require` with the scope it needs. One statement answers all three
questions (``outbox.api_authenticate``, sql/api_keys.sql), in its own
transaction before the endpoint's, so that a request refused later for bad
input still counts against the key's rate limit.

Refusals change nothing and say little: 401 for a missing, malformed, unknown
or revoked key alike (no oracle for which keys exist), 403 for a key outside its
scope, 429 with ``Retry-After`` over the rate limit.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg.rows import dict_row

from outbox.apiserver import keys
from outbox.sql import query

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="apiKey",
    bearerFormat="obx_…",
    description="An API key from `outbox api-keys create`: `Authorization: Bearer obx_…`.",
)


class Refused(Exception):
    """A request refused before its endpoint ran: ``status``, a code and a message."""

    def __init__(
        self, status: int, error: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers or {}


@dataclass(frozen=True, slots=True)
class Key:
    """The key a request was made with (never the key's text)."""

    id: int
    name: str
    scopes: tuple[str, ...]


def _unauthorized(request: Request, why: str) -> Refused:
    request.state.refused = why
    return Refused(
        401,
        "unauthorized",
        "a valid API key is needed: Authorization: Bearer obx_...",
        {"WWW-Authenticate": "Bearer"},
    )


def require(scope: str) -> Callable[..., Awaitable[Key]]:
    """The dependency of an endpoint that needs ``scope`` (``admin`` covers every scope)."""
    if scope not in keys.SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    async def authenticated(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Security(bearer),  # noqa: B008
    ) -> Key:
        if credentials is None:
            raise _unauthorized(request, "no key")
        presented = credentials.credentials
        if not keys.looks_like_key(presented):
            raise _unauthorized(request, "malformed key")
        pool = request.app.state.service.pool
        async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query("api_authenticate"), {"key_hash": keys.key_hash(presented)})
            row = await cur.fetchone()
        if row is None:
            raise _unauthorized(request, "unknown, revoked or expired key")
        key = Key(row["key_id"], row["name"], tuple(row["scopes"]))
        request.state.api_key = key
        if row["wait_seconds"] > 0:
            request.state.refused = "rate limited"
            retry_after = max(1, math.ceil(row["wait_seconds"]))
            raise Refused(
                429,
                "rate_limited",
                f"this key's rate limit ({row['limited_by']}) is used up; retry in {retry_after} s",
                {"Retry-After": str(retry_after)},
            )
        if not keys.allows(key.scopes, scope):
            request.state.refused = f"needs scope {scope}"
            raise Refused(
                403,
                "forbidden",
                f"this key's scopes ({', '.join(key.scopes)}) do not include {scope!r}",
            )
        return key

    authenticated.__name__ = f"require_{scope}"
    return authenticated
