"""The HTTP API: FastAPI endpoints over the Python API (:mod:`outbox.aio`) and a few reads.

Every request goes the same way::

    Guard: body size (413) -> route -> require(scope): key, rate limit, scope (401/429/403)
      -> one transaction on a pooled connection: outbox.aio.<function>(...) or a named read
      -> JSON; outbox errors become JSON errors naming the field (422/404/409)

Nothing is kept between requests but the connection pool: any number of
processes can serve behind any load balancer.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Body, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from starlette.exceptions import HTTPException

from outbox import aio, errors
from outbox.apiserver import models
from outbox.apiserver.auth import Key, Refused, require
from outbox.apiserver.guard import Guard, log
from outbox.sql import query
from outbox.webhooks.health import HEALTH_CACHE_S, SchemaCheck

# How long a request waits for a pooled connection before answering 503.
POOL_TIMEOUT_S = 5.0
HEALTH_TIMEOUT_S = 2.0

DATABASE_ERRORS = (psycopg.OperationalError, PoolTimeout)

# Error codes of the exceptions the Python API raises on purpose.
_CODES: tuple[tuple[type[errors.OutboxError], int, str], ...] = (
    (errors.UnknownRecipient, 422, "unknown_recipient"),
    (errors.UnknownTemplate, 422, "unknown_template"),
    (errors.UnknownChannel, 422, "unknown_channel"),
    (errors.ValidationError, 422, "invalid"),
    (errors.NotFound, 404, "not_found"),
    (errors.IllegalTransition, 409, "conflict"),
)

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {
        "model": models.Error,
        "description": "No valid API key (missing, unknown, revoked or expired).",
    },
    403: {"model": models.Error, "description": "The key's scopes do not cover this endpoint."},
    413: {"model": models.Error, "description": "The body is over the size limit."},
    422: {"model": models.Error, "description": "Bad input; `field` names it. Nothing changed."},
    429: {"model": models.Error, "description": "The key's rate limit; see `Retry-After`."},
    503: {"model": models.Error, "description": "The database is unavailable; retry."},
}


class Service:
    """The state behind the endpoints: the pool, the schema check."""

    def __init__(self, database_url: str, pool_size: int, health_cache_s: float) -> None:
        self.pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            database_url,
            min_size=1,
            max_size=pool_size,
            open=False,
            # Each request opens its own transaction (conn.transaction()).
            kwargs={"autocommit": True, "application_name": "outbox-api"},
            check=AsyncConnectionPool.check_connection,
            timeout=POOL_TIMEOUT_S,
            name="outbox-api",
        )
        self.schema = SchemaCheck(database_url, health_cache_s)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled connection in a transaction, committed if the block succeeds."""
        async with self.pool.connection() as conn, conn.transaction():
            yield conn

    async def rows(self, conn: Any, name: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query(name), params)
            return await cur.fetchall()


def _service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(_service)]


def _actor(key: Key) -> str:
    return f"api:{key.name}"


def _location(loc: tuple[Any, ...]) -> tuple[str | None, str | None]:
    """(field, location) of a pydantic error: ``("priority", "notifications[3].priority")``."""
    parts = [p for p in loc if p not in ("body", "path", "query")]
    if not parts:
        return "body", None
    location = ""
    for p in parts:
        location += f"[{p}]" if isinstance(p, int) else (f".{p}" if location else str(p))
    names = [p for p in parts if isinstance(p, str)]
    return (names[-1] if names else "body"), location


def _error(status: int, error: str, detail: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail, **extra}, status_code=status)


def _install_errors(app: FastAPI) -> None:
    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> JSONResponse:
        response = _error(exc.status, exc.error, exc.detail)
        response.headers.update(exc.headers)
        return response

    @app.exception_handler(HTTPException)
    async def no_route(request: Request, exc: HTTPException) -> JSONResponse:
        # No such path (404) or method (405): in the one error shape too.
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        response = _error(exc.status_code, code, str(exc.detail))
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        field, location = _location(tuple(first.get("loc", ())))
        message = first.get("msg", "invalid")
        where = location or field or "body"
        return _error(422, "invalid", f"{where}: {message}", field=field, location=location)

    @app.exception_handler(errors.OutboxError)
    async def outbox_error(request: Request, exc: errors.OutboxError) -> JSONResponse:
        for cls, status, code in _CODES:
            if isinstance(exc, cls):
                field = getattr(exc, "field", None)
                return _error(status, code, str(exc), **({"field": field} if field else {}))
        log.error("api.unexpected_error", error=type(exc).__name__)
        return _error(500, "internal", "internal error")

    @app.exception_handler(psycopg.Error)
    async def database_error(request: Request, exc: psycopg.Error) -> JSONResponse:
        if isinstance(exc, psycopg.OperationalError):
            log.error("api.database_unavailable", error=type(exc).__name__)
            return _error(503, "unavailable", "the database is unavailable; retry")
        # A bug (ours, or data PostgreSQL refuses): nothing was written. The type
        # and SQLSTATE say where to look; the statement's parameters are not logged.
        log.error("api.database_error", error=type(exc).__name__, sqlstate=exc.sqlstate)
        return _error(500, "internal", "internal error")

    @app.exception_handler(PoolTimeout)
    async def pool_timeout(request: Request, exc: PoolTimeout) -> JSONResponse:
        log.error("api.database_unavailable", error="PoolTimeout")
        return _error(503, "unavailable", "the database is unavailable; retry")


