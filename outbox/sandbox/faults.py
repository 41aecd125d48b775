"""Fault injection: which answer each request gets.

The configuration is JSON, given at start (``--faults``) and changed at run
time (``POST /_sandbox/faults``)::

    {
      "seed": 7,                  # seeds the random draws (omit: unseeded)
      "hang_s": 30,               # how long a "timeout" answer keeps the request open
      "providers": {
        "twilio": {
          "latency_ms": 40,       # added before every answer
          "error_rate": 0.1,      # fraction answered with a random pick from "errors"
          "errors": ["21211", "rate_limited"],   # default: the provider's transient error
          "timeout_rate": 0.05,   # fraction that hang past the client's timeout
          "retry_after_s": 2,     # Retry-After (or rate-limit reset) on "rate_limited"
          "always": "20003",      # every request gets this answer
          "script": ["rate_limited", "ok"],      # the next answers, one per request, in order
          "dead": ["+15550000001"]               # destinations that always get "dead"
        }
      }
    }

Answers are names: ``ok``, ``timeout``, ``rate_limited``, ``dead`` (the
provider's own dead-destination answer) for every provider, plus each
provider's own error vocabulary (APNs reasons, FCM error codes, Twilio error
codes, Vonage statuses, SendGrid HTTP statuses, Mandrill error names and
reject reasons). Precedence for one request: dead list, script, always,
timeout_rate, error_rate, ok.

POSTing a configuration replaces the named providers' faults and keeps the
others; ``POST /_sandbox/reset`` goes back to the start-up configuration.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

GENERIC_ANSWERS = ("ok", "timeout", "rate_limited", "dead")
DEFAULT_HANG_S = 30.0


class FaultConfigError(ValueError):
    """The fault configuration is malformed; the message names the field and value."""


@dataclass
class ProviderFaults:
    """Faults for one provider (see the module docstring for each field)."""

    latency_ms: float = 0.0
    error_rate: float = 0.0
    errors: list[str] = field(default_factory=list)
    timeout_rate: float = 0.0
    retry_after_s: float = 1.0
    always: str | None = None
    script: list[str] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer chosen for one request, and how long to wait before giving it."""

    answer: str
    latency_s: float = 0.0
    retry_after_s: float = 1.0
    hang_s: float = DEFAULT_HANG_S


@dataclass(frozen=True, slots=True)
class Vocabulary:
    """The answers one provider knows, beyond the generic ones."""

    default_error: str
    known: Callable[[str], bool]
    examples: tuple[str, ...]

    def accepts(self, answer: str) -> bool:
        return answer in GENERIC_ANSWERS or self.known(answer)


def _rate(where: str, value: Any) -> float:
    if not isinstance(value, int | float) or not 0 <= value <= 1:
        raise FaultConfigError(f"{where}: must be a number from 0 to 1, got {value!r}")
    return float(value)


def _non_negative(where: str, value: Any) -> float:
    if not isinstance(value, int | float) or value < 0:
        raise FaultConfigError(f"{where}: must be a number >= 0, got {value!r}")
    return float(value)


def _strings(where: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str | int) for v in value):
        raise FaultConfigError(f"{where}: must be a list of strings, got {value!r}")
    return [str(v) for v in value]


def _answer(where: str, value: Any, vocabulary: Vocabulary, provider: str) -> str:
    answer = str(value)
    if not vocabulary.accepts(answer):
        known = ", ".join((*GENERIC_ANSWERS, *vocabulary.examples))
        raise FaultConfigError(f"{where}: unknown answer {answer!r} for {provider}; known: {known}")
    return answer


