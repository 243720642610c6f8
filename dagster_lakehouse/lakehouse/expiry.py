"""Past commits whose files `gc` has collected, refused by name (`CommitExpired`) before anything is read or written.

The history window (`history_retention`) says which commits `gc` keeps, but a collection may have run with a shorter
one (`gc(keep_history=timedelta(0))`, another process's setting). So a past state is "expired" when the clock says so
(`refspec.resolve`) or when a metadata file it needs is gone: each pointer of the state that is not one of the ref's
current pointers is looked for in the store (one existence check per table, several at once).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from pyiceberg.utils.concurrent import ExecutorFactory

from dagster_lakehouse.lakehouse.catalog import shared_file_io
from dagster_lakehouse.lakehouse.errors import CommitExpired
from dagster_lakehouse.lakehouse.refs import Commit

__all__ = ["check_kept", "gone"]


def gone(locations: Iterable[tuple[str, str]], properties: dict[str, str]) -> list[tuple[str, str]]:
    """Of `locations` ((table, metadata file) pairs), those whose file the store no longer holds."""
    items = sorted(set(locations))

    def exists(item: tuple[str, str]) -> bool:
        return shared_file_io(properties, item[1]).new_input(item[1]).exists()

    found = list(ExecutorFactory.get_or_create().map(exists, items)) if len(items) > 1 else [exists(i) for i in items]
    return [item for item, present in zip(items, found, strict=True) if not present]


def check_kept(
    spec: str, commit: Commit, locations: Iterable[tuple[str, str]], properties: dict[str, str], retention: timedelta
) -> None:
    """`CommitExpired` naming `spec` (a past commit) if a metadata file it needs (`locations`: (table, file) pairs) is
    gone."""
    missing = gone(locations, properties)
    if not missing:
        return
    table, location = missing[0]
    more = f" (and {len(missing) - 1} other table{'s' if len(missing) > 2 else ''})" if len(missing) > 1 else ""
    days = retention.total_seconds() / 86400
    raise CommitExpired(
        f"ref '{spec}': commit {commit.short_id} of {commit.time:%Y-%m-%d %H:%M} UTC has expired: gc collected the "
        f"metadata file of table '{table}' it needs ({location}){more}, as a collection with a history window shorter "
        f"than this commit's age does (gc(keep_history=...), or another process's history_retention). The window here "
        f"is {days:g} day{'s' if days != 1 else ''}; to keep history longer, lengthen it with "
        f"LAKEHOUSE_HISTORY_RETENTION_DAYS (or Lakehouse(history_retention=...)) in every process that runs gc, and "
        f"pass gc no shorter keep_history"
    )
