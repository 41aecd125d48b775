"""Vonage SMS API: ``POST /sms/json``.

Parameters come form-encoded (or as a query string); credentials are
``api_key`` and ``api_secret``. Like Vonage, the sandbox answers HTTP 200
with a per-part ``status`` ("0" = accepted) and ``error-text``, splits long
texts into parts (153 GSM characters or 67 unicode characters each), and
answers HTTP 429 when throttling.
"""

from __future__ import annotations

import math
import re
import uuid
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from outbox.sandbox.faults import Decision, Vocabulary
from outbox.sandbox.route_context import SandboxContext

NAME = "vonage"
_NUMBER = re.compile(r"^[1-9]\d{6,14}$")

ERRORS = {
    "1": "Throughput Rate Exceeded - please wait [ 1000 ] and retry",
    "2": "Missing Parameters",
    "3": "Invalid Parameters",
    "4": "Bad Credentials",
    "5": "Internal Error",
    "6": "Unroutable message - rejected",
    "7": "Number barred.",
    "8": "Partner account barred",
    "9": "Partner quota exceeded",
    "10": "Too many existing binds",
    "11": "Account not enabled for HTTP",
    "12": "Message too long",
    "14": "Invalid signature",
    "15": "Illegal Sender Address - rejected",
    "22": "Invalid network code",
    "23": "Invalid callback url",
    "29": "Non-White-listed Destination - rejected",
}
ALIASES = {"dead": "6"}
VOCABULARY = Vocabulary(
    "5", lambda a: a in ERRORS or (a.isdigit() and 1 <= int(a) <= 99), tuple(ERRORS)
)


def _parts(text: str) -> int:
    if text.isascii():
        return 1 if len(text) <= 160 else math.ceil(len(text) / 153)
    return 1 if len(text) <= 70 else math.ceil(len(text) / 67)


def status_response(status: str, to: str | None, text: str | None = None) -> JSONResponse:
    """One failed message, Vonage-style (HTTP 200)."""
    message = {"status": status, "error-text": text or ERRORS.get(status, "Error")}
    if to:
        message["to"] = to
    return JSONResponse({"message-count": "1", "messages": [message]})


def _validate(form: dict[str, str]) -> tuple[str, str] | None:
    for name in ("from", "to", "text"):
        if not form.get(name):
            return "2", f"Missing {name} param"
    if not _NUMBER.match(form["to"]):
        return "3", "Invalid to param"
    if "ttl" in form and not (form["ttl"].isdigit() and 20000 <= int(form["ttl"]) <= 604800000):
        return "3", "Invalid ttl param"
    return None


def routes(ctx: SandboxContext) -> list[Route]:
    """The SMS send route."""
    creds = ctx.credentials

    async def send(request: Request) -> Response:
        form = dict(request.query_params)
        form.update(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        to = form.get("to")
        fields: dict[str, Any] = {k: form.get(k) for k in ("from", "type", "ttl")}
        fields["text_chars"] = len(form.get("text", ""))
        ids = {"client_ref": form.get("client-ref")}
        if (form.get("api_key"), form.get("api_secret")) != (
            creds.vonage_api_key,
            creds.vonage_api_secret,
        ):
            return ctx.reject(NAME, request, "4", status_response("4", to), destination=to)
        invalid = _validate(form)
        if invalid:
            status, text = invalid
            return ctx.reject(
                NAME,
                request,
                status,
                status_response(status, to, text),
                destination=to,
                fields=fields,
            )
        decision = ctx.faults.decide(NAME, to)
        ids_out = [str(uuid.uuid4()) for _ in range(_parts(form["text"]))]
        response = _answer(decision, form, ids_out)
        return await ctx.respond(
            NAME,
            request,
            decision,
            response,
            destination=to,
            provider_message_id=ids_out[0],
            ids=ids,
            fields=fields,
        )

    return [Route("/sms/json", send, methods=["POST", "GET"])]


def _answer(decision: Decision, form: dict[str, str], message_ids: list[str]) -> Response:
    to = form["to"]
    if decision.answer in ("ok", "timeout"):
        messages = [
            {
                "to": to,
                "message-id": message_id,
                "status": "0",
                "remaining-balance": "10.00000000",
                "message-price": "0.03330000",
                "network": "12345",
                **({"client-ref": form["client-ref"]} if "client-ref" in form else {}),
            }
            for message_id in message_ids
        ]
        return JSONResponse({"message-count": str(len(messages)), "messages": messages})
    if decision.answer == "rate_limited":
        return JSONResponse(
            {"message-count": "1", "messages": [{"status": "1", "error-text": ERRORS["1"]}]},
            status_code=429,
            headers={"Retry-After": str(math.ceil(decision.retry_after_s))},
        )
    return status_response(ALIASES.get(decision.answer, decision.answer), to)
