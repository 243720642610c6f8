"""Lakehouse errors copied without calling their constructors: named with what they concern (the asset, the model), or
sent from an isolated model's process as class name, message and fields and rebuilt on the Dagster side.

Error classes take different constructor arguments (`WriteConflict(table, branch, reason)`, `MergeConflict(source,
target, conflicts)`), so `type(exc)(message)` fails for some; a copy sets the message and the fields directly and keeps
the class, so callers can still catch `WriteConflict` and read its `table`, `branch` and `reason`.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from dagster_lakehouse.lakehouse.errors import LakehouseError, MergeConflict, WriteConflict

__all__ = ["error_record", "named", "rebuilt"]

_SELF_NAMED = (MergeConflict, WriteConflict)
"""Errors whose message names the tables and branches already: they pass through unprefixed."""


def named(exc: LakehouseError, prefix: str) -> LakehouseError:
    """`exc` with `prefix` (the asset, input, table, branch) before its message, same class and fields; `exc` itself
    for errors that name their tables and branches already."""
    if isinstance(exc, _SELF_NAMED):
        return exc
    return _copy(type(exc), f"{prefix}: {exc}", dict(vars(exc)))


def error_record(exc: BaseException) -> dict[str, Any]:
    """What rebuilds `exc` in another process: its class (module and name), message and JSON-safe fields."""
    fields = {}
    for name, value in vars(exc).items():
        encoded = _encoded(value)
        if encoded is not _SKIP:
            fields[name] = encoded
    return {"module": type(exc).__module__, "type": type(exc).__name__, "message": str(exc), "fields": fields}


def rebuilt(record: dict[str, Any], message: str) -> LakehouseError | None:
    """The lakehouse error `record` describes, with `message`, its fields restored; None if it names no error class of
    this package (or one that no longer exists)."""
    cls = _error_class(record.get("module"), record.get("type"))
    if cls is None:
        return None
    fields = {name: _decoded(value) for name, value in (record.get("fields") or {}).items()}
    return _copy(cls, message, fields)


def _copy(cls: type[LakehouseError], message: str, fields: dict[str, Any]) -> LakehouseError:
    error = cls.__new__(cls)
    error.args = (message,)
    vars(error).update(fields)
    return error


def _error_class(module: str | None, name: str | None) -> type[LakehouseError] | None:
    if not module or not name or not module.startswith("dagster_lakehouse."):
        return None
    try:
        cls = getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None
    return cls if isinstance(cls, type) and issubclass(cls, LakehouseError) else None


_SKIP = object()
_DATACLASS = "__dataclass__"


def _encoded(value: Any) -> Any:
    """`value` as JSON (a dataclass of this package as its fields and class), or `_SKIP` if it cannot be."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        items = [_encoded(v) for v in value]
        return _SKIP if any(i is _SKIP for i in items) else items
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        items = {k: _encoded(v) for k, v in value.items()}
        return _SKIP if any(i is _SKIP for i in items.values()) else items
    if dataclasses.is_dataclass(value) and type(value).__module__.startswith("dagster_lakehouse."):
        inner = _encoded({f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
        if inner is not _SKIP:
            return {_DATACLASS: f"{type(value).__module__}:{type(value).__qualname__}", **inner}
    if hasattr(value, "__fspath__"):
        return str(value)
    return _SKIP


def _decoded(value: Any) -> Any:
    if isinstance(value, list):
        return [_decoded(v) for v in value]
    if isinstance(value, dict):
        items = {k: _decoded(v) for k, v in value.items() if k != _DATACLASS}
        where = value.get(_DATACLASS)
        if isinstance(where, str) and where.startswith("dagster_lakehouse."):
            module, _, name = where.partition(":")
            try:
                cls = getattr(importlib.import_module(module), name, None)
            except ImportError:
                cls = None
            if cls is not None and dataclasses.is_dataclass(cls):
                return cls(**items)
        return items
    return value
