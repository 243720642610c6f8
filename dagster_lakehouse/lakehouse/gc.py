"""Branch-aware garbage collection: mark every file any branch or tag reaches, sweep the rest.

Safe beside concurrent commits whatever `older_than` is: before each delete batch, `read_catalog(exclusive=True)`
reads every ref's pointers and the live write leases (`commits.WriteLease`) in one transaction that no commit
interleaves with, and revokes those leases. Files written since the oldest live lease started are kept; a commit
that read the catalog before that moment cannot commit without preparing again on the state after it, and a file no
ref reached then cannot be reached again. So a deleted file is referenced by no committed metadata file of any ref,
and no commit in flight will reference it. `older_than` protects only writers that take no lease (other engines).

A ref "reaches" a file also through its history: every table pointer before and after each commit of its log younger
than the history window (`LakehouseConfig.history_retention`, 7 days by default) is walked too, so `main@<commit>`
reads, reverts and resets to those commits keep working; they refuse older commits (`CommitExpired`), and a revert or
reset that raced this collection prepares again (its lease was revoked) and meets that refusal.

A file a ref reaches that is missing or does not read stops nothing: it is reported (`gc_report.GCProblem`), and when
it hides what its table reaches (a metadata file, manifest list or manifest), every file of that table is kept.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlparse

from pyarrow.fs import FileSelector, FileType
from pyiceberg.io import load_file_io
from pyiceberg.serializers import FromInputFile
from sqlalchemy import delete, func, select, text, update

from dagster_lakehouse.lakehouse import corruption
from dagster_lakehouse.lakehouse import refs as refstore
from dagster_lakehouse.lakehouse.catalog import IcebergTables
from dagster_lakehouse.lakehouse.errors import LakehouseError
from dagster_lakehouse.lakehouse.gc_grace import MIN_OLDER_THAN, check_grace
from dagster_lakehouse.lakehouse.gc_report import GCProblem, GCResult
from dagster_lakehouse.lakehouse.locations import canonical, file_uri, is_local, legacy_key, native_path
from dagster_lakehouse.lakehouse.progress import Progress
from dagster_lakehouse.lakehouse.storage import is_transient, retrying

__all__ = [
    "BATCH_SIZE",
    "CLOCK_SKEW",
    "MIN_OLDER_THAN",
    "CatalogView",
    "Marker",
    "check_grace",
    "collect_garbage",
    "list_warehouse",
    "reachable_files",
    "read_catalog",
]

T = TypeVar("T")

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

    from dagster_lakehouse.lakehouse.core import Lakehouse

CLOCK_SKEW = timedelta(minutes=5)
"""How far the clocks of writers, `gc` and the object store may disagree, modification-time granularity included:
files up to this much older than the oldest live write lease are kept too, and a lease counts this long past expiry."""

BATCH_SIZE = 1000
"""Files deleted per batch; before each batch the catalog is read again, and walked where its pointers moved."""


def _key(uri: str) -> str:
    """Normalise `s3://b/k`, `file:///p` and `/p` to one comparable form (`locations.canonical`)."""
    return canonical(uri)


class Marker:
    """The files that the metadata files walked so far reach; walking more of them reads only what is new.

    Not `Table.inspect.all_files()` per ref: branches share most snapshots and manifests, and reading each manifest
    list and manifest once across all refs keeps the mark phase proportional to distinct files, not refs x files.
    """

    def __init__(self, properties: dict[str, str]):
        self.properties = properties
        self.reached: set[str] = set()
        self.problems: dict[str, GCProblem] = {}
        """Files a ref reaches that did not read, by path (`gc_report`)."""
        self._kept_tables: set[str] = set()
        self._walked: set[str] = set()
        self._seen: set[str] = set()

    def __contains__(self, uri: str) -> bool:
        key = _key(uri)
        if key in self.reached or legacy_key(key) in self.reached:  # legacy: a name older writers kept escaped
            return True
        return any(key.startswith(folder) for folder in self._kept_tables)

    def keep(self, uris: Iterable[str]) -> None:
        """Mark files without reading them."""
        self.reached.update(_key(uri) for uri in uris)

    def walk(
        self,
        metadata_locations: Iterable[str],
        owner: dict[str, str] | None = None,
        *,
        missing_ok: bool = False,
        on_walked: Callable[[], None] | None = None,
    ) -> None:
        """Mark every metadata, manifest list, manifest, data and delete file these metadata files reach.

        A file they reach that is missing (unless `missing_ok`: history a shorter window collected) or does not read
        is recorded in `problems` with the ref in `owner` pointing at it, and every file of its table is kept: what
        the file reaches is unknown. `on_walked` is called after each metadata file.
        """
        for location in sorted(set(metadata_locations) - self._walked):
            try:
                self._walk_one(location)
            except Exception as exc:
                if is_transient(exc):
                    raise
                if not (missing_ok and isinstance(exc, FileNotFoundError)):  # else: gone on purpose
                    self._damaged(location, (owner or {}).get(location, "?"), exc)
            self._walked.add(location)
            if on_walked is not None:
                on_walked()

    def _damaged(self, location: str, ref: str, exc: Exception) -> None:
        """Record the file of metadata file `location` (of `ref`) that did not read, and keep its table's files."""
        io = load_file_io(self.properties, location)
        found = corruption.first_unreadable_at(location, io, str(exc), data_files=False)
        found = found or corruption.Unreadable(location, "metadata file", exc)
        self.reached.add(_key(location))
        self._kept_tables.add(_key(location).rsplit("/metadata/", 1)[0] + "/")
        known = self.problems.get(found.path)
        refs = tuple(sorted({ref, *(known.refs if known else ())}))
        self.problems[found.path] = GCProblem(
            corruption.table_of(location), refs, found.path, found.kind, found.problem, kept_table=True
        )

    def missing_data_files(self, listed: Iterable[str], roots: dict[str, str], root: str) -> None:
        """Record the data files under the warehouse `root` that a table some ref points at (`roots`: metadata file ->
        ref) reaches, but that the listing `listed` lacks."""
        present = {_key(uri) for uri in listed}
        refs_of: dict[str, set[str]] = {}
        for location, ref in roots.items():
            refs_of.setdefault(_key(location).rsplit("/metadata/", 1)[0] + "/", set()).add(ref)
        for key in sorted(self.reached - present):
            folder, data, _ = key.rpartition("/data/")
            refs = refs_of.get(folder + "/") if data else None
            if refs and key.startswith(root) and key not in self.problems:
                table = corruption.table_of(key)
                self.problems[key] = GCProblem(table, tuple(sorted(refs)), key, "data file", "is missing", kept_table=False)

    def _walk_one(self, location: str) -> None:
        io = load_file_io(self.properties, location)
        metadata = FromInputFile.table_metadata(io.new_input(location))
        self.reached.add(_key(location))
        self.reached.update(_key(entry.metadata_file) for entry in metadata.metadata_log)
        self.reached.update(_key(stat.statistics_path) for stat in getattr(metadata, "statistics", []) or [])
        for snapshot in metadata.snapshots:
            self.reached.add(_key(snapshot.manifest_list))
            if snapshot.manifest_list in self._seen:
                continue
            for manifest in snapshot.manifests(io):
                if manifest.manifest_path in self._seen:
                    continue
                self.reached.add(_key(manifest.manifest_path))
                for entry in manifest.fetch_manifest_entry(io, discard_deleted=False):
                    self.reached.add(_key(entry.data_file.file_path))
                self._seen.add(manifest.manifest_path)
            self._seen.add(snapshot.manifest_list)

    def mark(self, view: CatalogView, progress: Progress | None = None) -> None:
        """Mark what `view` protects: everything its refs reach, and the merge-base metadata files; `progress` hears
        of each metadata file read."""
        on_walked = None
        if progress is not None:
            total, done = len((set(view.roots) | set(view.history)) - self._walked), 0
            progress("reading metadata files", 0, total)

            def on_walked() -> None:
                nonlocal done
                done += 1
                progress("reading metadata files", done, total)

        self.walk(view.roots, view.roots, on_walked=on_walked)
        self.walk(view.history, view.history, missing_ok=True, on_walked=on_walked)
        self.keep(view.pinned)


