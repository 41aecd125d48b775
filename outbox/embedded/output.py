"""What the server and its programs printed, trimmed for error messages."""

from __future__ import annotations

from pathlib import Path


def _read_log(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError as exc:
        return f"(could not read {path}: {exc})"


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])
