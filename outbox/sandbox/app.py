"""The two ASGI apps: plain HTTP (every API but APNs, plus control) and TLS (APNs)."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from outbox.sandbox import apns, control, fcm, mailchimp, sendgrid, twilio, vonage
from outbox.sandbox.faults import Vocabulary
from outbox.sandbox.route_context import SandboxContext

PROVIDER_APIS = (apns, fcm, twilio, vonage, sendgrid, mailchimp)
# Provider name (as the adapters are named) -> the answers faults may name.
VOCABULARIES: dict[str, Vocabulary] = {api.NAME: api.VOCABULARY for api in PROVIDER_APIS}


def build_http_app(ctx: SandboxContext, info: dict) -> Starlette:
    """FCM, Twilio, Vonage, SendGrid, Mandrill and the ``/_sandbox`` control API."""
    routes = [*control.routes(ctx, info)]
    for api in (fcm, twilio, vonage, sendgrid, mailchimp):
        routes.extend(api.routes(ctx))
    return Starlette(routes=routes)


def build_tls_app(ctx: SandboxContext) -> Starlette:
    """APNs, over TLS with HTTP/2."""

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True, "http_version": request.scope.get("http_version")})

    return Starlette(routes=[*apns.routes(ctx), Route("/_sandbox/health", health)])
