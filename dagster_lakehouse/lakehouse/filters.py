"""Row filters: parsed from strings with PyIceberg's parser (never eval'd), bound to a table's schema,
and translated to Polars expressions so lazy scans push the same predicate down."""

from __future__ import annotations

import re
from decimal import Decimal
from functools import lru_cache, singledispatch
from typing import Any

import polars as pl
import pyarrow as pa
from pyiceberg.expressions import (
    AlwaysTrue,
    BooleanExpression,
    BoundTerm,
    UnboundPredicate,
)
from pyiceberg.expressions.parser import parse
from pyiceberg.expressions.visitors import (
    BooleanExpressionVisitor,
    BoundBooleanExpressionVisitor,
    bind,
    extract_field_ids,
    visit,
)
from pyiceberg.io.pyarrow import schema_to_pyarrow
from pyiceberg.schema import Schema
from pyiceberg.types import DateType, IcebergType, TimestampType, TimestamptzType, TimeType
from pyparsing import ParseException

from dagster_lakehouse.lakehouse.errors import ColumnNotFound, InvalidFilter, RowsOutsideFilter
from dagster_lakehouse.lakehouse.filter_literals import OffsetOnNaiveColumn, TemporalLiterals
from dagster_lakehouse.lakehouse.filter_numbers import (
    ExactNumbers,
    NumberOutOfRange,
    malformed_number,
    spell_numbers,
)

FilterLike = str | BooleanExpression | None


def parse_filter(expression: FilterLike, *, context: str = "") -> BooleanExpression:
    """Turn a filter string or PyIceberg expression into an (unbound) PyIceberg expression."""
    if expression is None or (isinstance(expression, str) and not expression.strip()):
        return AlwaysTrue()
    if isinstance(expression, BooleanExpression):
        return expression
    if not isinstance(expression, str):
        raise InvalidFilter(f"{context}filter must be a string or a PyIceberg expression, not {type(expression).__name__}")
    try:
        spelled = spell_numbers(expression)
        return _parse(spelled.text)
    except NumberOutOfRange as exc:
        raise InvalidFilter(
            f"{context}cannot parse filter {shown(expression)} at character {exc.position + 1}: number {exc.token} is "
            "beyond the range of every column type (a double's largest is about 1.8e308)"
        ) from None
    except ParseException as exc:
        bad = malformed_number(expression)
        if bad is not None:
            raise InvalidFilter(
                f"{context}cannot parse filter {shown(expression)} at character {bad[0] + 1}: malformed number "
                f"{bad[1]!r}; numbers are written like 12, -1.5, .5, 1e3 or 2.5E-3"
            ) from exc
        loc = spelled.original(exc.loc)
        raise InvalidFilter(
            f"{context}cannot parse filter {shown(expression)} at character {loc + 1}: "
            f"unexpected {expression[loc:loc + 20]!r}; expected comparisons such as "
            "\"col >= 'value'\", \"col in (1, 2)\", \"col is null\", joined by and/or/not"
        ) from exc
    except (RecursionError, ValueError, TypeError) as exc:
        raise InvalidFilter(f"{context}cannot parse filter {shown(expression)}: {type(exc).__name__}: {exc}") from exc


def shown(expression: FilterLike, limit: int = 200) -> str:
    """A filter as messages show it: quoted if a string, cut to `limit` characters."""
    text = repr(expression) if isinstance(expression, str) else str(expression)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


@lru_cache(maxsize=4096)
def _parse(expression: str) -> BooleanExpression:
    """PyIceberg's parser, memoised: merges re-read the same recorded filters many times."""
    return parse(expression)


def prepare_filter(
    schema: Schema, expression: FilterLike, *, context: str = ""
) -> tuple[BooleanExpression, BooleanExpression]:
    """Parse a filter and check it against `schema`: returns (unbound for PyIceberg scans, bound).

    Date-only and space-separated timestamp strings are accepted for timestamp columns; numbers finer than an integer
    or decimal column are compared exactly (`filter_numbers`).
    """
    text = shown(expression)
    parsed = parse_filter(expression, context=context)
    try:
        temporal = TemporalLiterals(schema)
        normalised = visit(visit(parsed, temporal), ExactNumbers(schema))
        for column, values in temporal.offsets.items():
            if values:
                raise OffsetOnNaiveColumn(column, schema.find_field(column).field_type, values)
        return normalised, bind(schema, normalised, case_sensitive=True)
    except OffsetOnNaiveColumn as exc:
        raise InvalidFilter(f"{context}filter {text}: {exc.explain(expression)}") from None
    except ValueError as exc:
        message = str(exc)
        if "Could not find field" in message:
            columns = ", ".join(field.name for field in schema.fields)
            raise ColumnNotFound(f"{context}filter {text}: {message}; columns are: {columns}") from exc
        raise InvalidFilter(f"{context}filter {text} does not fit the table: {message}") from exc
    except (TypeError, RecursionError) as exc:  # PyIceberg: "Cannot convert LongLiteral into string"
        raise InvalidFilter(f"{context}filter {text} does not fit the table: {exc}") from exc


