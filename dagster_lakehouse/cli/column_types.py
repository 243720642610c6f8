"""Column types and time zones of `lakehouse import`: `--schema col=type,...` and `--timestamp-tz ZONE`.

Parsing the options imports nothing heavy (they are argparse types, checked when `lakehouse` starts); Polars is
imported when the casts are built, by a running import.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dagster_lakehouse.cli._common import CliError

if TYPE_CHECKING:
    import polars as pl

__all__ = ["TYPE_HELP", "ColumnType", "apply_types", "schema_option", "zone_option"]

ALIASES = {
    "int": "int", "int32": "int", "integer": "int",
    "long": "long", "int64": "long", "bigint": "long",
    "float": "float", "float32": "float",
    "double": "double", "float64": "double",
    "string": "string", "str": "string", "varchar": "string",
    "bool": "bool", "boolean": "bool",
    "date": "date",
    "timestamp": "timestamp",
    "timestamptz": "timestamptz",
}  # fmt: skip
"""The type names `--schema` accepts, to the Iceberg type each stands for."""

TYPE_HELP = (
    "int (32-bit; also int32, integer), long (64-bit; int64, bigint), float (float32), double (float64), "
    "string (str, varchar), bool (boolean), date, timestamp (no time zone), timestamptz (with time zone), "
    "decimal(P,S)"
)
_DECIMAL = re.compile(r"decimal\(\s*(\d+)\s*,\s*(\d+)\s*\)")
_ITEM = re.compile(r"\s*([^=,]+?)\s*=\s*(decimal\([^)]*\)|[^,]*?)\s*(?:,|$)", re.IGNORECASE)
_TRUE, _FALSE = ("true", "t", "yes", "y", "1"), ("false", "f", "no", "n", "0")


@dataclass(frozen=True)
class ColumnType:
    """One of the types `--schema` names: `name` as in `ALIASES`' values, or `decimal` with precision and scale."""

    name: str
    precision: int = 0
    scale: int = 0

    def __str__(self) -> str:
        return f"decimal({self.precision},{self.scale})" if self.name == "decimal" else self.name


def column_type(text: str) -> ColumnType:
    """The type `text` names (case-insensitive); `ValueError` naming it and the known types otherwise."""
    name = text.strip().lower()
    if name in ALIASES:
        return ColumnType(ALIASES[name])
    match = _DECIMAL.fullmatch(name)
    if match:
        precision, scale = int(match[1]), int(match[2])
        if not 1 <= precision <= 38 or scale > precision:
            raise ValueError(f"{text!r}: a decimal has a precision of 1 to 38 and a scale of at most its precision")
        return ColumnType("decimal", precision, scale)
    raise ValueError(f"unknown type {text!r}; known types: {TYPE_HELP}")


def schema_option(text: str) -> dict[str, ColumnType]:
    """Argparse type of `--schema`: `col=type,col=type,...` (a `decimal(10,2)` keeps its comma)."""
    types: dict[str, ColumnType] = {}
    rest = text.strip()
    while rest:
        match = _ITEM.match(rest)
        if match is None or not match[2]:
            piece = rest.split(",", 1)[0]
            raise argparse.ArgumentTypeError(f"expected COLUMN=TYPE, got {piece!r} (e.g. 'fare=double,day=date')")
        column = match[1]
        try:
            types[column] = column_type(match[2])
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"column {column!r}: {exc}") from None
        rest = rest[match.end() :].strip()
    if not types:
        raise argparse.ArgumentTypeError("expected COLUMN=TYPE,... (e.g. 'fare=double,day=date')")
    return types


def zone_option(text: str) -> str:
    """Argparse type of `--timestamp-tz`: an IANA time zone name (`UTC`, `America/New_York`)."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise argparse.ArgumentTypeError(f"unknown time zone {text!r}; give an IANA name such as UTC or America/New_York") from None
    return text


def apply_types(frame: pl.LazyFrame, source: str, types: dict[str, ColumnType] | None, zone: str | None) -> pl.LazyFrame:
    """`frame` with the columns of `types` cast to them, and, with `zone`, every timestamp without a time zone read as
    wall-clock time in `zone` (stored as UTC instants). A column `types` names as `timestamp` keeps no zone."""
    import polars as pl

    types = types or {}
    schema = frame.collect_schema()
    missing = [c for c in types if c not in schema]
    if missing:
        raise CliError(
            f"--schema names column {', '.join(map(repr, missing))}, which '{source}' does not have; "
            f"its columns: {', '.join(schema.names())}"
        )
    casts = [_cast(pl.col(c), schema[c], t, zone or "UTC").alias(c) for c, t in types.items()]
    if zone is not None:
        casts += [
            pl.col(c).dt.replace_time_zone(zone).dt.convert_time_zone("UTC")
            for c, dtype in schema.items()
            if c not in types and isinstance(dtype, pl.Datetime) and dtype.time_zone is None
        ]
    return frame.with_columns(casts) if casts else frame


def _cast(column: pl.Expr, source: pl.DataType, target: ColumnType, zone: str) -> pl.Expr:
    """`column` (of type `source`) as `target`; timestamps without a zone are read in `zone` for a `timestamptz`."""
    import polars as pl

    text = source == pl.String
    if target.name in ("timestamp", "timestamptz"):
        if text:
            parsed = column.str.to_datetime(time_unit="us", time_zone=zone if target.name == "timestamptz" else "UTC")
        elif isinstance(source, pl.Datetime):
            parsed = column.dt.cast_time_unit("us")
            if source.time_zone is None and target.name == "timestamptz":
                parsed = parsed.dt.replace_time_zone(zone)
        else:
            parsed = column.cast(pl.Datetime("us", "UTC" if target.name == "timestamptz" else None))
        if target.name == "timestamp":
            aware = text or (isinstance(source, pl.Datetime) and source.time_zone is not None)
            return parsed.dt.convert_time_zone("UTC").dt.replace_time_zone(None) if aware else parsed
        return parsed.dt.convert_time_zone("UTC")
    if target.name == "date" and text:
        return column.str.to_date()
    if target.name == "bool" and text:
        mapping = {**dict.fromkeys(_TRUE, True), **dict.fromkeys(_FALSE, False)}
        return column.str.strip_chars().str.to_lowercase().replace_strict(mapping, return_dtype=pl.Boolean)
    dtypes = {
        "int": pl.Int32, "long": pl.Int64, "float": pl.Float32, "double": pl.Float64, "string": pl.String,
        "bool": pl.Boolean, "date": pl.Date,
    }  # fmt: skip
    dtype = pl.Decimal(target.precision, target.scale) if target.name == "decimal" else dtypes[target.name]
    return column.cast(dtype)
