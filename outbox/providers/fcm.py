"""Firebase Cloud Messaging (HTTP v1): firebase-admin's message, sent on our pooled connections.

Each adapter owns a named firebase App (so adapters never share the SDK's
global default app). The SDK builds and validates the request: the
``messaging.Message``, its JSON encoding, the send URL and headers; and it
turns an error answer into its exception classes, which :func:`classify`
maps to outcomes. The request itself goes out on our pooled async
connections (:class:`~outbox.providers.transport.HttpPool`, as many as the
worker sends at once), one request per message: FCM's batch endpoint is gone,
and ``send_each_async`` is one v1 request per message anyway, with per-call
gathering and an httpx client whose pool churns past 20 connections.

Things the SDK does that shape this module (firebase-admin 7.x):

- Its HTTP transport retries 500/503 up to 4 times itself (backoff 0, 1, 2,
  4 s), holding one send for up to five times the timeout. We do not: a 5xx
  is a ``retry`` outcome at once, and the worker's backoff (and breaker) take
  it from there, honouring ``Retry-After``.
- It refreshes the OAuth access token *synchronously*. We refresh it
  ourselves in a thread before a send whenever it is not valid, and once more
  (then retry the request once, as the SDK's auth flow does) when FCM answers
  401 to it, so that blocking call never runs in the loop.
- There is no emulator setting for messaging. Pointing it at the provider
  sandbox, and everything else that touches SDK internals, is done in
  :class:`_SdkBridge` (pinned by ``tests/providers/test_fcm.py``).
"""

from __future__ import annotations

import asyncio
import json
import math
import uuid
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

import firebase_admin
import google.auth.exceptions
import google.auth.transport.requests
import httpx
from firebase_admin import credentials, exceptions, messaging

from outbox.providers.base import Message, Outcome
from outbox.providers.transport import (
    DEFAULT_CONNECTIONS,
    TRANSPORT_ERRORS,
    Answer,
    HttpAdapter,
    header_retry_after,
    short,
    transport_outcome,
)

MAX_PAYLOAD_BYTES = 4096
MAX_TTL = timedelta(days=28)


class _SdkBridge:
    """The one place that reaches into firebase-admin's private API.

    ``_MessagingService`` builds its send URL from the class constant
    ``FCM_URL`` when the service is created, and exposes no option to change
    it. Like the SDK's own tests, we overwrite the instance's ``_fcm_url``
    (this app only, never the class). The service also holds the request's
    headers, the message encoder, and the mapping of an error answer to the
    SDK's exceptions, which it applies to an ``httpx.HTTPStatusError``; we
    hand it one built from our answer. Its httpx client (unused) must be
    closed in *our* event loop: ``firebase_admin.delete_app`` closes it with
    ``asyncio.run``, which cannot run inside a running loop.
    """

    @staticmethod
    def service(app: firebase_admin.App) -> Any:
        # Creating the service now (not lazily at the first send) lets the URL
        # override apply before any request is made.
        return messaging._get_messaging_service(app)

    @staticmethod
    def point_at(service: Any, base_url: str, project_id: str) -> None:
        service._fcm_url = f"{base_url.rstrip('/')}/v1/projects/{project_id}/messages:send"

    @staticmethod
    def send_url(service: Any) -> str:
        return str(service._fcm_url)

    @staticmethod
    def headers(service: Any) -> dict[str, str]:
        return dict(service._fcm_headers)

    @staticmethod
    def encode(message: messaging.Message) -> dict[str, Any]:
        """The message's JSON (ValueError for a field FCM would refuse)."""
        return messaging._MessagingService.encode_message(message)

    @staticmethod
    def error(service: Any, answer: Answer) -> exceptions.FirebaseError:
        """The SDK's exception for an error answer, as ``send_each_async`` would raise it."""
        request = httpx.Request("POST", _SdkBridge.send_url(service))
        response = httpx.Response(
            answer.status,
            headers=list(answer.headers.items()),
            content=answer.body,
            request=request,
        )
        error = httpx.HTTPStatusError(f"FCM {answer.status}", request=request, response=response)
        return service._handle_fcm_httpx_error(error)

    @staticmethod
    async def close_async_client(service: Any) -> None:
        await service._async_client.aclose()


