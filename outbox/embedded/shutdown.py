"""Stopping the server by signals: no binaries needed, orphans of a crash included."""

from __future__ import annotations

import contextlib
import logging
import os
import signal

from outbox.embedded.layout import _Layout
from outbox.embedded.process import _children, _postmaster_pid, _processes_naming, _wait_gone

log = logging.getLogger("outbox.embedded")  # one logger for the package, as before the split

STOP_TIMEOUT_SECONDS = 60.0


def _stop_locked(layout: _Layout) -> bool:
    stopped = False
    pid = _postmaster_pid(layout)
    if pid is not None:
        children = _children(pid)
        # What `pg_ctl stop` does, minus needing the binaries (a venv may be gone):
        # SIGINT = fast shutdown, SIGQUIT = immediate, SIGKILL = last resort.
        for sig, wait in (
            (signal.SIGINT, STOP_TIMEOUT_SECONDS),
            (signal.SIGQUIT, 10.0),
            (signal.SIGKILL, 5.0),
        ):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            if _wait_gone([pid], wait):
                break
        # Backends exit when their postmaster does, unless it was SIGKILLed.
        if not _wait_gone(children, 5.0):
            for child in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
            _wait_gone(children, 5.0)
        stopped = True
        log.info("embedded.stopped pgdata=%s pid=%s", layout.pgdata, pid)
    # Postmasters whose postmaster.pid was lost (data dir copied or half deleted).
    orphans = _processes_naming(layout.pgdata)
    for orphan in orphans:
        with contextlib.suppress(ProcessLookupError):
            os.kill(orphan, signal.SIGQUIT)
    if orphans and not _wait_gone(orphans, 10.0):
        for orphan in orphans:
            with contextlib.suppress(ProcessLookupError):
                os.kill(orphan, signal.SIGKILL)
        _wait_gone(orphans, 5.0)
    socket_dir = layout.socket_dir
    if layout.data_dir not in socket_dir.parents:
        # The short /tmp socket dir of a deep data dir: leave /tmp as we found it.
        with contextlib.suppress(OSError):
            socket_dir.rmdir()
    return stopped or bool(orphans)
