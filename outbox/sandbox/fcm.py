"""FCM HTTP v1: ``POST /v1/projects/<project>/messages:send``, and an OAuth token endpoint.

firebase-admin authenticates with a service account: it signs a JWT with the
account's key and trades it at the account's ``token_uri`` for an access
token. The sandbox writes a service account file whose ``token_uri`` is its
own ``/token``, verifies the JWT there with the account's public key, and
accepts only the access tokens it issued. So the SDK's real credential code
runs unchanged; only the send URL needs overriding (see the FCM adapter).

Errors follow Google's format, with FCM's ``errorCode`` in a ``details``
entry of type ``google.firebase.fcm.v1.FcmError``: that is what the SDK maps
to UnregisteredError, QuotaExceededError and so on. Note that the SDK
itself retries 500 and 503 four times, and refreshes its token and retries
twice on 401: each of those attempts is a request here, and draws an answer.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import time
from urllib.parse import parse_qsl

import jwt
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from outbox.sandbox.credentials import public_pem
from outbox.sandbox.faults import Decision, Vocabulary
from outbox.sandbox.route_context import SandboxContext

NAME = "fcm"
OAUTH_NAME = "fcm_oauth"  # token grants are recorded under this name
MAX_PAYLOAD_BYTES = 4096
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
_TOKEN = re.compile(r"^[A-Za-z0-9_:\-]{20,4096}$")
_FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"

# name -> (HTTP status, Google canonical status, is an FCM errorCode)
ERRORS = {
    "INVALID_ARGUMENT": (400, "INVALID_ARGUMENT", True),
    "UNREGISTERED": (404, "NOT_FOUND", True),
    "SENDER_ID_MISMATCH": (403, "PERMISSION_DENIED", True),
    "QUOTA_EXCEEDED": (429, "RESOURCE_EXHAUSTED", True),
    "UNAVAILABLE": (503, "UNAVAILABLE", True),
    "INTERNAL": (500, "INTERNAL", True),
    "THIRD_PARTY_AUTH_ERROR": (401, "UNAUTHENTICATED", True),
    "UNAUTHENTICATED": (401, "UNAUTHENTICATED", False),
    "PERMISSION_DENIED": (403, "PERMISSION_DENIED", False),
}
MESSAGES = {
    "INVALID_ARGUMENT": "Request contains an invalid argument.",
    "UNREGISTERED": "Requested entity was not found.",
    "SENDER_ID_MISMATCH": "SenderId mismatch",
    "QUOTA_EXCEEDED": "Quota exceeded for quota metric 'Send requests'.",
    "UNAVAILABLE": "The service is currently unavailable.",
    "INTERNAL": "Internal error encountered.",
    "THIRD_PARTY_AUTH_ERROR": "Auth error from APNS or Web Push Service",
    "UNAUTHENTICATED": "Request had invalid authentication credentials.",
    "PERMISSION_DENIED": "Permission 'cloudmessaging.messages.create' denied on resource.",
}
ALIASES = {"dead": "UNREGISTERED", "rate_limited": "QUOTA_EXCEEDED"}
VOCABULARY = Vocabulary("UNAVAILABLE", ERRORS.__contains__, tuple(ERRORS))


def error_response(
    name: str, message: str | None = None, retry_after_s: float | None = None
) -> JSONResponse:
    """A Google API error body, with FCM's errorCode detail where FCM has one."""
    status, canonical, is_fcm = ERRORS[name]
    error: dict = {"code": status, "message": message or MESSAGES[name], "status": canonical}
    if is_fcm:
        error["details"] = [{"@type": _FCM_ERROR_TYPE, "errorCode": name}]
    headers = {"Retry-After": str(math.ceil(retry_after_s))} if retry_after_s is not None else None
    return JSONResponse({"error": error}, status_code=status, headers=headers)


def _validate(message: dict) -> str | None:
    """None if the message is well formed, else a message for INVALID_ARGUMENT."""
    targets = [k for k in ("token", "topic", "condition") if message.get(k)]
    if len(targets) != 1:
        return "Exactly one of token, topic or condition must be specified."
    if "token" in targets and not _TOKEN.match(message["token"]):
        return "The registration token is not a valid FCM registration token"
    data = message.get("data") or {}
    if not all(isinstance(v, str) for v in data.values()):
        return "Invalid value at 'message.data': values must be strings."
    # FCM's 4096-byte limit counts what reaches the device: notification and data.
    payload = {"notification": message.get("notification"), "data": data}
    if len(json.dumps(payload, ensure_ascii=False).encode()) > MAX_PAYLOAD_BYTES:
        return "Message is too big."
    return None