def top_level_names(schema: Schema, bound: BooleanExpression) -> list[str]:
    """The top-level columns a bound filter reads, in schema order."""
    ids = extract_field_ids(bound)
    parents = schema._lazy_id_to_parent
    tops = set()
    for field_id in ids:
        while field_id in parents:
            field_id = parents[field_id]
        tops.add(field_id)
    return [f.name for f in schema.fields if f.field_id in tops]


def to_polars(bound: BooleanExpression, schema: Schema | None = None) -> pl.Expr:
    """Translate a bound PyIceberg expression into the equivalent Polars expression.

    With the `schema` it was bound to, a filter on a field inside a struct (`s.a = 1`) reads that field.
    """
    return visit(bound, _PolarsExpr(schema))


@singledispatch
def _python_value(field_type: IcebergType, value: Any) -> pl.Expr:
    return pl.lit(value)


@_python_value.register
def _(field_type: TimestampType, value: int) -> pl.Expr:
    return pl.lit(value, dtype=pl.Int64).cast(pl.Datetime("us"))


@_python_value.register
def _(field_type: TimestamptzType, value: int) -> pl.Expr:
    return pl.lit(value, dtype=pl.Int64).cast(pl.Datetime("us", "UTC"))


@_python_value.register
def _(field_type: DateType, value: int) -> pl.Expr:
    return pl.lit(value, dtype=pl.Int32).cast(pl.Date)


@_python_value.register
def _(field_type: TimeType, value: int) -> pl.Expr:
    return pl.lit(value * 1000, dtype=pl.Int64).cast(pl.Time)


def _column(term: BoundTerm, schema: Schema | None = None) -> pl.Expr:
    reference = term.ref()
    if schema is None:
        return pl.col(reference.field.name)
    accessor: Any = reference.accessor
    field = schema.fields[accessor.position]
    expr = pl.col(field.name)
    while accessor.inner is not None:
        accessor = accessor.inner
        field = field.field_type.fields[accessor.position]  # type: ignore[attr-defined]
        expr = expr.struct.field(field.name)
    return expr


def _value(term: BoundTerm, value: Any) -> pl.Expr:
    return _python_value(term.ref().field.field_type, value)


class _PolarsExpr(BoundBooleanExpressionVisitor[pl.Expr]):
    def __init__(self, schema: Schema | None = None):
        self.schema = schema

    def _col(self, term: BoundTerm) -> pl.Expr:
        return _column(term, self.schema)

    def visit_in(self, term: BoundTerm, literals: set[Any]) -> pl.Expr:
        if not literals:
            return pl.lit(False)
        if isinstance(term.ref().field.field_type, (TimestampType, TimestamptzType, DateType, TimeType)):
            return pl.any_horizontal([self._col(term) == _value(term, v) for v in literals])
        return self._col(term).is_in(sorted(literals))

    def visit_not_in(self, term: BoundTerm, literals: set[Any]) -> pl.Expr:
        return ~self.visit_in(term, literals)

    def visit_is_nan(self, term: BoundTerm) -> pl.Expr:
        return self._col(term).is_nan()

    def visit_not_nan(self, term: BoundTerm) -> pl.Expr:
        return self._col(term).is_not_nan()

    def visit_is_null(self, term: BoundTerm) -> pl.Expr:
        return self._col(term).is_null()

    def visit_not_null(self, term: BoundTerm) -> pl.Expr:
        return self._col(term).is_not_null()

    def visit_equal(self, term: BoundTerm, literal: Any) -> pl.Expr:
        return self._col(term) == _value(term, literal.value)

    def visit_not_equal(self, term: BoundTerm, literal: Any) -> pl.Expr:
        return self._col(term) != _value(term, literal.value)

    def visit_greater_than_or_equal(self, term: BoundTerm, literal: Any) -> pl.Expr:
        return self._col(term) >= _value(term, literal.value)

    def visit_greater_than(self, term: BoundTerm, literal: Any) -> pl.Expr:
        return self._col(term) > _value(term, literal.value)

    def visit_less_than(self, term: BoundTerm, literal: Any) -> pl.Expr:
        return self._col(term) < _value(term, literal.value)

    def visit_less_than_or_equal(self, term: BoundTerm, literal: Any) -> pl.Expr:
        return self._col(term) <= _value(term, literal.value)

    def visit_starts_with(self, term: BoundTerm, literal: Any) -> pl.Expr:
        return self._col(term).str.starts_with(literal.value)

    def visit_not_starts_with(self, term: BoundTerm, literal: Any) -> pl.Expr:
        return ~self._col(term).str.starts_with(literal.value)

    def visit_true(self) -> pl.Expr:
        return pl.lit(True)

    def visit_false(self) -> pl.Expr:
        return pl.lit(False)

    def visit_not(self, child_result: pl.Expr) -> pl.Expr:
        return ~child_result

    def visit_and(self, left_result: pl.Expr, right_result: pl.Expr) -> pl.Expr:
        return left_result & right_result

    def visit_or(self, left_result: pl.Expr, right_result: pl.Expr) -> pl.Expr:
        return left_result | right_result


