"""Connections: pooled per adapter, as many as the worker sends at once, HTTP/2 for APNs.

The sandbox records each request's client address and port (``connection``),
so these tests see from the server's side which requests shared a connection.
"""

from __future__ import annotations

import asyncio

import pytest

from outbox.providers.base import OutcomeKind
from outbox.providers.registry import build_providers
from outbox.providers.transport import HttpPool
from outbox.sandbox import Sandbox
from tests.providers.cases import SPECS, Spec, adapter, message_for

pytestmark = pytest.mark.anyio

HTTP1 = [s for s in SPECS if s.name != "apns"]


def _connections(sandbox: Sandbox, provider: str) -> set[str]:
    return {r["connection"] for r in sandbox.client.requests(provider)}


async def test_apns_sends_in_flight_share_one_http2_connection(sandbox: Sandbox, make_settings):
    spec = next(s for s in SPECS if s.name == "apns")
    async with adapter(make_settings(), "apns") as provider:
        outcomes = await asyncio.gather(*(provider.send(message_for(spec)) for _ in range(20)))

    assert [o.kind for o in outcomes] == [OutcomeKind.SENT] * 20
    requests = sandbox.client.requests("apns")
    assert {r["fields"]["http_version"] for r in requests} == {"2"}
    assert len(_connections(sandbox, "apns")) == 1  # multiplexed, not one connection each


@pytest.mark.parametrize("spec", HTTP1, ids=str)
async def test_one_after_another_sends_reuse_one_connection(
    spec: Spec, sandbox: Sandbox, make_settings
):
    async with adapter(make_settings(), spec.name) as provider:
        for _ in range(5):
            assert (await provider.send(message_for(spec))).kind is OutcomeKind.SENT

    assert len(sandbox.client.requests(spec.name)) == 5
    assert len(_connections(sandbox, spec.name)) == 1


@pytest.mark.parametrize("spec", HTTP1, ids=str)
async def test_sends_in_flight_share_a_pool_of_the_given_size(
    spec: Spec, sandbox: Sandbox, make_settings
):
    # Each answer takes a while, so all twelve sends are in flight at once.
    sandbox.client.set_faults({"providers": {spec.name: {"latency_ms": 200}}})
    built = build_providers(make_settings(), connections=3)
    provider = built[spec.name]
    try:
        outcomes = await asyncio.gather(*(provider.send(message_for(spec)) for _ in range(12)))
    finally:
        for each in built.values():
            await each.aclose()

    assert [o.kind for o in outcomes] == [OutcomeKind.SENT] * 12
    # Three connections, each used in turn; the other sends waited for a free one.
    assert len(_connections(sandbox, spec.name)) == 3


async def test_the_pool_keeps_one_session_until_closed(sandbox: Sandbox):
    pool = HttpPool(timeout=2.0, connections=2)
    first = await pool.request("GET", f"{sandbox.http_url}/_sandbox/health")
    session = pool.session
    second = await pool.request("GET", f"{sandbox.http_url}/_sandbox/health")
    assert (first.status, second.status) == (200, 200)
    assert pool.session is session  # shared by every request, not one per request
    assert session.connector is not None and session.connector.limit == 2

    await pool.aclose()
    assert session.closed
    # A request after closing opens a new session rather than failing.
    assert (await pool.request("GET", f"{sandbox.http_url}/_sandbox/health")).status == 200
    assert pool.session is not session
    await pool.aclose()


def test_a_pool_needs_at_least_one_connection():
    with pytest.raises(ValueError, match="connections must be at least 1, not 0"):
        HttpPool(timeout=1.0, connections=0)
