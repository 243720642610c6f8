"""Transient object-store errors (refused connections, timeouts, 5xx, throttling) retried with backoff, then named.

Only whole steps that are safe to run again are retried: a read, and the planning and staging of a write or merge
(every attempt writes files under new names and moves no pointer; the catalog transaction does no object-store I/O).
Past the bound (`LakehouseConfig.storage_retry_seconds`) the step fails with `StorageUnavailable`, chained to the
last error. A retried step run inside another retried step is not retried again: the outer one owns the deadline.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import TypeVar

from sqlalchemy.exc import SQLAlchemyError

from dagster_lakehouse.lakehouse.errors import LakehouseError, StorageUnavailable

T = TypeVar("T")

logger = logging.getLogger(__name__)

_TRANSIENT = re.compile(
    r"NETWORK_CONNECTION|SERVICE_UNAVAILABLE|INTERNAL_FAILURE|SLOW_DOWN|SlowDown|THROTTL|Throttl|REQUEST_TIMEOUT"
    r"|RequestTimeout|ServiceUnavailable|InternalError|HTTP status 5\d\d|HTTP response code:? 5\d\d"
    r"|connection (refused|reset|aborted|closed)|could ?n[o']t connect|timed out|timeout was reached"
    r"|broken pipe|temporarily unavailable|curlCode: (6|7|28|52|55|56)\b",
    re.IGNORECASE,
)
"""What PyArrow's S3 filesystem (AWS SDK / curl), botocore and the OS say when the store is down, slow or throttling."""

_TRANSIENT_TYPES = ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError")
"""botocore's names for the same, matched by name so this module needs no botocore (fsspec-based FileIO)."""

_NOT_STORAGE = (LakehouseError, SQLAlchemyError, FileNotFoundError, PermissionError, IsADirectoryError, FileExistsError)
"""Errors that are final, or the catalog database's (which commits retry themselves), whatever they were raised from."""

_BACKOFF_FIRST, _BACKOFF_MAX = 0.2, 5.0

_retrying: ContextVar[bool] = ContextVar("lakehouse_storage_retrying", default=False)


def is_transient(exc: BaseException) -> bool:
    """Whether `exc` (or an error it was raised from) says the object store is briefly down, slow or throttling."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _NOT_STORAGE):
            return False
        if isinstance(current, ConnectionError | TimeoutError) or type(current).__name__ in _TRANSIENT_TYPES:
            return True
        if isinstance(current, OSError) and _TRANSIENT.search(str(current)):
            return True
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return False


def retrying(what: str, fn: Callable[[], T], seconds: float, location: str) -> T:
    """Run `fn`, again with exponential backoff while it fails transiently for up to `seconds`, then `StorageUnavailable`.

    `what` names the table/ref (or operation) and `location` the store, for the error. Non-transient errors pass through.
    """
    if _retrying.get():
        return fn()
    token = _retrying.set(True)
    try:
        start = time.monotonic()
        attempts = 0
        while True:
            attempts += 1
            try:
                return fn()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                elapsed = time.monotonic() - start
                if elapsed >= seconds:
                    raise StorageUnavailable(what, location, elapsed, attempts, exc) from exc
                delay = min(_BACKOFF_MAX, _BACKOFF_FIRST * 2 ** (attempts - 1)) * random.uniform(0.5, 1.0)
                delay = min(delay, seconds - elapsed)
                logger.warning(
                    "%s: object store at %s unavailable (%s); retry %d in %.1fs (%.0fs of %.0fs)",
                    *(what, location, _first_line(exc), attempts, delay, elapsed, seconds),
                )
                time.sleep(delay)
    finally:
        _retrying.reset(token)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
