"""`lakehouse branch ...`: create, list, delete, merge, diff, log and reset lake-wide branches."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from dagster_lakehouse.cli import history
from dagster_lakehouse.cli._common import (
    REF_HELP,
    local_time,
    note,
    open_catalog_database,
    open_lakehouse,
    print_json,
    print_rows,
)
from dagster_lakehouse.cli.progress import progress
from dagster_lakehouse.lakehouse.errors import MergeConflict
from dagster_lakehouse.lakehouse.names import MAIN

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from dagster_lakehouse.lakehouse.core import Lakehouse


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    """Register the `branch` command group and its subcommands."""
    branch = commands.add_parser(
        "branch", parents=[common], help="create, list, merge and inspect branches", description=__doc__
    )
    sub = branch.add_subparsers(dest="branch_command", metavar="COMMAND", required=True)

    create = sub.add_parser("create", parents=[common], help="fork a branch from a branch, tag or past commit")
    create.add_argument("name", metavar="NAME", help="new branch name (git ref-name rules)")
    create.add_argument("--from", dest="from_ref", default=MAIN, metavar="REF", help=f"what to fork: {REF_HELP}")
    create.set_defaults(handler=create_branch, creates=True)

    listing = sub.add_parser("list", parents=[common], help="list branches")
    listing.add_argument("--json", action="store_true", help="print JSON for scripts")
    listing.set_defaults(handler=list_branches, catalog_only=True)

    remove = sub.add_parser("delete", parents=[common], help="delete a branch (its data files stay until gc)")
    remove.add_argument("name", metavar="NAME")
    remove.set_defaults(handler=delete_branch)

    merge = sub.add_parser(
        "merge",
        parents=[common],
        help="three-way merge a branch into another (exit code 3 on conflict)",
        description="Merge every table changed on SOURCE since its branch point into the target, atomically. "
        "Tables both sides changed are merged file by file when the work commutes (appends, replaces of "
        "different partitions); otherwise nothing is merged, each conflicting table is listed with the reason "
        "and the exit code is 3. On a terminal a progress line counts the tables merged (--quiet: none).",
    )
    merge.add_argument("source", metavar="SOURCE", help="branch to merge")
    merge.add_argument("--into", default=MAIN, metavar="BRANCH", help="target branch (default: main)")
    merge.add_argument("-m", "--message", help="commit message of the merge")
    merge.add_argument(
        "--on-conflict",
        choices=["fail", "source", "target"],
        default="fail",
        help="for conflicting tables: fail (default), take SOURCE's version, or keep the target's",
    )
    merge.add_argument("--json", action="store_true", help="print JSON for scripts")
    merge.set_defaults(handler=merge_branch)

    diff = sub.add_parser("diff", parents=[common], help="tables added, removed or modified from ref A to ref B")
    diff.add_argument("a", metavar="A", help="branch, tag or past commit (main@<commit>, dev~2) before")
    diff.add_argument("b", metavar="B", help="branch, tag or past commit (main@<commit>, dev~2) after")
    diff.add_argument("--json", action="store_true", help="print JSON for scripts")
    diff.set_defaults(handler=diff_refs)

    log = sub.add_parser(
        "log",
        parents=[common],
        help="commits reachable from a branch or tag, newest first (also 'lakehouse log')",
        description=history.LOG_DESCRIPTION,
    )
    history.add_log_arguments(log)

    history.add_reset_parser(sub, common)


def create_branch(lh: Lakehouse, args: argparse.Namespace) -> int:
    """`branch create NAME [--from REF]`."""
    lh.create_branch(args.name, args.from_ref)
    count = len(lh.tables(args.name))
    print(f"created branch '{args.name}' from '{args.from_ref}' ({count} table{'s' * (count != 1)})")
    return 0


def list_branches(args: argparse.Namespace) -> int:
    """`branch list [--json]`, from the catalog database alone (no PyIceberg: it answers at once); a catalog from
    an earlier version, which the full lakehouse first upgrades, is listed through it."""
    from sqlalchemy.exc import SQLAlchemyError

    engine = open_catalog_database(args)
    try:
        rows = _branch_rows(engine)
    except SQLAlchemyError:
        with open_lakehouse(args) as lh:
            rows = _branch_rows(lh.engine)
    finally:
        engine.dispose()
    if args.json:
        print_json(rows)
    else:
        print_rows(
            ["BRANCH", "PARENT", "CREATED", "TABLES"],
            [[r["name"], r["parent"], local_time(r["created_at"]), r["tables"]] for r in rows],
        )
    return 0


def _branch_rows(engine: Engine) -> list[dict[str, Any]]:
    """Name, parent, creation time and table count of every branch, `main` first."""
    from dagster_lakehouse.lakehouse import refs as refstore

    with engine.connect() as conn:
        branches, counts = refstore.list_refs(conn, "branch"), refstore.table_counts(conn)
    return [
        {"name": ref.name, "parent": ref.parent, "created_at": ref.created_at, "tables": counts.get(ref.name, 0)}
        for ref in sorted(branches, key=lambda r: (r.name != MAIN, r.name))
    ]


def delete_branch(lh: Lakehouse, args: argparse.Namespace) -> int:
    """`branch delete NAME`."""
    lh.delete_branch(args.name)
    print(f"deleted branch '{args.name}'")
    return 0


def merge_branch(lh: Lakehouse, args: argparse.Namespace) -> int:
    """`branch merge SOURCE [--into BRANCH]`; a conflict propagates as `MergeConflict` (exit code 3)."""
    try:
        with progress(args, f"merge '{args.source}' into '{args.into}'") as report:
            result = lh.merge(args.source, args.into, message=args.message, on_conflict=args.on_conflict, progress=report)
    except MergeConflict as exc:
        if args.json:
            print_json(
                {
                    "source": exc.source,
                    "target": exc.target,
                    "merged": False,
                    "conflicts": exc.tables,
                    "reasons": {c.table: c.reason for c in exc.conflicts},
                }
            )
        raise
    if args.json:
        print_json(
            {
                "source": result.source,
                "target": result.target,
                "merged": True,
                "tables": result.tables,
                "commit_id": result.commit_id,
                "fast_forward": result.fast_forward,
                "replayed": result.replayed,
                "resolved": result.resolved,
            }
        )
    elif not result.tables:
        print(f"nothing to merge: '{args.into}' already has every change of '{args.source}'")
    else:
        count = len(result.tables)
        print(f"merged '{args.source}' into '{args.into}': {count} table{'s' * (count != 1)}, commit {result.commit_id}")
        for table in result.tables:
            how = "file-level merge" if table in result.replayed else None
            if table in result.resolved:
                how = f"conflict settled: {result.resolved[table]}'s version"
            print(f"  {table}" + (f" ({how})" if how else ""))
    return 0


def diff_refs(lh: Lakehouse, args: argparse.Namespace) -> int:
    """`branch diff A B [--json]`."""
    diffs = lh.diff(args.a, args.b)
    if args.json:
        print_json(
            [
                {
                    "table": d.table,
                    "change": d.change,
                    "before_snapshot_id": d.before_snapshot_id,
                    "after_snapshot_id": d.after_snapshot_id,
                    "rows_added": d.rows_added,
                    "rows_removed": d.rows_removed,
                    "files_added": d.files_added,
                    "files_removed": d.files_removed,
                }
                for d in diffs
            ]
        )
    elif not diffs:
        note(f"no differences between '{args.a}' and '{args.b}'")
    else:
        print_rows(
            ["TABLE", "CHANGE", "ROWS +/-", "FILES +/-", f"SNAPSHOT ({args.a})", f"SNAPSHOT ({args.b})"],
            [
                [
                    d.table,
                    d.change,
                    f"+{d.rows_added} -{d.rows_removed}",
                    f"+{d.files_added} -{d.files_removed}",
                    d.before_snapshot_id,
                    d.after_snapshot_id,
                ]
                for d in diffs
            ],
        )
    return 0
