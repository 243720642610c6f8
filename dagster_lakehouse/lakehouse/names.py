"""Validation of branch/tag names (git's ref-name rules) and `namespace.table` names."""

from __future__ import annotations

import re

from dagster_lakehouse.lakehouse.errors import InvalidRefName, InvalidTableName

MAIN = "main"
_FORBIDDEN_CHARS = set(" ~^:?*[\\")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def validate_ref_name(name: str) -> str:
    """Return `name` if it is a valid ref name under `git check-ref-format --allow-onelevel`, else raise."""
    if not isinstance(name, str) or not name:
        raise InvalidRefName(f"invalid branch/tag name {name!r}: it must be a non-empty string")
    problem = _ref_name_problem(name)
    if problem:
        raise InvalidRefName(f"invalid branch/tag name {name!r}: {problem} (git ref-name rules)")
    return name


def _ref_name_problem(name: str) -> str | None:
    if len(name) > 200:
        return "longer than 200 characters"
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
        raise InvalidTableName(f"invalid table name {name!r}: expected 'namespace.table', e.g. 'taxi.trips'")
    namespace, table = name.split(".")
    for part in (namespace, table):
        if not _IDENTIFIER.match(part):
            raise InvalidTableName(
                f"invalid table name {name!r}: {part!r} must start with a letter or '_' "
                "and hold only letters, digits and '_'"
            )
    return namespace, table
