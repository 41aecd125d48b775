"""An `outbox worker` that also writes down how long its database and provider calls take.

    OUTBOX_BENCH_TRACE=/tmp/spans.jsonl python -m benchmarks.trace   # = outbox worker, traced

A sampling profiler (py-spy) shows where a process burns CPU, but not where it
waits: a worker that is slow because a statement is slow looks idle. This runs
the real ``outbox worker`` command (same settings, same code path) after
wrapping, in this process only, the calls that wait:

* ``workers.store.claim`` and ``workers.store.record`` (the claim and the
  batched result recording), and every other coroutine of ``workers.store``;
* ``workers.gate.Gate.admit`` (the admission check per claimed batch), if present;
  its rate-limit statement, ``workers.store.admit``, is the span ``admit_tokens``;
* ``send`` of the ``noop`` and ``record`` providers;
* the garbage collector's passes (``gc0``, ``gc1``, ``gc2`` by generation;
  ``n`` = objects collected), from ``gc.callbacks``.

Each call becomes a span ``{"name", "start", "end", "n"}`` (``time.time()``;
``n`` = rows claimed / results recorded / rows checked), written as JSON lines
to ``$OUTBOX_BENCH_TRACE`` when the worker exits. Nothing in the product is
changed; a name that does not exist (the worker evolves) is skipped.
"""

from __future__ import annotations

import atexit
import functools
import gc
import inspect
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.harness import percentile

ENV = "OUTBOX_BENCH_TRACE"

_spans: list[tuple[str, float, float, int]] = []


def _size(name: str, args: tuple[Any, ...], kwargs: dict[str, Any], result: Any) -> int:
    if name == "claim" and isinstance(result, list):
        return len(result)
    for value in (kwargs.get("results"), kwargs.get("rows"), *args[1:]):
        if isinstance(value, Sequence) and not isinstance(value, str | bytes):
            return len(value)
    return 0


def _traced(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.time()
        result = await fn(*args, **kwargs)
        _spans.append((name, start, time.time(), _size(name, args, kwargs, result)))
        return result

    return wrapper


_gc_started: list[float] = []


def _gc_span(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _gc_started[:] = [time.time()]
    elif _gc_started:
        _spans.append((f"gc{info['generation']}", _gc_started[0], time.time(), info["collected"]))


def install() -> list[str]:
    """Wrap the waiting calls and watch the collector; the names wrapped."""
    gc.callbacks.append(_gc_span)
    from outbox.providers import testing
    from outbox.workers import store

    wrapped = []
    for name, fn in list(vars(store).items()):
        if inspect.iscoroutinefunction(fn) and name != "connect":
            # store.admit is the rate-limit round trip inside Gate.admit: its own name,
            # so that "admit" stays the whole admission check per batch.
            span = "admit_tokens" if name == "admit" else name
            setattr(store, name, _traced(span, fn))
            wrapped.append(span)
    try:
        from outbox.workers.gate import Gate
    except ImportError:
        Gate = None  # noqa: N806
    if Gate is not None and inspect.iscoroutinefunction(getattr(Gate, "admit", None)):
        Gate.admit = _traced("admit", Gate.admit)  # type: ignore[method-assign]
        wrapped.append("admit")
    for cls in (
        getattr(testing, "NoopProvider", None),
        getattr(testing, "RecordingProvider", None),
    ):
        if cls is not None:
            cls.send = _traced("send", cls.send)  # type: ignore[method-assign]
    wrapped.append("send")
    return [*wrapped, "gc0", "gc1", "gc2"]


def _write(path: Path) -> None:
    with open(path, "w") as f:
        for name, start, end, n in _spans:
            f.write(json.dumps({"name": name, "start": start, "end": end, "n": n}) + "\n")


def read(path: Path) -> list[dict[str, Any]]:
    """The spans a traced worker wrote (empty if it wrote none)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def command() -> list[str]:
    return [sys.executable, "-m", "benchmarks.trace"]


def durations(
    spans: list[dict[str, Any]], wall: float | None = None
) -> dict[str, dict[str, float]]:
    """Per call name: count, median/p95 ms, mean size, total seconds and share of ``wall``."""
    out = {}
    for name in sorted({s["name"] for s in spans}):
        ms = [1000 * (s["end"] - s["start"]) for s in spans if s["name"] == name]
        sizes = [s["n"] for s in spans if s["name"] == name]
        total = sum(ms) / 1000
        out[name] = {
            "calls": len(ms),
            "p50_ms": percentile(ms, 50),
            "p95_ms": percentile(ms, 95),
            "max_ms": max(ms),
            "mean_size": sum(sizes) / len(sizes),
            "total_s": total,
        }
        if wall:
            out[name]["busy_share"] = total / wall
    return out


def main() -> None:
    path = os.environ.get(ENV)
    if not path:
        raise SystemExit(f"set {ENV} to the file the spans go to")
    install()
    atexit.register(_write, Path(path))
    from outbox.cli import main as outbox_main

    sys.argv = ["outbox", "worker", *sys.argv[1:]]
    outbox_main()


if __name__ == "__main__":
    main()


def markdown(calls: dict[str, dict[str, float]], title: str) -> str:
    """A table of :func:`durations`."""
    from benchmarks.harness import md_table, num

    rows = [
        (
            f"`{name}`",
            num(c["calls"]),
            f"{c['mean_size']:.1f}",
            f"{c['p50_ms']:.2f}",
            f"{c['p95_ms']:.2f}",
            f"{c['max_ms']:.1f}",
            f"{c['total_s']:.2f}",
            f"{c['busy_share']:.0%}" if "busy_share" in c else "",
        )
        for name, c in sorted(calls.items(), key=lambda kv: -kv[1]["total_s"])
    ]
    headers = ["call", "calls", "rows per call", "p50 ms", "p95 ms", "max ms", "total s", "busy"]
    return title + "\n\n" + md_table(headers, rows)
