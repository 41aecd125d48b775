"""SendGrid v3 Mail Send: ``POST /v3/mail/send``.

202 with an ``X-Message-Id`` header when accepted; errors as
``{"errors": [{"message", "field", "help"}]}``; 429 with the
``X-RateLimit-*`` headers. A "dead" address is accepted (202), as SendGrid
does, and then reported as a bounce on the event webhook: SendGrid never
refuses a deliverable-looking address at send time. When an event webhook
URL is set, accepted messages produce signed ``processed`` + ``delivered``
(or ``bounce``) events carrying the message's ``custom_args``.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from outbox.sandbox.faults import Decision, Vocabulary
from outbox.sandbox.receipts import sendgrid_event_id
from outbox.sandbox.route_context import SandboxContext

NAME = "sendgrid"
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

ERRORS = {
    "400": "Bad Request",
    "401": "The provided authorization grant is invalid, expired, or revoked",
    "403": "access forbidden",
    "413": "Payload Too Large",
    "429": "too many requests",
    "500": "internal server error",
    "502": "bad gateway",
    "503": "service unavailable",
}
VOCABULARY = Vocabulary("503", ERRORS.__contains__, tuple(ERRORS))


def error_response(
    status: str,
    message: str | None = None,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """SendGrid's error body."""
    body = {"errors": [{"message": message or ERRORS[status], "field": field, "help": None}]}
    return JSONResponse(body, status_code=int(status), headers=headers)


def _validate(mail: Any) -> tuple[str, str | None] | None:
    """None if the mail is acceptable, else (error message, field)."""
    if not isinstance(mail, dict):
        return "Bad Request", None
    personalizations = mail.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        return "The personalizations field is required.", "personalizations"
    for i, p in enumerate(personalizations):
        for j, to in enumerate(p.get("to") or [{}]):
            if not _EMAIL.match(str(to.get("email", ""))):
                return "Does not contain a valid address.", f"personalizations.{i}.to.{j}.email"
        if not (mail.get("subject") or p.get("subject") or mail.get("template_id")):
            return "The subject is required.", "subject"
    if not _EMAIL.match(str((mail.get("from") or {}).get("email", ""))):
        return "The from email does not contain a valid address.", "from.email"
    content = mail.get("content") or []
    if not mail.get("template_id") and not any(c.get("value") for c in content):
        return (
            "Unless a valid template_id is provided, the content parameter is required.",
            "content",
        )
    return None


def _recipients(mail: dict) -> list[tuple[str, dict[str, str]]]:
    """Each recipient address with the custom_args its events carry."""
    out: list[tuple[str, dict[str, str]]] = []
    for p in mail["personalizations"]:
        args = {**(mail.get("custom_args") or {}), **(p.get("custom_args") or {})}
        out.extend((to["email"], args) for to in p["to"])
    return out


def _events(mail: dict, message_id: str, dead: bool) -> list[dict[str, Any]]:
    now = int(time.time())
    events = []
    for n, (email, args) in enumerate(_recipients(mail)):
        base = {
            "email": email,
            "timestamp": now,
            "smtp-id": f"<{message_id}@sandbox>",
            "sg_message_id": f"{message_id}.sandbox-{n}",
            **args,
        }
        events.append({**base, "event": "processed", "sg_event_id": sendgrid_event_id()})
        if dead:
            events.append(
                {
                    **base,
                    "event": "bounce",
                    "type": "bounce",
                    "status": "5.1.1",
                    "reason": "550 5.1.1 The email account that you tried to reach does not exist",
                    "sg_event_id": sendgrid_event_id(),
                }
            )
        else:
            events.append(
                {
                    **base,
                    "event": "delivered",
                    "response": "250 OK",
                    "sg_event_id": sendgrid_event_id(),
                }
            )
    return events


def routes(ctx: SandboxContext) -> list[Route]:
    """The mail send route."""
    creds = ctx.credentials

    async def send(request: Request) -> Response:
        raw = await request.body()  # read first: see outbox.sandbox.route_context
        if request.headers.get("authorization") != f"Bearer {creds.sendgrid_api_key}":
            return ctx.reject(NAME, request, "401", error_response("401"))
        try:
            mail = json.loads(raw)
        except ValueError:
            return ctx.reject(NAME, request, "400", error_response("400", "Invalid JSON"))
        invalid = _validate(mail)
        if invalid:
            return ctx.reject(NAME, request, "400", error_response("400", *invalid))
        recipients = _recipients(mail)
        destination = recipients[0][0]
        fields = {
            "subject": mail.get("subject"),
            "from": mail["from"].get("email"),
            "recipients": [email for email, _ in recipients],
            "size": len(raw),
        }
        ids = {"custom_args": recipients[0][1]}
        decision = ctx.faults.decide(NAME, destination)
        message_id = secrets.token_urlsafe(16)[:22]
        response = _answer(decision, message_id)
        webhook = ctx.webhooks.get(NAME)
        if webhook and decision.answer in ("ok", "dead"):
            ctx.receipts.sendgrid_events(
                webhook,
                creds.sendgrid_webhook_private_key,
                _events(mail, message_id, decision.answer == "dead"),
                message_id,
            )
        return await ctx.respond(
            NAME,
            request,
            decision,
            response,
            destination=destination,
            provider_message_id=message_id,
            ids=ids,
            fields=fields,
        )

    return [Route("/v3/mail/send", send, methods=["POST"])]


def _answer(decision: Decision, message_id: str) -> Response:
    if decision.answer in ("ok", "timeout", "dead"):
        return Response(status_code=202, headers={"X-Message-Id": message_id})
    if decision.answer in ("rate_limited", "429"):
        reset = math.ceil(time.time() + decision.retry_after_s)
        return error_response(
            "429",
            headers={
                "X-RateLimit-Limit": "600",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(reset),
            },
        )
    return error_response(decision.answer)
