"""The state of one partition of a table on a ref: its exact row count and the snapshot that wrote its newest data.

Dagster restates a partition on `main` from this (issue 30: a partition is on `main` exactly when Dagster says so),
so it must be exact and cheap: the files the filter can match are planned from cached manifests with PyIceberg's
evaluators, each live file's adding snapshot comes from its manifest entry, and rows are counted from file record
counts only where the partition values or column statistics prove every row matches; other files (one bulk load
holding several partitions) are read, only the filter's columns, and only their matching rows count.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import polars as pl
from pyiceberg.expressions import BooleanExpression
from pyiceberg.expressions.visitors import _StrictMetricsEvaluator, expression_evaluator, strict_projection
from pyiceberg.io.pyarrow import ArrowScan
from pyiceberg.manifest import DataFile, ManifestContent, ManifestEntry
from pyiceberg.schema import Schema
from pyiceberg.table import FileScanTask, ManifestGroupPlanner, Table
from pyiceberg.table.snapshots import Snapshot

from dagster_lakehouse.lakehouse import read_cache
from dagster_lakehouse.lakehouse.errors import TableNotFound
from dagster_lakehouse.lakehouse.filters import prepare_filter, to_polars, top_level_names
from dagster_lakehouse.lakehouse.read_plan import ReadPlan, _entries, _has_live_files, _unsupported, lazy_scan

if TYPE_CHECKING:
    from dagster_lakehouse.lakehouse.core import Lakehouse

__all__ = ["PartitionState", "partition_state"]


@dataclass(frozen=True)
class PartitionState:
    """One partition of a table on a ref: how many rows it has and which snapshot added its newest data file."""

    rows: int
    snapshot_id: int


def partition_state(
    lakehouse: Lakehouse, table: str, ref: str, where: str | BooleanExpression
) -> PartitionState | None:
    """The state of one partition (the rows matching `where`) of `table` on `ref`; None when the ref holds no such row
    (or no table)."""
    try:
        loaded = lakehouse.table(table, ref)
    except TableNotFound:
        return None
    return lakehouse._retrying(f"table '{table}' on '{ref}'", lambda: _state(lakehouse, loaded, table, ref, where))


def _state(
    lakehouse: Lakehouse, table: Table, name: str, ref: str, where: str | BooleanExpression
) -> PartitionState | None:
    """`partition_state` of the loaded `table`."""
    snapshot = table.current_snapshot()
    if snapshot is None:
        return None
    schema = table.schema()
    unbound, bound = prepare_filter(schema, where, context=f"table '{name}' on '{ref}': ")
    entries, has_deletes = _candidates(table, snapshot, unbound)
    counter = _Counter(lakehouse, table, snapshot, schema, unbound, bound)
    if has_deletes:  # rows deleted by delete files: count the filtered read, attribute to the newest candidate
        rows = lakehouse.scan(name, ref=ref, filter=where, columns=counter.columns).select(pl.len()).collect().item()
        newest = max(entries, key=_age, default=None)
        return PartitionState(rows, newest.snapshot_id) if rows and newest is not None else None
    by_snapshot: dict[int, list[ManifestEntry]] = defaultdict(list)
    for entry in entries:
        by_snapshot[entry.snapshot_id].append(entry)
    newest_first = sorted(by_snapshot.values(), key=lambda group: _age(group[0]), reverse=True)
    total, newest_id = 0, None
    for group in newest_first:
        rows = counter.count([e.data_file for e in group])
        if rows and newest_id is None:
            newest_id = group[0].snapshot_id
        total += rows
    return PartitionState(total, newest_id) if newest_id is not None else None


def _age(entry: ManifestEntry) -> tuple[int, int]:
    """How new an entry's data is: its data sequence number, then its snapshot id (ties only within one commit)."""
    return (entry.sequence_number or 0, entry.snapshot_id or 0)


def _candidates(table: Table, snapshot: Snapshot, row_filter: BooleanExpression) -> tuple[list[ManifestEntry], bool]:
    """The live data-file entries of `snapshot` that may hold rows matching `row_filter`, and whether the snapshot
    has live delete files."""
    planner = ManifestGroupPlanner(table.metadata, table.io, row_filter=row_filter)
    manifests = read_cache.manifests(table.io, snapshot)
    has_deletes = any(m.content == ManifestContent.DELETES and _has_live_files(m) for m in manifests)
    keep_manifest = {spec: planner._build_manifest_evaluator(spec) for spec in {m.partition_spec_id for m in manifests}}
    wanted = [m for m in manifests if m.content == ManifestContent.DATA and keep_manifest[m.partition_spec_id](m)]
    metrics = planner._build_metrics_evaluator()
    partition = {spec: planner._build_partition_evaluator(spec) for spec in {m.partition_spec_id for m in wanted}}
    found: list[ManifestEntry] = []
    for manifest, entries in zip(wanted, _entries(table, wanted), strict=True):
        keep = partition[manifest.partition_spec_id]
        found.extend(e for e in entries if keep(e.data_file) and metrics(e.data_file))
    return found, has_deletes


class _Counter:
    """Counts the rows of some data files matching the filter: record counts where provably all match, else a read."""

    def __init__(
        self,
        lakehouse: Lakehouse,
        table: Table,
        snapshot: Snapshot,
        schema: Schema,
        unbound: BooleanExpression,
        bound: BooleanExpression,
    ):
        self.lakehouse, self.table, self.snapshot, self.schema = lakehouse, table, snapshot, schema
        self.unbound, self.bound = unbound, bound
        self.columns = top_level_names(schema, bound) or [schema.fields[0].name]
        self._all_match_stats = _StrictMetricsEvaluator(schema, unbound).eval
        self._all_match_partition: dict[int, Callable[[DataFile], bool]] = {}

    def count(self, files: list[DataFile]) -> int:
        """Rows of `files` matching the filter."""
        proven = [f for f in files if self._all_match(f)]
        unproven = [f for f in files if not self._all_match(f)]
        return sum(f.record_count for f in proven) + (self._read_count(unproven) if unproven else 0)

    def _all_match(self, data_file: DataFile) -> bool:
        """Whether the file's partition values or column statistics prove every row matches."""
        if data_file.record_count < 0:
            return False
        return self._partition_evaluator(data_file.spec_id)(data_file) or self._all_match_stats(data_file)

    def _partition_evaluator(self, spec_id: int) -> Callable[[DataFile], bool]:
        if spec_id not in self._all_match_partition:
            spec = self.table.specs()[spec_id]
            if spec.is_unpartitioned():
                self._all_match_partition[spec_id] = lambda _: False
            else:
                projected = strict_projection(self.schema, spec)(self.unbound)
                partition_schema = Schema(*spec.partition_type(self.schema).fields)
                evaluate = expression_evaluator(partition_schema, projected, case_sensitive=True)
                self._all_match_partition[spec_id] = lambda f: evaluate(f.partition)
        return self._all_match_partition[spec_id]

    def _read_count(self, files: list[DataFile]) -> int:
        """Rows of `files` matching the filter, reading only the filter's columns."""
        plan = ReadPlan(self.table, self.schema, self.snapshot, tuple(files))
        fallback = _unsupported(self.table, self.schema, files)
        if fallback is None:
            lazy = lazy_scan(plan, self.lakehouse._polars_storage_options())
            return (
                lazy.select(self.columns).filter(to_polars(self.bound, self.schema)).select(pl.len()).collect().item()
            )
        projected = self.schema.select(*self.columns)
        scan = ArrowScan(self.table.metadata, self.table.io, projected, self.unbound)
        return scan.to_table([FileScanTask(f) for f in files]).num_rows
