"""The files one commit writes, recorded as it writes them, so a commit that fails for good can delete them at once.

A commit (`commits.CatalogCommit.run`) opens a `WrittenFiles` log for its attempts; every FileIO a ref catalog hands
out meanwhile (`tracked`) is a copy whose `new_output` notes the path in that log first, in whatever thread PyIceberg
writes from (its writers and manifest writers run on a thread pool). Every path so noted is a new file of this commit:
data files, manifests and metadata files are named with fresh uuids, so none can be a file another commit references.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from pyiceberg.io import FileIO, OutputFile

__all__ = ["WrittenFiles", "record", "recording", "tracked"]


class WrittenFiles:
    """Paths written by one commit, each with the FileIO that wrote it (to delete it with)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._paths: dict[str, FileIO | None] = {}

    def add(self, path: str, io: FileIO | None = None) -> None:
        """Note `path` (written through `io`, when known)."""
        with self._lock:
            if self._paths.get(path) is None:
                self._paths[path] = io

    @property
    def paths(self) -> list[str]:
        with self._lock:
            return list(self._paths)

    def delete(self, fallback: FileIO | None = None) -> list[str]:
        """Delete every noted file that exists (best effort); returns the paths deleted or already gone."""
        with self._lock:
            items = list(self._paths.items())
            self._paths.clear()
        done = []
        for path, io in items:
            io = io or fallback
            if io is None:
                continue
            try:
                io.delete(path)
            except FileNotFoundError:
                pass
            except Exception:  # noqa: BLE001 - tidying up after a failure already being raised
                continue
            done.append(path)
        return done


_active: ContextVar[WrittenFiles | None] = ContextVar("lakehouse_written_files", default=None)


@contextmanager
def recording(log: WrittenFiles) -> Iterator[WrittenFiles]:
    """Note in `log` every file written through a `tracked` FileIO made in this context (and contexts copied from it)."""
    token = _active.set(log)
    try:
        yield log
    finally:
        _active.reset(token)


def record(paths: Iterable[str], io: FileIO | None = None) -> None:
    """Note files written other than through a FileIO (Polars' own sink) in the active log, if any."""
    log = _active.get()
    if log is not None:
        for path in paths:
            log.add(path, io)


def tracked(io: FileIO) -> FileIO:
    """`io` itself outside a commit; inside one, a copy of it whose outputs are noted in the commit's log."""
    log = _active.get()
    if log is None:
        return io
    clone = copy.copy(io)
    original = io.new_output

    def new_output(location: str) -> OutputFile:
        log.add(location, clone)
        return original(location)

    clone.new_output = new_output  # type: ignore[method-assign]
    return clone
