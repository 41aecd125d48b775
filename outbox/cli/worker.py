"""``outbox worker``: run a worker process."""

from __future__ import annotations

from typing import Annotated

import typer

from outbox.settings import Settings


def worker(
    channels: Annotated[
        list[str] | None,
        typer.Option("--channel", "-c", help="Channel to serve (repeat); default all."),
    ] = None,
    concurrency: Annotated[int | None, typer.Option(help="Sends in flight at once.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Deliveries claimed per claim.")] = None,
    lease_seconds: Annotated[
        float | None, typer.Option(help="Lease length; a dead worker's rows return after it.")
    ] = None,
    poll_interval_seconds: Annotated[
        float | None, typer.Option("--poll-interval", help="Fallback poll without NOTIFY.")
    ] = None,
    recover_interval_seconds: Annotated[
        float | None,
        typer.Option("--recover-interval", help="How often expired leases are recovered."),
    ] = None,
    shutdown_grace_seconds: Annotated[
        float | None,
        typer.Option("--shutdown-grace", help="How long in-flight sends may finish on SIGTERM."),
    ] = None,
    backoff_base_seconds: Annotated[
        float | None, typer.Option("--backoff-base", help="First retry delay bound (seconds).")
    ] = None,
    backoff_cap_seconds: Annotated[
        float | None, typer.Option("--backoff-cap", help="Longest retry delay (seconds).")
    ] = None,
) -> None:
    """Claim, send and record deliveries until SIGTERM/SIGINT.

    On a signal, in-flight sends finish and the worker exits 0.

    Every option defaults to its OUTBOX_* setting (e.g. OUTBOX_WORKER_CONCURRENCY).
    Run as many processes, on as many hosts, as you like: they share the queue
    through PostgreSQL and never claim the same row.
    """
    from outbox.workers.process import main

    main(
        Settings(),
        channels=tuple(channels) if channels else None,
        concurrency=concurrency,
        batch_size=batch_size,
        lease_seconds=lease_seconds,
        poll_interval_seconds=poll_interval_seconds,
        recover_interval_seconds=recover_interval_seconds,
        shutdown_grace_seconds=shutdown_grace_seconds,
        backoff_base_seconds=backoff_base_seconds,
        backoff_cap_seconds=backoff_cap_seconds,
    )
