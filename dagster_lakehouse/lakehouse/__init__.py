"""The Dagster-free core: a catalog of Iceberg tables with lake-wide branches, merges, tags and GC."""

from dagster_lakehouse.lakehouse.config import LakehouseConfig
from dagster_lakehouse.lakehouse.core import Lakehouse, WriteResult
from dagster_lakehouse.lakehouse.errors import (
    ColumnNotFound,
    CommitTimeout,
    InvalidFilter,
    InvalidRefName,
    InvalidTableName,
    LakehouseError,
    MergeConflict,
    ProtectedBranchError,
    RefAlreadyExists,
    RefNotFound,
    SchemaMismatch,
    TableConflict,
    TableNotFound,
    WriteConflict,
)
from dagster_lakehouse.lakehouse.merge import MergeResult, TableDiff
from dagster_lakehouse.lakehouse.refs import Commit, Ref

__all__ = [
    "ColumnNotFound",
    "Commit",
    "CommitTimeout",
    "InvalidFilter",
    "InvalidRefName",
    "InvalidTableName",
    "Lakehouse",
    "LakehouseConfig",
    "LakehouseError",
    "MergeConflict",
    "TableConflict",
    "WriteConflict",
    "MergeResult",
    "ProtectedBranchError",
    "Ref",
    "RefAlreadyExists",
    "RefNotFound",
    "SchemaMismatch",
    "TableDiff",
    "TableNotFound",
    "WriteResult",
]
