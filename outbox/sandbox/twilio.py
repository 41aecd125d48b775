"""Twilio: ``POST /2010-04-01/Accounts/<sid>/Messages.json`` (form-encoded, basic auth).

Answers are Twilio-shaped: 201 with a Message resource, or an error body
``{"code", "message", "more_info", "status"}``. After an accepted message
with a ``StatusCallback``, the sandbox posts signed status callbacks
(``sent``, then ``delivered``) to it.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import secrets
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from outbox.sandbox.faults import Decision, Vocabulary
from outbox.sandbox.route_context import SandboxContext

NAME = "twilio"
MAX_BODY_CHARS = 1600
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")

# code -> (HTTP status, message)
ERRORS = {
    "20003": (401, "Authenticate"),
    "20404": (404, "The requested resource was not found"),
    "20429": (429, "Too Many Requests"),
    "20500": (500, "An internal server error has occurred"),
    "20503": (503, "Service unavailable"),
    "21211": (400, "The 'To' number {to} is not a valid phone number."),
    "21408": (
        400,
        "Permission to send an SMS has not been enabled for the region "
        "indicated by the 'To' number: {to}.",
    ),
    "21602": (400, "Message body is required."),
    "21603": (400, "A 'From' phone number is required."),
    "21604": (400, "A 'To' phone number is required."),
    "21606": (
        400,
        "The 'From' phone number provided ({from_}) is not a valid "
        "message-capable Twilio phone number for this destination.",
    ),
    "21608": (
        400,
        "The number {to} is unverified. Trial accounts cannot send messages to unverified numbers.",
    ),
    "21610": (400, "Attempt to send to unsubscribed recipient"),
    "21612": (
        400,
        "The 'To' phone number: {to}, is not currently reachable using the "
        "'From' phone number via SMS.",
    ),
    "21614": (400, "'To' number is not a valid mobile number"),
    "21617": (400, "The concatenated message body exceeds the 1600 character limit."),
}
ALIASES = {"dead": "21211", "rate_limited": "20429"}
# Any other five-digit code can be injected too (answered with HTTP 400).
VOCABULARY = Vocabulary(
    "20500", lambda a: a in ERRORS or (a.isdigit() and len(a) == 5), tuple(ERRORS)
)


def error_response(
    code: str, *, to: str = "", from_: str = "", retry_after_s: float | None = None
) -> JSONResponse:
    """Twilio's error body for ``code``."""
    status, text = ERRORS.get(code, (400, "Sandbox-injected error {code}"))
    body = {
        "code": int(code),
        "message": text.format(to=to, from_=from_, code=code),
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    headers = {"Retry-After": str(math.ceil(retry_after_s))} if retry_after_s is not None else None
    return JSONResponse(body, status_code=status, headers=headers)


def _basic_auth(header: str | None) -> tuple[str, str] | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user, password


def _validate(form: dict[str, str], from_number: str) -> str | None:
    to = form.get("To", "")
    if not to:
        return "21604"
    if not _E164.match(to):
        return "21211"
    if not (form.get("From") or form.get("MessagingServiceSid")):
        return "21603"
    if form.get("From") and form["From"] != from_number:
        return "21606"
    if not form.get("Body"):
        return "21602"
    if len(form["Body"]) > MAX_BODY_CHARS:
        return "21617"
    return None


def _resource(sid: str, account_sid: str, form: dict[str, str]) -> dict:
    now = formatdate(usegmt=True)
    return {
        "account_sid": account_sid,
        "api_version": "2010-04-01",
        "body": form.get("Body"),
        "date_created": now,
        "date_sent": None,
        "date_updated": now,
        "direction": "outbound-api",
        "error_code": None,
        "error_message": None,
        "from": form.get("From"),
        "messaging_service_sid": form.get("MessagingServiceSid"),
        "num_media": "0",
        "num_segments": str(max(1, math.ceil(len(form.get("Body", "")) / 153))),
        "price": None,
        "price_unit": "USD",
        "sid": sid,
        "status": "accepted" if form.get("MessagingServiceSid") else "queued",
        "subresource_uris": {
            "media": f"/2010-04-01/Accounts/{account_sid}/Messages/{sid}/Media.json"
        },
        "to": form.get("To"),
        "uri": f"/2010-04-01/Accounts/{account_sid}/Messages/{sid}.json",
    }


def routes(ctx: SandboxContext) -> list[Route]:
    """The Messages create route."""
    creds = ctx.credentials

    async def create(request: Request) -> Response:
        account_sid = request.path_params["sid"]
        form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        to = form.get("To")
        fields: dict[str, Any] = {
            k: form.get(k)
            for k in ("From", "MessagingServiceSid", "StatusCallback", "ValidityPeriod")
        }
        fields["body_chars"] = len(form.get("Body", ""))
        if _basic_auth(request.headers.get("authorization")) != (
            creds.twilio_account_sid,
            creds.twilio_auth_token,
        ):
            return ctx.reject(NAME, request, "20003", error_response("20003"), destination=to)
        if account_sid != creds.twilio_account_sid:
            return ctx.reject(NAME, request, "20404", error_response("20404"), destination=to)
        code = _validate(form, creds.twilio_from_number)
        if code:
            return ctx.reject(
                NAME,
                request,
                code,
                error_response(code, to=to or "", from_=form.get("From", "")),
                destination=to,
                fields=fields,
            )
        validity = form.get("ValidityPeriod")
        if validity is not None and not (validity.isdigit() and 1 <= int(validity) <= 36000):
            # Twilio refuses it too; the sandbox does not claim to know Twilio's code for it.
            body = {"code": None, "message": "ValidityPeriod must be 1..36000", "status": 400}
            return ctx.reject(
                NAME,
                request,
                "invalid",
                JSONResponse(body, status_code=400),
                destination=to,
                fields=fields,
            )
        decision = ctx.faults.decide(NAME, to)
        sid = "SM" + secrets.token_hex(16)
        response = _answer(decision, sid, account_sid, form)
        if decision.answer == "ok" and form.get("StatusCallback"):
            params = {
                "AccountSid": account_sid,
                "ApiVersion": "2010-04-01",
                "From": form.get("From") or "",
                "MessageSid": sid,
                "SmsSid": sid,
                "To": to or "",
            }
            if form.get("MessagingServiceSid"):
                params["MessagingServiceSid"] = form["MessagingServiceSid"]
            ctx.receipts.twilio_status(
                form["StatusCallback"], creds.twilio_auth_token, params, ["sent", "delivered"]
            )
        return await ctx.respond(
            NAME,
            request,
            decision,
            response,
            destination=to,
            provider_message_id=sid,
            fields=fields,
        )

    return [Route("/2010-04-01/Accounts/{sid}/Messages.json", create, methods=["POST"])]


def _answer(decision: Decision, sid: str, account_sid: str, form: dict[str, str]) -> Response:
    if decision.answer in ("ok", "timeout"):
        return JSONResponse(_resource(sid, account_sid, form), status_code=201)
    code = ALIASES.get(decision.answer, decision.answer)
    retry_after = decision.retry_after_s if decision.answer == "rate_limited" else None
    return error_response(
        code, to=form.get("To", ""), from_=form.get("From", ""), retry_after_s=retry_after
    )
