"""Provider tests: one in-process provider sandbox for the session, reset before each test.

No database here: adapters are built from Settings pointing at the sandbox
and send over real sockets (TLS + HTTP/2 for APNs, plain HTTP for the rest).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

import pytest

from outbox.sandbox import Sandbox
from outbox.settings import Settings

# Short enough to keep the timeout cases quick, long enough for a loaded CI machine.
TIMEOUT_S = 2.0
# How long a "timeout" answer holds a request open; past every timeout above.
HANG_S = 6.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    with Sandbox(tmp_path_factory.mktemp("sandbox"), faults={"hang_s": HANG_S}) as running:
        yield running


@pytest.fixture(autouse=True)
def _clean_sandbox(sandbox: Sandbox) -> Iterator[None]:
    assert sandbox.client is not None
    sandbox.client.reset()
    yield
    sandbox.client.set_webhooks(sendgrid=None)


@pytest.fixture(autouse=True)
def _no_outbox_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The developer's own OUTBOX_* variables must not change what these tests build.
    for name in list(os.environ):
        if name.startswith("OUTBOX_"):
            monkeypatch.delenv(name)


@pytest.fixture
def make_settings(sandbox: Sandbox) -> Any:
    """Settings pointing every adapter at the sandbox, with overrides."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            **sandbox.settings_values(),
            "providers_email": ["sendgrid", "mailchimp"],
            "providers_sms": ["twilio", "vonage"],
            "providers_push": ["apns", "fcm"],
            "provider_timeout_seconds": TIMEOUT_S,
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return make


@pytest.fixture
def sandbox_secrets(sandbox: Sandbox) -> list[str]:
    """Every secret the sandbox handed out; none may appear in an outcome or a log."""
    return sandbox.credentials.secret_values()


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Capture every log record, DEBUG included (SDKs log headers at DEBUG)."""
    caplog.set_level(logging.DEBUG)
    return caplog
