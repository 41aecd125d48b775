"""What every request goes through before and after its endpoint: the size limit, the log line.

A pure ASGI middleware rather than a framework hook, so that an oversized body
is refused (413) before anything reads it into a model, and so that the one log
line per request is written whatever the endpoint did, with the route's
template (``/v1/recipients/{recipient}``), never the path itself (it holds user
ids and message ids) and never a header (one holds the key).
"""

from __future__ import annotations

import json
import time
from typing import Any

import structlog

log = structlog.get_logger("outbox.api")

Scope = dict[str, Any]
Message = dict[str, Any]


def error_body(error: str, detail: str, **extra: Any) -> bytes:
    """The JSON of an :class:`~outbox.apiserver.models.Error`."""
    return json.dumps({"error": error, "detail": detail, **extra}).encode()


class Guard:
    """Refuses bodies over ``max_body_bytes`` (declared or streamed) and logs each request."""

    def __init__(self, app: Any, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status: list[int] = []
        logged = False

        async def sending(message: Message) -> None:
            nonlocal logged
            if message["type"] == "http.response.start":
                status.append(message["status"])
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                # Before the last of the response leaves: whoever got an answer can
                # find its log line.
                logged = True
                self._log(scope, status[0], time.perf_counter() - started)
            await send(message)

        try:
            body = await self._read(scope, receive)
            if body is None:
                await self._too_large(sending)
            else:
                await self.app(scope, _replay(body, receive), sending)
        finally:
            if not logged:  # the app failed before answering, or the client left
                self._log(scope, status[0] if status else 500, time.perf_counter() - started)

    async def _read(self, scope: Scope, receive: Any) -> bytes | None:
        """The whole body, or None as soon as it is known to be over the limit."""
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_body_bytes:
                return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return b""
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:  # chunked, or a Content-Length that lied
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _too_large(self, send: Any) -> None:
        body = error_body("too_large", f"the request body is over {self.max_body_bytes} bytes")
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    @staticmethod
    def _log(scope: Scope, status: int, seconds: float) -> None:
        route = scope.get("route")
        state = scope.get("state") or {}
        key = state.get("api_key")
        fields: dict[str, Any] = {
            "method": scope.get("method"),
            # '/v1/recipients/{recipient}': the template, never the path.
            "route": getattr(route, "path_format", None),
            "status": status,
            "ms": round(seconds * 1000, 1),
        }
        if key is not None:
            fields["key_id"] = key.id
            fields["key_name"] = key.name
        if state.get("refused"):
            fields["refused"] = state["refused"]
        (log.warning if status >= 500 else log.info)("api.request", **fields)


def _replay(body: bytes, receive: Any) -> Any:
    """A ``receive`` that hands the app the body already read, then waits as the original does."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
