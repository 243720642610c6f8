"""The one error the notebook layer raises: a notebook cannot become Dagster assets."""

from __future__ import annotations

from pathlib import Path

from dagster_lakehouse.lakehouse.errors import LakehouseError


class NotebookLoadError(LakehouseError):
    """A notebook or a `@model` in it is broken; the message starts with `file:line` when known."""

    def __init__(self, message: str, *, path: str | Path | None = None, line: int | None = None):
        self.message = message
        self.path = str(path) if path is not None else None
        self.line = line
        super().__init__(self._formatted())

    def _formatted(self) -> str:
        if self.path is None:
            return self.message
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.message}"

    def located(self, path: str | Path, line: int | None) -> NotebookLoadError:
        """Return this error with a location, keeping one it already has."""
        if self.path is not None:
            return self
        located = NotebookLoadError(self.message, path=path, line=line)
        located.__cause__ = self.__cause__
        return located
