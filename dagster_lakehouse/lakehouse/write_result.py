"""`WriteResult` and `finish_write`: a write's commit run and described, for `Lakehouse.write` (replace, append, upsert)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pyiceberg.exceptions import NoSuchNamespaceError
from pyiceberg.table import Table

from dagster_lakehouse.lakehouse import corruption
from dagster_lakehouse.lakehouse.catalog import read_only
from dagster_lakehouse.lakehouse.commits import table_at
from dagster_lakehouse.lakehouse.errors import CorruptTableFile, LakehouseError
from dagster_lakehouse.lakehouse.names import split_table_name
from dagster_lakehouse.lakehouse.polars_sink import _remove_partial_files
from dagster_lakehouse.lakehouse.upsert import UpsertCommit
from dagster_lakehouse.lakehouse.writes import WriteCommit

if TYPE_CHECKING:
    from dagster_lakehouse.lakehouse.core import Lakehouse

__all__ = ["WriteResult", "finish_write"]


@dataclass(frozen=True)
class WriteResult:
    """The outcome of one committed write."""

    table: str
    branch: str
    snapshot_id: int | None
    rows: int
    mode: str
    metadata_location: str
    commit_id: str
    attempts: int
    iceberg_table: Table = field(repr=False, compare=False)
    """The committed PyIceberg table (schema, location, snapshot), so callers need not load it again."""
    rows_updated: int | None = None
    """For an upsert: rows of the table it replaced (their key matched and another column changed)."""
    rows_inserted: int | None = None
    """For an upsert: rows whose key the table did not have."""


def finish_write(
    lakehouse: Lakehouse, commit: WriteCommit | UpsertCommit, branch: str, allow_main: bool, mode: str
) -> WriteResult:
    """Run a write's commit and describe it (an upsert that changes no row commits nothing: the table as it is).

    Streamed data counts its rows as the commit writes them, so they are read from the commit's data afterwards."""
    name = commit.name
    try:
        with corruption.named(name, lambda: [(branch, lakehouse._read_catalog(branch).load_table(name))]):
            pointers = lakehouse._retrying(commit.what, commit.run)  # storage I/O is all before the pointer transaction
    except CorruptTableFile:
        _discard(commit)
        raise
    except NoSuchNamespaceError as exc:  # the branch was deleted while this write prepared
        with lakehouse.engine.connect() as conn:
            lakehouse._check_writable(conn, branch, allow_main)
        namespace, _ = split_table_name(name)
        raise LakehouseError(
            f"table '{name}' on branch '{branch}': namespace '{namespace}' vanished while writing; nothing was written"
        ) from exc
    if pointers:
        (pointer,) = pointers
        assert pointer.metadata is not None and pointer.location is not None
        table = table_at(commit.catalog, name, pointer.location, pointer.metadata)
    else:
        assert isinstance(commit, UpsertCommit) and commit.current is not None
        table = commit.current
    upserted = isinstance(commit, UpsertCommit)
    snapshot = table.metadata.current_snapshot()
    return WriteResult(
        table=name,
        branch=branch,
        snapshot_id=snapshot.snapshot_id if snapshot else None,
        rows=commit.data.rows,
        mode=mode,
        metadata_location=table.metadata_location,
        commit_id=commit.commit_id or "",
        attempts=commit.attempts,
        iceberg_table=read_only(table, lakehouse._read_catalog(branch)),
        rows_updated=commit.rows_updated if upserted else None,
        rows_inserted=commit.rows_inserted if upserted else None,
    )


def _discard(commit: WriteCommit | UpsertCommit) -> None:
    """Delete the files a write wrote before it met a damaged file of its table (`commit.written`): it will never
    commit them, and a refused write leaves the warehouse as it was."""
    paths = commit.written.paths
    if paths:  # and on S3 the empty folder markers deleting them may leave, as after a failed sink
        _remove_partial_files(commit.catalog._load_file_io(location=paths[0]), paths, paths[0].rsplit("/", 1)[0] + "/")
