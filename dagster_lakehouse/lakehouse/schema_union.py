"""One schema for a table that two branches created independently, when their field ids line up; else why not.

Each side's `create_table` assigned field ids on its own, and a data file names its columns by field id, so one side's
files may join the other side's table only if every column both sides have carries the same id on both (and no id
names two different columns): columns created in another order would otherwise be read as each other. When the ids
line up, the union keeps the target's columns, adds those only the source has (with the source's ids: its files hold
them so), widens a column whose type on one side promotes to the other's (int -> long), and makes optional a column
that one side's rows lack.
"""

from __future__ import annotations

from pyiceberg.schema import Schema, index_name_by_id
from pyiceberg.types import IcebergType, ListType, MapType, NestedField, StructType

from dagster_lakehouse.lakehouse.schema import promotes


class SchemaClash(ValueError):
    """Two created schemas that cannot be combined; the message says which column and why."""


def union_schema(source: Schema, target: Schema, source_name: str, target_name: str) -> Schema:
    """The schema holding the rows of both tables (the target's schema id), or `SchemaClash` naming the column."""
    _check_ids(source, target, source_name, target_name)
    union = _Union(source_name, target_name)
    struct = union.struct(source.as_struct(), target.as_struct(), "")
    return Schema(*struct.fields, schema_id=target.schema_id, identifier_field_ids=target.identifier_field_ids)


def _check_ids(source: Schema, target: Schema, source_name: str, target_name: str) -> None:
    """`SchemaClash` unless each column both sides have (nested ones by full name) has one field id on both."""
    source_names, target_names = index_name_by_id(source), index_name_by_id(target)
    target_ids = {name: field_id for field_id, name in target_names.items()}
    for field_id, name in sorted(source_names.items()):
        if name in target_ids and target_ids[name] != field_id:
            raise SchemaClash(
                f"column '{name}' has field id {field_id} on '{source_name}' but {target_ids[name]} on '{target_name}' "
                f"(data files name columns by field id, so one side's files would be read as other columns)"
            )
        if field_id in target_names and target_names[field_id] != name:
            raise SchemaClash(
                f"field id {field_id} is column '{name}' on '{source_name}' but '{target_names[field_id]}' on "
                f"'{target_name}' (data files name columns by field id, so one side's files would be read as other columns)"
            )


class _Union:
    """The type-by-type union of two schemas whose field ids line up (`_check_ids`)."""

    def __init__(self, source_name: str, target_name: str):
        self.source_name = source_name
        self.target_name = target_name

    def struct(self, source: StructType, target: StructType, path: str) -> StructType:
        """The target's fields (merged with the source's of the same id), then the fields only the source has."""
        only_source = {f.field_id: f for f in source.fields}
        fields = []
        for field in target.fields:
            partner = only_source.pop(field.field_id, None)
            if partner is None:
                fields.append(_optional(field))
                continue
            merged = self.type(partner.field_type, field.field_type, f"{path}{field.name}")
            fields.append(field.model_copy(update={"field_type": merged, "required": field.required and partner.required}))
        return StructType(*fields, *(_optional(f) for f in only_source.values()))

    def type(self, source: IcebergType, target: IcebergType, path: str) -> IcebergType:
        """The type that reads both sides' values of column `path`."""
        if isinstance(source, StructType) and isinstance(target, StructType):
            return self.struct(source, target, f"{path}.")
        if isinstance(source, ListType) and isinstance(target, ListType):
            element = self.type(source.element_type, target.element_type, f"{path}.element")
            return ListType(target.element_id, element, target.element_required and source.element_required)
        if isinstance(source, MapType) and isinstance(target, MapType):
            key = self.type(source.key_type, target.key_type, f"{path}.key")
            value = self.type(source.value_type, target.value_type, f"{path}.value")
            required = target.value_required and source.value_required
            return MapType(target.key_id, key, target.value_id, value, value_required=required)
        if source.is_primitive and target.is_primitive:
            if source == target or promotes(source, target):
                return target
            if promotes(target, source):
                return source
        raise SchemaClash(f"column '{path}' is {source} on '{self.source_name}' but {target} on '{self.target_name}'")


def _optional(field: NestedField) -> NestedField:
    """A field only one side has: the other side's rows hold no value for it."""
    return field if not field.required else field.model_copy(update={"required": False})
