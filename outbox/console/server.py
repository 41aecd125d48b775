"""Serving the console with hypercorn (the project's one ASGI server), in a thread for tests.

The socket is bound when :class:`ConsoleServer` is created, so ``port=0``
yields a port known at once, as for the webhooks receiver (outbox/serving.py).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
from hypercorn.asyncio import serve

from outbox.serving import ServerThread, hypercorn_config, listen

_errors = logging.getLogger("outbox.console.server")


class ConsoleServer:
    """A listening socket (bound at creation) and the console served on it by :meth:`serve`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._sock = listen(host, port)
        self.port: int = self._sock.getsockname()[1]
        url_host = f"[{host}]" if ":" in host else host
        self.url = f"http://{url_host}:{self.port}"

    async def serve(self, app: Any, stop: asyncio.Event) -> None:
        """Serve ``app`` until ``stop`` is set; requests in flight get 5 s to finish."""
        # No access log (hypercorn_config): URLs hold search terms and message ids.
        config = hypercorn_config(self._sock, errorlog=_errors, graceful_timeout=5.0)
        await serve(app, config, shutdown_trigger=stop.wait)


class ConsoleThread:
    """The console served in a background thread until :meth:`stop` (tests, screenshots)."""

    def __init__(self, server: ConsoleServer, app: Any) -> None:
        self.server = server
        self.url = server.url
        self._thread = ServerThread(
            lambda stop: server.serve(app, stop), name="outbox-console", ready=self._answers
        )

    def _answers(self) -> bool:
        try:
            return httpx.get(self.url + "/healthz", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def __enter__(self) -> ConsoleThread:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.stop()
