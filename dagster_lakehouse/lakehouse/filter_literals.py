"""Temporal literals of a row filter: date-only, space-separated and zone-offset timestamps rewritten to the ISO form
PyIceberg binds, and offsets on timestamps without time zone refused with both fixes (`filters.prepare_filter`)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from pyiceberg.expressions import (
    BooleanExpression,
    LiteralPredicate,
    SetPredicate,
    UnboundPredicate,
)
from pyiceberg.expressions.literals import StringLiteral, literal
from pyiceberg.schema import Schema
from pyiceberg.types import IcebergType, TimestampType, TimestamptzType

from dagster_lakehouse.lakehouse.filter_rewrite import PredicateRewriter

__all__ = ["OffsetOnNaiveColumn", "TemporalLiterals"]

_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_SPACE_SEPARATED = re.compile(r"^(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}.*)$")
_OFFSET = re.compile(r"(Z|[+-]\d{2}:?\d{2})$")


class OffsetOnNaiveColumn(ValueError):
    """ISO-8601 literals with a zone offset compared with a timestamp column that has no time zone."""

    def __init__(self, column: str, field_type: IcebergType, values: list[str]):
        super().__init__(column, values)
        self.column, self.field_type, self.values = column, field_type, values

    def explain(self, expression: FilterLike) -> str:
        """The error in words: the column, its type, and both fixes, the literals rewritten without their offset."""
        from dagster_lakehouse.lakehouse.filters import shown  # filters imports this module

        value = self.values[0]
        naive = f"'{_OFFSET.sub('', value)}'"
        in_utc = _as_utc(value)
        utc_hint = f" (or '{in_utc}' if the column holds UTC times)" if in_utc else ""
        if isinstance(expression, str):
            for offset_value in self.values:
                expression = expression.replace(f"'{offset_value}'", f"'{_OFFSET.sub('', offset_value)}'")
            naive = f"{naive}, i.e. filter={shown(expression)}"
        return (
            f"'{value}' has a zone offset, but column '{self.column}' is {self.field_type} (no time zone), "
            f"so the offset cannot be applied. Either drop the offset from the literal: {naive}, the same "
            f"wall-clock time{utc_hint}; or give '{self.column}' a time zone (timestamptz): write it as a tz-aware "
            f"column (Polars: pl.col('{self.column}').dt.replace_time_zone('UTC'); PyArrow: "
            f"pa.timestamp('us', tz='UTC')), or import the file with `lakehouse import --timestamp-tz UTC`"
        )


def _as_utc(value: str) -> str | None:
    """`value` (ISO-8601 with an offset) as the UTC time without offset, or None if it does not parse."""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat()


def _normalise_temporal(value: str, field_type: IcebergType, offsets: list[str] | None = None) -> str:
    """`value` in the ISO form PyIceberg reads for `field_type`; a literal with an offset compared with a timestamp
    without time zone is added to `offsets` (the caller refuses the filter, naming them all)."""
    if isinstance(field_type, (TimestampType, TimestamptzType)):
        if _DATE_ONLY.match(value):
            value = f"{value}T00:00:00"
        elif match := _SPACE_SEPARATED.match(value):
            value = f"{match.group(1)}T{match.group(2)}"
        offset = _OFFSET.search(value) if "T" in value else None
        if isinstance(field_type, TimestampType) and offset and offsets is not None:
            offsets.append(value)
        if isinstance(field_type, TimestamptzType):  # PyIceberg converts an offset to UTC; it takes only +hh:mm
            if offset is None:
                value = f"{value}+00:00"
            elif offset.group(1) == "Z":
                value = f"{value[:-1]}+00:00"
            elif ":" not in offset.group(1):
                value = f"{value[:-2]}:{value[-2:]}"
    return value


class TemporalLiterals(PredicateRewriter):
    """Rewrite string literals compared with timestamp columns to the ISO form PyIceberg expects."""

    def __init__(self, schema: Schema):
        self.schema = schema
        self.offsets: dict[str, list[str]] = {}  # timestamp columns without time zone -> literals with an offset

    def visit_unbound_predicate(self, predicate: UnboundPredicate) -> BooleanExpression:
        field = self.schema.find_field(predicate.term.name) if _has_field(self.schema, predicate.term.name) else None
        if field is None:
            return predicate
        if isinstance(predicate, LiteralPredicate) and isinstance(predicate.literal, StringLiteral):
            offsets = self.offsets.setdefault(predicate.term.name, [])
            value = _normalise_temporal(predicate.literal.value, field.field_type, offsets)
            return type(predicate)(predicate.term, literal(value))
        if isinstance(predicate, SetPredicate) and all(isinstance(lit, StringLiteral) for lit in predicate.literals):
            offsets = self.offsets.setdefault(predicate.term.name, [])
            values = {_normalise_temporal(lit.value, field.field_type, offsets) for lit in predicate.literals}
            return type(predicate)(predicate.term, values)
        return predicate



def _has_field(schema: Schema, name: str) -> bool:
    try:
        schema.find_field(name)
        return True
    except ValueError:
        return False
