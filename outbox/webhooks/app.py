"""The ASGI app: one POST endpoint per provider, ``/healthz`` and ``/metrics``.

Every receipt request goes the same way::

    size limit -> provider module (verify signature, parse) -> store.record (one statement)
         |                 |                                        |
        413        401/403/400 (Rejected)                    503 if the database is down
                   nothing written, counted                  (the provider retries)

and is answered 200 once recorded, whether or not anything moved: a repeat or
an out-of-order receipt is not an error, and answering it with one would only
make the provider retry it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from types import ModuleType
from typing import Any

import psycopg
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from outbox.webhooks import mailchimp, metrics, sendgrid, store, twilio, vonage
from outbox.webhooks.base import Action, Inbound, Rejected
from outbox.webhooks.config import WebhookConfig
from outbox.webhooks.health import HEALTH_CACHE_S, SchemaCheck
from outbox.webhooks.late_receipts import LateReceipts

PROVIDER_MODULES: tuple[ModuleType, ...] = (twilio, sendgrid, vonage, mailchimp)
# How long a request waits for a pooled connection before answering 503.
POOL_TIMEOUT_S = 5.0
HEALTH_TIMEOUT_S = 2.0

log = structlog.get_logger("outbox.webhooks")

DATABASE_ERRORS = (psycopg.OperationalError, PoolTimeout)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise Rejected("too_large", f"{declared} bytes declared, the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:  # chunked, or a Content-Length that lied
            raise Rejected("too_large", f"more than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def signed_url(config: WebhookConfig, request: Request) -> str:
    """The URL the provider called and signed: public base URL + path + query.

    Without a public URL (SendGrid and Vonage do not sign it) the URL as this
    server received it is good enough.
    """
    if config.public_url is None:
        return str(request.url)
    query = request.url.query
    return config.public_url + request.url.path + (f"?{query}" if query else "")


class Receiver:
    """The state behind the endpoints: configuration, connection pool, late receipts."""

    def __init__(
        self, config: WebhookConfig, pool: AsyncConnectionPool[Any], schema: SchemaCheck
    ) -> None:
        self.config = config
        self.pool = pool
        self.schema = schema
        self.late = LateReceipts(config.late_receipt_s, config.late_receipt_limit)

    async def receive(self, request: Request, module: ModuleType) -> Response:
        """Verify, parse and record one provider request."""
        name: str = module.NAME
        if request.method == "HEAD":  # Mandrill's check that the URL exists
            return Response(status_code=200)
        try:
            missing = self.config.missing(name)
            if missing:
                raise Rejected("not_configured", f"{missing} is not set: cannot verify requests")
            body = await read_body(request, self.config.max_body_bytes)
            inbound = Inbound(
                body=body,
                headers=request.headers,
                url=signed_url(self.config, request),
                now=time.time(),
            )
            receipts = module.receipts(inbound, self.config)
        except Rejected as exc:
            metrics.rejected(name, exc.reason)
            # The reason and our own message only: never the body, headers or secrets.
            log.warning(
                "webhooks.rejected",
                provider=name,
                reason=exc.reason,
                status=exc.status_code,
                detail=str(exc),
            )
            # Which setting is missing is for our log, not for whoever is calling.
            detail = "not enabled on this server" if exc.reason == "not_configured" else str(exc)
            return JSONResponse(
                {"error": exc.reason, "detail": detail}, status_code=exc.status_code
            )
        try:
            async with self.pool.connection(timeout=POOL_TIMEOUT_S) as conn:
                recorded = await store.record(conn, receipts)
        except DATABASE_ERRORS as exc:
            metrics.failed(name)
            log.error("webhooks.database_unavailable", provider=name, error=type(exc).__name__)
            return JSONResponse({"error": "database unavailable"}, status_code=503)
        except psycopg.Error as exc:
            # A bug (ours, or data PostgreSQL refuses): nothing was written; the
            # provider retries, and the error type says where to look.
            metrics.failed(name)
            log.error(
                "webhooks.database_error",
                provider=name,
                error=type(exc).__name__,
                sqlstate=exc.sqlstate,
            )
            return JSONResponse({"error": "internal error"}, status_code=500)
        waiting = self.late.hold(recorded.outcomes, asyncio.get_running_loop().time())
        self._account(name, recorded, waiting)
        return JSONResponse(
            {"received": len(receipts), "new": sum(o.fresh for o in recorded.outcomes)}
        )

    def _account(self, provider: str, recorded: store.Recorded, waiting: int) -> None:
        counts = dict.fromkeys(metrics.RESULTS, 0)
        for o in recorded.outcomes:
            if o.refused:
                counts["refused"] += 1
            elif not o.fresh:
                counts["duplicate"] += 1
            elif o.moved:
                counts["applied"] += 1
                _log_applied(o)
            elif o.mismatch:
                counts["mismatched"] += 1
            elif o.delivery_id is None:
                counts["unmatched"] += 1
            else:
                counts["recorded"] += 1
        for result, n in counts.items():
            metrics.receipt(provider, result, n)
        log.info(
            "webhooks.accepted",
            provider=provider,
            receipts=len(recorded.outcomes),
            applied=counts["applied"],
            duplicates=counts["duplicate"],
            unmatched=counts["unmatched"],
            mismatched=counts["mismatched"],
            refused=counts["refused"],
            waiting=waiting,
            suppressions=recorded.suppressions,
            opt_outs=recorded.opt_outs,
        )

    async def apply_late_once(self) -> int:
        """Apply the held late receipts whose delivery is 'sent' now; return how many moved."""
        due = self.late.due(asyncio.get_running_loop().time())
        if not due:
            return 0
        async with self.pool.connection(timeout=POOL_TIMEOUT_S) as conn:
            outcomes = await store.apply_late(conn, due)
        self.late.settle(outcomes)
        moved = [o for o in outcomes if o.moved]
        for o in moved:
            metrics.receipt(o.receipt.provider, "applied_late")
            _log_applied(o, late=True)
        return len(moved)

    async def late_loop(self) -> None:
        """Apply late receipts every ``late_retry_interval_s`` until cancelled."""
        while True:
            await asyncio.sleep(self.config.late_retry_interval_s)
            try:
                await self.apply_late_once()
            except DATABASE_ERRORS as exc:
                # They stay held; the next round tries again.
                log.warning(
                    "webhooks.late_receipts_failed", held=len(self.late), error=type(exc).__name__
                )

    async def health(self, request: Request) -> Response:
        """200 when the database answers at the schema this Outbox needs; 503 with the reason.

        Two checks: the schema's revision (outbox.migrate.check, cached briefly:
        see health.py), then a connection from the pool the receipts use.
        Lists which providers can verify their requests.
        """
        providers = {m.NAME: self.config.missing(m.NAME) is None for m in PROVIDER_MODULES}
        schema = await self.schema.health(asyncio.get_running_loop().time())
        if not schema.ok:
            return JSONResponse(
                {"status": schema.status, "reason": schema.reason, "providers": providers},
                status_code=503,
            )
        try:
            async with self.pool.connection(timeout=HEALTH_TIMEOUT_S) as conn:
                await conn.execute("SELECT 1")  # a liveness probe, not a query of the model
        except DATABASE_ERRORS as exc:
            return JSONResponse(
                {
                    "status": "database unavailable",
                    "reason": type(exc).__name__,
                    "providers": providers,
                },
                status_code=503,
            )
        return JSONResponse({"status": "ok", "schema": schema.schema, "providers": providers})


def _log_applied(o: store.Outcome, *, late: bool = False) -> None:
    log.info(
        "receipt.applied",
        provider=o.receipt.provider,
        delivery_id=o.delivery_id,
        message_id=o.message_id,
        channel=o.receipt.channel,
        attempt=o.attempt,
        status=str(o.receipt.action),
        event_id=o.receipt.event_id,
        late=late,
        **({"reason": o.receipt.reason} if o.receipt.action is Action.DEAD else {}),
    )


async def _metrics(request: Request) -> Response:
    """The Prometheus exposition of the webhook counters (and this process's own gauges)."""
    return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)


