"""Numeric literals of a row filter: the forms users write that PyIceberg's grammar lacks, and exact comparisons.

PyIceberg's parser reads `12`, `-3`, `+4`, `1.5`, `.5` and `1.` but not scientific notation (`1e3`, `-1.5E-3`) nor an
`in (...)` list mixing integers and decimals (`in (1, 2.5)`). `spell_numbers` rewrites those into forms it reads
(`1000`, `-0.0015`, `in (1.0, 2.5)`) before parsing and maps a parse error's position back to the text as written, so
malformed numbers (`1e`, `1.2.3`) are still refused at their own character. `ExactNumbers` then makes comparisons of a
literal with more decimals than an integer or decimal column holds exact: PyIceberg would round `x > 1.5` on a `long`
column to `x > 2` (and refuse `price > 1.5` on a `decimal(10, 2)`); it becomes `x > 1`, `x = 1.5` matches nothing.
"""

from __future__ import annotations

import re
import sys
from bisect import bisect_right
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Decimal, InvalidOperation, localcontext

from pyiceberg.expressions import (
    AlwaysFalse,
    BooleanExpression,
    EqualTo,
    GreaterThan,
    GreaterThanOrEqual,
    In,
    LessThan,
    LessThanOrEqual,
    LiteralPredicate,
    NotEqualTo,
    NotIn,
    NotNull,
    SetPredicate,
    UnboundPredicate,
)
from pyiceberg.expressions.literals import DecimalLiteral, LongLiteral
from pyiceberg.schema import Schema
from pyiceberg.types import DecimalType, IntegerType, LongType

from dagster_lakehouse.lakehouse.filter_rewrite import PredicateRewriter

__all__ = ["ExactNumbers", "NumberOutOfRange", "Spelled", "malformed_number", "spell_numbers"]

_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_TOKEN = re.compile(rf"(?<![A-Za-z0-9_$.]){_NUMBER}(?![A-Za-z0-9_$.])")
_LIST = re.compile(rf"\(\s*{_NUMBER}(?:\s*,\s*{_NUMBER})*\s*\)")
_NUMBER_LIKE = re.compile(r"(?<![A-Za-z0-9_$.])[+-]*(?:\d|\.\d)(?:[A-Za-z0-9_.]|(?<=[eE])[+-])*")
_QUOTED = re.compile(r"'(?:[^']|'')*'?|\"(?:[^\"\\]|\\.)*\"?")
_INT64 = 2**63
_DOUBLE_MAX = Decimal(sys.float_info.max)


class NumberOutOfRange(ValueError):
    """A numeric literal beyond any column type's range (above a double's largest value)."""

    def __init__(self, token: str, position: int):
        super().__init__(token, position)
        self.token, self.position = token, position


@dataclass
class Spelled:
    """A filter rewritten for PyIceberg's parser, with what maps a position in `text` back to the text as written."""

    text: str
    edits: list[tuple[int, int, int, int]] = field(default_factory=list)
    """Each rewritten number: (start, end) in `text`, (start, end) as written."""

    def original(self, position: int) -> int:
        """The position in the text as written of `position` in `text`."""
        i = bisect_right([edit[0] for edit in self.edits], position) - 1
        if i < 0:
            return position
        start, end, old_start, old_end = self.edits[i]
        return old_start if position < end else old_end + (position - end)


def malformed_number(expression: str) -> tuple[int, str] | None:
    """The position and text of the first word outside quotes that starts like a number but is none (`1e`, `1.2.3`,
    `--1`), or None: a parse error is reported there rather than where PyIceberg's parser gave up."""
    position = 0
    for quoted in [*_QUOTED.finditer(expression), None]:
        end = quoted.start() if quoted is not None else len(expression)
        for word in _NUMBER_LIKE.finditer(expression, position, end):
            if not re.fullmatch(_NUMBER, word.group()):
                return word.start(), word.group()
        if quoted is not None:
            position = quoted.end()
    return None


def spell_numbers(expression: str) -> Spelled:
    """`expression` with its numbers in forms PyIceberg's parser reads (quoted strings and identifiers untouched)."""
    replacements: list[tuple[int, int, str]] = []
    position = 0
    for quoted in [*_QUOTED.finditer(expression), None]:
        end = quoted.start() if quoted is not None else len(expression)
        replacements += _segment(expression, position, end)
        if quoted is not None:
            position = quoted.end()
    spelled, parts, cursor, length = Spelled(text=""), [], 0, 0
    for start, end, text in replacements:
        length += start - cursor
        parts += [expression[cursor:start], text]
        spelled.edits.append((length, length + len(text), start, end))
        length += len(text)
        cursor = end
    parts.append(expression[cursor:])
    spelled.text = "".join(parts)
    return spelled


def _segment(expression: str, start: int, end: int) -> list[tuple[int, int, str]]:
    """The numbers to rewrite between `start` and `end` (text outside quotes): (start, end, new text), in order."""
    text = expression[start:end]
    mixed = [m.span() for m in _LIST.finditer(text) if _mixed(m.group())]
    replacements = []
    for token in _TOKEN.finditer(text):
        as_decimal = any(a <= token.start() < b for a, b in mixed)
        spelled = _spelled(token.group(), start + token.start(), as_decimal)
        if spelled != token.group():
            replacements.append((start + token.start(), start + token.end(), spelled))
    return replacements


def _mixed(values: str) -> bool:
    """Whether a parenthesised list of numbers mixes integers and decimals (PyIceberg reads lists of one kind)."""
    kinds = {_is_decimal(token.group()) for token in _TOKEN.finditer(values)}
    return len(kinds) > 1


