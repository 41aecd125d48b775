"""Settings, read once at the edge (CLI and worker start-up).

Every field comes from an ``OUTBOX_``-prefixed environment variable or an
optional ``.env`` file. Library functions never read settings themselves: they
take explicit arguments, and the CLI passes these values in.

Credentials are ``SecretStr``: their ``repr`` and ``str`` are ``**********``,
so a settings object can be logged or printed without leaking them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

CHANNELS = ("email", "sms", "push")

# A list setting as people write it in a shell or a .env: `twilio`, `twilio,vonage`,
# or a JSON list `["twilio", "vonage"]`. NoDecode stops pydantic-settings from
# insisting on JSON (whose parse error names neither the variable nor the fix);
# _list_setting below reads both spellings.
NameList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="OUTBOX_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # --- database -------------------------------------------------------------
    database_url: SecretStr | None = Field(
        default=None,
        description="libpq URL of the PostgreSQL to use; unset = the embedded server.",
    )
    data_dir: Path = Field(
        default=Path(".outbox"),
        description="Where the embedded PostgreSQL keeps its data (git-ignored).",
    )

    # --- worker ---------------------------------------------------------------
    worker_channels: NameList = Field(default_factory=lambda: list(CHANNELS))
    worker_concurrency: int = Field(default=50, ge=1, le=10_000)
    worker_batch_size: int = Field(default=100, ge=1, le=5_000)
    lease_seconds: float = Field(default=30.0, gt=0)
    poll_interval_seconds: float = Field(default=1.0, gt=0)
    shutdown_grace_seconds: float = Field(default=10.0, ge=0)
    backoff_base_seconds: float = Field(default=2.0, gt=0)
    backoff_cap_seconds: float = Field(default=3600.0, gt=0)
    recover_interval_seconds: float = Field(default=5.0, gt=0)
    # Quiet hours ("22:00-07:00", local to each recipient) for recipients without
    # their own; unset = none. Critical categories are never held.
    default_quiet_hours: str | None = None
    config_pause_seconds: float = Field(default=60.0, gt=0)
    # How long one template may render before its delivery goes dead (docs/templates.md).
    render_timeout_seconds: float = Field(default=1.0, gt=0, le=60)
    # Max attempts per channel live in the outbox.channel_config table (a DBA edits
    # them there; each delivery copies its channel's value when enqueued).

    # --- providers ------------------------------------------------------------
    # Ordered provider list per channel: the first healthy one is used.
    providers_email: NameList = Field(default_factory=lambda: ["console"])
    providers_sms: NameList = Field(default_factory=lambda: ["console"])
    providers_push: NameList = Field(default_factory=lambda: ["console"])

    apns_key_id: str | None = None
    apns_team_id: str | None = None
    apns_topic: str | None = None
    apns_private_key: SecretStr | None = None  # PEM text of the .p8 key
    # The same key as a file (the .p8 Apple hands out); used when apns_private_key is unset.
    apns_private_key_file: Path | None = None
    apns_base_url: str | None = None  # override (the sandbox); default: Apple's per device
    # Override for devices whose token is from Apple's sandbox (development) environment;
    # unset = apns_base_url when that is set, else api.sandbox.push.apple.com.
    apns_sandbox_base_url: str | None = None
    apns_ca_file: Path | None = None  # CA bundle to trust (the sandbox's local CA)

    fcm_project_id: str | None = None
    fcm_credentials_file: Path | None = None
    fcm_base_url: str | None = None

    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_from_number: str | None = None
    twilio_messaging_service_sid: str | None = None
    twilio_status_callback_url: str | None = None
    twilio_base_url: str | None = None

    vonage_api_key: str | None = None
    vonage_api_secret: SecretStr | None = None
    vonage_from: str | None = None
    vonage_base_url: str | None = None

    sendgrid_api_key: SecretStr | None = None
    sendgrid_from_email: str | None = None
    sendgrid_base_url: str | None = None
    sendgrid_webhook_public_key: str | None = None

    mailchimp_api_key: SecretStr | None = None
    mailchimp_from_email: str | None = None
    mailchimp_base_url: str | None = None
    mailchimp_webhook_key: SecretStr | None = None

    # The local providers (noop, record) for tests, benchmarks and development.
    record_file: Path | None = None
    local_provider_delay_seconds: float = Field(default=0.0, ge=0)

    provider_timeout_seconds: float = Field(default=10.0, gt=0)

    # Circuit breakers, one per provider, shared by all workers (docs/providers.md):
    # this many consecutive transient failures (or one config outcome) open one; it
    # stays open for the cool-down (doubled after each failed probe, up to the cap),
    # then one worker sends one probe message. Workers re-read the shared state
    # every breaker_refresh_seconds.
    breaker_failure_threshold: int = Field(default=10, ge=1, le=10_000)
    breaker_cooldown_seconds: float = Field(default=30.0, gt=0)
    breaker_cooldown_cap_seconds: float = Field(default=600.0, gt=0)
    breaker_probe_seconds: float = Field(default=15.0, gt=0)
    breaker_refresh_seconds: float = Field(default=1.0, gt=0)

    # --- webhooks: delivery receipts (`outbox webhooks`, docs/webhooks.md) ------
    # The public base URL providers post to, e.g. https://hooks.example.com. Twilio
    # and Mandrill sign the exact URL they called, so this must be what they were
    # given (behind a proxy, the URL the server sees is not that one).
    webhooks_public_url: str | None = None
    # Loopback by default: put a TLS-terminating proxy in front and expose /webhooks/.
    webhooks_host: str = "127.0.0.1"
    webhooks_port: int = Field(default=4020, ge=0, le=65535)
    # Larger bodies get 413 before they are read. SendGrid batches up to ~768 KB,
    # Mandrill up to 1000 events, so the default leaves room for both.
    webhooks_max_body_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    # A signed request whose own timestamp (SendGrid header, Vonage parameter) is
    # further than this from now is refused as stale (replay protection).
    webhooks_timestamp_tolerance_seconds: float = Field(default=300.0, gt=0)
    # A receipt can beat the worker's "sent" record; it is retried in memory this long.
    webhooks_late_receipt_seconds: float = Field(default=120.0, ge=0)
    webhooks_db_pool_size: int = Field(default=4, ge=1, le=100)
    # The receiver's own login, a member of outbox_webhooks (sql/roles.sql): it faces
    # the internet, so it gets a role that can only apply receipts. Unset = the
    # database URL above (a development setup; `outbox webhooks` warns when that role
    # may do more than receipts need, and refuses one that may not apply them).
    webhooks_database_url: SecretStr | None = Field(
        default=None,
        description="libpq URL the webhook receiver connects with; unset = OUTBOX_DATABASE_URL.",
    )
    # Vonage signs SMS API webhooks (sig + timestamp parameters) once support has
    # enabled signing on the account; the method is chosen in the dashboard.
    vonage_signature_secret: SecretStr | None = None
    vonage_signature_method: str = Field(
        default="md5hash", pattern="^(md5hash|md5|sha1|sha256|sha512)$"
    )

    # --- operator console (`outbox console`, docs/console.md) -------------------
    # The token operators log in with (with their name). Unset: `outbox console`
    # makes one at start and prints it once. It also keys the session cookies, so
    # changing it logs everyone out; consoles sharing it accept each other's cookies.
    console_token: SecretStr | None = None
    console_host: str = "127.0.0.1"
    console_port: int = Field(default=4040, ge=0, le=65535)
    # How long a login lasts.
    console_session_hours: float = Field(default=12.0, gt=0, le=24 * 30)
    # Mark the session cookie Secure (sent over HTTPS only): set it behind TLS.
    console_secure_cookie: bool = False

    # --- the HTTP API (`outbox api`, docs/api.md) --------------------------------
    # Loopback by default: run several behind a load balancer / TLS proxy.
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=4030, ge=0, le=65535)
    # Larger request bodies get 413 before anything else is done with them. A bulk
    # enqueue of 1000 notifications with ~1 KB of data each fits.
    api_max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    api_db_pool_size: int = Field(default=8, ge=1, le=100)

    # --- observability --------------------------------------------------------
    log_format: str = Field(default="console", pattern="^(console|json)$")
    log_level: str = "INFO"
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    # How often each worker refreshes the queue gauges (one cheap query; see outbox/metrics.py).
    metrics_refresh_seconds: float = Field(default=15.0, gt=0)

    # --- retention (see outbox/ops.py and docs/operations.md) ------------------
    # Workers prune finished history older than this ("30d", "12h", ...); unset = never
    # (run `outbox prune` yourself). One worker at a time does it (an advisory lock).
    prune_older_than: str | None = Field(default=None, pattern=r"^\d+(\.\d+)?\s*[smhdw]$")
    prune_interval_seconds: float = Field(default=600.0, gt=0)
    prune_batch_size: int = Field(default=1000, ge=1, le=100_000)

    @field_validator(
        "worker_channels", "providers_email", "providers_sms", "providers_push", mode="before"
    )
    @classmethod
    def _list_setting(cls, value: object) -> object:
        return _parse_name_list(value)

    def secret_values(self) -> list[str]:
        """Every secret's plain value, for the log redaction processor.

        The database URLs' passwords are also listed on their own (as given and
        percent-decoded): drivers and key=value conninfo strings show it without
        the rest of the URL.
        """
        out = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr) and value.get_secret_value():
                out.append(value.get_secret_value())
        for url in (self.database_url, self.webhooks_database_url):
            if url is not None:
                out.extend(_conninfo_passwords(url.get_secret_value()))
        return out


def _parse_name_list(value: object) -> object:
    """``a,b`` or ``["a", "b"]`` (from the environment) -> ["a", "b"]; lists pass through."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        try:
            return json.loads(text)
        except ValueError as exc:
            raise ValueError(
                f"not a JSON list ({exc}); write names separated by commas, like "
                'twilio,vonage, or a JSON list, like ["twilio", "vonage"]'
            ) from None
    return [name.strip() for name in text.split(",") if name.strip()]


def _conninfo_passwords(url: str) -> list[str]:
    """The password of a libpq URL or key=value string, raw and decoded ([] if none)."""
    from urllib.parse import unquote, urlsplit

    from psycopg.conninfo import conninfo_to_dict

    try:
        password = conninfo_to_dict(url).get("password")
    except Exception:  # noqa: BLE001 - a malformed URL fails later, with a better message
        return []
    if not password:
        return []
    raw = urlsplit(url).password if "://" in url else None
    return sorted({str(password), unquote(str(password)), *([raw] if raw else [])})