def filter_string(expression: BooleanExpression) -> str:
    """An unbound expression in the filter syntax `parse_filter` reads back (kept in snapshot summaries)."""
    return visit(expression, _FilterText())[0]


def _literal_text(value: Any) -> str:
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, Decimal)):
        return str(value)
    raise InvalidFilter(f"cannot express a {type(value).__name__} literal in a filter string")


_KEYWORDS = {"and", "or", "not", "in", "is", "null", "nan", "like", "true", "false", "between"}


def _column_text(name: str) -> str:
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) and name.lower() not in _KEYWORDS:
        return name
    return '"' + name.replace('"', '""') + '"'


_OR, _AND, _ATOM = 1, 2, 3


def _wrap(part: tuple[str, int], level: int) -> str:
    text, precedence = part
    return f"({text})" if precedence < level else text


class _FilterText(BooleanExpressionVisitor[tuple[str, int]]):
    """Filter text with its operator precedence, so only the parentheses that matter are written."""

    _COMPARISONS = {
        "EqualTo": "=",
        "NotEqualTo": "!=",
        "LessThan": "<",
        "LessThanOrEqual": "<=",
        "GreaterThan": ">",
        "GreaterThanOrEqual": ">=",
    }

    def visit_true(self) -> tuple[str, int]:
        return "true", _ATOM

    def visit_false(self) -> tuple[str, int]:
        return "false", _ATOM

    def visit_not(self, child_result: tuple[str, int]) -> tuple[str, int]:
        return f"not {_wrap(child_result, _ATOM)}", _ATOM

    def visit_and(self, left_result: tuple[str, int], right_result: tuple[str, int]) -> tuple[str, int]:
        return f"{_wrap(left_result, _AND)} and {_wrap(right_result, _AND + 1)}", _AND

    def visit_or(self, left_result: tuple[str, int], right_result: tuple[str, int]) -> tuple[str, int]:
        return f"{_wrap(left_result, _OR)} or {_wrap(right_result, _OR + 1)}", _OR

    def visit_unbound_predicate(self, predicate: UnboundPredicate) -> tuple[str, int]:
        return self._predicate(predicate), _ATOM

    def _predicate(self, predicate: UnboundPredicate) -> str:
        column = _column_text(predicate.term.name)
        kind = type(predicate).__name__
        if kind in self._COMPARISONS:
            return f"{column} {self._COMPARISONS[kind]} {_literal_text(predicate.literal.value)}"  # type: ignore[attr-defined]
        if kind in ("In", "NotIn"):
            values = ", ".join(sorted(_literal_text(lit.value) for lit in predicate.literals))  # type: ignore[attr-defined]
            return f"{column} {'in' if kind == 'In' else 'not in'} ({values})"
        if kind in ("IsNull", "NotNull"):
            return f"{column} {'is null' if kind == 'IsNull' else 'is not null'}"
        if kind in ("IsNaN", "NotNaN"):
            return f"{column} {'is nan' if kind == 'IsNaN' else 'is not nan'}"
        if kind in ("StartsWith", "NotStartsWith"):
            pattern = _literal_text(predicate.literal.value.replace("%", "\\%") + "%")  # type: ignore[attr-defined]
            return f"{column} {'like' if kind == 'StartsWith' else 'not like'} {pattern}"
        raise InvalidFilter(f"cannot express {predicate!r} as a filter string")

    def visit_bound_predicate(self, predicate: Any) -> tuple[str, int]:
        raise InvalidFilter("filter_string expects an unbound expression")
