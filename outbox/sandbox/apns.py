"""APNs: ``POST /3/device/<token>`` over HTTP/2 + TLS, with token (JWT) auth.

Production devices use ``https://127.0.0.1:<tls port>``; sandbox
(development) devices use the same listener under ``/sandbox``, standing in
for Apple's second host. The bearer JWT must be ES256, ``kid`` = the
sandbox's key id, ``iss`` = its team id, signed by its .p8 key, and at most
an hour old (else ExpiredProviderToken), as Apple checks.
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid

import jwt
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from outbox.sandbox.credentials import public_pem
from outbox.sandbox.faults import Decision, Vocabulary
from outbox.sandbox.route_context import SandboxContext

NAME = "apns"
MAX_PAYLOAD_BYTES = 4096
TOKEN_MAX_AGE_S = 3600
_DEVICE_TOKEN = re.compile(r"^[0-9a-fA-F]{64,200}$")

# Apple's reasons and the HTTP status each comes with.
ERRORS = {
    "BadCollapseId": 400,
    "BadDeviceToken": 400,
    "BadExpirationDate": 400,
    "BadMessageId": 400,
    "BadPriority": 400,
    "BadTopic": 400,
    "DeviceTokenNotForTopic": 400,
    "DuplicateHeaders": 400,
    "InvalidPushType": 400,
    "MissingDeviceToken": 400,
    "MissingTopic": 400,
    "PayloadEmpty": 400,
    "TopicDisallowed": 400,
    "BadCertificate": 403,
    "BadCertificateEnvironment": 403,
    "ExpiredProviderToken": 403,
    "Forbidden": 403,
    "InvalidProviderToken": 403,
    "MissingProviderToken": 403,
    "BadPath": 404,
    "MethodNotAllowed": 405,
    "ExpiredToken": 410,
    "Unregistered": 410,
    "PayloadTooLarge": 413,
    "TooManyProviderTokenUpdates": 429,
    "TooManyRequests": 429,
    "InternalServerError": 500,
    "ServiceUnavailable": 503,
    "Shutdown": 503,
}
ALIASES = {"dead": "Unregistered", "rate_limited": "TooManyRequests"}
VOCABULARY = Vocabulary("ServiceUnavailable", ERRORS.__contains__, tuple(ERRORS))


def error_response(reason: str, retry_after_s: float | None = None) -> JSONResponse:
    """Apple's error answer: ``{"reason": ...}`` (+ ``timestamp`` on 410)."""
    status = ERRORS[reason]
    body: dict = {"reason": reason}
    if status == 410:
        body["timestamp"] = int(time.time() * 1000)
    headers = {"retry-after": str(math.ceil(retry_after_s))} if retry_after_s is not None else None
    return JSONResponse(body, status_code=status, headers=headers)


class _TokenVerifier:
    """Checks provider tokens as Apple does: signature, key id, team, age.

    A client reuses one token for tens of minutes (Apple refuses one refreshed
    more often than every 20), so a token whose signature checked out is
    remembered with its iat: later requests carrying it only have their age
    checked. The signature check (ES256) was a sixth of the sandbox's CPU per
    push, and the sandbox shares the machine with what it measures.
    """

    #: Tokens remembered at most; a client holds one per key, so more means churn.
    REMEMBERED = 64

    def __init__(self, ctx: SandboxContext) -> None:
        creds = ctx.credentials
        self.team_id = creds.apns_team_id
        self.key_id = creds.apns_key_id
        self.public_key = public_pem(creds.apns_private_key)
        # Verified token -> (iat, exp or None).
        self._verified: dict[str, tuple[float, float | None]] = {}

    def check(self, authorization: str | None) -> str | None:
        """None if the provider token is good, else Apple's reason."""
        if not authorization or not authorization.lower().startswith("bearer "):
            return "MissingProviderToken"
        token = authorization[7:].strip()
        known = self._verified.get(token)
        if known is not None:
            iat, exp = known
            now = time.time()
            if exp is not None and now > exp + 60:  # past its own exp, as jwt.decode says
                return "InvalidProviderToken"
            if now - iat > TOKEN_MAX_AGE_S:
                return "ExpiredProviderToken"
            return None
        reason, claims = self._verify(token)
        if reason is None:
            if len(self._verified) >= self.REMEMBERED:
                self._verified.clear()
            exp = claims.get("exp")
            self._verified[token] = (float(claims["iat"]), None if exp is None else float(exp))
        return reason

    def _verify(self, token: str) -> tuple[str | None, dict]:
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") != "ES256" or header.get("kid") != self.key_id:
                return "InvalidProviderToken", {}
            claims = jwt.decode(
                token,
                self.public_key,
                algorithms=["ES256"],
                options={"require": ["iss", "iat"]},
                leeway=60,
            )
        except jwt.InvalidTokenError:
            return "InvalidProviderToken", {}
        if claims["iss"] != self.team_id:
            return "InvalidProviderToken", {}
        if time.time() - float(claims["iat"]) > TOKEN_MAX_AGE_S:
            return "ExpiredProviderToken", {}
        return None, claims


