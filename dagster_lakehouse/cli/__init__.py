"""The `lakehouse` command line: branches, tags, tables, file imports and SQL over an Iceberg lakehouse.

Exit codes: 0 success; 1 a lakehouse error (`error: ...` on stderr, no traceback); 2 a usage error;
3 a merge or revert conflict (the conflicting tables are listed); 130 interrupted.

Start-up imports only argparse and the command modules: the core (PyIceberg, SQLAlchemy, PyArrow) loads when a
command opens the lakehouse, Polars when a command reads or writes rows, and Dagster never.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from dagster_lakehouse.cli import branch, data, history, maintenance, table, tag
from dagster_lakehouse.cli._common import CliError, first_paragraph, open_lakehouse
from dagster_lakehouse.lakehouse.errors import LakehouseError, MergeConflict, RevertConflict

__all__ = ["build_parser", "main"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CONFLICT = 3
EXIT_INTERRUPTED = 130

LIBRARY_ERRORS = {
    "polars.exceptions": ("PolarsError",),
    "pyarrow": ("ArrowException",),
    "pyiceberg.exceptions": ("CommitFailedException", "NoSuchTableError", "ValidationError"),
    "sqlalchemy.exc": ("SQLAlchemyError",),
}
"""Errors of the libraries underneath reported as `error: <Type>: <message>` (exit code 1), by module and class name."""


def expected_errors() -> tuple[type[BaseException], ...]:
    """The error classes reported without a traceback: ours, `OSError`, and those of `LIBRARY_ERRORS` whose module
    is loaded (an error of a library that was never imported cannot have been raised, and importing it would cost
    more than the command)."""
    found: list[type[BaseException]] = [LakehouseError, OSError]
    for module_name, names in LIBRARY_ERRORS.items():
        module = sys.modules.get(module_name)
        found += [getattr(module, name) for name in names if module is not None and hasattr(module, name)]
    return tuple(found)


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


class _VersionAction(argparse.Action):
    """`--version`: looks the version up only when asked (`importlib.metadata` is slower to import than argparse)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: object, values: object, option: str | None = None) -> None:
        print(f"{parser.prog} {_version()}")
        parser.exit()


def _connection_options(parser: argparse.ArgumentParser, default: object) -> None:
    group = parser.add_argument_group("connection")
    group.add_argument("--path", default=default, metavar="DIR", help="local lakehouse folder (default: .lakehouse)")
    group.add_argument("--catalog-uri", default=default, metavar="URI", help="SQL catalog database URI")
    group.add_argument("--warehouse", default=default, metavar="URI", help="warehouse location (file://, s3://)")
    parser.add_argument("--debug", action="store_true", default=default, help="show tracebacks of errors")
    parser.add_argument(
        "-q", "--quiet", action="store_true", default=default, help="no progress line (shown only on a terminal anyway)"
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `lakehouse` command."""
    parser = argparse.ArgumentParser(
        prog="lakehouse",
        description="Branches, tags and tables of an Apache Iceberg lakehouse.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_VersionAction, help="show the version and exit")
    _connection_options(parser, None)
    parser.set_defaults(creates=False, debug=False, quiet=False)
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


def _traceback(args: argparse.Namespace) -> None:
    """With `--debug`, the traceback of the error being handled."""
    if args.debug:
        import traceback

        traceback.print_exc()


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
        if getattr(args, "catalog_only", False):  # reads refs only: the catalog database, no lakehouse
            return int(args.handler(args))
        lakehouse = open_lakehouse(args)
        return int(args.handler(lakehouse, args))
    except MergeConflict as exc:
        _traceback(args)
        _conflicts(exc)
        print(
            f"hint: 'lakehouse branch diff {exc.target} {exc.source}' shows both sides; "
            f"'--on-conflict source' or '--on-conflict target' takes one side's version of those tables, "
            f"or redo the changes of '{exc.source}' on a new branch created from '{exc.target}'",
            file=sys.stderr,
        )
        return EXIT_CONFLICT
    except RevertConflict as exc:
        _traceback(args)
        _conflicts(exc)
        print(
            f"hint: 'lakehouse log {exc.branch} --table TABLE' lists the later commits; revert those first, "
            f"or move the branch with 'lakehouse branch reset {exc.branch} --to REF'",
            file=sys.stderr,
        )
        return EXIT_CONFLICT
    except CliError as exc:
        _traceback(args)
        _error(str(exc))
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_ERROR
    except expected_errors() as exc:
        _traceback(args)
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
