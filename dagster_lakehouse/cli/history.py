"""`lakehouse log`, `lakehouse revert` and `lakehouse branch reset`: the commit log, and undoing commits."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from dagster_lakehouse.cli._common import REF_HELP, CliError, local_time, note, positive_int, print_json, print_rows
from dagster_lakehouse.lakehouse.errors import PinnedRefError, ProtectedBranchError, RevertConflict
from dagster_lakehouse.lakehouse.names import MAIN, split_table_name

if TYPE_CHECKING:
    from dagster_lakehouse.lakehouse.core import Lakehouse
    from dagster_lakehouse.lakehouse.refs import Commit
    from dagster_lakehouse.lakehouse.undo import UndoResult

LOG_DESCRIPTION = (
    "Commits reachable from REF, newest first: its own, then its parent's up to the fork. REF may be a past "
    "commit (main@<commit>, dev~2): the log up to that commit. --table keeps the commits that changed a table, "
    "--run-id those a Dagster run made. Commit ids (or unique prefixes of 4+ hex digits) name past states: "
    "'lakehouse table head T --ref main@<commit>', 'lakehouse revert <commit>'."
)

REVERT_DESCRIPTION = (
    "Add a commit to BRANCH (default: main) that undoes COMMIT's changes to each table it changed. COMMIT is a "
    "commit id or a unique prefix of 4+ hex digits from 'lakehouse log', or a spec naming one (main~1: the commit before the latest). A table nothing "
    "changed since goes back to its state before COMMIT (schema included); one that later commits changed gets the "
    "file-level inverse (COMMIT's added files removed, its removed files added back). When a later commit rewrote "
    "COMMIT's files, created or dropped the table, nothing is reverted, each table is listed with the reason and "
    "the exit code is 3. Allowed on main: it only takes away what one commit did."
)

RESET_DESCRIPTION = (
    "Point every table of BRANCH where REF points, in one commit: back to a past commit of the branch "
    "(dev~2, dev@<commit>), forward again, or onto another ref (main). Tables REF lacks are dropped from BRANCH; "
    "merge bases move so a later merge does not take the undone changes back in. Refused for tags, and for main "
    "unless --allow-main (undo one commit on main with 'lakehouse revert COMMIT' instead)."
)


# ----- log ---------------------------------------------------------------------------------------------


def add_log_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments `log` and `branch log` share (one implementation, `show_log`)."""
    parser.add_argument("ref", nargs="?", default=MAIN, metavar="REF", help=REF_HELP)
    parser.add_argument("-n", "--limit", type=positive_int, default=None, metavar="N", help="show at most N commits")
    parser.add_argument("--table", metavar="TABLE", help="only commits that changed TABLE (namespace.table)")
    parser.add_argument("--run-id", metavar="RUN", help="only commits made by Dagster run RUN")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    parser.set_defaults(handler=show_log)


def add_parsers(commands: Any, common: argparse.ArgumentParser) -> None:
    """Register the top-level `log` and `revert` commands (`branch reset` is registered by `branch`)."""
    log = commands.add_parser(
        "log", parents=[common], help="commit log of a branch or tag, newest first", description=LOG_DESCRIPTION
    )
    add_log_arguments(log)

    revert = commands.add_parser(
        "revert",
        parents=[common],
        help="undo one commit with a new commit (exit code 3 on conflict)",
        description=REVERT_DESCRIPTION,
    )
    revert.add_argument(
        "commit",
        metavar="COMMIT",
        help="commit id or unique prefix from 'lakehouse log', or a spec naming one (main~1: the one before the latest)",
    )
    revert.add_argument("--on", default=MAIN, metavar="BRANCH", help="branch to revert on (default: main)")
    revert.add_argument("-m", "--message", help="commit message (default: 'revert <commit>: <its message>')")
    revert.add_argument("--json", action="store_true", help="print JSON for scripts")
    revert.set_defaults(handler=revert_commit)


