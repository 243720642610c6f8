"""Errors raised by the lakehouse core; each names the table, column or branch at fault."""

from __future__ import annotations

from dataclasses import dataclass


class LakehouseError(Exception):
    """Base class of every error this package raises on purpose."""


class LakehouseIOError(LakehouseError, TypeError):
    """A model or the IO manager was handed or asked for a value it cannot store or produce (`frames`)."""


class InvalidRefName(LakehouseError, ValueError):
    """A branch or tag name breaks git's ref-name rules."""


class RefNotFound(LakehouseError, KeyError):
    """A branch or tag that does not exist was named."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class RefAlreadyExists(LakehouseError, ValueError):
    """A branch or tag with that name exists already."""


class ProtectedBranchError(LakehouseError, PermissionError):
    """A write named `main` (or a tag) without permission."""


class TableNotFound(LakehouseError, KeyError):
    """The table does not exist on the named ref."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class InvalidTableName(LakehouseError, ValueError):
    """A table name is not of the form `namespace.table`."""


class SchemaMismatch(LakehouseError, TypeError):
    """Data written to a table has a column whose type cannot be reconciled with the table's."""


class ColumnNotFound(LakehouseError, KeyError):
    """A requested column does not exist in the table."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class InvalidFilter(LakehouseError, ValueError):
    """A row filter could not be parsed or does not fit the table's schema."""


@dataclass(frozen=True, order=True)
class TableConflict:
    """One table a merge cannot combine, and why, in words a user can act on."""

    table: str
    reason: str


class MergeConflict(LakehouseError):
    """Both sides of a merge changed tables in ways that do not commute; nothing was merged."""

    def __init__(self, source: str, target: str, conflicts: list[TableConflict] | list[str]):
        self.source = source
        self.target = target
        self.conflicts = sorted(
            (c if isinstance(c, TableConflict) else TableConflict(c, "both changed it")) for c in conflicts
        )
        self.tables = [c.table for c in self.conflicts]
        details = "; ".join(f"{c.table}: {c.reason}" for c in self.conflicts)
        super().__init__(
            f"cannot merge branch '{source}' into '{target}': {details}; nothing was merged "
            f"(merge again with on_conflict='source' or 'target' to take one side's version of a table)"
        )


class WriteConflict(LakehouseError):
    """A write lost a race to a concurrent write on the same branch whose changes it would overwrite."""

    def __init__(self, table: str, branch: str, reason: str):
        self.table = table
        self.branch = branch
        self.reason = reason
        super().__init__(f"cannot write table '{table}' on branch '{branch}': {reason}; nothing was written")


class CommitTimeout(LakehouseError, TimeoutError):
    """A commit kept losing races with concurrent writers until its deadline passed."""


class StorageUnavailable(LakehouseError):
    """The object store kept failing with transient errors (refused, timeouts, 5xx, throttling) past the retry bound."""

    def __init__(self, what: str, location: str, seconds: float, attempts: int, error: BaseException):
        self.what = what
        self.location = location
        self.seconds = seconds
        self.attempts = attempts
        detail = (str(error).strip().splitlines() or [""])[0] or type(error).__name__
        super().__init__(
            f"{what}: the object store at {location} is unavailable (gave up after {attempts} attempt{'s' if attempts != 1 else ''} in "
            f"{seconds:.0f}s; last error {type(error).__name__}: {detail}); nothing was committed. Try again when "
            f"it is back, or allow a longer outage with storage_retry_seconds / LAKEHOUSE_STORAGE_RETRY_SECONDS"
        )


class UnsafeGC(LakehouseError, ValueError):
    """`gc(older_than=...)` below `gc.MIN_OLDER_THAN` without `force=True`: writers outside the lakehouse are unprotected."""


class WriteLeaseExpired(LakehouseError):
    """A commit attempt outlived its write lease, so `gc` may have taken its files; nothing was committed."""


class ReadOnlyError(LakehouseError, PermissionError):
    """A PyIceberg catalog or table handed out by `Lakehouse.catalog()`/`table()` was asked to change something."""


class InvalidWrite(LakehouseError, ValueError):
    """A write's arguments do not fit together (mode, `where`, `partition_by`); nothing was written."""


class RowsOutsideFilter(InvalidWrite):
    """A partition-scoped write (`where=`) holds rows its filter does not match; nothing was written."""


class InvalidData(LakehouseError, TypeError):
    """Data to write is not a frame, has no columns, or has columns with empty or duplicate names."""


class CommitNotFound(RefNotFound):
    """A ref spec (`main@<commit>`, `dev~3`) names a commit that is not in the ref's history, or is ambiguous."""