def create_app(
    config: WebhookConfig,
    database_url: str,
    *,
    pool_size: int = 4,
    health_cache_s: float = HEALTH_CACHE_S,
) -> Starlette:
    """The webhooks ASGI app. The pool opens (without waiting for the database) at start-up.

    ``health_cache_s``: how long ``/healthz`` keeps its schema check's answer.
    """
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        database_url,
        min_size=1,
        max_size=pool_size,
        open=False,
        # Each receipt batch is one statement, so autocommit is its transaction.
        kwargs={"autocommit": True, "application_name": "outbox-webhooks"},
        # A connection that died with a database restart is replaced, not handed out.
        check=AsyncConnectionPool.check_connection,
        name="outbox-webhooks",
    )
    receiver = Receiver(config, pool, SchemaCheck(database_url, health_cache_s))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # wait=False: a database that is down at start-up gives 503s (providers
        # retry), not a service that refuses to start.
        await pool.open(wait=False)
        late = asyncio.create_task(receiver.late_loop(), name="late-receipts")
        log.info(
            "webhooks.started",
            public_url=config.public_url,
            providers={
                m.NAME: "off, needs " + missing if (missing := config.missing(m.NAME)) else "on"
                for m in PROVIDER_MODULES
            },
        )
        try:
            yield
        finally:
            late.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await late
            await pool.close()
            log.info(
                "webhooks.stopped", late_receipts_dropped=receiver.late.dropped + len(receiver.late)
            )

    def endpoint(module: ModuleType) -> Any:
        async def receive(request: Request) -> Response:
            return await receiver.receive(request, module)

        receive.__name__ = f"receive_{module.NAME}"
        return receive

    # A module may keep serving paths it answered at before (OLD_PATHS): providers
    # call the URL they were given, and some sign it.
    routes = [
        Route(path, endpoint(m), methods=getattr(m, "METHODS", ["POST"]))
        for m in PROVIDER_MODULES
        for path in (m.PATH, *getattr(m, "OLD_PATHS", ()))
    ]
    routes += [
        Route("/healthz", receiver.health, methods=["GET"]),
        Route("/metrics", _metrics, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.receiver = receiver
    return app
