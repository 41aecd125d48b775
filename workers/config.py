"""The worker's configuration: validated once, at construction."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import time

from outbox.settings import CHANNELS, Settings
from outbox.workers.breaker.rules import BreakerPolicy


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    channels: tuple[str, ...] = CHANNELS
    # Sends in flight at once in this process.
    concurrency: int = 50
    # Most deliveries claimed by one claim statement.
    batch_size: int = 100
    lease_seconds: float = 30.0
    # Fallback poll when no NOTIFY arrives: scheduled sends, retries coming due, lost notifies.
    poll_interval_seconds: float = 1.0
    # How often to return expired leases (of dead workers) to pending.
    recover_interval_seconds: float = 5.0
    shutdown_grace_seconds: float = 10.0
    backoff_base_seconds: float = 2.0
    backoff_cap_seconds: float = 3600.0
    # A misconfigured or unavailable provider: wait this long, without burning an attempt.
    config_pause_seconds: float = 60.0
    # Local quiet hours for recipients who have none of their own (None: no default).
    default_quiet_hours: tuple[time, time] | None = None
    max_sms_segments: int = 10
    # How long one template may render before its delivery goes dead (a CPU bomb).
    render_timeout_seconds: float = 1.0
    # Circuit breakers (workers/breaker/rules.py): consecutive transient failures
    # that open one; its first cool-down, doubled per failed probe up to the cap; how
    # long a claimed probe is reserved; how often the shared state is re-read.
    breaker_failure_threshold: int = 10
    breaker_cooldown_seconds: float = 30.0
    breaker_cooldown_cap_seconds: float = 600.0
    breaker_probe_seconds: float = 15.0
    breaker_refresh_seconds: float = 1.0
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = [c for c in self.channels if c not in CHANNELS]
        if unknown or not self.channels:
            raise ValueError(
                f"worker channels must be some of {list(CHANNELS)}, got {list(self.channels)}"
            )
        for name in ("concurrency", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in (
            "lease_seconds",
            "poll_interval_seconds",
            "recover_interval_seconds",
            "backoff_base_seconds",
            "backoff_cap_seconds",
            "config_pause_seconds",
            "breaker_refresh_seconds",
            "render_timeout_seconds",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.shutdown_grace_seconds < 0:
            raise ValueError(
                f"shutdown_grace_seconds must be >= 0, got {self.shutdown_grace_seconds}"
            )
        self.breaker_policy()  # raises ValueError naming a bad breaker value

    def breaker_policy(self) -> BreakerPolicy:
        """The circuit breaker rules' knobs, from the breaker_* fields."""
        return BreakerPolicy(
            failure_threshold=self.breaker_failure_threshold,
            cooldown_seconds=self.breaker_cooldown_seconds,
            cooldown_cap_seconds=self.breaker_cooldown_cap_seconds,
            probe_seconds=self.breaker_probe_seconds,
        )

    @staticmethod
    def parse_quiet_hours(text: str | None) -> tuple[time, time] | None:
        """'22:00-07:00' -> (22:00, 07:00); None or '' -> None; ValueError naming the value."""
        if not text:
            return None
        try:
            start, end = (time.fromisoformat(part.strip()) for part in text.split("-"))
        except ValueError:
            raise ValueError(f"quiet hours must look like 22:00-07:00, got {text!r}") from None
        return start, end

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: object) -> WorkerConfig:
        """The configuration the settings describe, with command-line overrides applied."""
        values: dict[str, object] = dict(
            channels=tuple(settings.worker_channels),
            concurrency=settings.worker_concurrency,
            batch_size=settings.worker_batch_size,
            lease_seconds=settings.lease_seconds,
            poll_interval_seconds=settings.poll_interval_seconds,
            recover_interval_seconds=settings.recover_interval_seconds,
            shutdown_grace_seconds=settings.shutdown_grace_seconds,
            backoff_base_seconds=settings.backoff_base_seconds,
            backoff_cap_seconds=settings.backoff_cap_seconds,
            config_pause_seconds=settings.config_pause_seconds,
            default_quiet_hours=cls.parse_quiet_hours(settings.default_quiet_hours),
            breaker_failure_threshold=settings.breaker_failure_threshold,
            breaker_cooldown_seconds=settings.breaker_cooldown_seconds,
            breaker_cooldown_cap_seconds=settings.breaker_cooldown_cap_seconds,
            breaker_probe_seconds=settings.breaker_probe_seconds,
            breaker_refresh_seconds=settings.breaker_refresh_seconds,
            render_timeout_seconds=settings.render_timeout_seconds,
        )
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
