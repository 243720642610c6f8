"""Errors of isolated notebook runs: an environment that cannot be built, and a model that failed in one."""

from __future__ import annotations

from dagster_lakehouse.lakehouse.errors import LakehouseError
from dagster_lakehouse.notebook.errors import NotebookLoadError


class NotebookEnvironmentError(NotebookLoadError):
    """The environment a notebook declares cannot be built: its header does not resolve, uv is missing or
    offline. Raised when a run builds it; the message starts with the header's `file:line`."""


class UvNotFound(NotebookEnvironmentError):
    """No `uv` executable: neither the `uv` package nor one on PATH."""


class IsolatedModelError(LakehouseError):
    """A model failed in its notebook's own environment; the message holds its traceback with notebook:line."""
