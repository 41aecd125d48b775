"""SMS through Twilio, with the twilio SDK (``messages.create_async``).

The SDK's async path needs an async HTTP client; we give it our own
(:class:`_PooledTwilioClient`, built on the SDK's public ``AsyncHttpClient``
base class, on aiohttp like the SDK's own ``AsyncTwilioHttpClient``) for four
reasons: an explicit timeout; connections pooled to the worker's concurrency
(the SDK's client makes a session per request unless handed one); the one
documented place where the API host is rewritten to a base-URL override (the
provider sandbox); and access to response headers, which the SDK's
exceptions do not carry (Twilio's 429 may say ``Retry-After``).

Codes (PROVIDERS.md, Twilio): the destination is dead when Twilio says the
number is invalid, not mobile, a landline, unreachable, or the recipient
replied STOP; our account or sender setup is wrong for 20003, 21606, 21408,
21608...; 20429/HTTP 429 were never processed, so they retry; 5xx and
timeouts may have been accepted, so they are ``unknown``.
"""

from __future__ import annotations

import base64
import contextvars
import logging
import math
from dataclasses import dataclass, field

from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http import AsyncHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from outbox.providers.base import Message, Outcome
from outbox.providers.transport import (
    DEFAULT_CONNECTIONS,
    TRANSPORT_ERRORS,
    Adapter,
    HttpPool,
    header_retry_after,
    short,
    transport_outcome,
)

TWILIO_API_URL = "https://api.twilio.com"
MAX_VALIDITY_SECONDS = 36_000

DEAD_CODES = {
    21211: "invalid 'To' number",
    21214: "'To' number cannot be reached",
    21612: "'To' number not reachable by SMS",
    21614: "'To' number is not a mobile number",
    21635: "'To' number is a landline",
    21610: "recipient replied STOP",
}
# Recipient opted out: the worker should also record an SMS opt-out.
OPT_OUT_CODES = {21610}
CONFIG_CODES = {
    20003,  # authentication failed
    20005,  # account not active
    20008,  # test credentials used against the live API
    20404,  # account (or resource) not found: wrong account SID
    21212,  # invalid 'From' number
    21408,  # region not enabled for the account
    21603,  # 'From' number required
    21606,  # 'From' number not SMS-capable / not owned
    21608,  # trial account: 'To' not verified
    21611,  # 'From' number has too many queued messages
    21659,  # 'From' number not a Twilio number
    21703,  # messaging service has no sender
    21704,  # messaging service has no sender
    21705,  # invalid messaging service
}
RETRY_CODES = {20429, 30001, 14107}

_log = logging.getLogger("outbox.providers.twilio")


@dataclass
class _LastResponse:
    """Where the HTTP client leaves the headers of the response it got, per send."""

    headers: dict[str, str] = field(default_factory=dict)


# A ContextVar, not an attribute: concurrent sends share one client, and each
# must read the headers of its own response.
_LAST_RESPONSE: contextvars.ContextVar[_LastResponse | None] = contextvars.ContextVar(
    "outbox_twilio_last_response", default=None
)


class _PooledTwilioClient(AsyncHttpClient):
    """The SDK's async HTTP seam, on our :class:`HttpPool`, with a base-URL override.

    The SDK builds absolute URLs on ``https://api.twilio.com``; when a base URL
    is configured (the provider sandbox), that prefix is replaced here and
    nowhere else. Twilio's edge/region host rewriting is left off: it breaks
    on IP addresses.
    """

    def __init__(self, base_url: str | None, timeout: float, connections: int) -> None:
        super().__init__(logger=_log, is_async=True, timeout=timeout)
        self._base_url = base_url.rstrip("/") if base_url else None
        self._http = HttpPool(timeout=timeout, connections=connections)

    def rebase(self, url: str) -> str:
        """The URL the request really goes to."""
        if self._base_url and url.startswith(TWILIO_API_URL):
            return self._base_url + url[len(TWILIO_API_URL) :]
        return url

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        # ``timeout`` is the one this client was made with (the SDK passes ours
        # back), and Twilio's API does not redirect: both are the pool's own.
        headers = dict(headers or {})
        if auth is not None:
            basic = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            headers["Authorization"] = f"Basic {basic}"
        answer = await self._http.request(
            method.upper(),
            self.rebase(url),
            params=params,
            data=data,
            headers=headers,
        )
        holder = _LAST_RESPONSE.get()
        if holder is not None:
            holder.headers = dict(answer.headers)
        return Response(answer.status, answer.text, answer.headers)

    async def aclose(self) -> None:
        await self._http.aclose()


