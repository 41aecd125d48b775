"""Serving the sandbox: hypercorn on two loopback listeners.

:class:`SandboxServer` binds both sockets when it is created (so the ports,
even free ones picked with port 0, are known before anything runs), writes
``sandbox.json`` and ``outbox.env`` into the state directory, and serves
until an event is set. :class:`Sandbox` runs it in a background thread for
tests and the demo; ``outbox sandbox`` runs it in the foreground.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config

from outbox.sandbox.app import VOCABULARIES, build_http_app, build_tls_app
from outbox.sandbox.client import SandboxClient
from outbox.sandbox.credentials import SandboxCredentials
from outbox.sandbox.faults import FaultInjector
from outbox.sandbox.receipts import ReceiptSender
from outbox.sandbox.recorder import Recorder
from outbox.sandbox.route_context import SandboxContext
from outbox.serving import ServerThread, hypercorn_config, listen

INFO_FILE = "sandbox.json"
ENV_FILE = "outbox.env"
KEEP_ALIVE_S = 120.0
MAX_REQUESTS_PER_CONNECTION = 2**31 - 1
_log = logging.getLogger("outbox.sandbox")


class SandboxError(RuntimeError):
    """The sandbox could not start (bad host, port in use, bad faults)."""


def _check_loopback(host: str) -> None:
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise SandboxError(f"the sandbox binds only to loopback addresses, not {host!r}")


def _listen(host: str, port: int) -> socket.socket:
    try:
        return listen(host, port)
    except OSError as exc:
        raise SandboxError(exc.strerror or str(exc)) from None


def _hypercorn_config(sock: socket.socket, certfile: Path | None = None) -> Config:
    config = hypercorn_config(sock, errorlog=_log, graceful_timeout=1.0, certfile=certfile)
    # Clients must be the ones to drop idle connections (httpx does after 5 s):
    # a server closing first races a client reusing the connection, and the
    # client sees "disconnected without a response".
    config.keep_alive_timeout = KEEP_ALIVE_S
    # Hypercorn closes a connection after 1,000 requests by default, failing the
    # HTTP/2 streams still in flight on it (WriteError, RemoteProtocolError: in-doubt
    # sends). Apple asks providers to keep their APNs connection open for good, and
    # the providers' HTTP APIs do not count requests per connection either.
    config.keep_alive_max_requests = MAX_REQUESTS_PER_CONNECTION
    return config


class SandboxServer:
    """The provider sandbox: bound at creation, serving inside :meth:`serve`."""

    def __init__(
        self,
        state_dir: Path | str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls_port: int = 0,
        faults: dict[str, Any] | None = None,
        sendgrid_event_webhook_url: str | None = None,
        receipt_delay_s: float = 0.05,
    ) -> None:
        _check_loopback(host)
        self.state_dir = Path(state_dir).resolve()
        self.credentials = SandboxCredentials.load_or_create(self.state_dir)
        try:
            self.faults = FaultInjector(VOCABULARIES, faults or {})
        except ValueError as exc:
            raise SandboxError(f"bad faults configuration: {exc}") from None
        self.recorder = Recorder()
        self.receipt_delay_s = receipt_delay_s
        self.webhooks = (
            {"sendgrid": sendgrid_event_webhook_url} if sendgrid_event_webhook_url else {}
        )
        self._http_sock = _listen(host, port)
        try:
            self._tls_sock = _listen(host, tls_port)
        except SandboxError:
            self._http_sock.close()
            raise
        url_host = f"[{host}]" if ":" in host else host
        self.http_url = f"http://{url_host}:{self._http_sock.getsockname()[1]}"
        self.apns_url = f"https://{url_host}:{self._tls_sock.getsockname()[1]}"
        self.apns_sandbox_url = f"{self.apns_url}/sandbox"
        self.credentials.write_fcm_service_account(f"{self.http_url}/token")
        self._write_state_files()

    def info(self) -> dict[str, Any]:
        """Where everything is, and the public halves of the keys (no secrets)."""
        c = self.credentials
        return {
            "pid": os.getpid(),
            "http_url": self.http_url,
            "apns_url": self.apns_url,
            "apns_sandbox_url": self.apns_sandbox_url,
            "ca_file": str(c.ca_file),
            "state_dir": str(self.state_dir),
            "env_file": str(self.state_dir / ENV_FILE),
            "apns": {"team_id": c.apns_team_id, "key_id": c.apns_key_id, "topic": c.apns_topic},
            "fcm": {
                "project_id": c.fcm_project_id,
                "credentials_file": str(c.fcm_service_account_file),
            },
            "twilio": {"account_sid": c.twilio_account_sid, "from_number": c.twilio_from_number},
            "vonage": {"api_key": c.vonage_api_key, "from": c.vonage_from},
            "sendgrid": {"webhook_public_key": c.sendgrid_webhook_public_key},
        }

    def settings_values(self) -> dict[str, Any]:
        """``outbox.settings.Settings`` field values that point every adapter here."""
        c = self.credentials
        return {
            "apns_key_id": c.apns_key_id,
            "apns_team_id": c.apns_team_id,
            "apns_topic": c.apns_topic,
            "apns_private_key_file": c.apns_key_file,
            "apns_base_url": self.apns_url,
            "apns_sandbox_base_url": self.apns_sandbox_url,
            "apns_ca_file": c.ca_file,
            "fcm_project_id": c.fcm_project_id,
            "fcm_credentials_file": c.fcm_service_account_file,
            "fcm_base_url": self.http_url,
            "twilio_account_sid": c.twilio_account_sid,
            "twilio_auth_token": c.twilio_auth_token,
            "twilio_from_number": c.twilio_from_number,
            "twilio_base_url": self.http_url,
            "vonage_api_key": c.vonage_api_key,
            "vonage_api_secret": c.vonage_api_secret,
            "vonage_from": c.vonage_from,
            "vonage_base_url": self.http_url,
            "sendgrid_api_key": c.sendgrid_api_key,
            "sendgrid_from_email": c.sendgrid_from_email,
            "sendgrid_base_url": self.http_url,
            "sendgrid_webhook_public_key": c.sendgrid_webhook_public_key,
            "mailchimp_api_key": c.mailchimp_api_key,
            "mailchimp_from_email": c.mailchimp_from_email,
            "mailchimp_base_url": f"{self.http_url}/api/1.0",
        }

    def env(self) -> dict[str, str]:
        """The same as ``OUTBOX_*`` environment variables."""
        return {f"OUTBOX_{k.upper()}": str(v) for k, v in self.settings_values().items()}

    def _write_state_files(self) -> None:
        (self.state_dir / INFO_FILE).write_text(json.dumps(self.info(), indent=2) + "\n")
        lines = [f"{k}='{v}'" for k, v in self.env().items()]
        env_file = self.state_dir / ENV_FILE
        env_file.write_text(
            "# Points Outbox's provider adapters at the provider sandbox.\n"
            + "\n".join(lines)
            + "\n"
        )
        os.chmod(env_file, 0o600)

    async def serve(self, stop: asyncio.Event) -> None:
        """Serve both listeners until ``stop`` is set."""
        ctx = SandboxContext(
            credentials=self.credentials,
            faults=self.faults,
            recorder=self.recorder,
            receipts=ReceiptSender(self.recorder, self.receipt_delay_s),
            http_url=self.http_url,
            stopping=stop,
            webhooks=dict(self.webhooks),
        )
        http_config = _hypercorn_config(self._http_sock)
        tls_config = _hypercorn_config(self._tls_sock, self.credentials.server_cert_file)
        # Any: hypercorn's ASGI type and Starlette's differ only on paper.
        http_app: Any = build_http_app(ctx, self.info())
        tls_app: Any = build_tls_app(ctx)
        try:
            await asyncio.gather(
                serve(http_app, http_config, shutdown_trigger=stop.wait),
                serve(tls_app, tls_config, shutdown_trigger=stop.wait),
            )
        finally:
            await ctx.receipts.aclose()


class Sandbox:
    """The sandbox in a background thread, as a context manager::

        with Sandbox(tmp_path) as sandbox:
            settings = Settings(**sandbox.settings_values())
            ...
            sandbox.client.requests("twilio")

    Listens on free loopback ports unless ``port`` / ``tls_port`` are given.
    """

    def __init__(self, state_dir: Path | str, **options: Any) -> None:
        self._state_dir = state_dir
        self._options = options
        self._thread: ServerThread | None = None
        self.server: SandboxServer | None = None
        self._client: SandboxClient | None = None

    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Bind, start serving in a thread, and wait until the sandbox answers."""
        self.server = server = SandboxServer(self._state_dir, **self._options)
        self._client = client = SandboxClient(server.http_url)
        self._thread = ServerThread(
            server.serve, name="outbox-sandbox", ready=client.health, error=SandboxError
        )
        try:
            self._thread.start()
        except BaseException:
            client.close()
            raise

    def stop(self) -> None:
        """Stop serving and wait for the thread to end."""
        if self._client is not None:
            self._client.close()
        if self._thread is not None:
            self._thread.stop()
        self._thread = None

    def _require(self) -> SandboxServer:
        if self.server is None:
            raise SandboxError("the sandbox is not started")
        return self.server

    @property
    def client(self) -> SandboxClient:
        """A client for the control API (SandboxError before :meth:`start`)."""
        if self._client is None:
            raise SandboxError("the sandbox is not started")
        return self._client

    @property
    def http_url(self) -> str:
        return self._require().http_url

    @property
    def apns_url(self) -> str:
        return self._require().apns_url

    @property
    def apns_sandbox_url(self) -> str:
        return self._require().apns_sandbox_url

    @property
    def ca_file(self) -> Path:
        return self._require().credentials.ca_file

    @property
    def credentials(self) -> SandboxCredentials:
        return self._require().credentials

    def settings_values(self) -> dict[str, Any]:
        """Settings field values that point every adapter at this sandbox."""
        return self._require().settings_values()

    def env(self) -> dict[str, str]:
        """The same as ``OUTBOX_*`` environment variables."""
        return self._require().env()
