"""HTTP/2 for APNs: h2's state machine over asyncio connections, and nothing else.

APNs is the one provider API that requires HTTP/2. httpx (through httpcore)
speaks it, but at 2.4-2.7 ms of CPU per request on these 2-core machines
(``benchmarks/provider_clients.py``): per request it takes anyio locks and
events, builds request and response models, and walks its pool. A send needs
less: one stream on a connection that is already open, its headers, its body,
and the answer read whole. Here a connection is an :class:`asyncio.Protocol`
that feeds received bytes to ``h2`` and resolves one future per stream.

What a caller must know is the same question the HTTP/1.1 pool answers (see
``outbox.providers.transport``): *did the request leave?*

- ``NotSent``: it never reached the provider (the connection could not be
  opened or was not HTTP/2, no connection had room in time, the server refused
  the stream, or said GOAWAY before reading it): safe to retry.
- ``Interrupted``: the connection broke or the stream was reset after the
  request was written; the provider may have accepted it.
- :class:`TimeoutError`: no whole answer within the timeout; the stream is
  cancelled, and the provider may have accepted it.

A pool keeps up to ``connections`` connections per origin and opens another
only when every open one has as many streams in flight as the server allows
(APNs: 1,000 at most; the sandbox: 100). Streams wait for room, not for a new
connection, once the limit is reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import certifi
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hpack

from outbox.providers.transport import (
    DEFAULT_CONNECTIONS,
    Adapter,
    Answer,
    BadURL,
    Interrupted,
    NotSent,
)

# Streams per connection until the server's SETTINGS say otherwise (RFC 9113
# recommends servers allow at least 100).
_DEFAULT_STREAMS = 100
# Received bytes are acknowledged at once: answers are small and read whole.
_READ_SIZE = 65_535


class _PlainEncoder(hpack.Encoder):
    """HPACK without Huffman coding.

    h2 never indexes ``authorization`` (so a compression oracle cannot guess the
    token), which means the 200-byte provider token is Huffman-coded on every
    request: a third of the client's CPU per send. Sent as plain octets it is
    about 50 bytes longer, nothing beside the TLS record it travels in.
    """

    def encode(self, headers: Iterable[tuple[str, str]], huffman: bool = False) -> bytes:  # type: ignore[override]
        return super().encode(headers, huffman=False)


@dataclass(slots=True)
class _Stream:
    answer: asyncio.Future[Answer]
    body: bytes
    offset: int = 0
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    received: list[bytes] = field(default_factory=list)

    @property
    def written(self) -> bool:
        """Every byte of the request is out (the server may act on it)."""
        return self.offset >= len(self.body)


class _Connection(asyncio.Protocol):
    """One HTTP/2 connection: streams in flight, each answered through its future."""

    def __init__(self, authority: str) -> None:
        self.authority = authority
        self._h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self._h2.encoder = _PlainEncoder()
        self._transport: asyncio.Transport | None = None
        self._streams: dict[int, _Stream] = {}
        self.max_streams = _DEFAULT_STREAMS
        # No new streams once the server said GOAWAY, the ids ran out or the link broke.
        self.usable = False
        self.closed = asyncio.get_running_loop().create_future()

    # -- what the pool asks ------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return len(self._streams)

    @property
    def has_room(self) -> bool:
        return self.usable and len(self._streams) < self.max_streams

    def request(
        self, method: str, path: str, headers: Iterable[tuple[str, str]], body: bytes
    ) -> tuple[int, asyncio.Future[Answer]]:
        """Start one stream; its future resolves to the answer or fails (see the module)."""
        try:
            stream_id = self._h2.get_next_available_stream_id()
        except h2.exceptions.NoAvailableStreamIDError as exc:
            self.usable = False
            raise NotSent("the connection has used up its stream ids") from exc
        answer = asyncio.get_running_loop().create_future()
        self._streams[stream_id] = _Stream(answer, body)
        self._h2.send_headers(
            stream_id,
            [
                (":method", method),
                (":scheme", "https"),
                (":authority", self.authority),
                (":path", path),
                *headers,
                ("content-length", str(len(body))),
            ],
            end_stream=not body,
        )
        if body:
            self._send_body(stream_id)
        self._flush()
        return stream_id, answer

    def cancel(self, stream_id: int) -> None:
        """Give up on a stream (its caller timed out): tell the server, forget it."""
        if self._streams.pop(stream_id, None) is None or not self.usable:
            return
        with contextlib.suppress(h2.exceptions.H2Error):
            self._h2.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
            self._flush()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    # -- asyncio.Protocol --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._h2.initiate_connection()
        self._flush()
        self.usable = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.usable = False
        reason = f"the connection to {self.authority} was lost"
        if exc is not None:
            reason += f" ({type(exc).__name__})"
        for stream in self._streams.values():
            _fail(stream, Interrupted(reason) if stream.written else NotSent(reason))
        self._streams.clear()
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self.usable = False
            with contextlib.suppress(h2.exceptions.H2Error):
                self._flush()
            self.close()
            for stream in self._streams.values():
                _fail(stream, Interrupted(f"HTTP/2 protocol error ({type(exc).__name__})"))
            self._streams.clear()
            return
        for event in events:
            self._on(event)
        self._flush()

    # -- events ------------------------------------------------------------------

    def _on(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                # Decoded as UTF-8 (header_encoding); h2's types also allow bytes.
                for name, value in event.headers or ():
                    key, text = _text(name), _text(value)
                    if key == ":status":
                        stream.status = int(text)
                    else:
                        stream.headers[key] = text
        elif isinstance(event, h2.events.DataReceived):
            self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                stream.received.append(event.data)
        elif isinstance(event, h2.events.StreamEnded):
            stream = self._streams.pop(event.stream_id, None)
            if stream is not None and not stream.answer.done():
                body = b"".join(stream.received)
                stream.answer.set_result(Answer(stream.status, stream.headers, body))
        elif isinstance(event, h2.events.StreamReset):
            stream = self._streams.pop(event.stream_id, None)
            if stream is not None:
                code = h2.errors.ErrorCodes(event.error_code) if event.error_code else None
                if code is h2.errors.ErrorCodes.REFUSED_STREAM:
                    _fail(stream, NotSent("the provider refused the stream"))
                else:
                    _fail(stream, Interrupted(f"the provider reset the stream ({code})"))
        elif isinstance(event, h2.events.WindowUpdated):
            for stream_id, stream in list(self._streams.items()):
                if not stream.written:
                    self._send_body(stream_id)
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            changed = event.changed_settings.get(h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS)
            if changed is not None:
                self.max_streams = changed.new_value
        elif isinstance(event, h2.events.ConnectionTerminated):
            # GOAWAY: streams above the last one the server read were never processed.
            self.usable = False
            last = event.last_stream_id or 0
            for stream_id in [s for s in self._streams if s > last]:
                _fail(self._streams.pop(stream_id), NotSent("the provider is going away"))
            if not self._streams:
                self.close()

    def _send_body(self, stream_id: int) -> None:
        stream = self._streams[stream_id]
        while not stream.written:
            window = min(
                self._h2.local_flow_control_window(stream_id),
                self._h2.max_outbound_frame_size,
            )
            if window <= 0:
                return  # the rest goes when the server opens the window (WindowUpdated)
            chunk = stream.body[stream.offset : stream.offset + window]
            stream.offset += len(chunk)
            self._h2.send_data(stream_id, chunk, end_stream=stream.written)

    def _flush(self) -> None:
        data = self._h2.data_to_send()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _fail(stream: _Stream, error: NotSent | Interrupted) -> None:
    if not stream.answer.done():
        stream.answer.set_exception(error)


class H2Pool:
    """HTTP/2 connections per origin (``https://host:port``), up to ``connections`` each.

    Connections are opened in the running loop at the first request that needs
    one, so a pool can be built before the worker's loop starts. ``timeout``
    bounds the connect, the wait for room on a connection and the whole answer.
    """

    def __init__(
        self, *, ssl_context: ssl.SSLContext, timeout: float, connections: int = 1
    ) -> None:
        if connections < 1:
            raise ValueError(f"connections must be at least 1, not {connections}")
        self.connections = connections
        self._timeout = timeout
        self._ssl = ssl_context
        self._ssl.set_alpn_protocols(["h2"])
        self._pools: dict[tuple[str, int], list[_Connection]] = {}
        self._opening: dict[tuple[str, int], asyncio.Task[_Connection]] = {}
        # Requests waiting for room on a connection (all at the limit): woken as streams end.
        self._waiting: list[asyncio.Future[None]] = []

    async def request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes = b""
    ) -> Answer:
        """One request, its answer read whole; raises NotSent, Interrupted or TimeoutError."""
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise BadURL(f"not an https URL: {url!r}")
        origin = (parts.hostname, parts.port or 443)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        conn = await self._connection(origin, deadline)
        stream_id, answer = conn.request(method, path, headers.items(), body)
        try:
            async with asyncio.timeout_at(deadline):
                return await answer
        except TimeoutError:
            conn.cancel(stream_id)
            raise
        finally:
            if self._waiting:
                waiting, self._waiting = self._waiting, []
                for waiter in waiting:
                    if not waiter.done():
                        waiter.set_result(None)

    async def _connection(self, origin: tuple[str, int], deadline: float) -> _Connection:
        conns = self._pools.setdefault(origin, [])
        while True:
            conns[:] = [c for c in conns if c.usable]
            free = [c for c in conns if c.has_room]
            if free and asyncio.get_running_loop().time() < deadline:
                return min(free, key=lambda c: c.in_flight)
            if free:  # room came too late: sending now could only time out, in doubt
                raise NotSent(f"no HTTP/2 connection to {origin[0]} had room before the timeout")
            opening = self._opening.get(origin)
            if opening is None and len(conns) < self.connections:
                opening = asyncio.ensure_future(self._open(origin, deadline))
                self._opening[origin] = opening
                opening.add_done_callback(lambda _t: self._opening.pop(origin, None))
            try:
                if opening is not None:
                    # Every waiter shares the connection being opened (a burst of
                    # sends must not open one connection each).
                    await asyncio.shield(opening)
                    continue
                waiter = asyncio.get_running_loop().create_future()
                self._waiting.append(waiter)
                async with asyncio.timeout_at(deadline):
                    await waiter
            except TimeoutError as exc:
                raise NotSent(
                    f"no HTTP/2 connection to {origin[0]} had room before the timeout"
                ) from exc

    async def _open(self, origin: tuple[str, int], deadline: float) -> _Connection:
        host, port = origin
        authority = host if port == 443 else f"{host}:{port}"
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(deadline):
                transport, conn = await loop.create_connection(
                    lambda: _Connection(authority), host, port, ssl=self._ssl, server_hostname=host
                )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise NotSent(f"could not connect to {authority} ({type(exc).__name__})") from exc
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
            transport.close()
            raise NotSent(f"{authority} did not agree to HTTP/2")
        self._pools.setdefault(origin, []).append(conn)
        return conn

    async def aclose(self) -> None:
        """Close every connection (a later request opens new ones)."""
        for task in list(self._opening.values()):
            task.cancel()
        conns = [c for pool in self._pools.values() for c in pool]
        self._pools.clear()
        for conn in conns:
            conn.close()
        for conn in conns:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await conn.closed


class Http2Adapter(Adapter):
    """An adapter that speaks HTTP/2 to its provider through one :class:`H2Pool`, ``self._http``.

    Up to ``connections`` connections per host (a second one opens only when the
    first has as many streams in flight as the server allows).
    ``verify``: the CA file to trust, else the certifi roots (as httpx had them).
    """

    def __init__(
        self,
        *,
        secrets: Iterable[str],
        timeout: float,
        connections: int = DEFAULT_CONNECTIONS,
        ca_file: Path | str | None = None,
    ) -> None:
        self._secrets = tuple(secrets)
        context = ssl.create_default_context(cafile=str(ca_file or certifi.where()))
        self._http = H2Pool(ssl_context=context, timeout=timeout, connections=connections)

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._http.aclose()