def _is_decimal(token: str) -> bool:
    """Whether PyIceberg's parser, once the token is spelled, reads it as a decimal rather than an integer."""
    if "e" not in token.lower():
        return "." in token
    value = Decimal(token)
    return value != value.to_integral_value() or abs(value) >= _INT64


def _spelled(token: str, position: int, as_decimal: bool) -> str:
    """`token` as PyIceberg's parser reads it: scientific notation written out, `.0` added in a mixed list."""
    try:
        value = Decimal(token)
    except InvalidOperation:  # the token pattern admits only numbers; keep it for the parser to refuse
        return token
    if abs(value) > _DOUBLE_MAX:
        raise NumberOutOfRange(token, position)
    if "e" not in token.lower():
        return f"{token}.0" if as_decimal and "." not in token else token
    if not _is_decimal(token) and not as_decimal:
        return str(int(value))
    plain = format(value, "f")
    return plain if "." in plain else f"{plain}.0"


class ExactNumbers(PredicateRewriter):
    """Rewrite comparisons of integer and decimal columns with literals finer than the column's scale into exact ones.

    For a `long` column `x > 1.5` is `x > 1`, `x >= 1.5` is `x >= 2`, `x < 1.5` is `x <= 1`, `x <= 1.5` is `x <= 1`,
    `x = 1.5` matches nothing, `x != 1.5` every non-null row, and such values drop out of `in`/`not in` lists (what
    Polars and SQL return on the same data); a `decimal(p, s)` column likewise at its scale `s`. Values beyond the
    column's range compare the same way (`x > -1e300` is every non-null row).
    """

    def __init__(self, schema: Schema):
        self.schema = schema

    def visit_unbound_predicate(self, predicate: UnboundPredicate) -> BooleanExpression:
        column = self._column(predicate.term.name)
        if column is None:
            return predicate
        if isinstance(predicate, LiteralPredicate) and isinstance(predicate.literal, (DecimalLiteral, LongLiteral)):
            return _exact_comparison(predicate, Decimal(predicate.literal.value), column)
        if isinstance(predicate, SetPredicate) and all(
            isinstance(lit, (DecimalLiteral, LongLiteral)) for lit in predicate.literals
        ):
            values = [Decimal(lit.value) for lit in predicate.literals]
            exact = [_at_scale(v, column.scale) for v in values if column.holds(v)]
            if len(exact) == len(values):
                return type(predicate)(predicate.term, exact)
            if isinstance(predicate, In):
                return In(predicate.term, exact) if exact else AlwaysFalse()
            return NotIn(predicate.term, exact) if exact else NotNull(predicate.term)
        return predicate

    def _column(self, name: str) -> _Numbers | None:
        """What an integer or decimal column `name` holds, or None for other columns."""
        try:
            field_type = self.schema.find_field(name).field_type
        except ValueError:
            return None
        if isinstance(field_type, IntegerType):
            return _Numbers(0, Decimal(IntegerType.min), Decimal(IntegerType.max))
        if isinstance(field_type, LongType):
            return _Numbers(0, Decimal(LongType.min), Decimal(LongType.max))
        if isinstance(field_type, DecimalType):
            largest = Decimal(10) ** (field_type.precision - field_type.scale) - Decimal(1).scaleb(-field_type.scale)
            return _Numbers(field_type.scale, -largest, largest)
        return None


@dataclass(frozen=True)
class _Numbers:
    """The values a column holds: `scale` decimals between `low` and `high`."""

    scale: int
    low: Decimal
    high: Decimal

    def holds(self, value: Decimal) -> bool:
        return self.low <= value <= self.high and _fits(value, self.scale)


def _floor(value: Decimal, scale: int) -> Decimal:
    """`value` rounded down to `scale` decimals (with the digits a double's range needs: `1e300` is exact)."""
    with localcontext(prec=1000):
        return value.quantize(Decimal(1).scaleb(-scale), rounding=ROUND_FLOOR)


def _fits(value: Decimal, scale: int) -> bool:
    return value == _floor(value, scale)


def _at_scale(value: Decimal, scale: int) -> DecimalLiteral | LongLiteral:
    """`value` (exact at `scale`) as the literal PyIceberg binds to such a column without rounding."""
    if scale == 0:
        return LongLiteral(int(value))
    return DecimalLiteral(_floor(value, scale))


def _exact_comparison(predicate: LiteralPredicate, value: Decimal, column: _Numbers) -> BooleanExpression:
    """`predicate` (column op `value`) as a comparison with a value the column can hold, meaning the same rows; a
    comparison every non-null value passes is `is not null` (PyIceberg would make it always true, nulls included)."""
    term, scale = predicate.term, column.scale
    if value > column.high or value < column.low:
        passes = (LessThan, LessThanOrEqual, NotEqualTo) if value > column.high else (GreaterThan, GreaterThanOrEqual, NotEqualTo)
        return NotNull(term) if isinstance(predicate, passes) else AlwaysFalse()
    if _fits(value, scale):
        return type(predicate)(term, _at_scale(value, scale))
    floor = _floor(value, scale)
    below, above = _at_scale(floor, scale), _at_scale(floor + Decimal(1).scaleb(-scale), scale)
    if isinstance(predicate, (GreaterThan, LessThanOrEqual)):
        return type(predicate)(term, below)
    if isinstance(predicate, GreaterThanOrEqual):
        return GreaterThanOrEqual(term, above)
    if isinstance(predicate, LessThan):
        return LessThanOrEqual(term, below)
    if isinstance(predicate, EqualTo):
        return AlwaysFalse()
    if isinstance(predicate, NotEqualTo):
        return NotNull(term)
    return predicate
