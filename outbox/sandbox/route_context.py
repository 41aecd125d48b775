"""State shared by the sandbox's route handlers, and the common way they answer.

Every handler reads the whole request body before answering, even when the
answer does not depend on it (a refused credential): hypercorn closes an
HTTP/1.1 connection whose request body was left unread, and the client's
next request on that kept-alive connection then fails with "server
disconnected without sending a response".
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from outbox.sandbox.credentials import SandboxCredentials
from outbox.sandbox.faults import Decision, FaultInjector
from outbox.sandbox.receipts import ReceiptSender
from outbox.sandbox.recorder import Recorder


def _connection(request: Request) -> str | None:
    client = request.client
    return f"{client.host}:{client.port}" if client is not None else None


@dataclass
class SandboxContext:
    """Everything a provider route needs: keys, faults, recorder, receipts."""

    credentials: SandboxCredentials
    faults: FaultInjector
    recorder: Recorder
    receipts: ReceiptSender
    http_url: str
    # Set when the server stops, so requests held open by a "timeout" answer end.
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    # Where receipts go, by provider ("sendgrid": event webhook URL).
    webhooks: dict[str, str] = field(default_factory=dict)
    # OAuth access tokens the FCM token endpoint has issued.
    fcm_tokens: set[str] = field(default_factory=set)

    async def respond(
        self,
        provider: str,
        request: Request,
        decision: Decision,
        response: Response,
        *,
        destination: str | None,
        provider_message_id: str | None = None,
        environment: str | None = None,
        ids: dict[str, Any] | None = None,
        fields: dict[str, Any] | None = None,
    ) -> Response:
        """Record the request, wait as the faults say, then give the answer."""
        hang = decision.answer == "timeout"
        self.recorder.add(
            provider=provider,
            method=request.method,
            path=request.url.path,
            destination=destination,
            answer=decision.answer,
            status=None if hang else response.status_code,
            provider_message_id=None if hang else provider_message_id,
            environment=environment,
            ids=ids or {},
            fields=fields or {},
            connection=_connection(request),
        )
        if decision.latency_s:
            await asyncio.sleep(decision.latency_s)
        if hang:
            # Keep the request open past the client's timeout (or until shutdown).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), timeout=decision.hang_s)
            return JSONResponse({"error": "sandbox timeout"}, status_code=504)
        return response

    def reject(
        self,
        provider: str,
        request: Request,
        answer: str,
        response: Response,
        *,
        destination: str | None = None,
        fields: dict[str, Any] | None = None,
    ) -> Response:
        """Record and return an answer given without consulting the faults.

        For requests that failed authentication or validation (and the FCM
        token endpoint, which faults do not touch).
        """
        self.recorder.add(
            provider=provider,
            method=request.method,
            path=request.url.path,
            destination=destination,
            answer=answer,
            status=response.status_code,
            fields=fields or {},
            connection=_connection(request),
        )
        return response
