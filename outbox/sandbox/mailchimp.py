"""Mailchimp Transactional (Mandrill): ``POST /api/1.0/messages/send`` (also ``.json``).

The API key is in the JSON body. A good request gets HTTP 200 and one
result per recipient (``status`` sent / rejected / invalid, ``reject_reason``,
``_id``); a bad one gets ``{"status": "error", "code", "name", "message"}``,
with HTTP 500 as Mandrill does for most errors.
"""

from __future__ import annotations

import json
import math
import re
import secrets

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from outbox.sandbox.faults import Decision, Vocabulary
from outbox.sandbox.route_context import SandboxContext

NAME = "mailchimp"
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

# Error name -> (HTTP status, code, message)
ERRORS = {
    "Invalid_Key": (500, -1, "Invalid API key"),
    "ValidationError": (500, -2, "Validation error"),
    "GeneralError": (500, -1, "An unexpected error occurred processing the request."),
    "PaymentRequired": (500, -1, "The requested feature requires payment."),
    "Unknown_Subaccount": (500, 12, "No subaccount exists with the id given"),
}
REJECT_REASONS = (
    "hard-bounce",
    "soft-bounce",
    "spam",
    "unsub",
    "custom",
    "invalid-sender",
    "invalid",
    "test-mode-limit",
    "unsigned",
    "rule",
)
ALIASES = {"dead": "hard-bounce"}
VOCABULARY = Vocabulary(
    "GeneralError", lambda a: a in ERRORS or a in REJECT_REASONS, (*ERRORS, *REJECT_REASONS)
)


def error_response(
    name: str,
    message: str | None = None,
    headers: dict[str, str] | None = None,
    status: int | None = None,
) -> JSONResponse:
    """Mandrill's error body."""
    http_status, code, text = ERRORS.get(name, (500, -1, name))
    body = {"status": "error", "code": code, "name": name, "message": message or text}
    return JSONResponse(body, status_code=status or http_status, headers=headers)


def routes(ctx: SandboxContext) -> list[Route]:
    """The messages/send routes."""
    creds = ctx.credentials

    async def send(request: Request) -> Response:
        try:
            body = json.loads(await request.body())
            message = body["message"]
        except (ValueError, KeyError, TypeError):
            return ctx.reject(
                NAME,
                request,
                "ValidationError",
                error_response("ValidationError", "Validation error: no message"),
            )
        if body.get("key") != creds.mailchimp_api_key:
            return ctx.reject(NAME, request, "Invalid_Key", error_response("Invalid_Key"))
        recipients = [str(to.get("email", "")) for to in message.get("to") or []]
        destination = recipients[0] if recipients else None
        if not recipients or not message.get("from_email"):
            return ctx.reject(
                NAME,
                request,
                "ValidationError",
                error_response(
                    "ValidationError", "Validation error: to and from_email are required"
                ),
                destination=destination,
            )
        fields = {
            "subject": message.get("subject"),
            "from_email": message.get("from_email"),
            "recipients": recipients,
        }
        ids = {"metadata": message.get("metadata") or {}}
        decision = ctx.faults.decide(NAME, destination)
        message_ids = [secrets.token_hex(16) for _ in recipients]
        response = _answer(decision, recipients, message_ids)
        return await ctx.respond(
            NAME,
            request,
            decision,
            response,
            destination=destination,
            provider_message_id=message_ids[0],
            ids=ids,
            fields=fields,
        )

    return [
        Route("/api/1.0/messages/send", send, methods=["POST"]),
        Route("/api/1.0/messages/send.json", send, methods=["POST"]),
    ]


def _result(email: str, message_id: str, reject: str | None) -> dict:
    if reject is None and not _EMAIL.match(email):
        return {"email": email, "status": "invalid", "_id": message_id, "reject_reason": None}
    if reject is None:
        return {
            "email": email,
            "status": "sent",
            "_id": message_id,
            "reject_reason": None,
            "queued_reason": None,
        }
    return {"email": email, "status": "rejected", "_id": message_id, "reject_reason": reject}


def _answer(decision: Decision, recipients: list[str], message_ids: list[str]) -> Response:
    answer = ALIASES.get(decision.answer, decision.answer)
    if answer == "rate_limited":
        return error_response(
            "GeneralError",
            "Too many requests",
            status=429,
            headers={"Retry-After": str(math.ceil(decision.retry_after_s))},
        )
    if answer in ERRORS:
        return error_response(answer)
    reject = answer if answer in REJECT_REASONS else None
    return JSONResponse(
        [_result(e, i, reject) for e, i in zip(recipients, message_ids, strict=True)]
    )
