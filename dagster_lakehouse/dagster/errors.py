"""Errors of the Dagster layer, and re-raising core errors with the asset they concern."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from dagster_lakehouse.lakehouse.error_copies import named
from dagster_lakehouse.lakehouse.errors import LakehouseError, LakehouseIOError

__all__ = ["BranchResolutionError", "LakehouseIOError", "naming"]


class BranchResolutionError(LakehouseError, ValueError):
    """A run's branch cannot be decided (e.g. its partitions name several branches)."""


@contextmanager
def naming(prefix: str) -> Iterator[None]:
    """Re-raise core errors as the same class and fields with `prefix` (asset, input, table, branch) added to the
    message (`error_copies.named`: no constructor is called, so errors taking other arguments keep their class)."""
    try:
        yield
    except LakehouseError as exc:
        renamed = named(exc, prefix)  # conflicts name their tables and branches already and pass through as they are
        if renamed is exc:
            raise
        raise renamed from exc
