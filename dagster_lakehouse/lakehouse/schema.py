"""Schema reconciliation between a table and data written to it: evolve, widen, or fail naming the column."""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
from pyiceberg.exceptions import ResolveError
from pyiceberg.io.pyarrow import _pyarrow_to_schema_without_ids, schema_to_pyarrow
from pyiceberg.schema import Schema, assign_fresh_schema_ids, promote
from pyiceberg.types import IcebergType, ListType, MapType, StructType

from dagster_lakehouse.lakehouse.errors import SchemaMismatch


@dataclass
class SchemaPlan:
    """What a write must do to the table's schema before its data fits."""

    data: pa.Table
    drop: list[str] = field(default_factory=list)
    evolve: bool = False


def plan_schema(table_name: str, branch: str, current: Schema, data: pa.Table, replace: bool) -> SchemaPlan:
    """Reconcile `data` with the table schema; `replace` may drop or retype columns, append may only add or widen
    (and only when the data is recognisably rows of this table: `check_overlap`)."""
    if not replace:
        check_overlap(table_name, branch, current, data.schema)
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
        if not old_type.is_primitive or not new_type.is_primitive:
            fit = _Fit()
            _compare(old_type, new_type, new_field.name, fit)
            if fit.clash is None:
                plan.evolve = plan.evolve or fit.wider
                if replace:  # the data's schema wins: nested fields it lacks go, the column keeps its id
                    plan.drop.extend(fit.missing)
                continue
            if not replace:
                raise SchemaMismatch(
                    f"cannot append to table '{table_name}' on branch '{branch}': column '{new_field.name}' "
                    f"is {old_type} in the table but {new_type} in the data ({fit.clash})"
                )
            plan.drop.append(new_field.name)
            plan.evolve = True
        elif old_type == new_type:
            continue
        elif promotes(new_type, old_type):
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


def check_overlap(table_name: str, branch: str, current: Schema, data: pa.Schema) -> None:
    """Refuse rows added to a table (append, `where=` replace, upsert) that are not recognisably its rows.

    The rule: the data must share at least one column with the table, and when it adds new columns it must carry at
    least half of the table's columns. Otherwise a file written to the wrong table would silently widen it (a trips
    file appended to `taxi.zones` added 18 columns); `SchemaMismatch` names both column lists instead.
    """
    table_columns = [f.name for f in current.fields]
    shared = [name for name in data.names if name in table_columns]
    added = [name for name in data.names if name not in table_columns]
    if shared and (not added or 2 * len(shared) >= len(table_columns)):
        return
    if not shared:
        why = "the data shares no column with the table"
    else:
        why = (
            f"the data adds {len(added)} column{'s' if len(added) != 1 else ''} ({', '.join(added)}) but carries only "
            f"{len(shared)} of the table's {len(table_columns)} columns ({', '.join(shared)}); adding columns needs at "
            f"least half of the table's columns ({(len(table_columns) + 1) // 2})"
        )
    raise SchemaMismatch(
        f"cannot add rows to table '{table_name}' on branch '{branch}': {why}. Table columns: "
        f"{', '.join(table_columns)}; data columns: {', '.join(data.names)}. Is this the right table? Rename the "
        f"data's columns to the table's, write it to a table of its own, or replace the table with mode='replace'; "
        f"nothing was written"
    )


def promotes(narrow, wide) -> bool:
    """Whether Iceberg can read `narrow` values as `wide` (same type or a widening such as int -> long)."""
    try:
        return promote(narrow, wide) == wide
    except ResolveError:
        return False


def iceberg_schema(arrow_schema: pa.Schema) -> Schema:
    """The Iceberg schema a new table gets for data of `arrow_schema` (fresh field ids, as `create_table` assigns)."""
    return assign_fresh_schema_ids(_pyarrow_to_schema_without_ids(arrow_schema))


@dataclass
class _Fit:
    """How the data's type of one nested column relates to the table's, field ids aside."""

    wider: bool = False  # a data leaf is wider, or the data has a field the table lacks: evolve the schema
    missing: list[str] = field(default_factory=list)  # nested fields the data lacks: null on append, dropped on replace
    clash: str | None = None  # where the two cannot be reconciled


def _compare(old: IcebergType, new: IcebergType, path: str, fit: _Fit) -> None:
    """Walk two types side by side by field name (nested field ids differ between a table and new data)."""
    if fit.clash is not None:
        return
    if old.is_primitive and new.is_primitive:
        if old != new and not promotes(new, old):
            if promotes(old, new):
                fit.wider = True
            else:
                fit.clash = f"'{path}' is {old} in the table but {new} in the data"
        return
    if type(old) is not type(new):
        fit.clash = f"'{path}' is {old} in the table but {new} in the data"
    elif isinstance(old, StructType) and isinstance(new, StructType):
        names = {f.name for f in new.fields}
        for field_ in new.fields:
            partner = old.field_by_name(field_.name, case_sensitive=True)
            if partner is None:
                fit.wider = True
            else:
                _compare(partner.field_type, field_.field_type, f"{path}.{field_.name}", fit)
        fit.missing.extend(f"{path}.{f.name}" for f in old.fields if f.name not in names)
    elif isinstance(old, ListType) and isinstance(new, ListType):
        _compare(old.element_type, new.element_type, f"{path}.element", fit)
    elif isinstance(old, MapType) and isinstance(new, MapType):
        _compare(old.key_type, new.key_type, f"{path}.key", fit)
        _compare(old.value_type, new.value_type, f"{path}.value", fit)
