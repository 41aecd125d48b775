"""Run a worker process: build providers from settings, handle signals, run the loop."""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog

from outbox import metrics
from outbox.db import resolve_url
from outbox.logs import configure
from outbox.migrate import check
from outbox.ops import Pruner, parse_age
from outbox.providers.base import Provider
from outbox.providers.registry import build_providers
from outbox.settings import Settings
from outbox.workers.config import WorkerConfig
from outbox.workers.worker import Worker


async def serve(
    url: str,
    providers: Mapping[str, Provider],
    routes: Mapping[str, Sequence[str]],
    config: WorkerConfig,
    worker_id: str | None = None,
    **extras: Any,
) -> Worker:
    """Run one worker until SIGTERM or SIGINT; return it (with its stats) after a clean stop.

    ``extras`` go to the Worker (``gauges``, ``pruner``).
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # The one call that still runs in a thread (FCM's access-token refresh, a few
    # times an hour) must not wait behind the default pool's few threads.
    loop.set_default_executor(
        ThreadPoolExecutor(max_workers=config.concurrency, thread_name_prefix="outbox-send")
    )
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    worker = Worker(url, providers, routes, config, worker_id=worker_id, **extras)
    try:
        await worker.run(stop)
    finally:
        await worker.router.aclose()
    return worker


def main(settings: Settings, **overrides: object) -> None:
    """The body of ``outbox worker``: everything is read from settings here, once."""
    configure(level=settings.log_level, fmt=settings.log_format, secrets=settings.secret_values())
    config = WorkerConfig.from_settings(settings, **overrides)
    url = resolve_url(settings)
    # Before any loop starts: on a database that was never migrated, or migrated by
    # another release, the worker would only log the same failure forever.
    if check(url) is None:
        structlog.get_logger("outbox.worker").warning(
            "schema.unchecked",
            reason="this role may not read outbox_alembic_version",
            fix="GRANT SELECT ON outbox_alembic_version TO outbox_worker",
        )
    providers = build_providers(settings, connections=config.concurrency)
    routes = {
        channel: list(getattr(settings, f"providers_{channel}")) for channel in config.channels
    }
    extras: dict[str, Any] = {}
    if settings.metrics_port is not None:
        # Before the loop starts, so a scrape never finds the port closed while the worker runs.
        metrics.serve(settings.metrics_port)
        extras["gauges"] = metrics.QueueGauges(settings.metrics_refresh_seconds)
    if settings.prune_older_than:
        extras["pruner"] = Pruner(
            parse_age(settings.prune_older_than),
            batch_size=settings.prune_batch_size,
            interval_seconds=settings.prune_interval_seconds,
        )
    # Everything built so far (modules, SDK clients, settings) lives as long as the
    # process: keep it out of the collector's full passes, which would otherwise walk
    # it every so often and stall a wake-up for milliseconds.
    gc.freeze()
    asyncio.run(serve(url, providers, routes, config, **extras))
