"""Errors of the Dagster layer, and re-raising core errors with the asset they concern."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from dagster_lakehouse.lakehouse.errors import LakehouseError, LakehouseIOError, MergeConflict, WriteConflict

__all__ = ["BranchResolutionError", "LakehouseIOError", "naming"]


class BranchResolutionError(LakehouseError, ValueError):
    """A run's branch cannot be decided (e.g. its partitions name several branches)."""


@contextmanager
def naming(prefix: str) -> Iterator[None]:
    """Re-raise core errors as the same class with `prefix` (asset, input, table, branch) added to the message."""
    try:
        yield
    except (MergeConflict, WriteConflict):
        raise  # their messages name the tables and branches already, and their fields stay for callers
    except LakehouseError as exc:
        raise type(exc)(f"{prefix}: {exc}") from exc
