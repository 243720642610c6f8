"""Validation of branch/tag names (git's ref-name rules) and `namespace.table` names."""

from __future__ import annotations

import re

from dagster_lakehouse.lakehouse.errors import InvalidRefName, InvalidTableName

MAIN = "main"
_FORBIDDEN_CHARS = set(" ~^:?*[\\")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_NAME_PART = 255
"""The catalog's limit on a namespace or table name (`iceberg_tables` holds them in VARCHAR(255) columns)."""


def validate_ref_name(name: str) -> str:
    """Return `name` if `git check-ref-format --allow-onelevel` accepts it and `git branch` could create it (no leading
    `-`), else raise `InvalidRefName`."""
    if not isinstance(name, str) or not name:
        raise InvalidRefName(f"invalid branch/tag name {_shown(name)}: it must be a non-empty string")
    problem = _ref_name_problem(name)
    if problem:
        raise InvalidRefName(f"invalid branch/tag name {_shown(name)}: {problem} (git ref-name rules)")
    return name


def _ref_name_problem(name: str) -> str | None:
    if len(name) > 200:
        return "longer than 200 characters"
    if name.startswith("-"):
        return "starts with '-'"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "contains a control character"
    bad = sorted(_FORBIDDEN_CHARS.intersection(name))
    if bad:
        return f"contains {''.join(bad)!r}"
    if ".." in name:
        return "contains '..'"
    if "@{" in name:
        return "contains '@{'"
    if name == "@":
        return "is '@'"
    if name.startswith("/") or name.endswith("/") or "//" in name:
        return "has an empty path component"
    if name.endswith("."):
        return "ends with '.'"
    for part in name.split("/"):
        if part.startswith("."):
            return f"component {part!r} starts with '.'"
        if part.endswith(".lock"):
            return f"component {part!r} ends with '.lock'"
    return None


def split_table_name(name: str) -> tuple[str, str]:
    """Split `namespace.table` into its two parts; both must be identifiers."""
    if not isinstance(name, str) or name.count(".") != 1:
        raise InvalidTableName(f"invalid table name {_shown(name)}: expected 'namespace.table', e.g. 'taxi.trips'")
    namespace, table = name.split(".")
    for part in (namespace, table):
        if len(part) > MAX_NAME_PART:
            raise InvalidTableName(
                f"invalid table name {_shown(name)}: {_shown(part)} is {len(part)} characters long, "
                f"the catalog holds at most {MAX_NAME_PART}"
            )
        if not _IDENTIFIER.match(part):
            raise InvalidTableName(
                f"invalid table name {_shown(name)}: {_shown(part)} must start with a letter or '_' "
                "and hold only letters, digits and '_'"
            )
    return namespace, table


def _shown(value: object, limit: int = 80) -> str:
    """`repr(value)`, cut to `limit` characters so a 10,000-character name does not flood the message."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