def routes(ctx: SandboxContext) -> list[Route]:
    """The FCM send route and the OAuth token endpoint."""
    creds = ctx.credentials
    account_key = public_pem(creds.fcm_private_key)
    # google-auth signs the grant for Google's token endpoint whatever the file's
    # token_uri says; either audience is accepted.
    audiences = [f"{ctx.http_url}/token", GOOGLE_TOKEN_URI]

    def refuse(request: Request, description: str, issuer: str | None = None) -> Response:
        body = {"error": "invalid_grant", "error_description": description}
        response = JSONResponse(body, status_code=400)
        return ctx.reject(OAUTH_NAME, request, "invalid_grant", response, destination=issuer)

    async def token(request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode()))
        if form.get("grant_type") != JWT_BEARER:
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        assertion = form.get("assertion", "")
        issuer = None
        try:
            issuer = jwt.decode(assertion, options={"verify_signature": False}).get("iss")
            claims = jwt.decode(
                assertion,
                account_key,
                algorithms=["RS256"],
                audience=audiences,
                options={"require": ["iss", "exp", "iat"]},
            )
        except jwt.InvalidTokenError:
            return refuse(request, "Invalid JWT Signature.", issuer)
        if claims["iss"] != creds.fcm_client_email:
            return refuse(request, "Invalid email or User ID", issuer)
        access_token = "ya29.sandbox." + secrets.token_urlsafe(32)
        ctx.fcm_tokens.add(access_token)
        body = {"access_token": access_token, "expires_in": 3599, "token_type": "Bearer"}
        # Recorded (without the token) so tests can see how often the SDK fetches one.
        return ctx.reject(OAUTH_NAME, request, "ok", JSONResponse(body), destination=issuer)

    async def send(request: Request) -> Response:
        project = request.path_params["project"]
        raw = await request.body()  # read first: see outbox.sandbox.route_context
        authorization = request.headers.get("authorization", "")
        if authorization[7:] not in ctx.fcm_tokens:
            return ctx.reject(NAME, request, "UNAUTHENTICATED", error_response("UNAUTHENTICATED"))
        try:
            body = json.loads(raw)
            message = body["message"]
        except (ValueError, KeyError, TypeError):
            return ctx.reject(
                NAME,
                request,
                "INVALID_ARGUMENT",
                error_response("INVALID_ARGUMENT", "Invalid JSON payload received."),
            )
        destination = message.get("token")
        android = message.get("android") or {}
        apns_headers = (message.get("apns") or {}).get("headers") or {}
        fields = {
            "notification": message.get("notification"),
            "data": message.get("data"),
            "ttl": android.get("ttl"),
            "priority": android.get("priority"),
            "apns_headers": apns_headers,
            "validate_only": bool(body.get("validate_only")),
        }
        if project != creds.fcm_project_id:
            return ctx.reject(
                NAME,
                request,
                "PERMISSION_DENIED",
                error_response("PERMISSION_DENIED"),
                destination=destination,
            )
        invalid = _validate(message)
        if invalid:
            return ctx.reject(
                NAME,
                request,
                "INVALID_ARGUMENT",
                error_response("INVALID_ARGUMENT", invalid),
                destination=destination,
                fields=fields,
            )
        decision = ctx.faults.decide(NAME, destination)
        name = f"projects/{project}/messages/0:{int(time.time() * 1000)}%{secrets.token_hex(8)}"
        ids = {
            "collapse_key": android.get("collapse_key"),
            "apns_collapse_id": apns_headers.get("apns-collapse-id"),
        }
        return await ctx.respond(
            NAME,
            request,
            decision,
            _answer(decision, name),
            destination=destination,
            provider_message_id=name,
            ids=ids,
            fields=fields,
        )

    return [
        Route("/token", token, methods=["POST"]),
        Route("/v1/projects/{project}/messages:send", send, methods=["POST"]),
    ]


def _answer(decision: Decision, name: str) -> Response:
    if decision.answer in ("ok", "timeout"):
        return JSONResponse({"name": name})
    error = ALIASES.get(decision.answer, decision.answer)
    retry_after = decision.retry_after_s if decision.answer == "rate_limited" else None
    return error_response(error, retry_after_s=retry_after)
