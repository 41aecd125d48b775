"""Secrets never reach a log line: every secret setting, in every shape it may take."""

from __future__ import annotations

import io
import json

import pytest
import structlog
from pydantic import SecretStr

from outbox.logs import REDACTED, RedactSecrets, configure
from outbox.settings import Settings

# Every setting whose value is a secret, found by type, so a secret added later is covered too.
SECRET_FIELDS = sorted(
    name for name, info in Settings.model_fields.items() if "SecretStr" in repr(info.annotation)
)


def _value(name: str) -> str:
    if name == "database_url":
        return "postgresql://outbox_app:Pa55-w0rd-DB-9f3@db.internal:5432/outbox"
    return f"sk-{name.replace('_', '-')}-7Hq2xZ9wLm"


@pytest.fixture(autouse=True)
def no_outbox_env(monkeypatch):
    """Only what a test sets: not the OUTBOX_* variables of the shell running the tests."""
    import os

    for name in list(os.environ):
        if name.startswith("OUTBOX_"):
            monkeypatch.delenv(name)


@pytest.fixture
def settings() -> Settings:
    return Settings(_env_file=None, **{name: _value(name) for name in SECRET_FIELDS})


@pytest.fixture
def captured():
    """configure(..., stream=buf) for a format; the rendered output; structlog reset afterwards."""
    streams: list[io.StringIO] = []

    def setup(settings: Settings, fmt: str) -> io.StringIO:
        buf = io.StringIO()
        configure(level="DEBUG", fmt=fmt, secrets=settings.secret_values(), stream=buf)
        streams.append(buf)
        return buf

    yield setup
    structlog.reset_defaults()


def test_the_secret_fields_are_found():
    # If this list shrinks, a secret lost its SecretStr type (and its redaction).
    assert {
        "database_url",
        "twilio_auth_token",
        "vonage_api_secret",
        "sendgrid_api_key",
        "mailchimp_api_key",
        "mailchimp_webhook_key",
        "apns_private_key",
    } <= set(SECRET_FIELDS)
    for name in SECRET_FIELDS:
        assert isinstance(Settings(_env_file=None, **{name: "x" * 8}).__dict__[name], SecretStr)


def _shapes(secret: str) -> list[tuple[str, dict]]:
    """(event, fields) pairs that put ``secret`` in a log line the ways code tends to."""
    return [
        ("plain", {"token": secret}),
        ("in.url", {"url": f"https://api.example.com/v1?key={secret}&x=1"}),
        ("in.basic_auth_url", {"url": f"https://AC123:{secret}@api.example.com/2010-04-01"}),
        (f"in the event text {secret}", {}),
        ("in.header", {"headers": {"Authorization": f"Bearer {secret}"}}),
        ("in.list", {"tried": ["a", f"key={secret}", ("tuple", secret)]}),
        ("in.nested", {"request": {"body": {"api_key": secret, "n": 1}}}),
        ("in.exception_value", {"error": RuntimeError(f"401 for key {secret}")}),
    ]


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_every_secret_setting_is_redacted_in_every_shape(settings, captured, fmt):
    buf = captured(settings, fmt)
    log = structlog.get_logger("test")
    for name in SECRET_FIELDS:
        secret = _value(name)
        for event, fields in _shapes(secret):
            log.info(event, setting=name, **fields)
        try:
            raise ConnectionError(f"could not connect with {secret}")
        except ConnectionError:
            log.exception("in.traceback", setting=name)
        log.error("in.exc_info", setting=name, exc_info=ValueError(f"bad credential {secret}"))
    out = buf.getvalue()
    for name in SECRET_FIELDS:
        assert _value(name) not in out, name
    assert out.count(REDACTED) >= len(SECRET_FIELDS) * 10
    if fmt == "json":
        lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        assert any(
            line["event"] == "in.traceback" and REDACTED in line["exception"] for line in lines
        )


def test_the_database_password_alone_is_redacted(settings, captured):
    """A driver message or a key=value conninfo shows the password without the rest of the URL."""
    buf = captured(settings, "json")
    structlog.get_logger("test").warning(
        "db.unavailable", conninfo="host=db.internal password=Pa55-w0rd-DB-9f3"
    )
    out = buf.getvalue()
    assert "Pa55-w0rd-DB-9f3" not in out and REDACTED in out


def test_unset_and_short_secrets_do_not_redact_everything():
    # A one-letter "secret" would blank every line; values under 4 characters are ignored.
    redact = RedactSecrets(["", "ab", "longer-secret"])
    assert redact(None, "info", {"event": "a b ab", "x": "has longer-secret"}) == {
        "event": "a b ab",
        "x": f"has {REDACTED}",
    }
    assert Settings(_env_file=None).secret_values() == []


def test_a_secret_containing_another_is_replaced_whole():
    redact = RedactSecrets(["abcd", "abcdefgh"])
    assert redact(None, "info", {"event": "k=abcdefgh"})["event"] == f"k={REDACTED}"


def test_settings_repr_hides_secrets(settings):
    text = repr(settings) + str(settings.model_dump())
    for name in SECRET_FIELDS:
        assert _value(name) not in text, name