class CommitExpired(RefNotFound):
    """A ref spec names a commit older than the history retention window, whose files `gc` may have deleted."""


class PinnedRefError(ProtectedBranchError):
    """A write, merge, revert or reset named a past commit (`main@<commit>`, `dev~1`): those are read-only."""


class RevertConflict(LakehouseError):
    """Later commits changed what a commit to revert changed, so it cannot be undone file by file; nothing changed."""

    def __init__(self, commit: str, branch: str, conflicts: list[TableConflict]):
        self.commit = commit
        self.branch = branch
        self.conflicts = sorted(conflicts)
        self.tables = [c.table for c in self.conflicts]
        details = "; ".join(f"{c.table}: {c.reason}" for c in self.conflicts)
        super().__init__(
            f"cannot revert commit {commit} on '{branch}': {details}; nothing was reverted "
            f"(revert the later commits first, or reset the branch with reset(branch, to=...))"
        )


class PartitionPathTooLong(InvalidWrite):
    """A write's rows fall in a partition whose folder name (`column=value`) or file path is longer than the store
    holds (a local file system: 255 bytes per name on most; S3: 1024 bytes per key); nothing was written."""

    def __init__(self, table: str, branch: str, column: str, value: str, name: str, size: int, limit: str, store: str):
        self.table = table
        self.branch = branch
        self.column = column
        self.value = value
        self.size = size
        shown_value = value if len(value) <= 60 else f"{value[:60]}... ({len(value.encode())} bytes)"
        shown_name = name if len(name) <= 60 else f"{name[:60]}..."
        shown_column = column if len(column) <= 60 else f"{column[:60]}... ({len(column.encode())} bytes)"
        super().__init__(
            f"cannot write table '{table}' on branch '{branch}': partition column '{shown_column}' = {shown_value!r} needs "
            f"{shown_name!r} ({size} bytes) in the file path, and {store} holds at most {limit} bytes; nothing was "
            f"written. Partition by a shorter value (e.g. a bucket or truncate of '{shown_column}', or another column), "
            f"rename a long column, or keep the table in an object store (S3 keys hold 1024 bytes)"
        )


class QueryOutsideRef(LakehouseError, PermissionError):
    """A SQL query (`lakehouse query`) named something other than a table of its ref: a table function reading a file,
    URL or bucket (`read_parquet(...)`), a path, or a name that is no table there; nothing was read."""

    def __init__(self, ref: str, reason: str, tables: list[str]):
        self.ref = ref
        self.reason = reason
        known = ", ".join(sorted(tables)) or "none"
        super().__init__(
            f"query on '{ref}' refused: {reason}; a query reads only the tables of '{ref}' (namespace.table, "
            f"namespace_table, or table), never files, URLs or buckets. Tables on '{ref}': {known}"
        )


class StorageFull(LakehouseError):
    """The catalog database or the warehouse is out of space (ENOSPC, SQLite 'database or disk is full', PostgreSQL
    53100 DiskFull); not retried as a commit race. Names the operation, what is full and what to do; nothing was
    committed, and the files the failed operation wrote were deleted."""

    def __init__(self, what: str, full: str, error: BaseException):
        self.what = what
        self.full = full
        detail = (str(error).strip().splitlines() or [""])[0] or type(error).__name__
        super().__init__(
            f"{what}: {full} is out of space ({type(error).__name__}: {detail}); nothing was committed and the files "
            f"this operation wrote were deleted. Free space there (delete other files, 'lakehouse gc' / Lakehouse.gc() "
            f"for files no branch or tag reaches, or grow the volume or database), then run it again"
        )


class CorruptTableFile(LakehouseError):
    """A file a table's metadata reaches (metadata JSON, manifest list, manifest, data file) is unreadable; names the
    table, the ref and the file, with the reading library's error chained."""

    def __init__(self, table: str, ref: str, path: str, kind: str, problem: str):
        self.table = table
        self.ref = ref
        self.path = path
        self.kind = kind
        self.problem = problem
        super().__init__(
            f"table '{table}' on '{ref}': its {kind} {path} {problem}; nothing was changed. Restore the file from a "
            f"copy, or move the table off it: reset the branch to a commit before it (reset('<branch>', to='<branch>~1')), "
            f"drop the table, or write it anew with mode='replace'. Other tables and refs are not affected"
        )


class MissingTableFile(CorruptTableFile, FileNotFoundError):
    """A file a table's metadata reaches is gone (deleted by hand, or by `gc` of a process with a shorter window)."""
