"""Branch-aware garbage collection: mark every file any branch or tag reaches, sweep the rest."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from pyarrow.fs import FileSelector, FileType
from pyiceberg.io import load_file_io
from pyiceberg.serializers import FromInputFile

if TYPE_CHECKING:
    from dagster_lakehouse.lakehouse.core import Lakehouse


def _key(uri: str) -> str:
    """Normalise `s3://b/k`, `file:///p` and `/p` to one comparable form."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return "file://" + parsed.path
    return f"{parsed.scheme}://{parsed.netloc}{parsed.path}"


def reachable_files(properties: dict[str, str], metadata_locations: Iterable[str]) -> set[str]:
    """Every metadata, manifest list, manifest, data and delete file that the given metadata files reach.

    Not `Table.inspect.all_files()` per ref: branches share most manifests, and walking them once across all
    refs (the `seen_manifests` set) keeps the mark phase proportional to distinct manifests, not refs x manifests.
    """
    reached: set[str] = set()
    seen_manifests: set[str] = set()
    for location in set(metadata_locations):
        io = load_file_io(properties, location)
        reached.add(_key(location))
        metadata = FromInputFile.table_metadata(io.new_input(location))
        reached.update(_key(entry.metadata_file) for entry in metadata.metadata_log)
        reached.update(_key(stat.statistics_path) for stat in getattr(metadata, "statistics", []) or [])
        for snapshot in metadata.snapshots:
            reached.add(_key(snapshot.manifest_list))
            for manifest in snapshot.manifests(io):
                if manifest.manifest_path in seen_manifests:
                    continue
                seen_manifests.add(manifest.manifest_path)
                reached.add(_key(manifest.manifest_path))
                for entry in manifest.fetch_manifest_entry(io, discard_deleted=False):
                    reached.add(_key(entry.data_file.file_path))
    return reached


_TABLE_FILE = re.compile(r"^[^/]+/[^/]+/(data|metadata)/")
"""Relative paths the lakehouse writes: `<namespace>/<table>/data|metadata/...`; nothing else is ever swept."""


def list_warehouse(properties: dict[str, str], warehouse: str) -> list[tuple[str, float]]:
    """All files under the warehouse with their modification times (seconds since the epoch)."""
    io = load_file_io(properties, warehouse)
    parsed = urlparse(warehouse)
    scheme = parsed.scheme or "file"
    fs = io.fs_by_scheme(scheme, parsed.netloc)  # type: ignore[attr-defined]
    root = parsed.path if scheme == "file" else f"{parsed.netloc}{parsed.path}"
    infos = fs.get_file_info(FileSelector(root, recursive=True, allow_not_found=True))
    files = []
    for info in infos:
        if info.type != FileType.File:
            continue
        uri = f"file://{info.path}" if scheme == "file" else f"{scheme}://{info.path}"
        mtime = info.mtime.timestamp() if info.mtime is not None else 0.0
        files.append((uri, mtime))
    return files


def collect_garbage(
    lakehouse: Lakehouse, rows: Sequence[Any], *, older_than: timedelta, dry_run: bool
) -> list[str]:
    """Delete unreachable warehouse files older than `older_than`; returns what was (or would be) deleted."""
    properties = lakehouse.config.properties
    locations = [loc for row in rows for loc in (row[1], row[2]) if loc]
    reached = reachable_files(properties, locations)
    cutoff = time.time() - older_than.total_seconds()
    root = _key(lakehouse.config.warehouse).rstrip("/") + "/"
    garbage = [
        uri
        for uri, mtime in list_warehouse(properties, lakehouse.config.warehouse)
        if _key(uri) not in reached and mtime <= cutoff and _TABLE_FILE.match(_key(uri).removeprefix(root))
    ]
    if not dry_run:
        io = load_file_io(properties, lakehouse.config.warehouse)
        for uri in garbage:
            io.delete(uri)
    return sorted(garbage)
