"""Serving the webhooks app with hypercorn.

Hypercorn because it is already what serves the provider sandbox (one ASGI
server in the project, not two), it is maintained with the Pallets/Quart
projects, and it takes an already-bound socket and a shutdown trigger, which
is what a test that needs the port before the server runs wants.

:class:`WebhookServer` binds its socket when created (so ``port=0`` picks a
free port that is known at once) and serves an app inside :meth:`serve`;
:class:`WebhookThread` does that in a background thread (tests, the demo).
Both are the generic ones of :mod:`outbox.serving`, named for this service.
"""

from __future__ import annotations

from typing import Any

from outbox.serving import AppServer, AppThread


class WebhookServer(AppServer):
    """A socket bound at creation (its URL is known before any app exists); serves in :meth:`serve`.

    Binding first matters: Twilio and Mandrill sign the URL they call, so the
    app's public URL must be known, port included, before the app is built.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port, errorlog="outbox.webhooks.server")


class WebhookThread(AppThread):
    """An app served by a :class:`WebhookServer` in a background thread, as a context manager::

    server = WebhookServer()
    with WebhookThread(server, create_app(replace(config, public_url=server.url), db_url)):
        httpx.post(server.url + "/webhooks/sendgrid", ...)
    """

    def __init__(self, server: WebhookServer, app: Any) -> None:
        super().__init__(server, app, name="outbox-webhooks")
