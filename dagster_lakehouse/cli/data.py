"""`lakehouse import` (Parquet/CSV files into a table on a branch) and `lakehouse query` (SQL over a ref).

Polars is imported by the commands when they run, not with this module: every `lakehouse` call builds its parsers.
"""

from __future__ import annotations

import argparse
import re
from typing import TYPE_CHECKING, Any

from dagster_lakehouse.cli._common import (
    FRAME_FORMATS,
    REF_HELP,
    CliError,
    UsageError,
    first_paragraph,
    positive_int,
    print_frame,
)
from dagster_lakehouse.cli.column_types import TYPE_HELP, schema_option, zone_option
from dagster_lakehouse.cli.progress import progress
from dagster_lakehouse.lakehouse.errors import InvalidData, PinnedRefError, ProtectedBranchError, QueryOutsideRef
from dagster_lakehouse.lakehouse.names import MAIN, split_table_name

if TYPE_CHECKING:
    import polars as pl

    from dagster_lakehouse.lakehouse.core import Lakehouse

QUERY_HELP = """\
Run SQL (Polars SQL) over the tables visible on a branch or tag and print the result.

Each table `namespace.table` can be named in the query as
  namespace.table      e.g. SELECT * FROM taxi.trips
  namespace_table      e.g. SELECT * FROM taxi_trips
  table                e.g. SELECT * FROM trips  (only when no other table or alias has that name)
An alias that would name two tables is not registered; use the full name then. Tables are scanned lazily
(only those the query names are opened), so filters and column selections are pushed into the scan.

Queries are read-only: a statement that would change a table (DROP, CREATE, DELETE, INSERT, UPDATE,
TRUNCATE, ALTER, ...) is refused with exit code 2; write with 'lakehouse import' or the Python API.

A query reads the tables of REF and nothing else: table functions (read_parquet, read_csv, read_json,
read_ipc, ...), paths, URLs, buckets and other names in FROM are refused with exit code 1 before anything
is opened; import a file into a table first.
"""

WRITE_STATEMENTS = frozenset(
    "alter attach copy create delete detach drop grant insert merge rename replace revoke truncate update upsert".split()
)
_SQL_COMMENT = re.compile(r"\A(\s+|--[^\n]*(\n|\Z)|/\*.*?\*/|\()", re.DOTALL)


