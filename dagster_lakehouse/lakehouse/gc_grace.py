"""The grace-period rule of garbage collection, apart from the collector so that it imports without PyArrow,
PyIceberg or SQLAlchemy (the CLI's help names the minimum)."""

from __future__ import annotations

import math
from datetime import timedelta

from dagster_lakehouse.lakehouse.errors import UnsafeGC

MIN_OLDER_THAN = timedelta(minutes=10)
"""The smallest `older_than` `gc` accepts without `force=True`. Lakehouse writes and merges are protected by their
write leases whatever it is; the grace period is what protects engines committing to the catalog directly (Spark,
Trino: they take no lease) and writers whose clock runs more than `gc.CLOCK_SKEW` behind the object store's."""


def check_grace(older_than: timedelta, warehouse: str, *, force: bool, dry_run: bool) -> None:
    """Refuse a negative `older_than`, and one below `MIN_OLDER_THAN` for a deleting run unless `force`."""
    seconds = older_than.total_seconds()
    if not math.isfinite(seconds) or seconds < 0:
        raise UnsafeGC(f"gc of {warehouse}: older_than must be 0 or more, not {older_than}")
    if older_than < MIN_OLDER_THAN and not (force or dry_run):
        raise UnsafeGC(
            f"gc of {warehouse}: older_than={older_than} is below the minimum of {MIN_OLDER_THAN}; lakehouse commits "
            f"are protected by their write leases, but files another engine is writing through the catalog are not "
            f"(force=True allows it)"
        )
