"""The FileIO of a local warehouse: PyIceberg's PyArrow FileIO, reading `file:` locations by the rule of `locations`."""

from __future__ import annotations

from pyiceberg.io.pyarrow import PyArrowFileIO
from pyiceberg.typedef import EMPTY_DICT, Properties

from dagster_lakehouse.lakehouse.locations import native_path

__all__ = ["LocalFileIO"]


class LocalFileIO(PyArrowFileIO):
    """PyArrow's FileIO, taking a `file:` location as a URI (decoded once by `native_path`), not as a path.

    PyArrow's own reading keeps the escapes (`My%20Projects` becomes a folder of that name) and cuts the path at `#`
    or `?`, so a table under `My Projects #1` would be written beside the chosen folder and found by no other reader.
    """

    @staticmethod
    def parse_location(location: str, properties: Properties = EMPTY_DICT) -> tuple[str, str, str]:
        """`(scheme, netloc, path)` as PyArrow's FileIO has them, with the native path of a `file:` URI."""
        if location.startswith("file:"):
            return "file", "", native_path(location)
        return PyArrowFileIO.parse_location(location, properties)
