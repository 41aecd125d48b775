"""The operator console's ASGI app: server-rendered pages behind a login, and the DLQ actions.

Pages (GET, each needs a session; without one, the login page)::

    /            queue depth, oldest pending, dead letters per channel, throughput
    /dead        dead letters, filtered (channel, provider, reason, age)
    /dead/confirm?action=requeue|purge&id=..   what would change, and the button
    /search?q=   by message id, recipient, address or destination
    /message?id= one notification: deliveries and timeline
    /providers   breakers, rate limits, recent outcomes per provider

Changes are POSTs with the session's CSRF token: ``/login``, ``/logout``,
``/dead/requeue`` and ``/dead/purge``. The last two change nothing until the
form says ``confirm=yes`` (the confirmation page's button), then act on the
delivery ids that page listed, and write one event per delivery naming the
operator and the address the request came from. Every value is HTML-escaped by
Jinja's autoescape; the Content-Security-Policy allows only our stylesheet and
the one inline script of the page (by nonce).
"""

from __future__ import annotations

import contextlib
import math
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import structlog
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from psycopg_pool import ConnectionPool, PoolTimeout
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from outbox import dlq, ops
from outbox.console import data
from outbox.console.auth import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    AuthError,
    LoginLimiter,
    Session,
    Sessions,
    check_operator,
    same,
)
from outbox.console.web import (
    BadInput,
    CsrfRefused,
    ago,
    as_json,
    client_of,
    duration,
    first,
    local_path,
    parse_ids,
    read_form,
    security_headers,
    timestamp,
)
from outbox.errors import NotFound, ValidationError

log = structlog.get_logger("outbox.console")

HERE = Path(__file__).resolve().parent
POOL_TIMEOUT_S = 5.0
DEAD_LIMIT_DEFAULT = 100
DEAD_LIMIT_MAX = 500
DATABASE_ERRORS = (psycopg.OperationalError, PoolTimeout)
ACTIONS = {"requeue": "Requeue", "purge": "Purge"}
MIN_TOKEN_CHARS = 16


@dataclass(frozen=True, slots=True)
class ConsoleConfig:
    """How the console runs; ``token`` is the login secret (never shown in a repr)."""

    token: str = field(repr=False)
    session_hours: float = 12.0
    secure_cookie: bool = False
    pool_size: int = 4
    # Every console query runs under it: a search that reads a big table gives up.
    statement_timeout_ms: int = 5000

    def __post_init__(self) -> None:
        # The token must be too long to guess; wrong ones are also limited per address.
        if len(self.token) < MIN_TOKEN_CHARS:
            raise ValidationError(
                f"the console token must be at least {MIN_TOKEN_CHARS} characters "
                f"(got {len(self.token)}); leave OUTBOX_CONSOLE_TOKEN unset to have one made",
                field="console_token",
            )

    @classmethod
    def from_settings(cls, settings: Any, token: str) -> ConsoleConfig:
        return cls(
            token=token,
            session_hours=settings.console_session_hours,
            secure_cookie=settings.console_secure_cookie,
        )


# -- the app ---------------------------------------------------------------------------------


Handler = Callable[[Request, Session], Awaitable[Response]]