def add_parsers(commands: Any, common: argparse.ArgumentParser) -> None:
    """Register the `import` and `query` commands."""
    imp = commands.add_parser(
        "import",
        parents=[common],
        help="load a Parquet/CSV file or a folder of them into a table on a branch",
        description="Load PATH into TABLE on BRANCH in one commit. PATH is a .parquet or .csv file, a folder "
        "(every *.parquet and *.csv directly inside it, unioned by column name), or a glob such as "
        "'data/*.parquet'. CSV dates and datetimes are parsed when they look like ISO 8601. On a terminal a "
        "progress line counts the rows read (--quiet: none).",
    )
    imp.add_argument("source", metavar="PATH", help="file, folder or glob to read")
    imp.add_argument("table", metavar="TABLE", help="target table as namespace.table")
    imp.add_argument("--branch", required=True, metavar="BRANCH", help="branch to write to")
    imp.add_argument(
        "--mode", choices=("replace", "append"), default="replace", help="replace the table or append (default: replace)"
    )
    imp.add_argument("--allow-main", action="store_true", help="allow writing to the protected main branch")
    imp.add_argument("-m", "--message", help="commit message (default: 'import PATH')")
    imp.add_argument(
        "--schema",
        type=schema_option,
        metavar="COL=TYPE,...",
        help=f"set column types, e.g. 'fare=double,day=date,amount=decimal(10,2)'. Types: {TYPE_HELP}",
    )
    imp.add_argument(
        "--timestamp-tz",
        type=zone_option,
        metavar="ZONE",
        help="give every timestamp column without a time zone this one (e.g. UTC): its values are read as wall-clock "
        "time in ZONE and stored as timestamptz; also the zone of --schema timestamptz columns (default UTC)",
    )
    imp.set_defaults(handler=import_data, creates=True)

    query = commands.add_parser(
        "query",
        parents=[common],
        help="run SQL over the tables of a branch or tag",
        description=QUERY_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    query.add_argument("sql", metavar="SQL", help="the query, e.g. 'SELECT count(*) FROM taxi.trips'")
    query.add_argument("--ref", default=MAIN, help=REF_HELP)
    query.add_argument("--format", choices=FRAME_FORMATS, default="table", help="output format (default: table)")
    query.add_argument(
        "--max-rows",
        type=positive_int,
        default=50,
        metavar="N",
        help="rows shown by --format table before eliding the middle (default: 50); csv/json print all",
    )
    query.set_defaults(handler=run_query)


def import_data(lh: Lakehouse, args: argparse.Namespace) -> int:
    """`import PATH TABLE --branch B [--mode replace|append] [--allow-main] [--schema COL=TYPE,...] [--timestamp-tz
    ZONE]`; on a terminal, the rows read so far."""
    import polars as pl

    from dagster_lakehouse.cli.sources import counted, scan_source

    from dagster_lakehouse.cli.column_types import apply_types

    split_table_name(args.table)  # a bad table name is reported before any file is opened
    frame, files = scan_source(args.source)
    try:
        frame = apply_types(frame, args.source, args.schema, args.timestamp_tz)
    except pl.exceptions.PolarsError as exc:
        raise CliError(f"cannot read '{args.source}': {first_paragraph(exc)}") from exc
    try:
        with progress(args, f"import {args.source}") as shown:
            data = counted(frame, shown, count_first="://" not in args.source) if shown.enabled else frame
            result = lh.write(
                args.table,
                data,
                branch=args.branch,
                mode=args.mode,
                allow_main=args.allow_main,
                message=args.message or f"import {args.source}",
            )
    except pl.exceptions.PolarsError as exc:
        raise CliError(f"cannot read '{args.source}': {first_paragraph(exc)}") from exc
    except InvalidData as exc:
        if isinstance(exc.__cause__, pl.exceptions.PolarsError):
            raise CliError(f"cannot read '{args.source}': {first_paragraph(exc.__cause__)}") from exc
        raise CliError(f"cannot import '{args.source}': {exc}") from exc
    except TypeError as exc:
        raise CliError(f"cannot import '{args.source}': {exc}") from exc
    except PinnedRefError:
        raise  # a past commit (`main~1`): its message says what to do, --allow-main would not help
    except ProtectedBranchError as exc:
        raise CliError(str(exc), hint=_protected_hint(lh, args.branch)) from exc
    origin = f"{files} files in '{args.source}'" if files > 1 else f"'{args.source}'"
    verb = "appended" if args.mode == "append" else "imported"
    print(
        f"{verb} {result.rows} row{'s' * (result.rows != 1)} from {origin} into {result.table} "
        f"on '{result.branch}' (snapshot {result.snapshot_id})"
    )
    return 0


def _protected_hint(lh: Lakehouse, branch: str) -> str:
    if branch in lh.tags():
        return (
            f"tags are immutable: import into a branch ('lakehouse branch create NAME --from {branch}'), "
            f"then tag that branch anew"
        )
    return "import into a branch ('lakehouse branch create NAME'), then 'lakehouse branch merge NAME'; or pass --allow-main"


def check_read_only(sql: str) -> None:
    """Refuse (exit code 2) a statement that would change a table: `query` reads the lakehouse, it never writes."""
    rest = sql
    while match := _SQL_COMMENT.match(rest):
        rest = rest[match.end() :]
    words = re.findall(r"[A-Za-z_]+", rest[:200].lower())
    if words[:1] == ["explain"]:
        words = words[1:]
    if not words:
        raise UsageError("query needs a statement, e.g. 'SELECT count(*) FROM taxi.trips'")
    if words[0] in WRITE_STATEMENTS:
        raise UsageError(
            f"query is read-only: it runs SELECT statements, not {words[0].upper()}",
            hint="write with 'lakehouse import' (or Lakehouse.write / drop_table in Python)",
        )


def sql_aliases(tables: list[str]) -> dict[str, str]:
    """Names a query may use for each table: `ns.table`, `ns_table`, and `table` when unambiguous."""
    candidates: dict[str, set[str]] = {}
    for name in tables:
        namespace, table = name.split(".", 1)
        for alias in (f"{namespace}_{table}", table):
            candidates.setdefault(alias, set()).add(name)
    aliases = {name: name for name in tables}
    for alias, owners in candidates.items():
        if len(owners) == 1 and alias not in aliases:
            aliases[alias] = next(iter(owners))
    return aliases


def sql_context(lh: Lakehouse, ref: str, sql: str) -> tuple[pl.SQLContext, dict[str, str]]:
    """A SQL context with a lazy scan of every table of `ref` that `sql` mentions, under all of its aliases, and
    nothing else; `QueryOutsideRef` if `sql` would read anything but those tables (a file, URL or bucket)."""
    import polars as pl

    from dagster_lakehouse.cli.sql_scope import check_scope

    aliases = sql_aliases(lh.tables(ref))
    check_scope(sql, ref, aliases)
    words = {w.lower() for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", sql)}
    wanted = {
        table
        for alias, table in aliases.items()
        if alias.lower() in words or (alias == table and alias.split(".", 1)[1].lower() in words)
    }
    frames = {table: lh.scan(table, ref=ref) for table in sorted(wanted)}
    context = pl.SQLContext()
    for alias, table in aliases.items():
        if table in frames:
            context.register(alias, frames[table])
    return context, aliases


def run_query(lh: Lakehouse, args: argparse.Namespace) -> int:
    """`query SQL [--ref REF] [--format table|csv|json]`."""
    import polars as pl

    check_read_only(args.sql)
    try:
        context, aliases = sql_context(lh, args.ref, args.sql)
    except QueryOutsideRef as exc:
        raise CliError(str(exc), hint="to query a file, import it into a table first: 'lakehouse import PATH TABLE --branch B'") from exc
    try:
        result = context.execute(args.sql, eager=False).collect()
    except pl.exceptions.PolarsError as exc:
        message = first_paragraph(exc)
        if "not found" in message and "relation" in message:
            message += f"; tables on '{args.ref}': {', '.join(sorted(set(aliases.values()))) or 'none'}"
        raise CliError(f"query on '{args.ref}' failed: {message}") from exc
    print_frame(result, args.format, max_rows=args.max_rows)
    return 0
