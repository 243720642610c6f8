"""`lakehouse gc`: delete warehouse files that no branch or tag reaches."""

from __future__ import annotations

import argparse
from datetime import timedelta
from typing import Any

from dagster_lakehouse.cli._common import UsageError, print_json
from dagster_lakehouse.lakehouse import Lakehouse


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    """Register the `gc` command."""
    gc = commands.add_parser(
        "gc",
        parents=[common],
        help="delete files no branch or tag reaches (branch-aware garbage collection)",
        description="Mark every file any branch or tag reaches, then delete the other warehouse files "
        "older than --older-than-hours (default 1, so in-flight writes are safe). Use --dry-run first.",
    )
    gc.add_argument("--older-than-hours", type=float, default=1.0, metavar="H", help="grace period (default: 1)")
    gc.add_argument("--dry-run", action="store_true", help="list what would be deleted, delete nothing")
    gc.add_argument("--json", action="store_true", help="print JSON for scripts")
    gc.set_defaults(handler=run_gc)


def run_gc(lh: Lakehouse, args: argparse.Namespace) -> int:
    """Run the garbage collection and report the files."""
    if args.older_than_hours < 0:
        raise UsageError("--older-than-hours must be 0 or more")
    files = lh.gc(older_than=timedelta(hours=args.older_than_hours), dry_run=args.dry_run)
    if args.json:
        print_json({"dry_run": args.dry_run, "files": files})
        return 0
    verb = "would delete" if args.dry_run else "deleted"
    for uri in files:
        print(uri)
    print(f"{verb} {len(files)} file(s)")
    return 0