class _TimedRequest(google.auth.transport.requests.Request):
    """google-auth's requests transport with our timeout instead of its 120 s default."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: Any = None,
        headers: Any = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Any:
        return super().__call__(url, method, body, headers, timeout=self._timeout, **kwargs)


class FcmProvider(HttpAdapter):
    """Sends push notifications to Android and web devices through FCM."""

    name = "fcm"
    channel = "push"

    def __init__(
        self,
        *,
        project_id: str,
        credentials_file: Path | str,
        base_url: str | None = None,
        timeout: float = 10.0,
        connections: int = DEFAULT_CONNECTIONS,
    ) -> None:
        super().__init__(
            secrets=_file_secrets(credentials_file), timeout=timeout, connections=connections
        )
        credential = credentials.Certificate(str(credentials_file))
        self._app = firebase_admin.initialize_app(
            credential,
            {"projectId": project_id, "httpTimeout": timeout},
            name=f"outbox-fcm-{uuid.uuid4().hex}",
        )
        self._google_credential = credential.get_credential()
        self._auth_request = _TimedRequest(timeout)
        self._refresh_lock = asyncio.Lock()
        self._service = _SdkBridge.service(self._app)
        if base_url:
            _SdkBridge.point_at(self._service, base_url, project_id)
        self._url = _SdkBridge.send_url(self._service)
        self._headers = {**_SdkBridge.headers(self._service), "Content-Type": "application/json"}

    @property
    def send_url(self) -> str:
        """Where messages go (Google's endpoint, or the configured override)."""
        return _SdkBridge.send_url(self._service)

    def secrets(self) -> tuple[str, ...]:
        """The service account's secrets, and the OAuth access token of the moment."""
        token = getattr(self._google_credential, "token", None)
        return (*self._secrets, token or "")

    async def aclose(self) -> None:
        """Close our connections and the SDK's HTTP client; delete this adapter's firebase App."""
        await super().aclose()
        await _SdkBridge.close_async_client(self._service)
        # delete_app calls the service's close(), which runs asyncio.run(): off the loop.
        await asyncio.to_thread(firebase_admin.delete_app, self._app)

    async def _send(self, message: Message, left: float | None) -> Outcome:
        try:
            fcm_message, size = _build(message, left)
            body = json.dumps({"message": _SdkBridge.encode(fcm_message)}).encode()
        except ValueError as exc:  # the SDK validates fields as the message is built and encoded
            return Outcome.permanent(f"invalid FCM message: {short(exc)}", error="invalid")
        if size > MAX_PAYLOAD_BYTES:
            return Outcome.permanent(
                f"payload is {size} bytes; FCM accepts at most {MAX_PAYLOAD_BYTES}",
                error="payload_too_large",
                size=size,
            )
        refused: str | None = None
        for _ in range(2):
            refresh_failed = await self._ensure_access_token(refused)
            if refresh_failed is not None:
                return refresh_failed
            token = self._google_credential.token
            headers = {**self._headers, "Authorization": f"Bearer {token}"}
            try:
                answer = await self._http.request("POST", self._url, data=body, headers=headers)
            except TRANSPORT_ERRORS as exc:
                return transport_outcome(exc)
            if answer.status != 401:
                break
            refused = token  # refresh it and try once more, as the SDK's auth flow does
        if 200 <= answer.status < 300:
            try:
                return Outcome.sent(str(answer.json()["name"]))
            except (ValueError, KeyError, TypeError):
                return Outcome.unknown("FCM answered success with an unreadable body")
        return classify(_SdkBridge.error(self._service, answer))

    async def _ensure_access_token(self, refused: str | None = None) -> Outcome | None:
        """Refresh the access token when it is not valid, or is the one FCM just refused."""
        credential = self._google_credential
        if credential.valid and (refused is None or credential.token != refused):
            return None
        async with self._refresh_lock:
            # Another send may have refreshed it meanwhile.
            if credential.valid and (refused is None or credential.token != refused):
                return None
            try:
                await asyncio.to_thread(credential.refresh, self._auth_request)
            except google.auth.exceptions.GoogleAuthError as exc:
                return _auth_outcome(exc)
        return None


def _file_secrets(path: Path | str) -> list[str]:
    """The service account's private key: never to be echoed in a reason."""
    try:
        info = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [info[k] for k in ("private_key", "private_key_id") if isinstance(info.get(k), str)]


def _string_data(data: dict[str, Any]) -> dict[str, str]:
    # FCM data values must be strings; structured values travel as JSON text.
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in data.items()}


