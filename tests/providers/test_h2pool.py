"""The HTTP/2 pool APNs sends through: streams, limits, and whether a failed request left.

Against a real TLS + HTTP/2 server on this machine (tests/providers/h2server.py)
that misbehaves on request: what the provider sandbox, which answers as APNs
does, cannot show.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from outbox.providers.base import OutcomeKind
from outbox.providers.h2pool import H2Pool
from outbox.providers.transport import BadURL, Interrupted, NotSent, transport_outcome
from outbox.sandbox.credentials import SandboxCredentials
from tests.providers.h2server import H2TestServer

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def credentials(tmp_path_factory: pytest.TempPathFactory) -> SandboxCredentials:
    return SandboxCredentials.load_or_create(tmp_path_factory.mktemp("h2certs"))


@pytest.fixture
async def server(credentials: SandboxCredentials) -> AsyncIterator[H2TestServer]:
    async with H2TestServer(credentials.server_cert_file) as running:
        yield running


def _pool(credentials: SandboxCredentials, *, timeout: float = 5.0, connections: int = 1) -> H2Pool:
    context = ssl.create_default_context(cafile=str(credentials.ca_file))
    return H2Pool(ssl_context=context, timeout=timeout, connections=connections)


async def test_concurrent_requests_share_one_connection(server, credentials):
    pool = _pool(credentials, connections=4)
    try:
        answers = await asyncio.gather(
            *(pool.request("POST", f"{server.url}/slow/50", {}, b"x" * i) for i in range(30))
        )
    finally:
        await pool.aclose()

    assert [a.status for a in answers] == [200] * 30
    assert [a.body for a in answers] == [str(i).encode() for i in range(30)]
    assert server.seen.connections == 1  # a burst of sends opened one connection, not 30


async def test_a_second_connection_opens_only_at_the_servers_stream_limit(credentials):
    async with H2TestServer(credentials.server_cert_file, max_streams=4) as server:
        pool = _pool(credentials, connections=3)
        try:
            first = await pool.request("GET", f"{server.url}/ok", {})  # learns the limit
            answers = await asyncio.gather(
                *(pool.request("GET", f"{server.url}/slow/200", {}) for _ in range(12))
            )
        finally:
            await pool.aclose()

    assert first.status == 200
    assert [a.status for a in answers] == [200] * 12
    assert server.seen.connections == 3  # 4 streams each, up to the pool's 3 connections
    assert {a.headers["x-connection"] for a in answers} == {"0", "1", "2"}


async def test_at_the_connection_limit_requests_wait_for_room(credentials):
    async with H2TestServer(credentials.server_cert_file, max_streams=2) as server:
        pool = _pool(credentials, connections=1)
        try:
            await pool.request("GET", f"{server.url}/ok", {})
            answers = await asyncio.gather(
                *(pool.request("GET", f"{server.url}/slow/50", {}) for _ in range(7))
            )
        finally:
            await pool.aclose()

    assert [a.status for a in answers] == [200] * 7
    assert server.seen.connections == 1


async def test_no_room_before_the_timeout_is_not_sent(credentials):
    async with H2TestServer(credentials.server_cert_file, max_streams=1) as server:
        pool = _pool(credentials, timeout=0.5, connections=1)
        try:
            await pool.request("GET", f"{server.url}/ok", {})  # learns the limit
            outcomes = await asyncio.gather(
                *(pool.request("GET", f"{server.url}/hang", {}) for _ in range(3)),
                return_exceptions=True,
            )
        finally:
            await pool.aclose()
    # One stream went out and timed out (in doubt); the two that waited never left.
    assert [type(o) for o in outcomes] == [TimeoutError, NotSent, NotSent]
    assert all("had room" in str(o) for o in outcomes[1:])
    assert [p for _, p in server.seen.requests] == ["/ok", "/hang"]


async def test_a_body_larger_than_the_window_is_sent_whole(credentials):
    async with H2TestServer(credentials.server_cert_file, window=16_384) as server:
        pool = _pool(credentials)
        try:
            answer = await pool.request("POST", f"{server.url}/ok", {}, b"z" * 200_000)
        finally:
            await pool.aclose()
    assert answer.body == b"200000"


async def test_no_answer_before_the_timeout_cancels_the_stream(server, credentials):
    pool = _pool(credentials, timeout=0.3)
    try:
        with pytest.raises(TimeoutError):
            await pool.request("GET", f"{server.url}/hang", {})
        after = await pool.request("GET", f"{server.url}/ok", {})
    finally:
        await pool.aclose()
    assert after.status == 200
    assert server.seen.cancelled == 1  # the server was told, and the connection kept
    assert server.seen.connections == 1
    assert transport_outcome(TimeoutError()).kind is OutcomeKind.UNKNOWN


@pytest.mark.parametrize(
    ("path", "error", "kind"),
    [
        ("/refuse", NotSent, OutcomeKind.RETRY),
        ("/goaway", NotSent, OutcomeKind.RETRY),
        ("/reset", Interrupted, OutcomeKind.UNKNOWN),
        ("/drop", Interrupted, OutcomeKind.UNKNOWN),
    ],
)
async def test_a_failed_request_says_whether_the_server_processed_it(
    server, credentials, path, error, kind
):
    pool = _pool(credentials)
    try:
        with pytest.raises(error) as raised:
            await pool.request("POST", f"{server.url}{path}", {}, b"{}")
        # The pool carries on: a broken or closing connection is replaced.
        after = await pool.request("GET", f"{server.url}/ok", {})
    finally:
        await pool.aclose()
    assert transport_outcome(raised.value).kind is kind
    assert after.status == 200


async def test_goaway_tells_the_streams_the_server_read_from_those_it_did_not(server, credentials):
    pool = _pool(credentials)
    try:
        await pool.request("GET", f"{server.url}/ok", {})  # stream 1
        slow = asyncio.ensure_future(pool.request("GET", f"{server.url}/slow/200", {}))  # 3
        await asyncio.sleep(0.05)
        with pytest.raises(NotSent):
            await pool.request("GET", f"{server.url}/goaway", {})  # 5: last processed is 3
        with pytest.raises(Interrupted):
            await slow  # stream 3 was read and never answered: the provider may have it
        assert (await pool.request("GET", f"{server.url}/ok", {})).status == 200
    finally:
        await pool.aclose()
    assert server.seen.connections == 2


async def test_an_unreachable_host_is_not_sent(credentials):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    pool = _pool(credentials)
    with pytest.raises(NotSent, match="could not connect"):
        await pool.request("GET", f"https://127.0.0.1:{port}/ok", {})
    await pool.aclose()


async def test_a_server_without_http2_is_not_sent(credentials):
    async with H2TestServer(credentials.server_cert_file, alpn="http/1.1") as server:
        pool = _pool(credentials)
        with pytest.raises(NotSent, match="did not agree to HTTP/2"):
            await pool.request("GET", f"{server.url}/ok", {})
        await pool.aclose()
    assert server.seen.requests == []


async def test_an_untrusted_certificate_is_not_sent(server, tmp_path: Path):
    other = SandboxCredentials.load_or_create(tmp_path / "other")
    pool = _pool(other)
    with pytest.raises(NotSent, match="SSLCertVerificationError"):
        await pool.request("GET", f"{server.url}/ok", {})
    await pool.aclose()
    assert server.seen.requests == []


async def test_only_https_urls(credentials):
    pool = _pool(credentials)
    with pytest.raises(BadURL):
        await pool.request("GET", "http://127.0.0.1:1/ok", {})
    assert transport_outcome(BadURL("x")).kind is OutcomeKind.CONFIG


async def test_close_closes_every_connection(server, credentials):
    pool = _pool(credentials)
    await pool.request("GET", f"{server.url}/ok", {})
    await pool.aclose()
    await asyncio.sleep(0.05)
    assert server.seen.closed == 1
    # A closed pool opens a new connection for a later request.
    assert (await pool.request("GET", f"{server.url}/ok", {})).status == 200
    await pool.aclose()
