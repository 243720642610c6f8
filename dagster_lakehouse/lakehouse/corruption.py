"""Missing and unreadable table files as `CorruptTableFile`: which table, on which ref, which file, the cause chained.

The readers underneath fail on a damaged file in many ways that name neither the table nor the file (pydantic's
`ValidationError` on truncated JSON, a `SystemError` or `UnicodeDecodeError` from the Avro decoder, Polars' "out of
specification" or PyArrow's "magic bytes not found" on a Parquet footer). So a metadata file is read inside
`metadata_file(...)`, whose failure is that file's, and other work on a table inside `named(...)`: when it fails with
an error that is not ours, transient or the catalog database's, the files the table reaches are read again one by one
(manifest lists, manifests, the footers of the current snapshot's data files; first any the error's text names), and
the first that does not read is named. If every file reads, the original error goes on unchanged: a bug is never
passed off as a damaged file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError
from pyiceberg.io import FileIO
from pyiceberg.manifest import FileFormat, ManifestEntryStatus, ManifestFile, read_manifest_list
from pyiceberg.serializers import FromInputFile
from pyiceberg.table import Table
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.utils.concurrent import ExecutorFactory
from sqlalchemy.exc import SQLAlchemyError

from dagster_lakehouse.lakehouse.errors import CorruptTableFile, LakehouseError, MissingTableFile
from dagster_lakehouse.lakehouse.storage import is_transient

__all__ = ["Unreadable", "error", "first_unreadable", "first_unreadable_at", "metadata_file", "named", "table_of"]

_NOT_A_FILE = (LakehouseError, SQLAlchemyError, NoSuchTableError, NoSuchNamespaceError)
"""Errors that say something other than "a file is damaged": ours, the catalog database's, a table or namespace absent."""


@dataclass(frozen=True)
class Unreadable:
    """A file that did not read: its path, what it is (metadata file, manifest list, manifest, data file), and why."""

    path: str
    kind: str
    cause: BaseException

    @property
    def missing(self) -> bool:
        return isinstance(self.cause, FileNotFoundError)

    @property
    def problem(self) -> str:
        """`is missing`, or `is unreadable (<error type>: <first line>)`."""
        if self.missing:
            return "is missing"
        lines = str(self.cause).strip().splitlines()
        detail = f"{type(self.cause).__name__}: {lines[0][:200]}" if lines else type(self.cause).__name__
        return f"is unreadable ({detail})"


def error(table: str, ref: str, found: Unreadable) -> CorruptTableFile:
    """The named error for `found`, a file of table `table` on `ref` (`MissingTableFile` when it is gone)."""
    kind = MissingTableFile if found.missing else CorruptTableFile
    return kind(table, ref, found.path, found.kind, found.problem)


def _passes(exc: BaseException) -> bool:
    """Whether `exc` goes on as it is: not a damaged file's doing, or retried as a store outage."""
    return isinstance(exc, _NOT_A_FILE) or is_transient(exc)


@contextmanager
def metadata_file(table: str, ref: str, location: str) -> Iterator[None]:
    """Read the metadata file `location` of table `table` on `ref` inside this: a failure is that file's."""
    try:
        yield
    except Exception as exc:
        if _passes(exc):
            raise
        raise error(table, ref, Unreadable(location, "metadata file", exc)) from exc


@contextmanager
def named(table: str, sides: Callable[[], Iterable[tuple[str, Table]]]) -> Iterator[None]:
    """Work on table `table` inside this: a failure that a damaged file of the table explains is raised as the named
    error of the first such file `sides()` (ref, loaded table) reach, chained to the original; any other goes on."""
    try:
        yield
    except Exception as exc:
        if _passes(exc):
            raise
        found = _locate(exc, sides)
        if found is None:
            raise
        ref, unreadable = found
        raise error(table, ref, unreadable) from exc


def _locate(exc: BaseException, sides: Callable[[], Iterable[tuple[str, Table]]]) -> tuple[str, Unreadable] | None:
    try:
        loaded = list(sides())
    except Exception:
        return None  # the table no longer loads either: the original error says more
    hint = _text(exc)
    for ref, table in loaded:
        found = first_unreadable(table.metadata, table.io, hint)
        if found is not None:
            return ref, found
    return None


def _text(exc: BaseException) -> str:
    """The messages of `exc` and the errors it was raised from, where a reader may have named the file."""
    parts, seen, current = [], set(), exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts.append(str(current))
        current = current.__cause__ or current.__context__
    return "\n".join(parts)


