"""The `lakehouse` command line: branches, tags, tables, file imports and SQL over an Iceberg lakehouse.

Exit codes: 0 success; 1 a lakehouse error (`error: ...` on stderr, no traceback); 2 a usage error;
3 a merge or revert conflict (the conflicting tables are listed); 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence

import polars as pl
import pyarrow as pa
from pyiceberg.exceptions import CommitFailedException, NoSuchTableError, ValidationError
from sqlalchemy.exc import SQLAlchemyError

from dagster_lakehouse.cli import branch, data, history, maintenance, table, tag
from dagster_lakehouse.cli._common import CliError, first_paragraph, open_lakehouse
from dagster_lakehouse.lakehouse import LakehouseError, MergeConflict
from dagster_lakehouse.lakehouse.errors import RevertConflict

__all__ = ["build_parser", "main"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CONFLICT = 3
EXIT_INTERRUPTED = 130

EXPECTED_ERRORS = (
    LakehouseError,
    pl.exceptions.PolarsError,
    pa.ArrowException,
    CommitFailedException,
    NoSuchTableError,
    ValidationError,
    SQLAlchemyError,
    OSError,
)

EPILOG = """\
connection: --catalog-uri/--warehouse, else LAKEHOUSE_CATALOG_URI/LAKEHOUSE_WAREHOUSE, else the local
lakehouse in --path / LAKEHOUSE_PATH (default: .lakehouse). Global options go before or after the command.

exit codes: 0 ok, 1 lakehouse error, 2 usage error, 3 merge or revert conflict, 130 interrupted.

examples:
  lakehouse branch create dev
  lakehouse import trips.parquet taxi.trips --branch dev
  lakehouse query "SELECT count(*) FROM taxi.trips" --ref dev
  lakehouse branch merge dev
  lakehouse log --table taxi.trips
  lakehouse table head taxi.trips --ref main~1
  lakehouse revert 1a2b3c4d
"""


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("dagster-lakehouse")
    except Exception:
        return "unknown"


def _connection_options(parser: argparse.ArgumentParser, default: object) -> None:
    group = parser.add_argument_group("connection")
    group.add_argument("--path", default=default, metavar="DIR", help="local lakehouse folder (default: .lakehouse)")
    group.add_argument("--catalog-uri", default=default, metavar="URI", help="SQL catalog database URI")
    group.add_argument("--warehouse", default=default, metavar="URI", help="warehouse location (file://, s3://)")
    parser.add_argument("--debug", action="store_true", default=default, help="show tracebacks of errors")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `lakehouse` command."""
    parser = argparse.ArgumentParser(
        prog="lakehouse",
        description="Branches, tags and tables of an Apache Iceberg lakehouse.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    _connection_options(parser, None)
    parser.set_defaults(creates=False, debug=False)
    common = argparse.ArgumentParser(add_help=False)
    _connection_options(common, argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    branch.add_parser(commands, common)
    tag.add_parser(commands, common)
    table.add_parser(commands, common)
    data.add_parsers(commands, common)
    history.add_parsers(commands, common)
    maintenance.add_parser(commands, common)
    return parser


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def _conflicts(exc: MergeConflict | RevertConflict) -> None:
    _error(str(exc))
    print("conflicting tables:", file=sys.stderr)
    for conflict in exc.conflicts:
        print(f"  {conflict.table}: {conflict.reason}", file=sys.stderr)


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def run(args: argparse.Namespace) -> int:
    """Run the parsed command; translate errors into messages and exit codes."""
    lakehouse = None
    try:
        lakehouse = open_lakehouse(args)
        return int(args.handler(lakehouse, args))
    except MergeConflict as exc:
        if args.debug:
            traceback.print_exc()
        _conflicts(exc)
        print(
            f"hint: 'lakehouse branch diff {exc.target} {exc.source}' shows both sides; "
            f"'--on-conflict source' or '--on-conflict target' takes one side's version of those tables, "
            f"or redo the changes of '{exc.source}' on a new branch created from '{exc.target}'",
            file=sys.stderr,
        )
        return EXIT_CONFLICT
    except RevertConflict as exc:
        if args.debug:
            traceback.print_exc()
        _conflicts(exc)
        print(
            f"hint: 'lakehouse log {exc.branch} --table TABLE' lists the later commits; revert those first, "
            f"or move the branch with 'lakehouse branch reset {exc.branch} --to REF'",
            file=sys.stderr,
        )
        return EXIT_CONFLICT
    except CliError as exc:
        if args.debug:
            traceback.print_exc()
        _error(str(exc))
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_ERROR
    except EXPECTED_ERRORS as exc:
        if args.debug:
            traceback.print_exc()
        message = str(exc) if isinstance(exc, LakehouseError) else f"{type(exc).__name__}: {first_paragraph(exc)}"
        _error(message)
        return EXIT_ERROR
    finally:
        if lakehouse is not None:
            lakehouse.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `lakehouse` console script; returns the exit code."""
    try:
        try:
            args = build_parser().parse_args(None if argv is None else list(argv))
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else EXIT_USAGE
        return run(args)
    except KeyboardInterrupt:
        _error("interrupted")
        return EXIT_INTERRUPTED