def _package_version() -> str:
    try:
        return version("outbox")
    except PackageNotFoundError:
        return "0"


def create_app(
    database_url: str,
    *,
    pool_size: int = 8,
    max_body_bytes: int = 1024 * 1024,
    health_cache_s: float = HEALTH_CACHE_S,
) -> Any:
    """The API's ASGI app (FastAPI inside the size limit and request log of :class:`Guard`).

    The pool opens at start-up without waiting for the database: a database that
    is down gives 503s, not a service that refuses to start.
    """
    service = Service(database_url, pool_size, health_cache_s)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.pool.open(wait=False)
        log.info("api.started", max_body_bytes=max_body_bytes, pool_size=pool_size)
        try:
            yield
        finally:
            await service.pool.close()
            log.info("api.stopped")

    app = FastAPI(
        title="Outbox API",
        version=_package_version(),
        description=(
            "Recipients, devices, preferences and notifications of Outbox over HTTP. "
            "Every endpoint but /healthz needs an API key (`outbox api-keys create`) "
            "whose scopes cover it; see docs/api.md."
        ),
        openapi_url="/openapi.json",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.service = service
    _install_errors(app)
    router = APIRouter(responses=_ERRORS)
    _routes(router)
    _broadcast_routes(router)
    app.include_router(router)
    _health(app)
    return Guard(app, max_body_bytes)


def _routes(app: APIRouter) -> None:
    """The /v1 endpoints, in the order they are matched (a suffix route before its prefix)."""
    # -- recipients ------------------------------------------------------------------------------

    async def read_recipient(service: Service, conn: Any, recipient: str) -> models.Recipient:
        found = await service.rows(conn, "api_recipient", {"recipient": recipient})
        if not found:
            raise errors.NotFound(f"no recipient {recipient!r}")
        row = found[0]
        start, end = row.pop("quiet_start"), row.pop("quiet_end")
        row["quiet_hours"] = None if start is None else {"start": start, "end": end}
        return models.Recipient.model_validate(row)

    @app.put(
        "/v1/recipients/{recipient:path}",
        tags=["recipients"],
        summary="Create or update a recipient (scope: recipients)",
    )
    async def upsert_recipient(
        recipient: str,
        body: models.RecipientIn,
        service: ServiceDep,
        key: Annotated[Key, Depends(require("recipients"))],
    ) -> models.Recipient:
        quiet = (body.quiet_hours.start, body.quiet_hours.end) if body.quiet_hours else None
        async with service.transaction() as conn:
            await aio.upsert_recipient(
                conn,
                recipient,
                email=body.email,
                phone=body.phone,
                locale=body.locale,
                timezone=body.timezone,
                quiet_hours=quiet,
            )
            return await read_recipient(service, conn, recipient)

    @app.get(
        "/v1/recipients/{recipient:path}",
        tags=["recipients"],
        summary="A recipient with its devices and preferences (scope: read)",
    )
    async def get_recipient(
        recipient: str, service: ServiceDep, key: Annotated[Key, Depends(require("read"))]
    ) -> models.Recipient:
        async with service.transaction() as conn:
            return await read_recipient(service, conn, recipient)

    @app.delete(
        "/v1/recipients/{recipient:path}",
        tags=["recipients"],
        summary="Erase a recipient and their data, GDPR (scope: recipients)",
        description=(
            "Cancels their unsent deliveries, scrubs their addresses and tokens from every "
            "delivery and event of their notifications, empties those notifications' data, "
            "and deletes them with their devices and preferences; an `erased` event records "
            "it. Message ids stay (idempotency). See docs/api.md, Erasure."
        ),
    )
    async def erase_recipient(
        recipient: str,
        service: ServiceDep,
        key: Annotated[Key, Depends(require("recipients"))],
    ) -> models.Erased:
        async with service.transaction() as conn:
            counts = await aio.erase_recipient(conn, recipient, actor=_actor(key))
        return models.Erased.model_validate(counts)

    @app.put("/v1/preferences", tags=["recipients"], summary="Opt in or out (scope: recipients)")
    async def set_preference(
        body: models.PreferenceIn,
        service: ServiceDep,
        key: Annotated[Key, Depends(require("recipients"))],
    ) -> models.PreferenceIn:
        async with service.transaction() as conn:
            await aio.set_preference(
                conn, body.recipient, body.channel, opted_in=body.opted_in, category=body.category
            )
        return body

    # -- devices ---------------------------------------------------------------------------------

    @app.post("/v1/devices", tags=["devices"], summary="Register a push token (scope: devices)")
    async def register_device(
        body: models.DeviceIn,
        service: ServiceDep,
        key: Annotated[Key, Depends(require("devices"))],
    ) -> models.DeviceRegistered:
        async with service.transaction() as conn:
            device_id = await aio.register_device(
                conn, body.recipient, body.token, body.platform, environment=body.environment
            )
        return models.DeviceRegistered(device_id=device_id)

    @app.post(
        "/v1/devices/deactivate",
        tags=["devices"],
        summary="Stop sending to a push token (scope: devices)",
    )
    async def deactivate_device(
        body: models.DeactivateIn,
        service: ServiceDep,
        key: Annotated[Key, Depends(require("devices"))],
    ) -> models.Deactivated:
        async with service.transaction() as conn:
            done = await aio.deactivate_device(conn, body.token, body.reason)
        return models.Deactivated(deactivated=done)

    # -- notifications ---------------------------------------------------------------------------

    @app.post(
        "/v1/notifications",
        tags=["notifications"],
        summary="Enqueue a notification (scope: enqueue)",
        description="Idempotent: the same message_id returns the first notification's id.",
    )
    async def enqueue(
        body: models.EnqueueIn,
        service: ServiceDep,
        key: Annotated[Key, Depends(require("enqueue"))],
    ) -> models.Enqueued:
        fields = body.model_dump(exclude={"message_id"})
        async with service.transaction() as conn:
            nid = await aio.enqueue(conn, body.message_id, **fields)
        return models.Enqueued(id=nid, message_id=body.message_id)

    @app.post(
        "/v1/notifications/bulk",
        tags=["notifications"],
        summary=f"Enqueue up to {models.MAX_BULK} notifications at once (scope: enqueue)",
        description="All or nothing: one bad item refuses the request and names it.",
    )
    async def enqueue_bulk(
        body: models.BulkIn,
        service: ServiceDep,
        key: Annotated[Key, Depends(require("enqueue"))],
    ) -> models.BulkEnqueued:
        items = [n.model_dump(exclude_unset=True) for n in body.notifications]
        async with service.transaction() as conn:
            ids = await aio.enqueue_many(conn, items)
        return models.BulkEnqueued(ids=ids)

    @app.post(
        "/v1/notifications/{message_id:path}/cancel",
        tags=["notifications"],
        summary="Cancel a notification's pending deliveries (scope: enqueue)",
    )
    async def cancel(
        message_id: str,
        service: ServiceDep,
        key: Annotated[Key, Depends(require("enqueue"))],
        body: Annotated[models.CancelIn | None, Body()] = None,
    ) -> models.Cancelled:
        reason = (body or models.CancelIn()).reason
        async with service.transaction() as conn:
            n = await aio.cancel(conn, message_id, reason)
        return models.Cancelled(cancelled=n)

    async def notification(service: Service, conn: Any, message_id: str) -> dict[str, Any]:
        found = await service.rows(conn, "inspect_notification", {"message_id": message_id})
        if not found:
            raise errors.NotFound(f"no notification with message id {message_id!r}")
        return found[0]

    @app.get(
        "/v1/notifications/{message_id:path}/timeline",
        tags=["notifications"],
        summary="Every event of a notification, in order (scope: read)",
    )
    async def timeline(
        message_id: str, service: ServiceDep, key: Annotated[Key, Depends(require("read"))]
    ) -> models.Timeline:
        async with service.transaction() as conn:
            found = await notification(service, conn, message_id)
            events = await service.rows(conn, "inspect_timeline", {"notification_id": found["id"]})
        return models.Timeline(
            message_id=message_id, events=[models.Event.model_validate(e) for e in events]
        )

    @app.get(
        "/v1/notifications/{message_id:path}",
        tags=["notifications"],
        summary="A notification and the status of each delivery (scope: read)",
    )
    async def status(
        message_id: str, service: ServiceDep, key: Annotated[Key, Depends(require("read"))]
    ) -> models.Status:
        async with service.transaction() as conn:
            found = await notification(service, conn, message_id)
            deliveries = await service.rows(
                conn, "inspect_deliveries", {"notification_id": found["id"]}
            )
        return models.Status.model_validate({"notification": found, "deliveries": deliveries})


def _broadcast_routes(app: APIRouter) -> None:
    """Topics, their subscribers, and broadcasts (sql/functions/broadcast.sql)."""

    @app.put("/v1/topics/{topic}", tags=["topics"], summary="Create a topic (scope: enqueue)")
    async def create_topic(
        topic: str,
        service: ServiceDep,
        key: Annotated[Key, Depends(require("enqueue"))],
        body: Annotated[models.TopicIn | None, Body()] = None,
    ) -> models.Topic:
        description = (body or models.TopicIn()).description
        async with service.transaction() as conn:
            topic_id = await aio.create_topic(conn, topic, description=description)
        return models.Topic(id=topic_id, topic=topic)

    @app.put(
        "/v1/topics/{topic}/subscribers/{recipient:path}",
        tags=["topics"],
        summary="Subscribe a recipient to a topic (scope: recipients)",
    )
    async def subscribe(
        topic: str,
        recipient: str,
        service: ServiceDep,
        key: Annotated[Key, Depends(require("recipients"))],
    ) -> models.Subscribed:
        async with service.transaction() as conn:
            done = await aio.subscribe(conn, recipient, topic)
        return models.Subscribed(subscribed=done)

    @app.delete(
        "/v1/topics/{topic}/subscribers/{recipient:path}",
        tags=["topics"],
        summary="Unsubscribe a recipient from a topic (scope: recipients)",
    )
    async def unsubscribe(
        topic: str,
        recipient: str,
        service: ServiceDep,
        key: Annotated[Key, Depends(require("recipients"))],
    ) -> models.Unsubscribed:
        async with service.transaction() as conn:
            done = await aio.unsubscribe(conn, recipient, topic)
        return models.Unsubscribed(unsubscribed=done)

    @app.post(
        "/v1/broadcasts",
        tags=["topics"],
        summary="Enqueue a notification to a topic's subscribers or a list (scope: enqueue)",
        description=(
            "One notification per recipient, as an enqueue to each would make it (preferences "
            "and suppressions honoured). Idempotent per (message_id, recipient): repeating it "
            "reaches only recipients not covered yet. An SQL segment is not offered over HTTP."
        ),
    )
    async def broadcast(
        body: models.BroadcastIn,
        service: ServiceDep,
        key: Annotated[Key, Depends(require("enqueue"))],
    ) -> models.Broadcast:
        fields = body.model_dump(exclude={"message_id"})
        async with service.transaction() as conn:
            result = await aio.broadcast(conn, body.message_id, **fields)
        return models.Broadcast(message_id=body.message_id, **dataclasses.asdict(result))

    @app.post(
        "/v1/broadcasts/{message_id:path}/cancel",
        tags=["topics"],
        summary="Cancel every pending delivery of a broadcast (scope: enqueue)",
    )
    async def cancel_broadcast(
        message_id: str,
        service: ServiceDep,
        key: Annotated[Key, Depends(require("enqueue"))],
        body: Annotated[models.CancelIn | None, Body()] = None,
    ) -> models.Cancelled:
        reason = (body or models.CancelIn()).reason
        async with service.transaction() as conn:
            n = await aio.cancel_broadcast(conn, message_id, reason)
        return models.Cancelled(cancelled=n)


def _health(app: FastAPI) -> None:
    @app.get("/healthz", tags=["health"], summary="200 when the database answers at the schema")
    async def health(service: ServiceDep) -> JSONResponse:
        schema = await service.schema.health(asyncio.get_running_loop().time())
        if not schema.ok:
            return JSONResponse({"status": schema.status, "reason": schema.reason}, status_code=503)
        try:
            async with service.pool.connection(timeout=HEALTH_TIMEOUT_S) as conn:
                await conn.execute("SELECT 1")  # a liveness probe, not a query of the model
        except DATABASE_ERRORS as exc:
            return JSONResponse(
                {"status": "database unavailable", "reason": type(exc).__name__},
                status_code=503,
            )
        return JSONResponse({"status": "ok", "schema": schema.schema})
