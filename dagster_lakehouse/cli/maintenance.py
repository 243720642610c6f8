"""`lakehouse gc`: delete warehouse files that no branch or tag reaches."""

from __future__ import annotations

import argparse
import math
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from dagster_lakehouse.cli._common import CliError, UsageError, print_json
from dagster_lakehouse.cli.progress import progress
from dagster_lakehouse.lakehouse.errors import UnsafeGC
from dagster_lakehouse.lakehouse.gc_grace import MIN_OLDER_THAN

if TYPE_CHECKING:
    from dagster_lakehouse.lakehouse.core import Lakehouse


def hours(text: str) -> float:
    """Argparse type: a finite number of hours, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of hours, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number of hours, 0 or more, got {text!r}")
    try:
        timedelta(hours=value)
    except OverflowError:
        raise argparse.ArgumentTypeError(f"expected a number of hours a date can hold, got {text!r}") from None
    return value


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    """Register the `gc` command."""
    gc = commands.add_parser(
        "gc",
        parents=[common],
        help="delete files no branch or tag reaches (branch-aware garbage collection)",
        description="Mark every file any branch or tag reaches, then delete the other warehouse files "
        "older than --older-than-hours (default 1). Files of lakehouse writes and merges in flight are kept whatever "
        "the grace period; it protects other engines writing through the catalog, so below "
        f"{MIN_OLDER_THAN.total_seconds() / 60:g} minutes ({MIN_OLDER_THAN.total_seconds() / 3600:.2g} h) it needs --force. "
        "Use --dry-run first. On a terminal a progress line shows the files read and deleted (--quiet: none). A file "
        "a ref reaches that is missing or does not read is listed as 'damaged: table ... on ...: <file> ...' (JSON: "
        "'problems') and the exit code is 1; every file of a table whose metadata did not read is kept.",
    )
    gc.add_argument("--older-than-hours", type=hours, default=1.0, metavar="H", help="grace period (default: 1)")
    gc.add_argument("--dry-run", action="store_true", help="list what would be deleted, delete nothing")
    gc.add_argument(
        "--force", action="store_true", help="allow a grace period below the minimum (nothing else writes here)"
    )
    gc.add_argument("--json", action="store_true", help="print JSON for scripts")
    gc.set_defaults(handler=run_gc)


def run_gc(lh: Lakehouse, args: argparse.Namespace) -> int:
    """Run the garbage collection and report the files."""
    older_than = timedelta(hours=args.older_than_hours)
    try:
        with progress(args, "gc") as report:
            files = lh.gc(older_than=older_than, dry_run=args.dry_run, force=args.force, progress=report)
    except UnsafeGC as exc:
        raise UsageError(str(exc), hint="add --force if no other engine writes to this warehouse") from exc
    problems = getattr(files, "problems", [])
    if args.json:
        print_json({"dry_run": args.dry_run, "files": list(files), "problems": [p.as_dict() for p in problems]})
    else:
        verb = "would delete" if args.dry_run else "deleted"
        for uri in files:
            print(uri)
        print(f"{verb} {len(files)} file(s)")
        for problem in problems:
            print(f"damaged: {problem}")
    if problems:
        raise CliError(
            f"gc met {len(problems)} missing or unreadable file(s) that refs reach (listed above as 'damaged'); it "
            "collected the rest",
            hint="restore each file from a copy, or move its table off it (lakehouse branch reset, or write the table "
            "anew); then run gc again",
        )
    return 0
