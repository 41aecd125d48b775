"""Serving the API with hypercorn, as ``outbox webhooks`` is served: a socket bound first.

:class:`ApiServer` binds when created (``port=0`` picks a free port, known at
once) and serves an app in :meth:`~ApiServer.serve`; :class:`ApiThread` does
that in a background thread, for tests and tools.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
from hypercorn.asyncio import serve

from outbox.serving import ServerThread, hypercorn_config, listen

_errors = logging.getLogger("outbox.api.server")


class ApiServer:
    """A socket bound at creation; serves an app in :meth:`serve`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._sock = listen(host, port)
        self.port: int = self._sock.getsockname()[1]
        url_host = f"[{host}]" if ":" in host else host
        self.url = f"http://{url_host}:{self.port}"

    async def serve(self, app: Any, stop: asyncio.Event) -> None:
        """Serve ``app`` until ``stop`` is set, then finish requests in flight (5 s at most)."""
        config = hypercorn_config(self._sock, errorlog=_errors, graceful_timeout=5.0)
        await serve(app, config, shutdown_trigger=stop.wait)


class ApiThread:
    """An app served by an :class:`ApiServer` in a background thread, as a context manager::

    with ApiThread(ApiServer(), create_app(db_url)) as api:
        httpx.get(api.url + "/healthz")
    """

    def __init__(self, server: ApiServer, app: Any) -> None:
        self.url = server.url
        self._thread = ServerThread(
            lambda stop: server.serve(app, stop), name="outbox-api", ready=self._answers
        )

    def _answers(self) -> bool:
        try:
            httpx.get(self.url + "/healthz", timeout=1.0)
        except httpx.HTTPError:
            return False
        return True

    def __enter__(self) -> ApiThread:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.stop()
