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
import socket
import threading
import time
from typing import Any

import httpx
from hypercorn.asyncio import serve
from hypercorn.config import Config

START_TIMEOUT_S = 15.0
_errors = logging.getLogger("outbox.webhooks.server")


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(128)  # early clients wait in the backlog instead of being refused
    return sock


class WebhookServer:
    """A socket bound at creation (its URL is known before any app exists); serves in :meth:`serve`.

    Binding first matters: Twilio and Mandrill sign the URL they call, so the
    app's public URL must be known, port included, before the app is built.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._sock = _listen(host, port)
        self.port: int = self._sock.getsockname()[1]
        url_host = f"[{host}]" if ":" in host else host
        self.url = f"http://{url_host}:{self.port}"

    def _config(self) -> Config:
        config = Config()
        config.bind = [f"fd://{self._sock.detach()}"]
        # Our own log lines say what each request did; an access log would add
        # every URL (and in front of a proxy, nothing the proxy doesn't log).
        config.accesslog = None
        config.errorlog = _errors
        config.graceful_timeout = 5.0
        return config

    async def serve(self, app: Any, stop: asyncio.Event) -> None:
        """Serve ``app`` until ``stop`` is set, then finish requests in flight (5 s at most)."""
        await serve(app, self._config(), shutdown_trigger=stop.wait)  # type: ignore[arg-type]


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
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._failure: BaseException | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> WebhookThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, started: threading.Event) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            started.set()
            await self.server.serve(self.app, self._stop)

        try:
            asyncio.run(main())
        except BaseException as exc:  # reported to the starting thread
            self._failure = exc
            started.set()

    def start(self) -> None:
        """Start serving and wait until ``/healthz`` answers (whatever its status)."""
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,),
                                        name="outbox-webhooks", daemon=True)
        self._thread.start()
        started.wait(START_TIMEOUT_S)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                httpx.get(self.url + "/healthz", timeout=1.0)
                return
            except httpx.HTTPError as exc:
                if self._failure is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"the webhooks server did not start: {self._failure!r}") from exc
                time.sleep(0.02)

    def stop(self) -> None:
        """Stop serving and wait for the thread to end."""
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._thread = None
