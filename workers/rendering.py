"""Rendering a delivery's template without blocking the event loop.

The loop runs the heartbeats, the recorder, the listener and SIGTERM handling: a
template that renders for a second there would stall all of them (and a CPU bomb
would stall them until its deadline). Ordinary templates render in microseconds,
and handing each to a thread would cost more than the render. So a render starts
on the loop with a short deadline (:data:`ON_LOOP_SECONDS`); one that needs longer
(or a template not compiled yet: compiling cannot be interrupted) is rendered
again from the start in a small thread pool, with the full time limit. Rendering
has no side effects, so starting again is safe; the loop is never held longer
than the slice, plus one bounded operation (outbox/template_limits.py).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from outbox.templates import Rendered, TemplateTimeout, TemplateVersion, is_compiled, render

#: How long a render may hold the event loop before it moves to a thread.
ON_LOOP_SECONDS = 0.005
#: Threads for the renders that need longer (they hold the GIL in turns anyway).
RENDER_THREADS = 2


class Renderer:
    """Renders within ``timeout_seconds``, on the loop while that is quick, else in a thread."""

    def __init__(
        self,
        timeout_seconds: float,
        *,
        on_loop_seconds: float = ON_LOOP_SECONDS,
        threads: int = RENDER_THREADS,
    ) -> None:
        self.timeout_seconds = timeout_seconds
        self.on_loop_seconds = min(on_loop_seconds, timeout_seconds)
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="outbox-render")
        # Renders moved off the loop (tests and the worker's stats read it).
        self.off_loop = 0

    async def render(self, template: TemplateVersion, data: Mapping[str, Any]) -> Rendered:
        """``render(template, data)``; TemplateError (TemplateTimeout past the limit)."""
        if is_compiled(template):
            try:
                return render(template, data, timeout=self.on_loop_seconds)
            except TemplateTimeout:
                pass  # not an ordinary template: start again off the loop
        self.off_loop += 1
        job = functools.partial(render, template, data, timeout=self.timeout_seconds)
        return await asyncio.get_running_loop().run_in_executor(self._pool, job)

    def close(self) -> None:
        # A render still running stops at its own deadline; nothing waits for it.
        self._pool.shutdown(wait=False, cancel_futures=True)
