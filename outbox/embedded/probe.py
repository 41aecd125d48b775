"""The wire check: does the server answer on its socket, and is the database there?"""

from __future__ import annotations

import contextlib
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

from outbox.embedded.layout import SUPERUSER

PROBE_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class _Probe:
    answered: bool  # something spoke the PostgreSQL protocol on the socket
    sqlstate: str | None  # None: logged in; "3D000": no such database; ...
    message: str
    parameters: dict[str, str]

    @property
    def ok(self) -> bool:
        return self.answered and self.sqlstate is None


def _probe(socket_path: Path, database: str, timeout: float = PROBE_TIMEOUT_SECONDS) -> _Probe:
    """Log in over the Unix socket with a bare startup message, then leave.

    Hand-rolled so the fast path needs no driver import (psycopg alone costs
    about 150 ms). It proves the server accepts connections and the database
    exists, and it returns the server's parameters (server_version).
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    params: dict[str, str] = {}
    try:
        sock.connect(str(socket_path))
        body = struct.pack("!I", 3 << 16)  # protocol 3.0
        for key, value in (
            ("user", SUPERUSER),
            ("database", database),
            ("application_name", "outbox-probe"),
        ):
            body += key.encode() + b"\0" + value.encode() + b"\0"
        body += b"\0"
        sock.sendall(struct.pack("!I", len(body) + 4) + body)
        while True:
            tag, payload = _read_message(sock)
            if tag == b"R":
                (code,) = struct.unpack("!I", payload[:4])
                if code != 0:
                    return _Probe(True, "28000", "the server asks for a password", params)
            elif tag == b"S":
                raw_name, raw_value = payload.split(b"\0")[:2]
                params[raw_name.decode()] = raw_value.decode()
            elif tag == b"E":
                fields = {
                    part[:1].decode(): part[1:].decode(errors="replace")
                    for part in payload.split(b"\0")
                    if part
                }
                return _Probe(True, fields.get("C", "XX000"), fields.get("M", ""), params)
            elif tag == b"Z":
                with contextlib.suppress(OSError):
                    sock.sendall(b"X" + struct.pack("!I", 4))
                return _Probe(True, None, "", params)
            # Anything else (BackendKeyData, notices) is not our concern.
    except OSError as exc:
        return _Probe(False, None, f"{socket_path}: {exc.strerror or exc}", {})
    finally:
        sock.close()


def _read_message(sock: socket.socket) -> tuple[bytes, bytes]:
    header = _recv_exact(sock, 5)
    (length,) = struct.unpack("!I", header[1:])
    if not 4 <= length <= 1 << 20:
        raise ConnectionError(f"not a PostgreSQL server (message length {length})")
    return header[:1], _recv_exact(sock, length - 4)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(n)
        if not chunk:
            raise ConnectionError("connection closed by the server")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)
