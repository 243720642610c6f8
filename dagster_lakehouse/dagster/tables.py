"""Asset key <-> lakehouse table naming, the asset metadata keys the IO manager reads, and external table specs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg

from dagster_lakehouse.lakehouse.errors import InvalidTableName
from dagster_lakehouse.lakehouse.names import split_table_name

TABLE_KEY = "lakehouse/table"
MODE_KEY = "lakehouse/mode"
PARTITION_COLUMN_KEY = "lakehouse/partition_column"
PARTITION_EXPR_KEY = "partition_expr"
COLUMNS_KEY = "columns"
FILTER_KEY = "filter"
WRITE_MODES = ("replace", "append")

__all__ = [
    "COLUMNS_KEY",
    "FILTER_KEY",
    "MODE_KEY",
    "PARTITION_COLUMN_KEY",
    "PARTITION_EXPR_KEY",
    "TABLE_KEY",
    "lakehouse_table_spec",
    "table_name_for",
]


def raw_value(value: Any) -> Any:
    """The plain Python value of a metadata entry (definition metadata may hold `MetadataValue`s)."""
    return value.value if isinstance(value, dg.MetadataValue) else value


def metadata_value(metadata: Mapping[str, Any] | None, *keys: str) -> Any:
    """The first of `keys` present in `metadata`, unwrapped; None when none is."""
    for key in keys:
        if metadata and metadata.get(key) is not None:
            return raw_value(metadata[key])
    return None


def table_name_for(asset_key: dg.AssetKey, metadata: Mapping[str, Any] | None, default_namespace: str) -> str:
    """The table an asset lives in: metadata `lakehouse/table`, else from its key.

    `["name"]` -> `<default_namespace>.name`; `["ns", "name"]` -> `ns.name`; longer keys join every part but
    the last with `_` into the namespace: `["a", "b", "name"]` -> `a_b.name`.
    """
    explicit = metadata_value(metadata, TABLE_KEY)
    path = asset_key.path
    if explicit is not None:
        name = str(explicit)
    elif len(path) == 1:
        name = f"{default_namespace}.{path[0]}"
    else:
        name = f"{'_'.join(path[:-1])}.{path[-1]}"
    try:
        split_table_name(name)
    except InvalidTableName as exc:
        raise InvalidTableName(
            f"asset {asset_key.to_user_string()!r}: {exc}; set asset metadata {TABLE_KEY!r} to a valid name"
        ) from None
    return name


def lakehouse_table_spec(table: str, *, io_manager_key: str | None = None, **kwargs: Any) -> dg.AssetSpec:
    """An external asset for lakehouse table `table` (key `[namespace, table]`) that loads through the IO manager.

    Other `AssetSpec` arguments pass through; `metadata` is merged with `{"lakehouse/table": table}`.
    """
    namespace, name = split_table_name(table)
    metadata = {**(kwargs.pop("metadata", None) or {}), TABLE_KEY: table}
    kinds = set(kwargs.pop("kinds", None) or {"iceberg"})
    spec = dg.AssetSpec(key=kwargs.pop("key", [namespace, name]), metadata=metadata, kinds=kinds, **kwargs)
    return spec.with_io_manager_key(io_manager_key) if io_manager_key else spec
