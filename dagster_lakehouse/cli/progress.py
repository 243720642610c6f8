"""A one-line progress report on stderr for long commands (`import`, `gc`, `branch merge`), drawn only on a terminal.

The core reports progress through a plain callback, `progress(what, done, total)` (`total` None when unknown); a
`Progress` is such a callback that redraws one status line in place, at most ten times a second, and erases it when
the command ends, so the command's own output (and a pipe reading it) never sees it.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from types import TracebackType
from typing import TextIO

REDRAW_SECONDS = 0.1
"""Shortest time between two redraws: a callback per deleted file or read batch costs a clock read, not a write."""


def wanted(args: argparse.Namespace, stream: TextIO | None = None) -> bool:
    """Whether to show progress: not with `--quiet`, and only when stderr is a terminal (not a pipe, file or CI log)."""
    stream = sys.stderr if stream is None else stream
    if getattr(args, "quiet", False):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # replaced or closed streams
        return False


class Progress:
    """`label: what done/total (pct%), elapsed` redrawn on one line of `stream`; does nothing when not `enabled`."""

    def __init__(self, label: str, *, enabled: bool, stream: TextIO | None = None) -> None:
        self.label = label
        self.enabled = enabled
        self.stream = sys.stderr if stream is None else stream
        self.started = time.monotonic()
        self._drawn_at: float | None = None

    def __call__(self, what: str, done: int, total: int | None = None) -> None:
        """The core's progress callback: `done` of `total` things (`what`: "rows read", "tables merged", ...)."""
        if not self.enabled:
            return
        finished = total is not None and done >= total
        now = time.monotonic()
        if not finished and self._drawn_at is not None and now - self._drawn_at < REDRAW_SECONDS:
            return
        if total is None:
            count = f"{done:,}" if done else "..."
        else:
            count = f"{done:,}/{total:,} ({min(100, 100 * done // max(total, 1))}%)"
        self.status(f"{what} {count}", now=now)

    def status(self, text: str, *, now: float | None = None) -> None:
        """Show `label: text` and the time since the start, replacing what was shown."""
        if not self.enabled:
            return
        now = time.monotonic() if now is None else now
        line = f"{self.label}: {text}, {now - self.started:.0f} s"
        width = shutil.get_terminal_size((80, 24)).columns - 1  # a wrapped line could not be redrawn in place
        self._write("\r\x1b[K" + line[:width])
        self._drawn_at = now

    def close(self) -> None:
        """Erase the status line, so what the command prints next starts on a clean line."""
        if self._drawn_at is not None:
            self._write("\r\x1b[K")
            self._drawn_at = None

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # the terminal went away: progress is not worth failing the command for
            self.enabled = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def progress(args: argparse.Namespace, label: str) -> Progress:
    """A `Progress` for a command, enabled as `wanted` says."""
    return Progress(label, enabled=wanted(args))
