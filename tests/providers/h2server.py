"""A real HTTP/2-over-TLS server whose every misbehaviour a test can ask for.

The provider sandbox answers as APNs does; this one answers as a network and
a server under strain do, which the sandbox cannot: refused streams, resets,
GOAWAY, a connection dropped mid-request, a small flow-control window, a
stream limit. The request's path says what to do:

    /ok          200, ``x-connection`` names the connection, the body the request's size
    /slow/<ms>   the same, <ms> milliseconds later
    /hang        never answers
    /refuse      RST_STREAM REFUSED_STREAM (the server did not process it)
    /reset       RST_STREAM INTERNAL_ERROR, after reading the request
    /drop        closes the connection, after reading the request
    /goaway      GOAWAY naming the stream before this one as the last processed, then closes
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings


@dataclass
class Seen:
    """What the server saw: connections opened, requests (connection, path), cancels."""

    connections: int = 0
    requests: list[tuple[int, str]] = field(default_factory=list)
    cancelled: int = 0
    closed: int = 0


class _ServerConnection(asyncio.Protocol):
    def __init__(self, server: H2TestServer) -> None:
        self._server = server
        self._number = server.seen.connections
        server.seen.connections += 1
        self._h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        self._transport: asyncio.Transport | None = None
        self._paths: dict[int, str] = {}
        self._sizes: dict[int, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._server.transports.add(transport)
        self._h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self._server.max_streams,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: self._server.window,
            },
        )
        self._h2.initiate_connection()
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.seen.closed += 1
        for task in self._tasks:
            task.cancel()

    def data_received(self, data: bytes) -> None:
        for event in self._h2.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                headers = dict(event.headers or ())
                self._paths[event.stream_id] = str(headers[":path"])
                self._sizes[event.stream_id] = 0
            elif isinstance(event, h2.events.DataReceived):
                self._sizes[event.stream_id] += len(event.data)
                self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                self._answer(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                self._server.seen.cancelled += 1
        self._flush()

    def _answer(self, stream_id: int) -> None:
        path = self._paths[stream_id]
        self._server.seen.requests.append((self._number, path))
        if path == "/refuse":
            self._h2.reset_stream(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
        elif path == "/reset":
            self._h2.reset_stream(stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
        elif path == "/drop":
            assert self._transport is not None
            self._transport.close()
        elif path == "/goaway":
            # Going away: streams after the one before this were not processed. The
            # streams before stay unanswered (h2 sends nothing after its GOAWAY).
            self._h2.close_connection(last_stream_id=max(0, stream_id - 2))
            self._flush()
            assert self._transport is not None
            self._transport.close()
        elif path.startswith("/slow/"):
            task = asyncio.ensure_future(self._later(stream_id, int(path.split("/")[2]) / 1000))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif path != "/hang":
            self._ok(stream_id)

    async def _later(self, stream_id: int, seconds: float) -> None:
        await asyncio.sleep(seconds)
        with contextlib.suppress(h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            self._ok(stream_id)
            self._flush()

    def _ok(self, stream_id: int) -> None:
        body = str(self._sizes[stream_id]).encode()
        self._h2.send_headers(
            stream_id,
            [(":status", "200"), ("x-connection", str(self._number))],
        )
        self._h2.send_data(stream_id, body, end_stream=True)

    def _flush(self) -> None:
        data = self._h2.data_to_send()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)


class H2TestServer:
    """Serves on 127.0.0.1 over TLS with the sandbox's certificate (use as ``async with``)."""

    def __init__(
        self, cert_file: Path, *, max_streams: int = 100, window: int = 65_535, alpn: str = "h2"
    ) -> None:
        self.seen = Seen()
        self.max_streams = max_streams
        self.window = window
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._context.load_cert_chain(cert_file)
        self._context.set_alpn_protocols([alpn])
        self._server: asyncio.Server | None = None
        self.transports: set[asyncio.Transport] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"https://127.0.0.1:{port}"

    async def __aenter__(self) -> H2TestServer:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _ServerConnection(self), "127.0.0.1", 0, ssl=self._context
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for transport in self.transports:
            transport.close()
        await self._server.wait_closed()
