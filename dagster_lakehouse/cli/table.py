"""`lakehouse table ...`: list the tables of a ref, show one table's details, print its first rows."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from dagster_lakehouse.cli._common import (
    FRAME_FORMATS,
    REF_HELP,
    column_list,
    local_time,
    note,
    positive_int,
    print_fields,
    print_frame,
    print_json,
    print_rows,
)
from dagster_lakehouse.lakehouse.names import MAIN

if TYPE_CHECKING:
    from dagster_lakehouse.lakehouse.core import Lakehouse


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    """Register the `table` command group and its subcommands."""
    table = commands.add_parser(
        "table", parents=[common], help="list tables, show one, print its first rows", description=__doc__
    )
    sub = table.add_subparsers(dest="table_command", metavar="COMMAND", required=True)

    listing = sub.add_parser("list", parents=[common], help="tables visible on a branch or tag")
    listing.add_argument("--ref", default=MAIN, help=REF_HELP)
    listing.add_argument("--json", action="store_true", help="print JSON for scripts")
    listing.set_defaults(handler=list_tables)

    show = sub.add_parser("show", parents=[common], help="schema, snapshot, location and row count of a table")
    show.add_argument("name", metavar="NAME", help="table as namespace.table")
    show.add_argument("--ref", default=MAIN, help=REF_HELP)
    show.add_argument("--json", action="store_true", help="print JSON for scripts")
    show.set_defaults(handler=show_table)

    head = sub.add_parser(
        "head",
        parents=[common],
        help="first rows of a table, with column and filter pushdown",
        description="Print the first N rows of a table. --filter takes an expression string such as "
        "\"pickup_datetime >= '2024-01-01' and PULocationID in (1, 2)\"; it is parsed, never evaluated as "
        "Python, and pushed down into the scan.",
    )
    head.add_argument("name", metavar="NAME", help="table as namespace.table")
    head.add_argument("--ref", default=MAIN, help=REF_HELP)
    head.add_argument("-n", "--rows", type=positive_int, default=10, metavar="N", help="number of rows (default: 10)")
    head.add_argument("--columns", type=column_list, metavar="A,B", help="only these columns")
    head.add_argument("--filter", metavar="EXPR", help="row filter expression")
    head.add_argument("--format", choices=FRAME_FORMATS, default="table", help="output format (default: table)")
    head.set_defaults(handler=head_table)


def list_tables(lh: Lakehouse, args: argparse.Namespace) -> int:
    """`table list [--ref REF] [--json]`: one table name per line."""
    names = lh.tables(args.ref)
    if args.json:
        print_json(names)
    elif not names:
        note(f"no tables on '{args.ref}'")
    else:
        for name in names:
            print(name)
    return 0


def describe_table(lh: Lakehouse, name: str, ref: str) -> dict[str, Any]:
    """The details `table show` prints: location, current snapshot and its summary counts, partitioning, schema."""
    table = lh.table(name, ref)
    snapshot = table.current_snapshot()
    summary = snapshot.summary.additional_properties if snapshot and snapshot.summary else {}

    def count(key: str) -> int | None:
        """An integer of the snapshot summary, None when absent."""
        value = summary.get(key)
        return int(value) if value is not None and str(value).isdigit() else None

    spec = table.spec()
    schema = table.schema()
    partitioning = [f"{field.transform}({schema.find_column_name(field.source_id)})" for field in spec.fields]
    return {
        "table": name,
        "ref": ref,
        "location": table.location(),
        "snapshot_id": snapshot.snapshot_id if snapshot else None,
        "snapshot_time": datetime.fromtimestamp(snapshot.timestamp_ms / 1000, tz=UTC) if snapshot else None,
        "operation": snapshot.summary.operation.value if snapshot and snapshot.summary else None,
        "rows": count("total-records") if snapshot else 0,
        "data_files": count("total-data-files") if snapshot else 0,
        "size_bytes": count("total-files-size") if snapshot else 0,
        "partitioning": partitioning,
        "schema": [
            {"id": f.field_id, "name": f.name, "type": str(f.field_type), "required": f.required} for f in schema.fields
        ],
    }


def show_table(lh: Lakehouse, args: argparse.Namespace) -> int:
    """`table show NAME [--ref REF] [--json]`."""
    info = describe_table(lh, args.name, args.ref)
    if args.json:
        print_json(info)
        return 0
    snapshot = "none (no data yet)"
    if info["snapshot_id"] is not None:
        snapshot = f"{info['snapshot_id']} ({info['operation']}, {local_time(info['snapshot_time'])})"
    files = info["data_files"]
    if files is not None and info["size_bytes"] is not None:
        files = f"{files} ({_size(info['size_bytes'])})"
    print_fields(
        [
            ("table", info["table"]),
            ("ref", info["ref"]),
            ("location", info["location"]),
            ("snapshot", snapshot),
            ("rows", info["rows"]),
            ("data files", files),
            ("partitioning", ", ".join(info["partitioning"]) or "none"),
        ]
    )
    print("schema:")
    print_rows(
        ["ID", "COLUMN", "TYPE", "NULLABLE"],
        [[c["id"], c["name"], c["type"], "no" if c["required"] else "yes"] for c in info["schema"]],
        indent="  ",
    )
    return 0


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} bytes"
    value = size / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def head_table(lh: Lakehouse, args: argparse.Namespace) -> int:
    """`table head NAME [--ref] [-n N] [--columns a,b] [--filter EXPR] [--format]`."""
    columns = list(dict.fromkeys(args.columns)) if args.columns else None  # `--columns n,n` shows n once, as read() does
    frame = lh.scan(args.name, ref=args.ref, columns=columns, filter=args.filter).head(args.rows).collect()
    print_frame(frame, args.format)
    return 0
