"""Shared pieces of the `lakehouse` CLI: opening the lakehouse, CLI errors, aligned-text and JSON output.

Nothing here imports the core, SQLAlchemy or Polars at module level: `lakehouse --help` builds every parser from
these modules, and each command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dagster_lakehouse.lakehouse.config import DEFAULT_PATH

if TYPE_CHECKING:
    from sqlalchemy import Engine

    import polars as pl

    from dagster_lakehouse.lakehouse.core import Lakehouse

REF_HELP = "branch, tag or past commit: main@<commit>, dev~2 (default: main)"
"""Help of an argument that reads a ref: wherever a ref is read, a past commit (`main@<commit>`, `dev~2`) is too."""


class CliError(Exception):
    """A failure reported as `error: <message>` with exit code 1 (no traceback)."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class UsageError(CliError):
    """Arguments that parse but do not make sense together; exit code 2 like argparse's own errors."""

    exit_code = 2


def positive_int(text: str) -> int:
    """Argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, got {value}")
    return value


def column_list(text: str) -> list[str]:
    """Argparse type: a comma-separated list of column names (`a,b,c`)."""
    columns = [c.strip() for c in text.split(",") if c.strip()]
    if not columns:
        raise argparse.ArgumentTypeError(f"expected column names separated by commas, got {text!r}")
    return columns


def hide_password(uri: str) -> str:
    """`uri` with any password replaced by `***`, for error messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(uri).render_as_string(hide_password=True)
    except Exception:
        return uri


def local_root(args: argparse.Namespace) -> Path | None:
    """The folder of the embedded lakehouse the arguments point at, or None when a catalog URI is configured."""
    if args.catalog_uri or os.environ.get("LAKEHOUSE_CATALOG_URI"):
        return None
    return Path(args.path or os.environ.get("LAKEHOUSE_PATH") or DEFAULT_PATH).expanduser()


def _check_exists(args: argparse.Namespace) -> Path | None:
    """The local lakehouse folder the arguments name (None for a catalog URI); refused if it holds no lakehouse and
    the command does not create one, so a typo in `--path` does not silently make an empty lakehouse."""
    root = local_root(args)
    if root is not None and not args.creates and not (root / "catalog.db").exists():
        raise CliError(
            f"no lakehouse at '{root.resolve()}' (no catalog.db there): pass --path, set LAKEHOUSE_PATH, "
            "or create one with 'lakehouse branch create NAME'"
        )
    return root


def open_catalog_database(args: argparse.Namespace) -> Engine:
    """The catalog database of the lakehouse `open_lakehouse` would open, alone: SQLAlchemy without PyIceberg,
    Polars or PyArrow, for commands that only read refs (`branch list`) and should answer at once."""
    from dagster_lakehouse.lakehouse.config import LakehouseConfig
    from dagster_lakehouse.lakehouse.engine import make_engine

    _check_exists(args)
    return make_engine(LakehouseConfig.resolve(args.catalog_uri, args.warehouse, None, args.path).catalog_uri)


def open_lakehouse(args: argparse.Namespace) -> Lakehouse:
    """Connect to the lakehouse named by `--catalog-uri/--warehouse/--path`, the environment, or `.lakehouse`.

    Only commands that write (`branch create`, `import`, ...) may create a new local lakehouse; the others
    fail on a folder without one.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from dagster_lakehouse.lakehouse.core import Lakehouse

    root = _check_exists(args)
    try:
        return Lakehouse(catalog_uri=args.catalog_uri, warehouse=args.warehouse, path=args.path)
    except SQLAlchemyError as exc:
        where = args.catalog_uri or os.environ.get("LAKEHOUSE_CATALOG_URI") or f"'{root}'"
        raise CliError(f"cannot open the catalog {hide_password(str(where))}: {first_paragraph(exc)}") from exc


def first_paragraph(exc: BaseException) -> str:
    """The first paragraph of an exception's message (Polars and SQLAlchemy append long plans and links)."""
    text = str(exc).strip() or type(exc).__name__
    return text.split("\n\n", 1)[0].strip()


def print_rows(headers: Sequence[str], rows: Iterable[Sequence[Any]], indent: str = "") -> None:
    """Print `rows` as left-aligned columns under `headers`; the last column is not padded."""
    table = [[str(h) for h in headers], *[["-" if v is None else str(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    for row in table:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths[:-1], strict=True)] + [row[-1]]
        print(indent + "  ".join(cells).rstrip())


def print_fields(pairs: Sequence[tuple[str, Any]]) -> None:
    """Print `label: value` lines with the values aligned."""
    width = max(len(label) for label, _ in pairs) + 1
    for label, value in pairs:
        print(f"{label + ':':<{width}} {'-' if value is None else value}")


def print_json(value: Any) -> None:
    """Print `value` as indented JSON (datetimes as ISO 8601)."""
    print(json.dumps(value, indent=2, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (set, tuple)):
        return sorted(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def local_time(value: datetime | None) -> str:
    """A timestamp in the local time zone to the second, for people."""
    if value is None:
        return "-"
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def note(message: str) -> None:
    """A remark for people on stderr, so stdout stays clean for pipes."""
    print(message, file=sys.stderr)


FRAME_FORMATS = ("table", "csv", "json")


def print_frame(frame: pl.DataFrame, fmt: str = "table", max_rows: int | None = None) -> None:
    """Print a Polars DataFrame as its table repr (at most `max_rows` rows shown), CSV, or a JSON array of rows."""
    import polars as pl

    if fmt == "csv":
        sys.stdout.write(frame.write_csv())
        return
    if fmt == "json":
        print(frame.write_json())
        return
    encoding = (getattr(sys.stdout, "encoding", None) or "").lower().replace("-", "")
    options: dict[str, Any] = {
        "tbl_rows": max_rows if max_rows is not None else -1,
        "tbl_cols": -1,
        "fmt_str_lengths": 60,
        "tbl_width_chars": max(80, shutil.get_terminal_size((120, 24)).columns),
    }
    if not encoding.startswith("utf"):
        options["tbl_formatting"] = "ASCII_FULL_CONDENSED"
    with pl.Config(**options):
        print(frame)
