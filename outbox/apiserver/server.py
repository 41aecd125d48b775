"""Serving the API with hypercorn, as ``outbox webhooks`` is served (:mod:`outbox.serving`).

:class:`ApiServer` binds when created (``port=0`` picks a free port, known at
once) and serves an app in :meth:`~ApiServer.serve`; :class:`ApiThread` does
that in a background thread, for tests and tools::

    with ApiThread(ApiServer(), create_app(db_url)) as api:
        httpx.get(api.url + "/healthz")
"""

from __future__ import annotations

from typing import Any

from outbox.serving import AppServer, AppThread


class ApiServer(AppServer):
    """A socket bound at creation; serves an app in :meth:`serve`, or :meth:`run` until a signal."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port, errorlog="outbox.api.server")


class ApiThread(AppThread):
    """An app served by an :class:`ApiServer` in a background thread, as a context manager."""

    def __init__(self, server: ApiServer, app: Any) -> None:
        super().__init__(server, app, name="outbox-api")
