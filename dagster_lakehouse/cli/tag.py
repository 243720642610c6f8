"""`lakehouse tag ...`: freeze a ref under an immutable tag, list tags, delete one."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from dagster_lakehouse.cli._common import UsageError, local_time, print_json, print_rows
from dagster_lakehouse.lakehouse.names import MAIN

if TYPE_CHECKING:
    from dagster_lakehouse.lakehouse.core import Lakehouse


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    """Register the `tag` command."""
    tag = commands.add_parser(
        "tag",
        parents=[common],
        help="tag a branch or tag (immutable), or list tags",
        description="'lakehouse tag NAME [REF]' freezes REF (default: main) under the immutable tag NAME. "
        "'lakehouse tag' or 'lakehouse tag list' lists tags; to create a tag called 'list', name its ref: "
        "'lakehouse tag list main'.",
    )
    tag.add_argument("name", nargs="?", metavar="NAME", help="tag to create (or 'list')")
    tag.add_argument("ref", nargs="?", metavar="REF", help="branch, tag or past commit (main~1) to freeze (default: main)")
    tag.add_argument("-d", "--delete", action="store_true", help="delete tag NAME instead")
    tag.add_argument("--json", action="store_true", help="print JSON for scripts (when listing)")
    tag.set_defaults(handler=run_tag)


def run_tag(lh: Lakehouse, args: argparse.Namespace) -> int:
    """Dispatch `tag` to create, delete or list."""
    if args.delete:
        if args.name is None or args.ref is not None:
            raise UsageError("tag --delete takes exactly one tag name: 'lakehouse tag --delete NAME'")
        lh.delete_tag(args.name)
        print(f"deleted tag '{args.name}'")
        return 0
    if args.name is None or (args.name == "list" and args.ref is None):
        return list_tags(lh, args)
    ref = args.ref or MAIN
    lh.tag(args.name, ref)
    count = len(lh.tables(args.name))
    print(f"tagged '{ref}' as '{args.name}' ({count} table{'s' * (count != 1)})")
    return 0


def list_tags(lh: Lakehouse, args: argparse.Namespace) -> int:
    """`tag list [--json]`."""
    rows = []
    for name in lh.tags():
        ref = lh.ref(name)
        rows.append({"name": name, "from": ref.parent, "created_at": ref.created_at, "tables": len(lh.tables(name))})
    if args.json:
        print_json(rows)
    else:
        print_rows(
            ["TAG", "FROM", "CREATED", "TABLES"],
            [[r["name"], r["from"], local_time(r["created_at"]), r["tables"]] for r in rows],
        )
    return 0
