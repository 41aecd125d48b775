"""Where a worker process spends its CPU: sample it with py-spy, summarise the stacks.

py-spy (``pip install py-spy``; not a project dependency) attaches to a running
process by pid and samples its Python stacks without slowing it much. Idle
samples (the event loop waiting in epoll) are left out, so the summary shows
what the process does while it is busy:

* ``self``: the functions at the top of the stack (where the CPU actually is);
* ``inclusive``: Outbox's own functions (``outbox/``, ``workers/``) and the
  libraries it calls, with everything they call;
* ``areas``: each sample put in one bucket by the first matching frame from
  the top (psycopg, jinja2, structlog, asyncio, Outbox code, ...).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

# (area, substring of a frame's file) — the first match from the top of the stack wins.
AREAS = (
    ("psycopg (driver: send, parse rows, adapt)", "psycopg"),
    ("jinja2 (template rendering)", "jinja2"),
    ("structlog / logging", "structlog"),
    ("structlog / logging", "logging/"),
    ("json", "json/"),
    ("outbox templates (render, limits)", "outbox/templates"),
    ("outbox providers", "outbox/providers"),
    ("worker decide/gate/schedule", "workers/decide"),
    ("worker decide/gate/schedule", "workers/gate"),
    ("worker decide/gate/schedule", "outbox/schedule"),
    ("worker loop (workers/worker.py, store.py)", "workers/"),
    ("asyncio event loop and tasks", "asyncio/"),
    ("datetime / zoneinfo", "zoneinfo"),
)


# The start-up chain (CLI, process main) is on every stack: leave it out of "inclusive".
_ENTRY_FILES = ("outbox/__main__.py", "outbox/cli/", "workers/process.py")


def py_spy() -> str | None:
    """Path of the py-spy executable (next to this Python, or on PATH), if installed."""
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


class Sampler:
    """py-spy recording one pid until :meth:`stop`."""

    def __init__(self, pid: int, out: Path, rate: int = 200) -> None:
        exe = py_spy()
        if exe is None:
            raise RuntimeError("py-spy is not installed (pip install py-spy)")
        self.out = out
        self.proc = subprocess.Popen(
            [
                exe,
                "record",
                "--pid",
                str(pid),
                "--rate",
                str(rate),
                "--format",
                "raw",
                "--function",
                "--nonblocking",
                "--output",
                str(out),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self) -> str:
        """Stop sampling and write the file; py-spy's own output."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGINT)
        try:
            output, _ = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            output, _ = self.proc.communicate()
        return output.decode(errors="replace")


def _frames(stack: str) -> list[tuple[str, str]]:
    out = []
    for frame in stack.split(";"):
        m = _FRAME.match(frame.strip())
        out.append((m["func"], m["file"]) if m else (frame.strip(), ""))
    return out


def _short(func: str, file: str) -> str:
    for marker in ("site-packages/", "lib/python3"):
        if marker in file:
            file = file.split(marker, 1)[1]
    return f"{func} ({file})" if file else func


def summarise(path: Path, top: int = 12) -> dict[str, Any]:
    """Self time, Outbox-inclusive time and areas from a py-spy raw (collapsed) file."""
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = _frames(stack)
        self_time[_short(*frames[-1])] += n
        seen = set()
        for func, file in frames:
            if (
                any(p in file for p in ("outbox/", "workers/"))
                and "site-packages" not in file
                and not any(p in file for p in _ENTRY_FILES)
            ):
                name = _short(func, file)
                if name not in seen:
                    seen.add(name)
                    inclusive[name] += n
        area = "other"
        for _func, file in reversed(frames):
            match = next((a for a, needle in AREAS if needle in file), None)
            if match is not None:
                area = match
                break
        areas[area] += n

    def share(counter: Counter[str], k: int) -> list[tuple[str, float]]:
        return [(name, n / total) for name, n in counter.most_common(k)] if total else []

    return {
        "samples": total,
        "self": share(self_time, top),
        "inclusive": share(inclusive, top),
        "areas": share(areas, len(areas)),
    }


def markdown(p: dict[str, Any], title: str) -> str:
    """Three small tables: areas, Outbox functions (inclusive), top-of-stack functions."""
    from benchmarks.harness import md_table

    def table(header: str, items: list[tuple[str, float]]) -> str:
        return md_table(
            [header, "share of busy samples"], [(f"`{n}`", f"{share:.1%}") for n, share in items]
        )

    return "\n\n".join(
        [
            title + "; idle time (waiting in epoll) is not sampled.",
            table("area (first match from the top of the stack)", p["areas"]),
            table("Outbox function (inclusive)", p["inclusive"][:10]),
            table("function on top of the stack (self)", p["self"][:10]),
        ]
    )
