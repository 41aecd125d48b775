"""The console's login: operator name + console token, a signed session cookie, CSRF tokens.

Stateless, so that several consoles behind one load balancer need nothing
shared but the token:

* the **session cookie** is ``<payload>.<signature>``: the payload (operator,
  expiry, CSRF token) in base64url JSON, signed with HMAC-SHA256 under a key
  derived from the console token. Changing the token logs everyone out. The
  cookie is HttpOnly and SameSite=Strict (and Secure when configured);
* every POST carries the session's **CSRF token** in a hidden field, compared
  in constant time. The login form, before any session exists, uses a
  double-submit nonce: a cookie and the same value in the form;
* the token is compared in constant time and never logged, stored or echoed;
* wrong tokens are **limited per client address** (:class:`LoginLimiter`): past
  a few failures in a window, that address is told to wait (429) before it may
  try again. The token is too long to guess anyway (a minimum length); the
  limit keeps a script from trying, and the log from filling with its tries.
  It is per console process: the state is small and needs no database.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
from collections import OrderedDict, deque
from dataclasses import dataclass

SESSION_COOKIE = "outbox_console"
LOGIN_COOKIE = "outbox_console_login"

#: Operator names as they appear in the audit trail (events.worker = 'console:<name>').
OPERATOR = re.compile(r"[\w.@+-]{1,64}")


class AuthError(Exception):
    """A request the console refuses; the message is safe to show (no secrets)."""


@dataclass(frozen=True, slots=True)
class Session:
    """A logged-in operator."""

    operator: str
    csrf: str
    expires_at: float


def check_operator(name: str) -> str:
    """``name`` stripped, or AuthError saying what an operator name may hold."""
    name = name.strip()
    if not OPERATOR.fullmatch(name):
        raise AuthError("operator: 1 to 64 letters, digits or . @ + - _ (no spaces)")
    return name


def new_token() -> str:
    """A console token for when none is configured: 192 random bits, URL-safe."""
    return secrets.token_urlsafe(24)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sessions:
    """Issues and reads session cookies and checks tokens, for one console token."""

    def __init__(self, token: str, lifetime_seconds: float) -> None:
        if not token:
            raise ValueError("the console token is empty")
        # Digests of equal length, so compare_digest's time says nothing of the length.
        self._token_digest = hashlib.sha256(token.encode("utf-8")).digest()
        self._key = hmac.new(
            token.encode("utf-8"), b"outbox-console-session-v1", hashlib.sha256
        ).digest()
        self.lifetime_seconds = lifetime_seconds

    def __repr__(self) -> str:  # never the token or the key
        return f"Sessions(lifetime_seconds={self.lifetime_seconds})"

    def token_ok(self, given: str) -> bool:
        """Whether ``given`` is the console token (constant time)."""
        digest = hashlib.sha256(given.encode("utf-8")).digest()
        return hmac.compare_digest(digest, self._token_digest)

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode("ascii"), hashlib.sha256).digest())

    def issue(self, operator: str, now: float) -> tuple[str, Session]:
        """A cookie value for ``operator``, valid for the lifetime from ``now``, and its session."""
        session = Session(
            operator=operator,
            csrf=secrets.token_urlsafe(24),
            expires_at=now + self.lifetime_seconds,
        )
        body = {"op": session.operator, "csrf": session.csrf, "exp": session.expires_at}
        payload = _b64(json.dumps(body, separators=(",", ":")).encode("utf-8"))
        return f"{payload}.{self._sign(payload)}", session

    def read(self, cookie: str | None, now: float) -> Session | None:
        """The session a cookie holds, or None if it is missing, forged, malformed or expired."""
        if not cookie or cookie.count(".") != 1 or len(cookie) > 1024:
            return None
        payload, signature = cookie.split(".")
        try:
            if not same(signature, self._sign(payload)):
                return None
            body = json.loads(_unb64(payload))
            session = Session(
                operator=str(body["op"]), csrf=str(body["csrf"]), expires_at=float(body["exp"])
            )
        except (ValueError, KeyError, TypeError, UnicodeError):
            return None
        if session.expires_at <= now or not OPERATOR.fullmatch(session.operator):
            return None
        return session


def same(given: str | None, expected: str) -> bool:
    """``given`` equals ``expected`` (a CSRF token or nonce), in constant time; None never does."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


class LoginLimiter:
    """At most ``failures`` wrong tokens per client address within ``window_seconds``.

    :meth:`wait` says how long an address must wait before it may try again (0:
    it may); :meth:`failed` records a wrong token; :meth:`succeeded` forgets the
    address. At most ``max_addresses`` addresses are remembered, the least
    recently seen forgotten first, so a flood of addresses cannot grow it.
    """

    def __init__(
        self, failures: int = 10, window_seconds: float = 300.0, max_addresses: int = 10_000
    ) -> None:
        self.failures = failures
        self.window_seconds = window_seconds
        self.max_addresses = max_addresses
        self._seen: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, address: str, now: float) -> deque[float] | None:
        times = self._seen.get(address)
        if times is None:
            return None
        while times and times[0] <= now - self.window_seconds:
            times.popleft()
        if not times:
            del self._seen[address]
            return None
        return times

    def wait(self, address: str, now: float) -> float:
        """Seconds until ``address`` may try a token again (0: now)."""
        times = self._recent(address, now)
        if times is None or len(times) < self.failures:
            return 0.0
        return times[0] + self.window_seconds - now

    def failed(self, address: str, now: float) -> None:
        times = self._recent(address, now)
        if times is None:
            times = self._seen[address] = deque(maxlen=self.failures)
        times.append(now)
        self._seen.move_to_end(address)
        while len(self._seen) > self.max_addresses:
            self._seen.popitem(last=False)

    def succeeded(self, address: str) -> None:
        self._seen.pop(address, None)
