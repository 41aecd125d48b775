"""The provider sandbox itself: faults, control API, listeners, state, the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from outbox.sandbox import Sandbox, SandboxCredentials, SandboxError, SandboxServer
from outbox.sandbox.app import VOCABULARIES
from outbox.sandbox.faults import FaultConfigError, FaultInjector

ROOT = Path(__file__).resolve().parents[2]


def _answers(injector: FaultInjector, provider: str, n: int, destination: str = "x") -> list[str]:
    return [injector.decide(provider, destination).answer for _ in range(n)]


def test_seeded_error_rate_is_reproducible():
    doc = {"seed": 42, "providers": {"twilio": {"error_rate": 0.5, "errors": ["21211", "20429"]}}}
    first = _answers(FaultInjector(VOCABULARIES, doc), "twilio", 40)
    again = _answers(FaultInjector(VOCABULARIES, doc), "twilio", 40)
    assert first == again
    assert set(first) == {"ok", "21211", "20429"}
    injector = FaultInjector(VOCABULARIES, doc)
    _answers(injector, "twilio", 10)
    injector.reset()  # back to the start-up configuration, seed included
    assert _answers(injector, "twilio", 40) == first


def test_answer_precedence():
    injector = FaultInjector(
        VOCABULARIES,
        {"providers": {"apns": {"dead": ["gone"], "script": ["BadTopic"], "always": "Shutdown"}}},
    )
    assert injector.decide("apns", "gone").answer == "dead"
    assert _answers(injector, "apns", 2) == ["BadTopic", "Shutdown"]
    assert injector.decide("fcm", "x").answer == "ok"  # other providers untouched


def test_default_error_is_the_providers_transient_one():
    injector = FaultInjector(VOCABULARIES, {"providers": {"fcm": {"error_rate": 1}}})
    assert injector.decide("fcm", "x").answer == "UNAVAILABLE"


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"providers": {"nope": {}}}, "unknown provider 'nope'"),
        ({"providers": {"apns": {"always": "Gone"}}}, "providers.apns.always: unknown answer"),
        ({"providers": {"twilio": {"error_rate": 2}}}, "providers.twilio.error_rate"),
        ({"providers": {"vonage": {"latency": 5}}}, "unknown field(s) latency"),
        ({"providers": {"sendgrid": {"script": ["200"]}}}, "providers.sendgrid.script[0]"),
        ({"seed": "x"}, "seed: must be an integer"),
    ],
)
def test_bad_faults_are_refused_with_the_field_named(doc, message):
    with pytest.raises(FaultConfigError, match=re.escape(message)):
        FaultInjector(VOCABULARIES, doc)


def test_control_api(sandbox: Sandbox):
    client = sandbox.client
    with pytest.raises(ValueError, match="unknown provider"):
        client.set_faults({"providers": {"nope": {}}})
    client.set_faults({"providers": {"vonage": {"always": "9", "latency_ms": 150}}})
    assert client.faults()["providers"]["vonage"]["always"] == "9"

    creds = sandbox.credentials
    form = {
        "api_key": creds.vonage_api_key,
        "api_secret": creds.vonage_api_secret,
        "from": "Outbox",
        "to": "15551230001",
        "text": "hi",
    }
    started = time.monotonic()
    answer = httpx.post(f"{sandbox.http_url}/sms/json", data=form).json()
    assert time.monotonic() - started >= 0.15
    assert answer["messages"][0]["status"] == "9"
    httpx.post(f"{sandbox.http_url}/sms/json", data={**form, "api_secret": "wrong"})

    assert client.counts() == {"vonage": {"total": 2, "answers": {"9": 1, "4": 1}}}
    [first, second] = client.requests("vonage")
    assert client.requests("vonage", since=first["seq"]) == [second]
    assert client.requests(destination="15551230001") == [first, second]
    # Credentials are never recorded.
    assert creds.vonage_api_secret not in json.dumps(client.requests())

    client.reset()
    assert client.requests() == [] and client.counts() == {}
    assert client.faults()["providers"] == {}
    assert client.info()["sendgrid"]["webhook_public_key"] == creds.sendgrid_webhook_public_key


def test_apns_listener_is_tls_and_http2_only(sandbox: Sandbox):
    context = ssl.create_default_context(cafile=str(sandbox.ca_file))
    with httpx.Client(http2=False, verify=context) as http1:
        answer = http1.post(f"{sandbox.apns_url}/3/device/{'ab' * 32}", content=b"{}")
    assert answer.status_code == 505
    with pytest.raises(httpx.ConnectError):  # not trusted without the sandbox's CA
        httpx.get(f"{sandbox.apns_url}/_sandbox/health")
    with httpx.Client(http2=True, verify=context) as http2:
        assert http2.get(f"{sandbox.apns_url}/_sandbox/health").json()["http_version"] == "2"


def test_only_loopback_addresses(tmp_path):
    with pytest.raises(SandboxError, match="loopback"):
        SandboxServer(tmp_path, host="0.0.0.0")


def test_credentials_persist_in_the_state_dir(tmp_path):
    first = SandboxCredentials.load_or_create(tmp_path)
    again = SandboxCredentials.load_or_create(tmp_path)
    assert again == first
    assert first.apns_private_key == again.apns_private_key
    assert oct(os.stat(first.apns_key_file).st_mode & 0o777) == "0o600"


def test_in_process_sandbox_settings_build_every_adapter(tmp_path):
    from outbox.providers.registry import build_providers
    from outbox.settings import Settings

    with Sandbox(tmp_path) as running:
        settings = Settings(
            _env_file=None,
            **running.settings_values(),
            providers_email=["sendgrid", "mailchimp"],
            providers_sms=["twilio", "vonage"],
            providers_push=["apns", "fcm"],
        )
        env_file = Path(running.server.state_dir) / "outbox.env"
        assert "OUTBOX_TWILIO_BASE_URL" in env_file.read_text()
        providers = build_providers(settings)
    assert sorted(providers) == ["apns", "fcm", "mailchimp", "sendgrid", "twilio", "vonage"]

    async def close() -> None:
        for provider in providers.values():
            await provider.aclose()

    asyncio.run(close())


def test_cli_runs_until_sigterm(tmp_path):
    state = tmp_path / "state"
    faults = json.dumps({"providers": {"twilio": {"always": "21211"}}})
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from outbox.cli import main; main()",
            "sandbox",
            "--port",
            "0",
            "--tls-port",
            "0",
            "--state-dir",
            str(state),
            "--faults",
            faults,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        info_file = state / "sandbox.json"
        deadline = time.monotonic() + 20
        while not info_file.exists():
            assert process.poll() is None, process.stdout.read()
            assert time.monotonic() < deadline, "the sandbox wrote no sandbox.json"
            time.sleep(0.05)
        info = json.loads(info_file.read_text())
        while True:
            try:
                faults_now = httpx.get(f"{info['http_url']}/_sandbox/faults").json()
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert faults_now["providers"]["twilio"]["always"] == "21211"
        assert (state / "outbox.env").stat().st_mode & 0o777 == 0o600
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=15)
    assert process.returncode == 0, output
    assert "provider sandbox stopped" in output


def test_apns_token_check_remembers_a_verified_token_but_still_checks_age_and_signature(
    tmp_path, monkeypatch
):
    """The sandbox checks a provider token's signature once and then only its age; a token
    with the same claims and another key's signature is still refused."""
    from types import SimpleNamespace

    import jwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from outbox.sandbox import apns

    creds = SandboxCredentials.load_or_create(tmp_path)
    verifier = apns._TokenVerifier(SimpleNamespace(credentials=creds))  # type: ignore[arg-type]
    now = time.time()
    header = {"kid": creds.apns_key_id}

    def bearer(key: str, **claims: float | str) -> str:
        return "bearer " + jwt.encode(claims, key, algorithm="ES256", headers=header)

    good = bearer(creds.apns_private_key, iss=creds.apns_team_id, iat=now - 3000)
    other_key = (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    forged = bearer(other_key, iss=creds.apns_team_id, iat=now - 3000)
    assert verifier.check(good) is None
    assert verifier.check(good) is None
    assert verifier.check(forged) == "InvalidProviderToken"
    assert verifier.check(good.upper()[:7] + good[7:]) is None  # "BEARER " is as good

    # An hour after its iat, the remembered token is expired like any other.
    monkeypatch.setattr(apns.time, "time", lambda: now + 700)
    assert verifier.check(good) == "ExpiredProviderToken"

    # A token past its own exp is refused even though it was remembered.
    monkeypatch.setattr(apns.time, "time", lambda: now)
    short = bearer(creds.apns_private_key, iss=creds.apns_team_id, iat=now - 10, exp=now + 5)
    assert verifier.check(short) is None
    monkeypatch.setattr(apns.time, "time", lambda: now + 120)
    assert verifier.check(short) == "InvalidProviderToken"
