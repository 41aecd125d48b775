"""A small client for the sandbox's control API, for tests and the demo."""

from __future__ import annotations

import time
from typing import Any

import httpx


class SandboxClient:
    """Talks to ``/_sandbox/*`` on a running sandbox (in-process or ``outbox sandbox``)."""

    def __init__(self, base_url: str, timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        # Idle connections are dropped well before the server would drop them.
        limits = httpx.Limits(keepalive_expiry=2.0)
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, limits=limits)

    def close(self) -> None:
        """Close the HTTP connection."""
        self._http.close()

    def _get(self, path: str, **params: Any) -> Any:
        query = {k: v for k, v in params.items() if v is not None}
        response = self._http.get(path, params=query)
        response.raise_for_status()
        return response.json()

    def _post(self, path: str, doc: Any = None) -> Any:
        response = self._http.post(path, json=doc if doc is not None else {})
        if response.status_code == 400:
            raise ValueError(response.json().get("error", response.text))
        response.raise_for_status()
        return response.json()

    def health(self) -> bool:
        """True when the sandbox answers."""
        try:
            return bool(self._get("/_sandbox/health").get("ok"))
        except httpx.HTTPError:
            return False

    def requests(
        self, provider: str | None = None, destination: str | None = None, since: int = 0
    ) -> list[dict[str, Any]]:
        """Recorded provider requests, oldest first."""
        return self._get(
            "/_sandbox/requests", provider=provider, destination=destination, since=since
        )["requests"]

    def receipts(self, provider: str | None = None) -> list[dict[str, Any]]:
        """Receipts the sandbox sent back, oldest first."""
        return self._get("/_sandbox/receipts", provider=provider)["receipts"]

    def receipts_pending(self) -> int:
        """Receipts scheduled but not yet answered by their receiver (nor given up)."""
        return int(self._get("/_sandbox/receipts/pending")["pending"])

    def counts(self) -> dict[str, Any]:
        """Per provider: total requests and how many got each answer."""
        return self._get("/_sandbox/counts")

    def reset(self) -> None:
        """Forget all records and go back to the start-up faults."""
        self._post("/_sandbox/reset")

    def faults(self) -> dict[str, Any]:
        """The fault configuration in force."""
        return self._get("/_sandbox/faults")

    def set_faults(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Change faults (ValueError with the sandbox's message if it refuses them)."""
        return self._post("/_sandbox/faults", doc)

    def set_webhooks(self, **urls: str | None) -> dict[str, str]:
        """Where receipts go, e.g. ``set_webhooks(sendgrid="http://...")``."""
        return self._post("/_sandbox/webhooks", urls)

    def info(self) -> dict[str, Any]:
        """URLs, CA file, public keys and account ids (no secrets)."""
        return self._get("/_sandbox/info")

    def wait_for_receipts(
        self, provider: str, count: int, timeout_s: float = 5.0
    ) -> list[dict[str, Any]]:
        """Poll until ``count`` receipts for ``provider`` were sent (TimeoutError if not)."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = self.receipts(provider)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{len(found)} of {count} {provider} receipts after {timeout_s}s"
                )
            time.sleep(0.02)