def _build(message: Message, left: float | None) -> tuple[messaging.Message, int]:
    """The SDK message and the size of what FCM counts against its 4096-byte limit."""
    data = _string_data(message.data)
    # Whole seconds: FCM's TTL is a duration string, and sub-second precision is noise here.
    ttl = min(timedelta(seconds=math.floor(left)), MAX_TTL) if left is not None else None
    apns_headers = {
        "apns-collapse-id": message.collapse_id,
        "apns-priority": "10" if message.priority > 0 else "5",
    }
    if message.expires_at is not None:
        apns_headers["apns-expiration"] = str(int(message.expires_at.timestamp()))
    notification = None
    if message.title or message.body:
        notification = messaging.Notification(title=message.title, body=message.body or None)
    with warnings.catch_warnings():
        # firebase-admin 7.7 deprecates Message.token in favour of Firebase
        # installation ids. Devices register registration tokens, which FCM v1's
        # message.token still takes. Nothing awaits in here, so the filter
        # cannot leak into another send.
        warnings.simplefilter("ignore", DeprecationWarning)
        fcm_message = messaging.Message(
            token=message.destination,
            notification=notification,
            data=data or None,
            android=messaging.AndroidConfig(
                collapse_key=message.collapse_id,
                priority="high" if message.priority > 0 else "normal",
                ttl=ttl,
            ),
            apns=messaging.APNSConfig(headers=apns_headers),
        )
    size = len(
        json.dumps(
            {"title": message.title, "body": message.body, "data": data}, ensure_ascii=False
        ).encode()
    )
    return fcm_message, size


def _auth_outcome(exc: google.auth.exceptions.GoogleAuthError) -> Outcome:
    kind = type(exc).__name__
    if isinstance(exc, google.auth.exceptions.TransportError):
        return Outcome.retry(f"could not reach the OAuth token endpoint ({kind})", error=kind)
    return Outcome.config(
        f"the service account could not get an access token: {short(exc)}", error=kind
    )


def classify(exc: exceptions.FirebaseError | None) -> Outcome:
    """Map a firebase-admin exception to an Outcome (see PROVIDERS.md, FCM)."""
    if exc is None:
        return Outcome.unknown("FCM reported a failure without an error")
    response = exc.http_response
    status = response.status_code if response is not None else None
    detail = {"status": status, "error": type(exc).__name__, "code": exc.code}
    text = f"FCM {type(exc).__name__}: {short(exc)}"
    if isinstance(exc, messaging.UnregisteredError | messaging.SenderIdMismatchError):
        return Outcome.dead_destination(text, **detail)
    if isinstance(exc, exceptions.InvalidArgumentError):
        if "registration token" in str(exc).lower():
            return Outcome.dead_destination(text, **detail)
        return Outcome.permanent(text, **detail)
    if isinstance(
        exc,
        messaging.ThirdPartyAuthError
        | exceptions.UnauthenticatedError
        | exceptions.PermissionDeniedError,
    ):
        return Outcome.config(text, **detail)
    if isinstance(
        exc,
        messaging.QuotaExceededError
        | exceptions.ResourceExhaustedError
        | exceptions.UnavailableError
        | exceptions.InternalError,
    ):
        retry_after = header_retry_after(response.headers) if response is not None else None
        return Outcome.retry(text, retry_after, **detail)
    if isinstance(exc, exceptions.DeadlineExceededError):
        if isinstance(exc.cause, httpx.ConnectTimeout | httpx.PoolTimeout):
            return Outcome.retry(text, **detail)  # the request never left
        return Outcome.unknown(text, **detail)
    if isinstance(exc, exceptions.UnknownError) and isinstance(
        exc.cause, google.auth.exceptions.GoogleAuthError
    ):
        return _auth_outcome(exc.cause)
    if isinstance(exc, exceptions.NotFoundError):
        return Outcome.config(text, **detail)  # wrong project id or URL, not a token problem
    if status is not None and 400 <= status < 500:
        return Outcome.permanent(text, **detail)
    return Outcome.unknown(text, **detail)
