"""Process-wide cache of immutable Iceberg metadata: parsed metadata files, manifest lists and manifest entries.

Iceberg never rewrites these files in place (every commit writes new ones under new, UUID-bearing names), so what
was parsed once from a location stays true for the life of the process; only the catalog pointer (which metadata
file is current) changes, and reads still ask the catalog for it every time. The cache is one LRU bounded by
entries and by an estimate of the memory the parsed objects take (`LAKEHOUSE_METADATA_CACHE_MB`, default 256 MB;
0 turns caching off).
"""

from __future__ import annotations

import io
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pyiceberg.io import FileIO, InputFile, InputStream
from pyiceberg.manifest import ManifestEntry, ManifestEntryStatus, ManifestFile, read_manifest_list
from pyiceberg.serializers import Compressor, FromByteStream
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.snapshots import Snapshot

__all__ = ["MetadataCache", "cache", "manifest_entries", "manifests", "table_metadata"]

T = TypeVar("T")

CACHE_MB_ENV = "LAKEHOUSE_METADATA_CACHE_MB"
DEFAULT_CACHE_MB = 256
MAX_ENTRIES = 4096
EXPANSION = 8
"""Parsed metadata takes about 5-7x its file's bytes in Python objects (measured with tracemalloc); weigh it at 8x."""


@dataclass
class CacheStats:
    """What the cache did since it was created or last cleared; `loads` counts files read, by kind."""

    hits: int = 0
    misses: int = 0
    entries: int = 0
    weight: int = 0
    loads: dict[str, int] | None = None


class MetadataCache:
    """A thread-safe LRU of (kind, location) -> parsed value, bounded by `max_entries` and `max_bytes` of weight."""

    def __init__(self, max_bytes: int, max_entries: int = MAX_ENTRIES):
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self._items: OrderedDict[tuple[str, ...], tuple[Any, int]] = OrderedDict()
        self._weight = 0
        self._lock = threading.Lock()
        self._stats = CacheStats(loads={})

    def get(self, key: tuple[str, ...], load: Callable[[], tuple[T, int]]) -> T:
        """The value cached under `key`, else `load()` -> (value, weight in bytes), kept if it fits the bounds."""
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
                self._stats.hits += 1
                return found[0]
            self._stats.misses += 1
        value, weight = load()  # outside the lock: two threads may load the same file once each, never block
        with self._lock:
            assert self._stats.loads is not None
            self._stats.loads[key[0]] = self._stats.loads.get(key[0], 0) + 1
            if weight > self.max_bytes or key in self._items:
                return value
            self._items[key] = (value, weight)
            self._weight += weight
            while self._weight > self.max_bytes or len(self._items) > self.max_entries:
                _, (_, dropped) = self._items.popitem(last=False)
                self._weight -= dropped
        return value

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(
                self._stats.hits, self._stats.misses, len(self._items), self._weight, dict(self._stats.loads or {})
            )

    def clear(self) -> None:
        """Forget every cached value and reset the counters (tests; a process short of memory)."""
        with self._lock:
            self._items.clear()
            self._weight = 0
            self._stats = CacheStats(loads={})


def _max_bytes() -> int:
    raw = os.environ.get(CACHE_MB_ENV, "").strip()
    try:
        megabytes = float(raw) if raw else DEFAULT_CACHE_MB
    except ValueError:
        raise ValueError(f"{CACHE_MB_ENV} must be a number of megabytes, not {raw!r}") from None
    return max(0, int(megabytes * 1_000_000))


cache = MetadataCache(_max_bytes())
"""The process's cache, shared by every `Lakehouse` (keys are full file locations, so stores never mix)."""


class _BytesInput(InputFile):
    """A file already read into memory, for PyIceberg's readers that take an `InputFile`."""

    def __init__(self, location: str, data: bytes):
        super().__init__(location)
        self._data = data

    def __len__(self) -> int:
        return len(self._data)

    def exists(self) -> bool:
        return True

    def open(self, seekable: bool = True) -> InputStream:
        return io.BytesIO(self._data)


def _read(file_io: FileIO, location: str) -> bytes:
    with file_io.new_input(location).open() as stream:
        return stream.read()


def table_metadata(file_io: FileIO, location: str) -> TableMetadata:
    """The parsed metadata file at `location` (read once per process while it stays cached)."""

    def load() -> tuple[TableMetadata, int]:
        raw = _read(file_io, location)
        compression = Compressor.get_compressor(location=location)
        return FromByteStream.table_metadata(io.BytesIO(raw), compression=compression), len(raw) * EXPANSION

    return cache.get(("metadata", location), load)


def manifests(file_io: FileIO, snapshot: Snapshot) -> tuple[ManifestFile, ...]:
    """The manifests listed by `snapshot`'s manifest list."""
    location = snapshot.manifest_list

    def load() -> tuple[tuple[ManifestFile, ...], int]:
        raw = _read(file_io, location)
        return tuple(read_manifest_list(_BytesInput(location, raw))), len(raw) * EXPANSION

    return cache.get(("manifest-list", location), load)


def manifest_entries(file_io: FileIO, manifest: ManifestFile) -> tuple[ManifestEntry, ...]:
    """The live (not deleted) entries of `manifest`, with the snapshot id and sequence numbers they inherit from it.

    Keyed by the manifest's path and the values it passes on, as a manifest reused by a later commit may be listed
    with other sequence numbers.
    """
    key = (
        "manifest",
        manifest.manifest_path,
        str(manifest.added_snapshot_id),
        str(manifest.sequence_number),
        str(manifest.min_sequence_number),
    )

    def load() -> tuple[tuple[ManifestEntry, ...], int]:
        raw = _read(file_io, manifest.manifest_path)
        reader = _BytesIO(file_io, manifest.manifest_path, raw)
        entries = manifest.fetch_manifest_entry(reader, discard_deleted=True)
        live = tuple(e for e in entries if e.status != ManifestEntryStatus.DELETED)
        return live, len(raw) * EXPANSION

    return cache.get(key, load)


class _BytesIO(FileIO):
    """A FileIO that serves one already-read file (so `fetch_manifest_entry` parses bytes instead of fetching)."""

    def __init__(self, parent: FileIO, location: str, data: bytes):
        super().__init__(parent.properties)
        self._location, self._data, self._parent = location, data, parent

    def new_input(self, location: str) -> InputFile:
        if location == self._location:
            return _BytesInput(location, self._data)
        return self._parent.new_input(location)

    def new_output(self, location: str) -> Any:
        raise NotImplementedError(f"read-only FileIO asked to write {location}")

    def delete(self, location: str | Any) -> None:
        raise NotImplementedError(f"read-only FileIO asked to delete {location}")