def add_reset_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register `branch reset` in the `branch` command group."""
    reset = sub.add_parser(
        "reset",
        parents=[common],
        help="point a branch where a ref or past commit points",
        description=RESET_DESCRIPTION,
    )
    reset.add_argument("branch", metavar="BRANCH", help="branch to move")
    reset.add_argument(
        "--to",
        required=True,
        metavar="REF",
        help="branch, tag or past commit to point it at: dev~2, dev@<commit>, main",
    )
    reset.add_argument("--allow-main", action="store_true", help="allow resetting the protected main branch")
    reset.add_argument("-m", "--message", help="commit message (default: \"reset 'BRANCH' to 'REF'\")")
    reset.add_argument("--json", action="store_true", help="print JSON for scripts")
    reset.set_defaults(handler=reset_branch)


def commit_json(commit: Commit) -> dict[str, Any]:
    """A commit as a JSON-ready dict."""
    return {
        "id": commit.id,
        "short_id": commit.short_id,
        "ref": commit.ref,
        "kind": commit.kind,
        "time": commit.time,
        "message": commit.message,
        "tables": commit.tables,
        "snapshots": commit.snapshots,
        "run_id": commit.run_id,
    }


def tables_cell(tables: list[str]) -> str:
    """Up to three table names, else their count, so a branch creation over many tables stays one short line."""
    if not tables:
        return "-"
    return ",".join(tables) if len(tables) <= 3 else f"{len(tables)} tables"


def show_log(lh: Lakehouse, args: argparse.Namespace) -> int:
    """`log [REF] [-n N] [--table T] [--run-id R] [--json]`, also as `branch log`."""
    if args.table is not None:
        split_table_name(args.table)  # a malformed name is an error, not an empty log
    commits = lh.log(args.ref, args.limit, table=args.table, run_id=args.run_id)
    if args.json:
        print_json([commit_json(c) for c in commits])
        return 0
    if not commits:
        only = [
            f"changed '{args.table}'" if args.table else "",
            f"were made by run '{args.run_id}'" if args.run_id else "",
        ]
        note(f"no commits on '{args.ref}' " + " and ".join(o for o in only if o))
        return 0
    with_runs = any(c.run_id for c in commits)
    headers = ["COMMIT", "TIME", "REF", "KIND", "TABLES", *(["RUN"] if with_runs else []), "MESSAGE"]
    print_rows(
        headers,
        [
            [
                c.short_id,
                local_time(c.time),
                c.ref,
                c.kind,
                tables_cell(c.tables),
                *([c.run_id] if with_runs else []),
                c.message,
            ]
            for c in commits
        ],
    )
    return 0


# ----- revert and reset --------------------------------------------------------------------------------


def undo_json(result: UndoResult) -> dict[str, Any]:
    """What a revert or reset changed, JSON-ready."""
    return {
        "branch": result.branch,
        "commit_id": result.commit_id,
        "tables": result.tables,
        "restored": result.restored,
        "inverted": result.inverted,
    }


def _print_tables(lh: Lakehouse, result: UndoResult, *, how: bool, absent: str) -> None:
    """One line per table changed: its snapshot id now (or that it is gone), and with `how` restored or inverted."""
    present = set(lh.tables(result.branch))
    rows = []
    for table in result.tables:
        inverted = table in result.inverted
        snapshot = result.inverted[table] if inverted else result.restored[table]
        if snapshot is not None:
            state = f"snapshot {snapshot}"
        else:
            state = "no snapshot (empty table)" if table in present else f"dropped ({absent})"
        rows.append([table, *([("file-level inverse" if inverted else "restored")] if how else []), state])
    print_rows(["TABLE", *(["HOW"] if how else []), "NOW"], rows, indent="  ")


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'s' * (count != 1)}"


def revert_commit(lh: Lakehouse, args: argparse.Namespace) -> int:
    """`revert COMMIT [--on BRANCH] [-m MESSAGE] [--json]`; a conflict propagates as `RevertConflict` (exit code 3)."""
    from dagster_lakehouse.lakehouse.refspec import is_pinned

    lh.ref(args.on)  # `--on` names a branch: an error about it first (`--on main~1` is read-only)
    spec = args.commit if is_pinned(args.commit) else f"{args.on}@{args.commit}"
    view = lh.view(spec)
    target = view.commit
    if target is None:
        raise CliError(
            f"cannot revert '{args.commit}': it names '{view.ref.name}' as it is now, not a commit",
            hint=f"name a commit by its id (or a unique prefix) from 'lakehouse log {view.ref.name}'",
        )
    try:
        result = lh.revert(target.id, on=args.on, message=args.message)  # the commit shown, even if `~n` moves
    except RevertConflict as exc:
        if args.json:
            print_json(
                {
                    "branch": exc.branch,
                    "reverted": False,
                    "commit": target.id,
                    "conflicts": exc.tables,
                    "reasons": {c.table: c.reason for c in exc.conflicts},
                }
            )
        raise
    if args.json:
        print_json({**undo_json(result), "reverted": True, "commit": target.id})
        return 0
    what = f"commit {target.short_id} ({target.message})"
    if result.commit_id is None:
        print(f"nothing to revert: every table {what} changed is already as before it on '{result.branch}'")
        return 0
    count = _plural(len(result.tables), "table")
    print(f"reverted {what} on '{result.branch}': commit {result.commit_id[:10]}, {count}")
    _print_tables(lh, result, how=True, absent="the commit created it")
    return 0


def reset_branch(lh: Lakehouse, args: argparse.Namespace) -> int:
    """`branch reset BRANCH --to REF [--allow-main] [-m MESSAGE] [--json]`."""
    try:
        result = lh.reset(args.branch, to=args.to, allow_main=args.allow_main, message=args.message)
    except PinnedRefError:
        raise
    except ProtectedBranchError as exc:
        if args.branch != MAIN or args.allow_main:
            raise
        raise CliError(
            str(exc),
            hint="undo single commits with 'lakehouse revert COMMIT'; or pass --allow-main to move main anyway",
        ) from exc
    if args.json:
        print_json(undo_json(result))
        return 0
    if result.commit_id is None:
        print(f"nothing to reset: every table of '{result.branch}' already points where '{args.to}' does")
        return 0
    count = _plural(len(result.tables), "table")
    print(f"reset '{result.branch}' to '{args.to}': commit {result.commit_id[:10]}, {count}")
    _print_tables(lh, result, how=False, absent=f"not on '{args.to}'")
    return 0
