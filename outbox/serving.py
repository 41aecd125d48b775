"""Serving an ASGI app with hypercorn: a socket bound first, and a background thread to serve in.

Outbox's HTTP servers (the provider sandbox, the webhooks receiver, the API)
bind their socket before anything else, so that ``port=0`` yields a port known
at once (webhook URLs are signed with it, settings point at it), then hand it to
hypercorn by file descriptor. Tests and the demo run them in a thread of the
same process: :class:`ServerThread`. The webhooks receiver and the API are both
an :class:`AppServer` (serve one app until told to stop) and, in a thread, an
:class:`AppThread`.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx
from hypercorn.asyncio import serve
from hypercorn.config import Config

START_TIMEOUT_S = 15.0


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` and listening; OSError naming both if it cannot be."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
    # Listening now means early clients wait in the backlog instead of being refused.
    sock.listen(128)
    return sock


def hypercorn_config(
    sock: socket.socket,
    *,
    errorlog: logging.Logger,
    graceful_timeout: float,
    certfile: Path | None = None,
) -> Config:
    """Hypercorn settings that adopt ``sock`` (detached from it); no access log."""
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]
    # Our own log lines say what each request did; an access log would add every URL.
    config.accesslog = None
    config.errorlog = errorlog
    config.graceful_timeout = graceful_timeout
    if certfile is not None:
        config.certfile = str(certfile)
        config.keyfile = str(certfile)
    return config


class ServerThread:
    """Runs ``serve(stop)`` in a background thread with its own event loop until :meth:`stop`.

    :meth:`start` returns once ``ready()`` is true, and raises ``error`` (with the
    server thread's exception, if it died) if that takes over 15 s.
    """

    def __init__(
        self,
        serve: Callable[[asyncio.Event], Coroutine[Any, Any, None]],
        *,
        name: str,
        ready: Callable[[], bool],
        error: type[Exception] = RuntimeError,
    ) -> None:
        self._serve = serve
        self._name = name
        self._ready = ready
        self._error = error
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._failure: BaseException | None = None
        self._thread: threading.Thread | None = None

    def _run(self, started: threading.Event) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            started.set()
            await self._serve(self._stop)

        try:
            asyncio.run(main())
        except BaseException as exc:  # reported to the starting thread
            self._failure = exc
            started.set()

    def start(self) -> None:
        started = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(started,), name=self._name, daemon=True
        )
        self._thread.start()
        started.wait(START_TIMEOUT_S)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._ready():
            if self._failure is not None or time.monotonic() > deadline:
                self.stop()
                raise self._error(f"the {self._name} server did not start: {self._failure!r}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop serving (requests in flight get the graceful timeout) and join the thread."""
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._thread = None


class AppServer:
    """A socket bound at creation (its URL is known before any app exists); serves in :meth:`serve`.

    ``errorlog`` names the logger hypercorn reports its own errors to.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, errorlog: str) -> None:
        self._sock = listen(host, port)
        self._errorlog = logging.getLogger(errorlog)
        self.port: int = self._sock.getsockname()[1]
        url_host = f"[{host}]" if ":" in host else host
        self.url = f"http://{url_host}:{self.port}"

    async def serve(self, app: Any, stop: asyncio.Event) -> None:
        """Serve ``app`` until ``stop`` is set, then finish requests in flight (5 s at most)."""
        config = hypercorn_config(self._sock, errorlog=self._errorlog, graceful_timeout=5.0)
        await serve(app, config, shutdown_trigger=stop.wait)

    def run(self, app: Any) -> None:
        """Serve ``app`` in this process until SIGINT or SIGTERM (a CLI command's main loop)."""

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await self.serve(app, stop)

        asyncio.run(main())


class AppThread:
    """An app served by an :class:`AppServer` in a background thread, as a context manager.

    Started once ``/healthz`` answers (whatever its status: the database may be down).
    """

    def __init__(self, server: AppServer, app: Any, *, name: str) -> None:
        self.server = server
        self.app = app
        self.url = server.url
        self._thread = ServerThread(
            lambda stop: server.serve(app, stop), name=name, ready=self._answers
        )

    def _answers(self) -> bool:
        try:
            httpx.get(self.url + "/healthz", timeout=1.0)
        except httpx.HTTPError:
            return False
        return True

    def __enter__(self) -> AppThread:
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