def reachable_files(properties: dict[str, str], metadata_locations: Iterable[str]) -> set[str]:
    """Every metadata, manifest list, manifest, data and delete file that the given metadata files reach."""
    marker = Marker(properties)
    marker.walk(metadata_locations)
    return marker.reached


_TABLE_FILE = re.compile(r"^[^/]+/[^/]+/(data|metadata)/")
"""Relative paths the lakehouse writes: `<namespace>/<table>/data|metadata/...`; nothing else is ever swept."""


def list_warehouse(properties: dict[str, str], warehouse: str) -> list[tuple[str, float]]:
    """All files under the warehouse with their modification times (seconds since the epoch)."""
    io = load_file_io(properties, warehouse)
    parsed, local = urlparse(warehouse), is_local(warehouse)
    scheme = "file" if local else parsed.scheme
    fs = io.fs_by_scheme(scheme, parsed.netloc)  # type: ignore[attr-defined]
    root = native_path(warehouse) if local else f"{parsed.netloc}{parsed.path}"
    infos = fs.get_file_info(FileSelector(root, recursive=True, allow_not_found=True))
    files = []
    for info in infos:
        if info.type != FileType.File:
            continue
        uri = file_uri(info.path) if local else f"{scheme}://{info.path}"
        mtime = info.mtime.timestamp() if info.mtime is not None else 0.0
        files.append((uri, mtime))
    return files


