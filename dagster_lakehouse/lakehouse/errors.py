"""Errors raised by the lakehouse core; each names the table, column or branch at fault."""

from __future__ import annotations


class LakehouseError(Exception):
    """Base class of every error this package raises on purpose."""


class InvalidRefName(LakehouseError, ValueError):
    """A branch or tag name breaks git's ref-name rules."""


class RefNotFound(LakehouseError, KeyError):
    """A branch or tag that does not exist was named."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class RefAlreadyExists(LakehouseError, ValueError):
    """A branch or tag with that name exists already."""


class ProtectedBranchError(LakehouseError, PermissionError):
    """A write named `main` (or a tag) without permission."""


class TableNotFound(LakehouseError, KeyError):
    """The table does not exist on the named ref."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class InvalidTableName(LakehouseError, ValueError):
    """A table name is not of the form `namespace.table`."""


class SchemaMismatch(LakehouseError, TypeError):
    """Data written to a table has a column whose type cannot be reconciled with the table's."""


class ColumnNotFound(LakehouseError, KeyError):
    """A requested column does not exist in the table."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class InvalidFilter(LakehouseError, ValueError):
    """A row filter could not be parsed or does not fit the table's schema."""


class MergeConflict(LakehouseError):
    """Both sides of a merge changed the same tables; nothing was merged."""

    def __init__(self, source: str, target: str, tables: list[str]):
        self.source = source
        self.target = target
        self.tables = sorted(tables)
        super().__init__(
            f"cannot merge branch '{source}' into '{target}': both changed "
            f"{', '.join(self.tables)} since the branch point; nothing was merged"
        )


class CommitTimeout(LakehouseError, TimeoutError):
    """A commit kept losing races with concurrent writers until its deadline passed."""
