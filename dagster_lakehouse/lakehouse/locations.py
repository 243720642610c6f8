"""Locations of the lakehouse's files: the one rule by which every writer names a file and every reader finds it.

A location is a URI. On an object store (`s3://bucket/key`) its path is the object key, verbatim: PyArrow, boto3 and
Polars all take it as written. On a local warehouse it is a `file:` URI whose path is percent-encoded once
(`file_uri`: a folder `My Projects #1` is `My%20Projects%20%231`) and decoded once (`native_path`) by every reader:
PyIceberg (`local_io.LocalFileIO`, the FileIO of local warehouses), Polars (handed native paths: its reader decodes a URI, its
sink does not), gc's listing and deletes. PyIceberg names a partition folder `column=quote_plus(value)`, so a value's
characters reach the disk decoded (`city=Zürich`), except an escaped `/` or NUL (`a%2Fb` stays as written): no file
name can hold them, and a value must never add a folder level. A location without a scheme is a local path, verbatim,
as PyIceberg reads it.
"""

from __future__ import annotations

import os
import re
from urllib.parse import quote_from_bytes, urlsplit

__all__ = [
    "LOCAL_FILE_IO",
    "canonical",
    "file_uri",
    "is_local",
    "keeps_escapes",
    "legacy_key",
    "local_io_properties",
    "native_path",
    "sqlite_url",
]

LOCAL_FILE_IO = "dagster_lakehouse.lakehouse.local_io.LocalFileIO"
"""The `py-io-impl` of a local warehouse (unless its properties name another FileIO)."""
PY_IO_IMPL = "py-io-impl"
"""PyIceberg's property naming the FileIO class (`pyiceberg.io.PY_IO_IMPL`; this module imports no PyIceberg)."""

_PATH_SAFE = "/=+"
"""Characters `file_uri` leaves as they are, besides letters, digits and `_.-~`: '/' and what PyIceberg leaves in a
partition folder's name (`col=a+b`), so a listed file's URI is, for most names, the location its writer gave it."""

_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_KEPT_ESCAPES = frozenset({0x2F, 0x00})
"""Escapes that stay as written in a native path: '/' and NUL cannot be part of a file name."""


def file_uri(path: str | os.PathLike[str]) -> str:
    """The `file:` URI of the absolute local `path`, percent-encoded once (`native_path` is its inverse)."""
    return "file://" + quote_from_bytes(os.fsencode(os.path.abspath(path)), safe=_PATH_SAFE)


def is_local(location: str) -> bool:
    """Whether `location` names a local file: a `file:` URI or a path without a scheme."""
    return location.startswith("file:") or "://" not in location


def native_path(location: str) -> str:
    """The operating-system path a local `location` names (its percent-encoding decoded once); any other location,
    as it is."""
    if not location.startswith("file:"):
        return location
    rest = location[len("file:") :]
    if rest.startswith("//"):  # an authority: empty or `localhost` for a local file
        slash = rest.find("/", 2)
        rest = rest[slash:] if slash >= 0 else "/"
    return os.fsdecode(_decode(rest))


def _decode(path: str) -> bytes:
    """`path` with each `%XX` escape replaced by its byte, except those of `_KEPT_ESCAPES`."""
    out = bytearray()
    position = 0
    for match in _ESCAPE.finditer(path):
        out += path[position : match.start()].encode("utf-8", "surrogateescape")
        out += match.group(0).encode("ascii") if _is_kept(match) else bytes([int(match.group(1), 16)])
        position = match.end()
    out += path[position:].encode("utf-8", "surrogateescape")
    return bytes(out)


def keeps_escapes(location: str) -> bool:
    """Whether a local `location` holds an escape its native path keeps (`%2F`, `%00`): a reader that decodes every
    escape (Polars' own, given the URI) would look for another file."""
    return is_local(location) and any(_is_kept(match) for match in _ESCAPE.finditer(location))


def _is_kept(match: re.Match[str]) -> bool:
    return int(match.group(1), 16) in _KEPT_ESCAPES


def legacy_key(key: str) -> str:
    """The `canonical` form of a local file's location as versions before this rule wrote it (the escapes of the
    location kept in the file's name): gc keeps a listed file whose key this is, too."""
    return canonical(key) if key.startswith("file://") else key


def canonical(location: str) -> str:
    """One comparable form of a location: `file://<native path>` for a local file, `scheme://bucket/key` otherwise."""
    if is_local(location):
        return "file://" + native_path(location)
    parts = urlsplit(location)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def sqlite_url(path: str | os.PathLike[str]) -> str:
    """The SQLAlchemy URL of the SQLite database file `path`: `?`, `#` and `%` in the path are escaped, not parsed."""
    from sqlalchemy import URL

    return URL.create(drivername="sqlite", database=os.fspath(path)).render_as_string(hide_password=False)


def local_io_properties(warehouse: str, properties: dict[str, str]) -> dict[str, str]:
    """`properties`, with `LocalFileIO` as the FileIO when the warehouse is local and they name none."""
    if not is_local(warehouse) or PY_IO_IMPL in properties:
        return properties
    return {**properties, PY_IO_IMPL: LOCAL_FILE_IO}