@dataclass(frozen=True)
class CatalogView:
    """What the catalog protects at one instant: the metadata files refs point at, and the live write leases."""

    roots: dict[str, str]
    """Current and previous metadata file of every table of every ref -> a ref pointing at it."""
    pinned: frozenset[str]
    """Metadata files of merge bases and branch points: kept (merges read their schema), not walked."""
    oldest_lease: float | None
    """When the oldest live write lease started (seconds since the epoch), None if no commit is in flight."""
    history: dict[str, str] = field(default_factory=dict)
    """Metadata files refs pointed at, before or after a commit of their log inside the history window -> the ref:
    walked like `roots` (so `main@<commit>` reads and reverts keep working), but a missing one is not an error."""

    def keeps(self, mtime: float) -> bool:
        """Whether a file modified at `mtime` may belong to a commit in flight (written after its lease started)."""
        return self.oldest_lease is not None and mtime > self.oldest_lease - CLOCK_SKEW.total_seconds()


def read_catalog(engine: Engine, *, exclusive: bool, history_since: float | None = None) -> CatalogView:
    """Every ref's pointers, those its commits since `history_since` (seconds since the epoch) moved, and the live
    write leases.

    `exclusive` (before deleting): in one transaction no commit interleaves with, also revoking every live lease (a
    commit that read the catalog before cannot commit without reading it again) and dropping expired ones.
    """
    leases = refstore.write_leases_table
    with engine.begin() as conn:
        if exclusive:
            _exclude_commits(conn)
        now = time.time()
        live = leases.c.expires_at > now - CLOCK_SKEW.total_seconds()
        if exclusive:
            conn.execute(update(leases).where(live).values(revoked=True))
            conn.execute(delete(leases).where(~live))
        oldest = conn.execute(select(func.min(leases.c.started_at)).where(live)).scalar()
        rows = conn.execute(
            select(IcebergTables.catalog_name, IcebergTables.metadata_location, IcebergTables.previous_metadata_location)
        ).all()
        bases = [*conn.execute(select(refstore.merge_bases_table.c.base)).scalars()]
        bases += conn.execute(select(refstore.refs_table.c.base)).scalars()
        logged = []
        if history_since is not None:
            commits, refs = refstore.commits_table, refstore.refs_table
            logged = conn.execute(
                select(commits.c.ref, commits.c.changes).where(
                    commits.c.created_at >= history_since, commits.c.ref.in_(select(refs.c.name)), commits.c.changes.is_not(None)
                )
            ).all()
    roots: dict[str, str] = {}
    for ref, current, previous in rows:
        for location in (current, previous):
            if location:
                roots.setdefault(location, ref)
    pinned = frozenset(location for base in bases for location in json.loads(base or "{}").values() if location)
    history: dict[str, str] = {}
    for ref, changes in logged:
        for pair in json.loads(changes).values():
            for location in pair:
                if location and location not in roots:
                    history.setdefault(location, ref)
    return CatalogView(roots=roots, pinned=pinned, oldest_lease=oldest, history=history)


