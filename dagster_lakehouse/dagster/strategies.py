"""Materialization strategies of an asset, from its definition metadata: replace, append, upsert on key columns,
and replace of only the rows an `overwrite_filter` matches (bauplan's partition overwrite without partitions)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg

from dagster_lakehouse.dagster.errors import LakehouseIOError
from dagster_lakehouse.dagster.tables import MODE_KEY, metadata_value

__all__ = ["KEY_KEY", "OVERWRITE_FILTER_KEY", "STRATEGIES", "WriteStrategy", "write_strategy"]

KEY_KEY = "lakehouse/key"
OVERWRITE_FILTER_KEY = "lakehouse/overwrite_filter"
STRATEGIES = ("replace", "append", "upsert")


@dataclass(frozen=True)
class WriteStrategy:
    """How an output is written: `mode` (`replace`, `append`, `upsert`), the upsert `key` columns, and the filter of
    the rows a replace overwrites (`overwrite_filter`; None replaces the whole table or the run's partition)."""

    mode: str = "replace"
    key: tuple[str, ...] = ()
    overwrite_filter: str | None = None

    def describe(self, partition_scope: str | None = None) -> str:
        """The strategy in words, for the UI and the run log."""
        if self.mode == "upsert":
            return f"upsert on key ({', '.join(self.key)})"
        if self.overwrite_filter is not None:
            return f"replace rows where {self.overwrite_filter}"
        if partition_scope is not None and self.mode == "replace":
            return f"replace partition rows where {partition_scope}"
        return "replace the table" if self.mode == "replace" else "append rows"

    def metadata(self, partition_scope: str | None = None) -> dict[str, dg.MetadataValue]:
        """Output metadata naming the strategy: `lakehouse/strategy`, and the key or filter it used."""
        entries: dict[str, dg.MetadataValue] = {"lakehouse/strategy": dg.MetadataValue.text(self.describe(partition_scope))}
        if self.key:
            entries[KEY_KEY] = dg.MetadataValue.text(", ".join(self.key))
        if self.overwrite_filter is not None:
            entries[OVERWRITE_FILTER_KEY] = dg.MetadataValue.text(self.overwrite_filter)
        return entries


def write_strategy(definition: Mapping[str, Any] | None, label: str, *, partitioned: bool) -> WriteStrategy:
    """The strategy asset metadata asks for (`lakehouse/mode`, `lakehouse/key`, `lakehouse/overwrite_filter`);
    refuses, naming the asset (`label`), metadata that does not fit together. `partitioned`: the asset has
    partitions over its data (a run replaces its partition's rows)."""
    mode = metadata_value(definition, MODE_KEY) or "replace"
    if mode not in STRATEGIES:
        raise LakehouseIOError(f"{label}: metadata {MODE_KEY!r} must be one of {', '.join(STRATEGIES)}, not {mode!r}")
    key = _key(metadata_value(definition, KEY_KEY), label)
    overwrite = metadata_value(definition, OVERWRITE_FILTER_KEY)
    if mode == "upsert" and not key:
        raise LakehouseIOError(
            f"{label}: {MODE_KEY}='upsert' needs the key columns that identify a row: set metadata {KEY_KEY!r} "
            "(e.g. ['trip_id'])"
        )
    if key and mode != "upsert":
        raise LakehouseIOError(
            f"{label}: metadata {KEY_KEY!r} is used by upserts only, and {MODE_KEY} is {mode!r}; set {MODE_KEY}='upsert' "
            f"or drop {KEY_KEY!r}"
        )
    if overwrite is not None:
        if not isinstance(overwrite, str) or not overwrite.strip():
            raise LakehouseIOError(
                f"{label}: metadata {OVERWRITE_FILTER_KEY!r} must be a filter string (e.g. \"day >= '2024-01-01'\"), "
                f"not {overwrite!r}"
            )
        if mode != "replace":
            raise LakehouseIOError(
                f"{label}: metadata {OVERWRITE_FILTER_KEY!r} replaces the rows it matches, which a {mode!r} write does "
                f"not do; drop {MODE_KEY}={mode!r} (the overwrite is a replace) or drop the filter"
            )
        if partitioned:
            raise LakehouseIOError(
                f"{label}: a partitioned asset replaces its partition's rows already; metadata "
                f"{OVERWRITE_FILTER_KEY!r} cannot be used with partitions: drop one of them"
            )
    return WriteStrategy(mode=mode, key=key, overwrite_filter=overwrite)


def _key(value: Any, label: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, Sequence) or not value or not all(isinstance(c, str) and c for c in value):
        raise LakehouseIOError(f"{label}: metadata {KEY_KEY!r} must be a list of column names, not {value!r}")
    return tuple(value)
