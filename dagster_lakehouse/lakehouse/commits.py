"""The one way a ref changes: stage new Iceberg metadata, then swap every table pointer and log it in one SQL transaction.

Each operation that produces snapshots (a write, a merge) is a `CatalogCommit`: `prepare` builds the new metadata
of its tables on fresh state (writing metadata files, never touching a pointer), and `run` compare-and-swaps all
pointers and appends the commit-log entry in one catalog transaction, so readers see all of it or none of it and
the log cannot disagree with the data. A lost race (a pointer moved since `prepare`) re-runs `prepare` on the new
state, where each operation decides whether its work still commutes, until it commits or its deadline passes; the
losers of a ref take turns (`CommitTurn`) rather than all preparing again at once and losing again.
A `WriteLease` row tells `gc` the commit is in flight, from before its first file until its pointer transaction.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pyiceberg.catalog import Catalog
from pyiceberg.serializers import FromInputFile, ToOutputFile
from pyiceberg.table import Table, Transaction
from pyiceberg.table.locations import load_location_provider
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.update import (
    AssertCreate,
    TableUpdate,
    _apply_table_update,
    _TableMetadataUpdateContext,
    _update_table_metadata_log,
)
from pyiceberg.utils.datetime import datetime_to_millis
from sqlalchemy import and_, delete, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from dagster_lakehouse.lakehouse import corruption
from dagster_lakehouse.lakehouse import refs as refstore
from dagster_lakehouse.lakehouse.catalog import IcebergTables, RefCatalog
from dagster_lakehouse.lakehouse.errors import CommitTimeout, LakehouseError, WriteLeaseExpired
from dagster_lakehouse.lakehouse.names import split_table_name
from dagster_lakehouse.lakehouse.storage import is_transient
from dagster_lakehouse.lakehouse.storage_full import is_storage_full, storage_full
from dagster_lakehouse.lakehouse.turns import CommitTurn, backoff
from dagster_lakehouse.lakehouse.written_files import WrittenFiles, recording

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine


class LostRace(Exception):
    """A table pointer moved between `prepare` and the pointer swap; the commit is prepared again."""


class LeaseRevoked(LostRace):
    """`gc` checked the catalog while the commit prepared; the commit is prepared again at once, on fresh state."""


class InjectedFault(LakehouseError):
    """A failure injected at a named commit step by `LAKEHOUSE_FAULT` (tests only)."""


def checkpoint(step: str) -> None:
    """A named step of a commit where tests inject a failure: `LAKEHOUSE_FAULT=<step>` raises, `<step>:kill` is SIGKILL."""
    fault = os.environ.get("LAKEHOUSE_FAULT")
    if not fault:
        return
    name, _, how = fault.partition(":")
    if name == step:
        if how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise InjectedFault(f"fault injected at commit step '{step}'")


@dataclass(frozen=True)
class Pointer:
    """A table pointer to move on the ref: from `expected` (None = absent) to `location` (None = drop)."""

    table: str
    expected: str | None
    location: str | None
    metadata: TableMetadata | None = None

    @property
    def snapshot_id(self) -> int | None:
        snapshot = self.metadata.current_snapshot() if self.metadata else None
        return snapshot.snapshot_id if snapshot else None


def table_at(catalog: RefCatalog, name: str, location: str, metadata: TableMetadata) -> Table:
    """The PyIceberg table `name` with `metadata` (read from `location`), bound to `catalog`."""
    return Table(
        identifier=Catalog.identifier_to_tuple(name),
        metadata=metadata,
        metadata_location=location,
        io=catalog._load_file_io(metadata.properties, location),
        catalog=catalog,
    )


def load_at(catalog: RefCatalog, name: str, location: str) -> Table:
    """Table `name` as of metadata file `location` (any ref's), bound to `catalog` for building transactions."""
    io = catalog._load_file_io(location=location)
    with corruption.metadata_file(name, catalog.name, location):
        metadata = FromInputFile.table_metadata(io.new_input(location))
    return table_at(catalog, name, location, metadata)


def apply_updates(base: TableMetadata, updates: tuple[TableUpdate, ...], location: str | None = None) -> TableMetadata:
    """`updates` applied to `base` (read from `location`, which then joins the metadata log), as PyIceberg's
    `update_table_metadata` does, less its closing deep copy of the whole metadata.

    That copy grows with the table's history (every snapshot, every log entry) and took a fifth of a commit at a
    hundred snapshots, once per staged change and once more to stage. Metadata models are frozen and each update
    copies what it changes, so the result may share the rest with `base`.
    """
    context = _TableMetadataUpdateContext()
    metadata = base
    for change in updates:
        metadata = _apply_table_update(change, metadata, context)
    if context.has_changes():
        if location:
            metadata = _update_table_metadata_log(metadata, location, base.last_updated_ms)
        if base.last_updated_ms == metadata.last_updated_ms:
            metadata = metadata.model_copy(update={"last_updated_ms": datetime_to_millis(datetime.now().astimezone())})
    metadata.spec().check_compatible(metadata.schema())
    metadata.sort_order().check_compatible(metadata.schema())
    return metadata


class _Transaction(Transaction):
    """PyIceberg's transaction, deriving its metadata once per staged change instead of on every read.

    `Transaction.table_metadata` re-applies every staged update to a deep copy of the table's metadata each time it
    is read, and a snapshot producer reads it a dozen times: that made replays and writes slow down with history.
    Staged updates only ever grow (`_stage` appends), so their count keys the cached result (`apply_updates`: no copy).
    """

    _derived: tuple[int, TableMetadata] | None = None

    @property
    def table_metadata(self) -> TableMetadata:
        if self._derived is None or self._derived[0] != len(self._updates):
            self._derived = (len(self._updates), apply_updates(self._table.metadata, self._updates))
        return self._derived[1]


def transaction(table: Table) -> Transaction:
    """A transaction on `table` for `stage` (never committed through PyIceberg: `CatalogCommit.run` swaps pointers)."""
    return _Transaction(table)


def stage(catalog: RefCatalog, name: str, current: Table | None, tx: Transaction) -> Pointer:
    """Write the metadata file that `tx` leads to (as `MetastoreCatalog._update_and_stage_table` would, without its deep
    copy: `apply_updates`); the ref's pointer is not moved."""
    if current is None:  # a new table: PyIceberg's own path, which validates the whole new metadata
        staged = catalog._update_and_stage_table(None, Catalog.identifier_to_tuple(name), (AssertCreate(),), tx._updates)
        metadata, location, io = staged.metadata, staged.metadata_location, staged.io
    else:
        for requirement in tx._requirements:
            requirement.validate(current.metadata)
        metadata = apply_updates(current.metadata, tx._updates, current.metadata_location)
        version = catalog._parse_metadata_version(current.metadata_location) + 1
        location = load_location_provider(metadata.location, metadata.properties).new_table_metadata_file_location(version)
        io = catalog._load_file_io(metadata.properties, location)
    # The location is new (a uuid in its name), so no existence check first: it would cost a request per attempt.
    ToOutputFile.table_metadata(metadata, io.new_output(location), overwrite=True)
    return Pointer(name, current.metadata_location if current else None, location, metadata)


def _pointer_row(ref: str, table: str) -> Any:
    namespace, name = split_table_name(table)
    rows = IcebergTables.__table__
    return rows, and_(rows.c.catalog_name == ref, rows.c.table_namespace == namespace, rows.c.table_name == name)


def pointer_of(conn: Connection, ref: str, table: str) -> str | None:
    """Where `ref`'s pointer of `table` is now (None = no such table)."""
    rows, where = _pointer_row(ref, table)
    return conn.execute(select(rows.c.metadata_location).where(where)).scalar()


def swap_pointer(conn: Connection, ref: str, pointer: Pointer) -> None:
    """Compare-and-swap one table pointer of `ref` inside the caller's transaction; `LostRace` if it moved."""
    rows, where = _pointer_row(ref, pointer.table)
    namespace, name = split_table_name(pointer.table)
    if pointer.expected is None:
        try:
            with conn.begin_nested():
                conn.execute(
                    insert(rows).values(
                        catalog_name=ref,
                        table_namespace=namespace,
                        table_name=name,
                        metadata_location=pointer.location,
                        previous_metadata_location=None,
                    )
                )
        except IntegrityError:
            raise LostRace(pointer.table) from None
        return
    if pointer.location is None:
        result = conn.execute(delete(rows).where(where, rows.c.metadata_location == pointer.expected))
    else:
        result = conn.execute(
            update(rows)
            .where(where, rows.c.metadata_location == pointer.expected)
            .values(metadata_location=pointer.location, previous_metadata_location=pointer.expected)
        )
    if result.rowcount != 1:
        raise LostRace(pointer.table)


LEASE_TTL = 3600.0
"""Seconds one commit attempt may take. Past it `gc` stops protecting the commit's files, so the commit fails with
`WriteLeaseExpired` rather than publish files that may be gone; every attempt renews the lease."""

LEASE_LINGER = 60.0
"""Seconds the lease of a commit that failed with a transient storage error (`storage.is_transient`, which its caller
retries) is kept, so the Parquet files the retry reuses stay protected from `gc`."""


class WriteLease:
    """The `lakehouse_write_leases` row of one commit in flight, which `gc.collect_garbage` honours.

    Taken before the commit writes any file, deleted in its pointer transaction (or when it fails for good). `gc` keeps
    every file younger than the oldest live lease and revokes the leases it saw: a revoked attempt prepares again.
    """

    def __init__(self, engine: Engine, what: str):
        self.engine = engine
        self.what = what
        self.id = uuid.uuid4().hex
        self.held = False

    def begin_attempt(self) -> None:
        """Before an attempt reads any state or writes a file: take the lease, or clear a revocation and extend it."""
        now = time.time()
        leases = refstore.write_leases_table
        if not self.held:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(leases).values(
                        id=self.id,
                        what=self.what.replace("\x00", "\\x00"),  # a ref name with NUL is refused later, by name
                        started_at=now,
                        expires_at=now + LEASE_TTL,
                        revoked=False,
                    )
                )
            self.held = True
            return
        with self.engine.begin() as conn:
            result = conn.execute(
                update(leases)
                .where(leases.c.id == self.id, leases.c.expires_at > now)
                .values(revoked=False, expires_at=now + LEASE_TTL)
            )
        if result.rowcount != 1:
            raise self._expired()

    def release(self, conn: Connection) -> None:
        """Delete the lease inside the pointer transaction; `LeaseRevoked` if `gc` revoked it since the attempt began."""
        now = time.time()
        leases = refstore.write_leases_table
        mine = leases.c.id == self.id
        if conn.execute(delete(leases).where(mine, leases.c.expires_at > now, leases.c.revoked.is_(False))).rowcount == 1:
            return
        row = conn.execute(select(leases.c.revoked, leases.c.expires_at).where(mine)).first()
        if row is not None and row.revoked and row.expires_at > now:
            raise LeaseRevoked(f"{self.what}: garbage collection checked the catalog while it prepared")
        raise self._expired()

    def fail(self, error: BaseException) -> None:
        """After an attempt that did not commit: drop the lease, so `gc` may collect what it staged; after a transient
        storage error keep it `LEASE_LINGER` seconds instead, for the caller's retry that reuses the files it wrote."""
        if not self.held:
            return
        leases = refstore.write_leases_table
        mine = leases.c.id == self.id
        try:
            with self.engine.begin() as conn:
                if is_transient(error):
                    conn.execute(update(leases).where(mine).values(expires_at=time.time() + LEASE_LINGER))
                else:
                    conn.execute(delete(leases).where(mine))
                    self.held = False
        except SQLAlchemyError:
            pass  # the catalog is unreachable: the lease expires by itself, and the commit's own error matters more

    def _expired(self) -> WriteLeaseExpired:
        return WriteLeaseExpired(
            f"{self.what}: an attempt took longer than its {LEASE_TTL:g}s write lease, so garbage collection may "
            f"have taken its files; nothing was committed, write again"
        )