def parse_provider(provider: str, doc: Mapping[str, Any], vocabulary: Vocabulary) -> ProviderFaults:
    """One provider's faults from JSON, validated."""
    where = f"providers.{provider}"
    if not isinstance(doc, Mapping):
        raise FaultConfigError(f"{where}: must be an object, got {doc!r}")
    unknown = set(doc) - set(ProviderFaults.__dataclass_fields__)
    if unknown:
        raise FaultConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    faults = ProviderFaults()
    for name in ("latency_ms", "retry_after_s"):
        if name in doc:
            setattr(faults, name, _non_negative(f"{where}.{name}", doc[name]))
    for name in ("error_rate", "timeout_rate"):
        if name in doc:
            setattr(faults, name, _rate(f"{where}.{name}", doc[name]))
    for name in ("errors", "script"):
        if name in doc:
            values = _strings(f"{where}.{name}", doc[name])
            setattr(
                faults,
                name,
                [
                    _answer(f"{where}.{name}[{i}]", v, vocabulary, provider)
                    for i, v in enumerate(values)
                ],
            )
    if doc.get("always") is not None:
        faults.always = _answer(f"{where}.always", doc["always"], vocabulary, provider)
    if "dead" in doc:
        faults.dead = _strings(f"{where}.dead", doc["dead"])
    return faults


class FaultInjector:
    """The current fault configuration and the seeded draws made against it.

    Thread-safe: tests change faults from their own thread while the server
    answers in its loop thread.
    """

    def __init__(self, vocabularies: Mapping[str, Vocabulary], initial: Mapping | None = None):
        self._vocabularies = dict(vocabularies)
        self._lock = threading.Lock()
        self._initial = dict(initial or {})
        self._providers: dict[str, ProviderFaults] = {}
        self._hang_s = DEFAULT_HANG_S
        self._seed: int | None = None
        self._random = random.Random()
        self.configure(self._initial)

    def configure(self, doc: Mapping[str, Any]) -> None:
        """Apply a configuration: named providers are replaced, others kept."""
        if not isinstance(doc, Mapping):
            raise FaultConfigError(f"faults: must be an object, got {doc!r}")
        unknown = set(doc) - {"seed", "hang_s", "providers"}
        if unknown:
            raise FaultConfigError(f"faults: unknown field(s) {', '.join(sorted(unknown))}")
        providers = doc.get("providers") or {}
        if not isinstance(providers, Mapping):
            raise FaultConfigError(f"providers: must be an object, got {providers!r}")
        parsed = {}
        for name, faults in providers.items():
            if name not in self._vocabularies:
                known = ", ".join(sorted(self._vocabularies))
                raise FaultConfigError(f"providers: unknown provider {name!r}; known: {known}")
            parsed[name] = parse_provider(name, faults, self._vocabularies[name])
        hang_s = _non_negative("hang_s", doc["hang_s"]) if "hang_s" in doc else None
        seed = doc.get("seed")
        if seed is not None and not isinstance(seed, int):
            raise FaultConfigError(f"seed: must be an integer, got {seed!r}")
        with self._lock:
            self._providers.update(parsed)
            if hang_s is not None:
                self._hang_s = hang_s
            if "seed" in doc:
                self._seed = seed
                self._random.seed(seed)

    def reset(self) -> None:
        """Back to the start-up configuration (and its seed)."""
        with self._lock:
            self._providers = {}
            self._hang_s = DEFAULT_HANG_S
            self._random.seed(self._seed)
        self.configure(self._initial)

    def snapshot(self) -> dict[str, Any]:
        """The configuration in force, as JSON."""
        with self._lock:
            return {
                "seed": self._seed,
                "hang_s": self._hang_s,
                "providers": {k: asdict(v) for k, v in self._providers.items()},
            }

    def decide(self, provider: str, destination: str | None) -> Decision:
        """The answer for one request to ``provider`` for ``destination``."""
        with self._lock:
            faults = self._providers.get(provider) or ProviderFaults()
            answer = self._pick(provider, faults, destination)
            return Decision(
                answer=answer,
                latency_s=faults.latency_ms / 1000.0,
                retry_after_s=faults.retry_after_s,
                hang_s=self._hang_s,
            )

    def _pick(self, provider: str, faults: ProviderFaults, destination: str | None) -> str:
        if destination is not None and destination in faults.dead:
            return "dead"
        if faults.script:
            return faults.script.pop(0)
        if faults.always:
            return faults.always
        if faults.timeout_rate and self._random.random() < faults.timeout_rate:
            return "timeout"
        if faults.error_rate and self._random.random() < faults.error_rate:
            errors = faults.errors or [self._vocabularies[provider].default_error]
            return self._random.choice(errors)
        return "ok"