class Console:
    """The state behind the pages: configuration, sessions, a connection pool, templates."""

    def __init__(self, config: ConsoleConfig, pool: ConnectionPool[Any]) -> None:
        self.config = config
        self.pool = pool
        self.sessions = Sessions(config.token, config.session_hours * 3600)
        self.logins = LoginLimiter()
        self.env = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=True,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(ts=timestamp, ago=ago, duration=duration, tojson_text=as_json)
        self.env.globals["actions"] = ACTIONS

    # -- rendering and the database ---------------------------------------------------------

    def render(
        self,
        request: Request,
        template: str,
        *,
        session: Session | None = None,
        status: int = 200,
        **context: Any,
    ) -> HTMLResponse:
        nonce = secrets.token_urlsafe(16)
        context.setdefault("refresh", False)
        context.setdefault("error", None)
        html = self.env.get_template(template).render(
            root=request.scope.get("root_path", ""),
            path=request.url.path,
            session=session,
            nonce=nonce,
            **context,
        )
        return HTMLResponse(html, status_code=status, headers=security_headers(nonce))

    async def db(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(conn, *args, **kwargs)`` on a pooled connection, in a thread; commits on return."""

        def run() -> Any:
            with self.pool.connection(timeout=POOL_TIMEOUT_S) as conn:
                return fn(conn, *args, **kwargs)

        return await run_in_threadpool(run)

    def _cookie(self, response: Response, name: str, value: str, max_age: int, root: str) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path=root or "/",
            httponly=True,
            samesite="strict",
            secure=self.config.secure_cookie,
        )

    def session_of(self, request: Request) -> Session | None:
        return self.sessions.read(request.cookies.get(SESSION_COOKIE), time.time())

    def guarded(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """``handler`` behind the login (and, for a POST, the CSRF token), with error pages."""

        async def endpoint(request: Request) -> Response:
            root = request.scope.get("root_path", "")
            session = self.session_of(request)
            if session is None:
                if request.method == "GET":
                    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                    return RedirectResponse(f"{root}/login?next={quote(here)}", status_code=303)
                return self.render(
                    request, "error.html", status=401, title="Not logged in",
                    error="Log in first: the console needs an operator name and its token.",
                )  # fmt: skip
            try:
                return await handler(request, session)
            except CsrfRefused as exc:
                return self.render(
                    request, "error.html", status=403, title="Refused", error=str(exc)
                )
            except BadInput as exc:
                return self.render(
                    request, "error.html", session=session, status=400, title="Bad request",
                    error=str(exc),
                )  # fmt: skip
            except psycopg.errors.InsufficientPrivilege:
                log.warning(
                    "console.not_permitted", operator=session.operator, path=request.url.path
                )
                return self.render(
                    request, "error.html", session=session, status=403, title="Not permitted",
                    error="The console's database login may not do this: requeue and purge "
                    "need the outbox_worker role (a reader login can only look).",
                )  # fmt: skip
            except DATABASE_ERRORS as exc:
                log.warning("console.database_unavailable", error=type(exc).__name__)
                return self.render(
                    request, "error.html", session=session, status=503,
                    title="Database unavailable",
                    error="The database did not answer. Try again in a moment.",
                )  # fmt: skip

        return endpoint

    async def checked_form(self, request: Request, session: Session) -> dict[str, list[str]]:
        """The POST's form once its CSRF token is the session's; BadInput/CsrfRefused otherwise."""
        form = await read_form(request)
        if not same(first(form, "csrf"), session.csrf):
            log.warning("console.csrf_refused", operator=session.operator, **client_of(request))
            raise CsrfRefused()
        return form

    # -- login ------------------------------------------------------------------------------

    async def login_page(self, request: Request) -> Response:
        root = request.scope.get("root_path", "")
        if self.session_of(request) is not None:
            return RedirectResponse(local_path(request.query_params.get("next"), root), 303)
        return self._login_form(request, status=200)

    def _login_form(
        self, request: Request, *, status: int, error: str | None = None, operator: str = ""
    ) -> Response:
        nonce = secrets.token_urlsafe(24)
        response = self.render(
            request,
            "login.html",
            status=status,
            error=error,
            login_nonce=nonce,
            operator=operator,
            next=request.query_params.get("next", ""),
        )
        self._cookie(response, LOGIN_COOKIE, nonce, 3600, request.scope.get("root_path", ""))
        return response

    async def login(self, request: Request) -> Response:
        root = request.scope.get("root_path", "")
        try:
            form = await read_form(request)
        except BadInput as exc:
            return self._login_form(request, status=400, error=str(exc))
        operator = first(form, "operator") or ""
        if not same(first(form, "nonce"), request.cookies.get(LOGIN_COOKIE) or "\0"):
            log.warning("console.login_refused", reason="stale form", **client_of(request))
            return self._login_form(
                request, status=403, error="The login form expired; try again.", operator=operator
            )
        try:
            operator = check_operator(operator)
        except AuthError as exc:
            return self._login_form(request, status=400, error=str(exc), operator=operator)
        address = request.client.host if request.client else "unknown"
        now = time.time()
        wait = self.logins.wait(address, now)
        if wait > 0:
            log.warning(
                "console.login_refused", reason="too many wrong tokens", **client_of(request)
            )
            response = self._login_form(
                request,
                status=429,
                error=f"Too many wrong tokens from this address: try again in {math.ceil(wait)} s.",
                operator=operator,
            )
            response.headers["Retry-After"] = str(math.ceil(wait))
            return response
        if not self.sessions.token_ok(first(form, "token") or ""):
            self.logins.failed(address, now)
            # The operator's name and address only: never what was typed as the token.
            log.warning(
                "console.login_refused",
                reason="wrong token",
                operator=operator,
                **client_of(request),
            )
            return self._login_form(
                request, status=401, error="Wrong console token.", operator=operator
            )
        self.logins.succeeded(address)
        cookie, _ = self.sessions.issue(operator, now)
        log.info("console.login", operator=operator, **client_of(request))
        response = RedirectResponse(local_path(first(form, "next"), root), status_code=303)
        self._cookie(response, SESSION_COOKIE, cookie, int(self.sessions.lifetime_seconds), root)
        response.delete_cookie(LOGIN_COOKIE, path=root or "/")
        return response

    async def logout(self, request: Request, session: Session) -> Response:
        root = request.scope.get("root_path", "")
        await self.checked_form(request, session)
        log.info("console.logout", operator=session.operator, **client_of(request))
        response = RedirectResponse(f"{root}/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path=root or "/")
        return response

    # -- pages ------------------------------------------------------------------------------

    async def overview(self, request: Request, session: Session) -> Response:
        view = await self.db(data.overview)
        return self.render(request, "overview.html", session=session, refresh=True, **view)

    async def dead(self, request: Request, session: Session) -> Response:
        q = request.query_params
        filters = {
            "channel": q.get("channel", ""),
            "provider": q.get("provider", "").strip(),
            "reason": q.get("reason", "").strip(),
            "since": q.get("since", "").strip(),
            "older_than": q.get("older_than", "").strip(),
        }
        limit_text = q.get("limit", str(DEAD_LIMIT_DEFAULT))
        error, rows = None, []
        try:
            if not limit_text.isdigit() or not 1 <= int(limit_text) <= DEAD_LIMIT_MAX:
                raise ValidationError(
                    f"{limit_text!r} is not a number from 1 to {DEAD_LIMIT_MAX}", field="limit"
                )
            now = datetime.now(UTC)

            def back(text: str, name: str) -> datetime | None:
                return now - ops.parse_duration(text, field=name) if text else None

            rows = await self.db(
                dlq.list_dead,
                channel=filters["channel"] or None,
                provider=filters["provider"] or None,
                reason=filters["reason"] or None,
                since=back(filters["since"], "since"),
                before=back(filters["older_than"], "older_than"),
                limit=int(limit_text),
            )
        except ValidationError as exc:
            error = f"{exc.field}: {exc}" if exc.field else str(exc)
        done = q.get("done")
        count = q.get("n", "")
        notice = None
        if done in ACTIONS and count.isdigit():
            n = int(count)
            past = "requeued" if done == "requeue" else "purged"
            notice = f"{past.capitalize()} {n} dead deliver{'y' if n == 1 else 'ies'}."
        return self.render(
            request,
            "dead.html",
            session=session,
            status=400 if error else 200,
            rows=rows,
            filters=filters,
            limit=limit_text,
            error=error,
            notice=notice,
        )

    async def confirm(self, request: Request, session: Session) -> Response:
        q = request.query_params
        action = q.get("action", "")
        if action not in ACTIONS:
            raise BadInput("action: requeue or purge")
        return await self._confirmation(
            request, session, action, parse_ids(q.getlist("id")), q.get("back")
        )

    async def _confirmation(
        self, request: Request, session: Session, action: str, ids: list[int], back: str | None
    ) -> Response:
        rows = await self.db(dlq.list_dead, delivery_ids=ids, limit=len(ids))
        root = request.scope.get("root_path", "")
        return self.render(
            request,
            "confirm.html",
            session=session,
            action=action,
            rows=rows,
            asked=len(ids),
            back=local_path(back, root) if back else f"{root}/dead",
        )

    async def act(self, request: Request, session: Session) -> Response:
        action = request.path_params["action"]
        if action not in ACTIONS:
            raise BadInput("action: requeue or purge")
        form = await self.checked_form(request, session)
        ids = parse_ids(form.get("id", []))
        back = first(form, "back")
        if first(form, "confirm") != "yes":
            # Not confirmed: show what would change, and change nothing.
            return await self._confirmation(request, session, action, ids, back)
        who = client_of(request)
        detail = {"operator": session.operator, "via": "console", **who}
        fn = dlq.requeue if action == "requeue" else dlq.purge
        n = await self.db(fn, actor=f"console:{session.operator}", detail=detail, delivery_ids=ids)
        log.info(
            f"console.{'requeued' if action == 'requeue' else 'purged'}",
            operator=session.operator,
            delivery_ids=ids,
            count=n,
            **who,
        )
        root = request.scope.get("root_path", "")
        target = local_path(back, root) if back else f"{root}/dead"
        sep = "&" if "?" in target else "?"
        return RedirectResponse(f"{target}{sep}done={action}&n={n}", status_code=303)

    async def search(self, request: Request, session: Session) -> Response:
        q = request.query_params.get("q", "").strip()
        if len(q) > 4096:
            raise BadInput("q: at most 4096 characters")
        rows = await self.db(data.search, q) if q else []
        return self.render(request, "search.html", session=session, q=q, rows=rows)

    async def message(self, request: Request, session: Session) -> Response:
        message_id = request.query_params.get("id", "")
        if not message_id:
            raise BadInput("id: which message id? (search for one)")
        try:
            found = await self.db(ops.inspect, message_id)
        except NotFound as exc:
            return self.render(
                request, "error.html", session=session, status=404, title="No such message",
                error=str(exc),
            )  # fmt: skip
        done, count = request.query_params.get("done"), request.query_params.get("n", "")
        notice = None
        if done in ACTIONS and count.isdigit():
            notice = f"{ACTIONS[done]}d: {int(count)}."
        here = f"{request.scope.get('root_path', '')}/message?id={quote(message_id, safe='')}"
        return self.render(
            request, "message.html", session=session, notice=notice, here=here,
            message_id=message_id, **found,
        )  # fmt: skip

    async def providers(self, request: Request, session: Session) -> Response:
        view = await self.db(data.providers)
        return self.render(request, "providers.html", session=session, refresh=True, **view)


def create_app(config: ConsoleConfig, db_url: str) -> Starlette:
    """The console as an ASGI app, with its own pool of (at most ``config.pool_size``) connections.

    The pool opens when the app starts (lifespan) and does not wait for the
    database: pages answer 503 until it is there.
    """
    pool: ConnectionPool[Any] = ConnectionPool(
        db_url,
        min_size=1,
        max_size=config.pool_size,
        open=False,
        kwargs={
            "application_name": "outbox-console",
            "options": f"-c statement_timeout={config.statement_timeout_ms}",
        },
    )
    console = Console(config, pool)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        pool.open(wait=False)
        try:
            yield
        finally:
            await run_in_threadpool(pool.close)

    guarded = console.guarded

    routes = [
        Route("/healthz", healthz),
        Route("/login", console.login_page, methods=["GET"]),
        Route("/login", console.login, methods=["POST"]),
        Route("/logout", guarded(console.logout), methods=["POST"]),
        Route("/", guarded(console.overview)),
        Route("/dead", guarded(console.dead)),
        Route("/dead/confirm", guarded(console.confirm)),
        Route("/dead/{action}", guarded(console.act), methods=["POST"]),
        Route("/search", guarded(console.search)),
        Route("/message", guarded(console.message)),
        Route("/providers", guarded(console.providers)),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.console = console
    return app