class TwilioProvider(Adapter):
    """Sends SMS through Twilio's Messages API."""

    name = "twilio"
    channel = "sms"
    # validity_period is whole seconds, at least 1.
    min_seconds_left = 1.0

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        from_number: str | None = None,
        messaging_service_sid: str | None = None,
        status_callback_url: str | None = None,
        base_url: str | None = None,
        timeout: float = 10.0,
        connections: int = DEFAULT_CONNECTIONS,
    ) -> None:
        if not (from_number or messaging_service_sid):
            raise ValueError("Twilio needs a from number or a messaging service SID")
        self._from = from_number
        self._service_sid = messaging_service_sid
        self._status_callback = status_callback_url
        self._secrets = (auth_token,)
        self._http = _PooledTwilioClient(base_url, timeout, connections)
        self._client = Client(
            account_sid,
            auth_token,
            account_sid=account_sid,
            http_client=self._http,
            # Non-empty so the SDK does not fall back to os.environ: edge and
            # region stay off whatever TWILIO_* variables the host has.
            environment={"TWILIO_EDGE": "", "TWILIO_REGION": ""},
        )

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._http.aclose()

    def _params(self, message: Message, left: float | None) -> dict[str, object]:
        params: dict[str, object] = {"to": message.destination, "body": message.body}
        if self._service_sid:
            params["messaging_service_sid"] = self._service_sid
        else:
            params["from_"] = self._from
        if self._status_callback:
            params["status_callback"] = self._status_callback
        if left is not None:
            # Twilio drops a message still queued after validity_period seconds.
            params["validity_period"] = min(MAX_VALIDITY_SECONDS, math.floor(left))
        return params

    async def _send(self, message: Message, left: float | None) -> Outcome:
        holder = _LastResponse()
        reset = _LAST_RESPONSE.set(holder)
        try:
            created = await self._client.messages.create_async(**self._params(message, left))
        except (TwilioRestException, TwilioServiceException) as exc:
            return classify(
                exc.status, exc.code, _error_text(exc), header_retry_after(holder.headers)
            )
        except TRANSPORT_ERRORS as exc:
            return transport_outcome(exc)
        except ValueError:
            # A 2xx whose body is not JSON (a proxy page): Twilio may have taken it.
            return Outcome.unknown("Twilio answered success with an unreadable body")
        finally:
            _LAST_RESPONSE.reset(reset)
        if created.status == "failed":
            return classify(400, created.error_code, short(created.error_message or "failed"), None)
        return Outcome.sent(created.sid, status=created.status)


def _error_text(exc: TwilioRestException | TwilioServiceException) -> str:
    if isinstance(exc, TwilioServiceException):
        return short(exc.detail or exc.title)
    return short(exc.msg)


def classify(status: int, code: int | None, text: str, retry_after: float | None) -> Outcome:
    """Map Twilio's HTTP status and error code to an Outcome."""
    detail = {"status": status, "code": code}
    reason = f"Twilio {code or status}: {text}"
    if code in DEAD_CODES:
        return Outcome.dead_destination(reason, **detail, opt_out=code in OPT_OUT_CODES)
    if code in CONFIG_CODES or status in (401, 403):
        return Outcome.config(reason, **detail)
    if code in RETRY_CODES or status == 429:
        return Outcome.retry(reason, retry_after, **detail)
    if status >= 500:
        return Outcome.unknown(reason, **detail)
    return Outcome.permanent(reason, **detail)
