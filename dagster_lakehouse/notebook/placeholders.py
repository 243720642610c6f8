"""Placeholders for the modules an isolated notebook imports that the Dagster process does not have.

An isolated notebook's packages live in its own environment, so the code location imports the notebook with every
module it cannot find replaced by a placeholder: the `@model` decorators still run and give the assets, and any use
of a missing module (an annotation, a constant built in the setup cell) yields another placeholder. Only imports
made by the notebook file itself are replaced, never a library's own optional imports, and only while it loads.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any


class Placeholder:
    """Whatever a missing module's name, attribute, call or item would have been; it stands in at load time only."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> Placeholder:
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        return Placeholder(f"{self._name}.{attribute}")

    def __call__(self, *args: Any, **kwargs: Any) -> Placeholder:
        return Placeholder(f"{self._name}(...)")

    def __getitem__(self, item: Any) -> Placeholder:
        return Placeholder(f"{self._name}[...]")

    def __iter__(self) -> Any:
        return iter(())

    def _operation(self, *other: Any) -> Placeholder:
        return self

    __or__ = __ror__ = __and__ = __rand__ = __add__ = __radd__ = __sub__ = __rsub__ = _operation
    __mul__ = __rmul__ = __truediv__ = __rtruediv__ = __floordiv__ = __rfloordiv__ = __mod__ = _operation
    __pow__ = __rpow__ = __matmul__ = __neg__ = __pos__ = __invert__ = _operation

    def __mro_entries__(self, bases: tuple[Any, ...]) -> tuple[type, ...]:
        return (object,)

    def __repr__(self) -> str:
        return f"<{self._name}: not installed in the Dagster process>"


class _PlaceholderModule(ModuleType):
    def __getattr__(self, attribute: str) -> Placeholder:
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        return Placeholder(f"{self.__name__}.{attribute}")


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Last on `sys.meta_path`: finds what nothing else found, when the notebook file (or a placeholder) asks."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.created: list[str] = []

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        parent = name.rpartition(".")[0]
        if not (isinstance(sys.modules.get(parent), _PlaceholderModule) or self._asked_by_notebook()):
            return None
        return importlib.machinery.ModuleSpec(name, self, is_package=True)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = _PlaceholderModule(spec.name)
        module.__path__ = []
        self.created.append(spec.name)
        return module

    def exec_module(self, module: ModuleType) -> None:
        return None

    def _asked_by_notebook(self) -> bool:
        frame = sys._getframe(2)
        while frame is not None:
            filename = frame.f_code.co_filename
            if not filename.startswith("<frozen importlib") and filename != __file__:
                return filename == self.filename
            frame = frame.f_back
        return False


@contextmanager
def placeholders_for_missing(filename: str) -> Iterator[list[str]]:
    """While the notebook `filename` runs, modules it imports that cannot be found become placeholders; yields the
    list of those replaced, and removes them from `sys.modules` afterwards (they never reach other code)."""
    finder = _Finder(filename)
    sys.meta_path.append(finder)
    try:
        yield finder.created
    finally:
        sys.meta_path.remove(finder)
        for name in finder.created:
            if isinstance(sys.modules.get(name), _PlaceholderModule):
                del sys.modules[name]