def _validate(request: Request, body: bytes, topic: str, token: str) -> str | None:
    headers = request.headers
    if not _DEVICE_TOKEN.match(token):
        return "BadDeviceToken"
    if "apns-topic" not in headers:
        return "MissingTopic"
    if headers["apns-topic"] != topic:
        return "TopicDisallowed"
    if headers.get("apns-push-type", "alert") not in {
        "alert",
        "background",
        "voip",
        "complication",
        "fileprovider",
        "mdm",
        "location",
        "liveactivity",
        "pushtotalk",
        "widgets",
        "controls",
    }:
        return "InvalidPushType"
    if headers.get("apns-priority", "10") not in {"10", "5", "1"}:
        return "BadPriority"
    if not headers.get("apns-expiration", "0").isdigit():
        return "BadExpirationDate"
    if len(headers.get("apns-collapse-id", "").encode()) > 64:
        return "BadCollapseId"
    if not body:
        return "PayloadEmpty"
    if len(body) > MAX_PAYLOAD_BYTES:
        return "PayloadTooLarge"
    return None


def routes(ctx: SandboxContext) -> list[Route]:
    """The APNs routes (served on the TLS listener only)."""
    verifier = _TokenVerifier(ctx)
    topic = ctx.credentials.apns_topic

    async def push(request: Request) -> Response:
        environment = "sandbox" if request.url.path.startswith("/sandbox/") else "production"
        token = request.path_params["token"]
        body = await request.body()
        headers = request.headers
        fields = {
            "topic": headers.get("apns-topic"),
            "push_type": headers.get("apns-push-type"),
            "priority": headers.get("apns-priority"),
            "expiration": headers.get("apns-expiration"),
            "http_version": request.scope.get("http_version"),
            "size": len(body),
        }
        if request.scope.get("http_version") != "2":
            # Apple only speaks HTTP/2; an HTTP/1.1 client is a bug worth failing loudly.
            return ctx.reject(
                NAME,
                request,
                "http1",
                Response("HTTP/2 required", 505),
                destination=token,
                fields=fields,
            )
        reason = verifier.check(headers.get("authorization")) or _validate(
            request, body, topic, token
        )
        if reason:
            return ctx.reject(
                NAME, request, reason, error_response(reason), destination=token, fields=fields
            )
        try:
            fields["payload"] = json.loads(body)
        except ValueError:
            return ctx.reject(
                NAME,
                request,
                "PayloadEmpty",
                error_response("PayloadEmpty"),
                destination=token,
                fields=fields,
            )
        decision = ctx.faults.decide(NAME, token)
        apns_id = headers.get("apns-id") or str(uuid.uuid4()).upper()
        response = _answer(decision, apns_id, environment)
        ids = {"apns_id": apns_id, "collapse_id": headers.get("apns-collapse-id")}
        return await ctx.respond(
            NAME,
            request,
            decision,
            response,
            destination=token,
            provider_message_id=apns_id,
            environment=environment,
            ids=ids,
            fields=fields,
        )

    return [
        Route("/3/device/{token}", push, methods=["POST"]),
        Route("/sandbox/3/device/{token}", push, methods=["POST"]),
    ]


def _answer(decision: Decision, apns_id: str, environment: str) -> Response:
    if decision.answer in ("ok", "timeout"):
        headers = {"apns-id": apns_id}
        if environment == "sandbox":
            # Apple's development environment adds this header; production does not.
            headers["apns-unique-id"] = str(uuid.uuid4())
        return Response(status_code=200, headers=headers)
    reason = ALIASES.get(decision.answer, decision.answer)
    retry_after = decision.retry_after_s if decision.answer == "rate_limited" else None
    return error_response(reason, retry_after)
