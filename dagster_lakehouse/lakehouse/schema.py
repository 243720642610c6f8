"""Schema reconciliation between a table and data written to it: evolve, widen, or fail naming the column."""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
from pyiceberg.exceptions import ResolveError
from pyiceberg.io.pyarrow import _pyarrow_to_schema_without_ids, schema_to_pyarrow
from pyiceberg.schema import Schema, promote

from dagster_lakehouse.lakehouse.errors import SchemaMismatch


@dataclass
class SchemaPlan:
    """What a write must do to the table's schema before its data fits."""

    data: pa.Table
    drop: list[str] = field(default_factory=list)
    evolve: bool = False


def plan_schema(table_name: str, branch: str, current: Schema, data: pa.Table, replace: bool) -> SchemaPlan:
    """Reconcile `data` with the table schema; `replace` may drop or retype columns, append may only add or widen."""
    incoming = _pyarrow_to_schema_without_ids(data.schema)
    plan = SchemaPlan(data=data)
    casts: dict[str, pa.DataType] = {}
    for new_field in incoming.fields:
        try:
            old_field = current.find_field(new_field.name)
        except ValueError:
            plan.evolve = True
            continue
        old_type, new_type = old_field.field_type, new_field.field_type
        if old_type == new_type:
            continue
        if promotes(new_type, old_type):
            casts[new_field.name] = schema_to_pyarrow(Schema(old_field)).field(0).type
        elif promotes(old_type, new_type):
            plan.evolve = True
        elif replace:
            plan.drop.append(new_field.name)
            plan.evolve = True
        else:
            raise SchemaMismatch(
                f"cannot append to table '{table_name}' on branch '{branch}': column '{new_field.name}' "
                f"is {old_type} in the table but {new_type} in the data"
            )
    if replace:
        names = set(data.schema.names)
        plan.drop.extend(f.name for f in current.fields if f.name not in names)
    if casts:
        target = pa.schema([pa.field(f.name, casts.get(f.name, f.type), True) for f in data.schema])
        plan.data = data.cast(target)
    return plan


def promotes(narrow, wide) -> bool:
    """Whether Iceberg can read `narrow` values as `wide` (same type or a widening such as int -> long)."""
    try:
        return promote(narrow, wide) == wide
    except ResolveError:
        return False