class CatalogCommit(ABC):
    """One snapshot-producing change of a ref, committed with its log entry in one catalog transaction."""

    kind: str = "write"

    def __init__(self, engine: Engine, ref: str, *, timeout: float, what: str):
        self.engine = engine
        self.ref = ref
        self.timeout = timeout
        self.what = what
        self.attempts = 0
        self.commit_id: str | None = None
        self.lease = WriteLease(engine, what)
        self.turn = CommitTurn(engine, ref)
        self.written = WrittenFiles()
        """Every file the attempts wrote (`written_files`), deleted at once if the commit fails for lack of space."""
        self._staged: list[Pointer] = []
        self._deadline = 0.0

    @abstractmethod
    def prepare(self) -> list[Pointer]:
        """Build (and stage) the new metadata of every table this commit changes, on the current state.

        A `prepare` that first writes files no lost race invalidates (a write's Parquet files) calls `take_turn` once
        they are written, so it waits for its turn before the work that depends on the ref's state, not after losing.
        """

    def take_turn(self, loaded: dict[str, str | None]) -> None:
        """Wait for the ref's commit turn (PostgreSQL; elsewhere nothing happens), then `LostRace` if a table this
        attempt loaded (`loaded`: name -> metadata location, None = absent) moved meanwhile, so that `prepare` starts
        again on the fresh state, now in turn and reusing the files it wrote."""
        if self.turn.held or not self.turn.take(self._deadline):
            return
        with self.engine.connect() as conn:
            moved = [name for name, location in loaded.items() if pointer_of(conn, self.ref, name) != location]
        if moved:
            raise LostRace(moved[0])

    def check(self, conn: Connection) -> None:  # noqa: B027
        """Re-check inside the pointer transaction whatever `prepare` assumed besides the pointers."""

    def log(self, conn: Connection, pointers: list[Pointer]) -> str | None:
        """Append the commit-log entry (inside the pointer transaction); returns the commit id."""
        return None

    def run(self) -> list[Pointer]:
        """Prepare and swap until it commits; `CommitTimeout` after `timeout` seconds of lost races.

        After a lost race it waits for the ref's `CommitTurn` (unless `prepare` took it already: `take_turn`) and
        prepares again at once, or with no turn to be had after a short `backoff`; a revoked lease prepares again at
        once. The turn is released when the commit ends, however it ends.
        """
        deadline = self._deadline = time.monotonic() + self.timeout
        committed = False
        try:
            while True:
                self.attempts += 1
                try:
                    self.lease.begin_attempt()
                    with recording(self.written):
                        pointers = self._staged = self.prepare()
                    checkpoint("staged")
                    with self.engine.begin() as conn:
                        refstore.lock_ref(conn, self.ref)  # commits of one ref log in the order they take effect
                        self.lease.release(conn)
                        self.check(conn)
                        checkpoint("before-swap")
                        for i, pointer in enumerate(pointers):
                            swap_pointer(conn, self.ref, pointer)
                            if i == 0:
                                checkpoint("swapping")
                        self.commit_id = self.log(conn, pointers)
                        checkpoint("before-commit")
                    committed, self.lease.held = True, False  # the transaction deleted the lease
                    checkpoint("committed")
                    return pointers
                except (LostRace, OperationalError, IntegrityError) as exc:
                    if is_storage_full(exc):
                        raise  # a full disk or database is no race: retrying would only wait for the deadline
                    if time.monotonic() > deadline:
                        raise CommitTimeout(
                            f"{self.what}: gave up after {self.attempts} attempts in {self.timeout:.0f}s "
                            f"of concurrent commits ({type(exc).__name__}: {exc})"
                        ) from exc
                    if not isinstance(exc, LeaseRevoked) and not self.turn.take(deadline):
                        time.sleep(backoff(self.attempts))
        except BaseException as exc:
            full = storage_full(self.what, exc) if isinstance(exc, Exception) and not committed else None
            if full is not None:
                self._discard()
            if not committed:
                self.lease.fail(exc)
            if full is not None and full is not exc:
                raise full from exc
            raise
        finally:
            self.turn.release()

    def _discard(self) -> None:
        """After running out of space: delete every file the attempts wrote, so the space is back at once, unless the
        pointer transaction took effect after all (its COMMIT was what failed) or that cannot be checked."""
        try:
            with self.engine.connect() as conn:
                if any(p.location and pointer_of(conn, self.ref, p.table) == p.location for p in self._staged):
                    return
        except SQLAlchemyError:
            return
        self.written.delete()


def add_log_entry(conn: Connection, ref: str, kind: str, message: str, pointers: list[Pointer], **kwargs: Any) -> str:
    """The commit-log entry of `pointers`: tables changed, their new snapshot ids, and their pointers before and after."""
    snapshots = {p.table: p.snapshot_id for p in pointers}
    changes = {p.table: (p.expected, p.location) for p in pointers}
    return refstore.add_commit(conn, ref, kind, message, list(snapshots), snapshots, changes=changes, **kwargs)