def _exclude_commits(conn: Connection) -> None:
    """Hold off every commit (they delete their lease in their pointer transaction) until this transaction ends."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        conn.execute(text(f"LOCK TABLE {refstore.write_leases_table.name} IN EXCLUSIVE MODE"))
    elif dialect != "sqlite":  # SQLite: the transaction's first statement (an UPDATE) takes the database's write lock
        raise LakehouseError(f"gc needs a PostgreSQL or SQLite catalog to exclude commits while it checks, not {dialect}")


def collect_garbage(
    lakehouse: Lakehouse,
    *,
    older_than: timedelta,
    dry_run: bool,
    keep_history: timedelta = timedelta(0),
    progress: Progress | None = None,
) -> GCResult:
    """Delete warehouse table files older than `older_than` that no ref reaches, now or at a commit younger than
    `keep_history`; returns what was (or would be) deleted, and the damaged or missing files met (`gc_report`).

    Marks from one read of the catalog, then, before each batch of `BATCH_SIZE` deletions, reads it again exclusively
    (`read_catalog`), walks only the metadata files that are new since, and drops from the batch what they reach and
    what commits in flight may have written. `progress` hears of the metadata files read, the listing of the
    warehouse and the files deleted (`progress.Progress`).
    """
    report = progress if progress is not None else _ignore
    properties, warehouse, engine = lakehouse.config.properties, lakehouse.config.warehouse, lakehouse.engine

    def retried(step: str, fn: Callable[[], T]) -> T:  # transient object-store errors: retried, then StorageUnavailable
        return retrying(f"garbage collection ({step})", fn, lakehouse.config.storage_retry_seconds, warehouse)

    marker = Marker(properties)
    history_since = time.time() - keep_history.total_seconds()
    view = read_catalog(engine, exclusive=False, history_since=history_since)
    retried("marking", lambda: marker.mark(view, report))
    report("listing the warehouse", 0, None)
    cutoff = time.time() - older_than.total_seconds()
    root = _key(warehouse).rstrip("/") + "/"
    listing = retried("listing", lambda: list_warehouse(properties, warehouse))
    marker.missing_data_files((uri for uri, _ in listing), view.roots, root)
    candidates = [
        (uri, mtime)
        for uri, mtime in listing
        if mtime <= cutoff and _TABLE_FILE.match(_key(uri).removeprefix(root)) and uri not in marker and not view.keeps(mtime)
    ]
    if dry_run:
        return GCResult([uri for uri, _ in candidates], list(marker.problems.values()))
    io = load_file_io(properties, warehouse)
    deleted: list[str] = []
    report("deleting files", 0, len(candidates))
    for start in range(0, len(candidates), BATCH_SIZE):
        view = read_catalog(engine, exclusive=True, history_since=history_since)
        retried("marking", lambda: marker.mark(view))  # noqa: B023 - called at once, in this iteration
        for done, (uri, mtime) in enumerate(candidates[start : start + BATCH_SIZE], start + 1):
            kept = uri in marker or view.keeps(mtime)
            if not kept and retried(f"deleting {uri}", lambda: _delete(io, uri)):  # noqa: B023 - called at once
                deleted.append(uri)
            report("deleting files", done, len(candidates))
    return GCResult(deleted, list(marker.problems.values()))


def _ignore(what: str, done: int, total: int | None) -> None:
    """The progress callback of a caller that passed none."""


def _delete(io: Any, uri: str) -> bool:
    """Delete `uri`; False when it is already gone (another collection took it)."""
    try:
        io.delete(uri)
    except FileNotFoundError:
        return False
    return True