def first_unreadable_at(location: str, io: FileIO, hint: str = "", *, data_files: bool = True) -> Unreadable | None:
    """The first file that the metadata file `location` reaches (itself included) that does not read."""
    try:
        metadata = FromInputFile.table_metadata(io.new_input(location))
    except Exception as exc:
        if is_transient(exc):
            raise
        return Unreadable(location, "metadata file", exc)
    return first_unreadable(metadata, io, hint, data_files=data_files)


def first_unreadable(
    metadata: TableMetadata, io: FileIO, hint: str = "", *, data_files: bool = True
) -> Unreadable | None:
    """The first file `metadata` reaches that does not read, None when all read: first the current snapshot's
    manifest list, manifests and (`data_files`) data files' footers, then the other snapshots' manifest lists and
    manifests; within each, files `hint` (an error's text) names go first."""
    current = metadata.current_snapshot()
    others = [
        s.manifest_list for s in metadata.snapshots if current is None or s.manifest_list != current.manifest_list
    ]
    checked: set[str] = set()
    if current is not None:
        live_files: dict[str, None] = {}
        found = _manifests(io, [current.manifest_list], hint, checked, live_files)
        if found is not None or not data_files:
            return found
        found = _first_bad_data_file(io, list(live_files), hint)
        if found is not None:
            return found
    return _manifests(io, list(dict.fromkeys(others)), hint, checked, {})


def _manifests(
    io: FileIO, lists: list[str], hint: str, checked: set[str], live_files: dict[str, None]
) -> Unreadable | None:
    """The first of the manifest lists `lists`, or of the manifests they name (`checked` ones skipped), that does not
    read; the Parquet data files the manifests hold alive are gathered in `live_files`."""
    manifests: dict[str, ManifestFile] = {}
    for path in sorted(lists, key=lambda p: not _named(p, hint)):
        found = _attempt(path, "manifest list", lambda p=path: manifests.update(_read_list(io, p)))
        if found is not None:
            return found
    for manifest in sorted(manifests.values(), key=lambda m: not _named(m.manifest_path, hint)):
        if manifest.manifest_path in checked:
            continue
        checked.add(manifest.manifest_path)
        found = _attempt(manifest.manifest_path, "manifest", lambda m=manifest: _gather(io, m, live_files))
        if found is not None:
            return found
    return None


def _gather(io: FileIO, manifest: ManifestFile, live_files: dict[str, None]) -> None:
    """Read every entry of `manifest`; note the Parquet data files it holds alive."""
    for entry in manifest.fetch_manifest_entry(io, discard_deleted=False):
        if entry.status != ManifestEntryStatus.DELETED and entry.data_file.file_format == FileFormat.PARQUET:
            live_files.setdefault(entry.data_file.file_path)


def _read_list(io: FileIO, path: str) -> dict[str, ManifestFile]:
    """The manifests a manifest list names, read again from the store (PyIceberg caches what it read before)."""
    return {m.manifest_path: m for m in read_manifest_list(io.new_input(path))}


def _first_bad_data_file(io: FileIO, paths: list[str], hint: str) -> Unreadable | None:
    """The first of the data files `paths` whose Parquet footer does not read (several read at once)."""
    ordered = sorted(paths, key=lambda p: not _named(p, hint))
    results = ExecutorFactory.get_or_create().map(lambda p: _attempt(p, "data file", lambda: _footer(io, p)), ordered)
    return next((r for r in results if r is not None), None)


def _footer(io: FileIO, path: str) -> None:
    import pyarrow.parquet as pq

    with io.new_input(path).open() as stream:
        pq.read_metadata(stream)


def _attempt(path: str, kind: str, read: Callable[[], object]) -> Unreadable | None:
    """`read()`; what failed if it did for a reason other than a store outage."""
    try:
        read()
    except Exception as exc:
        if is_transient(exc):
            raise
        return Unreadable(path, kind, exc)
    return None


def _named(path: str, hint: str) -> bool:
    """Whether an error's text names `path` (as a URI, or as the local path or bucket key a reader prints)."""
    return bool(hint) and (path in hint or path.split("://", 1)[-1] in hint)


def table_of(location: str) -> str:
    """`namespace.table` of a file under `<warehouse>/<namespace>/<table>/(data|metadata)/`."""
    parts = location.split("/")
    for i in range(len(parts) - 1, 1, -1):
        if parts[i] in ("metadata", "data"):
            return f"{parts[i - 2]}.{parts[i - 1]}"
    return location
