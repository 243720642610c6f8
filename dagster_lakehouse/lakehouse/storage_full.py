"""Out-of-space errors told apart from races and outages, so a full disk or database fails at once with `StorageFull`.

A full catalog database raises the same SQLAlchemy `OperationalError` as a lost SQLite lock, which commits retry as a
race; a full warehouse raises a bare `OSError`. `is_storage_full` recognises both (errno ENOSPC/EDQUOT, SQLite's
SQLITE_FULL "database or disk is full", PostgreSQL's 53100 `DiskFull`, an object store's "insufficient storage"),
anywhere in an error's chain, and `storage_full` / `names_storage_full` turn them into `StorageFull` naming the operation.
"""

from __future__ import annotations

import errno
import functools
import inspect
import re
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from dagster_lakehouse.lakehouse.errors import StorageFull

__all__ = ["full_resource", "is_storage_full", "names_storage_full", "storage_full"]

F = TypeVar("F", bound=Callable[..., Any])

_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_SQLITE_FULL = 13
_PG_DISK_FULL = "53100"
_FULL_TEXT = re.compile(
    r"no space left on device|os error (28|122)\b|disk quota exceeded|database or disk is full|\bDiskFull\b"
    r"|could not extend file|XMinioStorageFull|InsufficientStorage|HTTP status 507",
    re.IGNORECASE,
)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, then what it was raised from or during, and a SQLAlchemy error's driver error, each once."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending += [e for e in (getattr(current, "orig", None), current.__cause__, current.__context__) if isinstance(e, BaseException)]


def _full(exc: BaseException) -> bool:
    if isinstance(exc, StorageFull):
        return True
    if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
        return True
    if getattr(exc, "sqlite_errorcode", None) == _SQLITE_FULL:
        return True
    if getattr(exc, "sqlstate", None) == _PG_DISK_FULL or getattr(exc, "pgcode", None) == _PG_DISK_FULL:
        return True
    return type(exc).__name__ == "DiskFull" or bool(_FULL_TEXT.search(str(exc)))


def is_storage_full(exc: BaseException) -> bool:
    """Whether `exc`, or an error in its chain, says the disk, the catalog database or the object store is full."""
    return any(_full(e) for e in _chain(exc))


def full_resource(exc: BaseException) -> str:
    """What is full, in words: the catalog database (an error of the SQL driver) or the disk or store being written."""
    for error in _chain(exc):
        if _full(error) and type(error).__module__.split(".")[0] in ("sqlite3", "psycopg", "psycopg2", "sqlalchemy"):
            return "the catalog database (or the disk holding it)"
        if _full(error) and isinstance(error, OSError) and error.filename:
            return f"the disk holding {error.filename}"
    return "the warehouse (the disk or object store holding the table files)"


def storage_full(what: str, exc: BaseException) -> StorageFull | None:
    """`StorageFull` naming `what` if `exc` is an out-of-space error (the error itself if it is one already), else None."""
    if isinstance(exc, StorageFull):
        return exc
    if not is_storage_full(exc):
        return None
    return StorageFull(what, full_resource(exc), exc)


def names_storage_full(template: str) -> Callable[[F], F]:
    """Decorate a method so an out-of-space error becomes `StorageFull` naming `template` formatted with its arguments
    (defaults applied), e.g. `"table '{name}' on branch '{branch}'"`."""

    def decorate(fn: F) -> F:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except StorageFull:
                raise
            except Exception as exc:
                if not is_storage_full(exc):
                    raise
                bound = signature.bind_partial(*args, **kwargs)
                bound.apply_defaults()
                raise StorageFull(template.format(**bound.arguments), full_resource(exc), exc) from exc

        return wrapper  # type: ignore[return-value]

    return decorate
