"""Serving the webhooks app with hypercorn.

Hypercorn because it is already what serves the provider sandbox (one ASGI
server in the project, not two), it is maintained with the Pallets/Quart
projects, and it takes an already-bound socket and a shutdown trigger, which
is what a test that needs the port before the server runs wants.

:class:`WebhookServer` binds its socket when created (so ``port=0`` picks a
free port that is known at once) and serves an app inside :meth:`serve`;
:class:`WebhookThread` does that in a background thread (tests, the demo).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
from hypercorn.asyncio import serve

from outbox.serving import ServerThread, hypercorn_config, listen

_errors = logging.getLogger("outbox.webhooks.server")


class WebhookServer:
    """A socket bound at creation (its URL is known before any app exists); serves in :meth:`serve`.

    Binding first matters: Twilio and Mandrill sign the URL they call, so the
    app's public URL must be known, port included, before the app is built.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._sock = listen(host, port)
        self.port: int = self._sock.getsockname()[1]
        url_host = f"[{host}]" if ":" in host else host
        self.url = f"http://{url_host}:{self.port}"

    async def serve(self, app: Any, stop: asyncio.Event) -> None:
        """Serve ``app`` until ``stop`` is set, then finish requests in flight (5 s at most)."""
        config = hypercorn_config(self._sock, errorlog=_errors, graceful_timeout=5.0)
        await serve(app, config, shutdown_trigger=stop.wait)


class WebhookThread:
    """An app served by a :class:`WebhookServer` in a background thread, as a context manager::

    server = WebhookServer()
    with WebhookThread(server, create_app(replace(config, public_url=server.url), db_url)):
        httpx.post(server.url + "/webhooks/sendgrid", ...)
    """

    def __init__(self, server: WebhookServer, app: Any) -> None:
        self.server = server
        self.app = app
        self.url = server.url
        self._thread = ServerThread(
            lambda stop: server.serve(app, stop), name="outbox-webhooks", ready=self._answers
        )

    def _answers(self) -> bool:
        """``/healthz`` answers (whatever its status: the database may be down)."""
        try:
            httpx.get(self.url + "/healthz", timeout=1.0)
        except httpx.HTTPError:
            return False
        return True

    def __enter__(self) -> WebhookThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start serving and wait until ``/healthz`` answers."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and wait for the thread to end."""
        self._thread.stop()
