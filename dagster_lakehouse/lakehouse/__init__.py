"""The Dagster-free core: a catalog of Iceberg tables with lake-wide branches, merges, tags and GC.

The errors and settings import at once; the names that need PyIceberg, SQLAlchemy or Polars (`Lakehouse`, `Commit`,
...) load on first use (PEP 562), so a program that only needs an error class or the CLI's help stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dagster_lakehouse._lazy import lazy_names
from dagster_lakehouse.lakehouse.config import LakehouseConfig
from dagster_lakehouse.lakehouse.errors import (
    ColumnNotFound,
    CommitExpired,
    CommitNotFound,
    CommitTimeout,
    CorruptTableFile,
    InvalidData,
    InvalidFilter,
    InvalidRefName,
    InvalidTableName,
    InvalidWrite,
    LakehouseError,
    MergeConflict,
    MissingTableFile,
    PinnedRefError,
    ProtectedBranchError,
    ReadOnlyError,
    RefAlreadyExists,
    RefNotFound,
    RevertConflict,
    RowsOutsideFilter,
    SchemaMismatch,
    StorageUnavailable,
    TableConflict,
    TableNotFound,
    UnsafeGC,
    WriteConflict,
    WriteLeaseExpired,
)
from dagster_lakehouse.lakehouse.merge import MergeResult, TableDiff

if TYPE_CHECKING:
    from dagster_lakehouse.lakehouse.core import Lakehouse, WriteResult
    from dagster_lakehouse.lakehouse.refs import Commit, Ref
    from dagster_lakehouse.lakehouse.refspec import RefView
    from dagster_lakehouse.lakehouse.undo import UndoResult

_LAZY = {
    "Lakehouse": "dagster_lakehouse.lakehouse.core",
    "WriteResult": "dagster_lakehouse.lakehouse.core",
    "Commit": "dagster_lakehouse.lakehouse.refs",
    "Ref": "dagster_lakehouse.lakehouse.refs",
    "RefView": "dagster_lakehouse.lakehouse.refspec",
    "UndoResult": "dagster_lakehouse.lakehouse.undo",
}

__all__ = [
    "ColumnNotFound",
    "Commit",
    "CommitExpired",
    "CommitNotFound",
    "CommitTimeout",
    "CorruptTableFile",
    "InvalidData",
    "InvalidFilter",
    "InvalidRefName",
    "InvalidTableName",
    "InvalidWrite",
    "Lakehouse",
    "LakehouseConfig",
    "LakehouseError",
    "MergeConflict",
    "MissingTableFile",
    "TableConflict",
    "WriteConflict",
    "MergeResult",
    "PinnedRefError",
    "ProtectedBranchError",
    "ReadOnlyError",
    "Ref",
    "RefAlreadyExists",
    "RefNotFound",
    "RefView",
    "RevertConflict",
    "RowsOutsideFilter",
    "SchemaMismatch",
    "StorageUnavailable",
    "TableDiff",
    "TableNotFound",
    "UndoResult",
    "UnsafeGC",
    "WriteLeaseExpired",
    "WriteResult",
]


__getattr__, __dir__ = lazy_names(__name__, _LAZY)
