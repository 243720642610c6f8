"""A notebook's PEP 723 header: its declared dependencies, checked against the running environment."""

from __future__ import annotations

import platform
import re
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet

from dagster_lakehouse.notebook.errors import NotebookLoadError

# The reference regular expression from PEP 723.
_BLOCK = re.compile(r"(?m)^# /// (?P<type>[a-zA-Z0-9-]+)$\s(?P<content>(^#(| .*)$\s)+)^# ///$")


@dataclass(frozen=True)
class ScriptMetadata:
    """The `script` block of a PEP 723 header: dependencies, Python requirement, and where it starts."""

    dependencies: tuple[str, ...] = ()
    requires_python: str | None = None
    line: int | None = None
    isolated: bool = False
    """`[tool.dagster-lakehouse] isolated = true`: the notebook's models run in the environment this block declares."""


def read_script_metadata(text: str, path: str | Path) -> ScriptMetadata:
    """Parse the notebook's `# /// script` block; an absent block means no declared dependencies."""
    blocks = [m for m in _BLOCK.finditer(text) if m.group("type") == "script"]
    if not blocks:
        return ScriptMetadata()
    line = text.count("\n", 0, blocks[0].start()) + 1
    if len(blocks) > 1:
        raise NotebookLoadError("more than one '# /// script' block (PEP 723 allows one)", path=path, line=line)
    content = "".join(
        row[2:] if row.startswith("# ") else row[1:]
        for row in blocks[0].group("content").splitlines(keepends=True)
    )
    try:
        table = tomllib.loads(content)
    except tomllib.TOMLDecodeError as exc:
        raise NotebookLoadError(f"the '# /// script' header is not valid TOML: {exc}", path=path, line=line) from None
    dependencies = table.get("dependencies", [])
    if not isinstance(dependencies, list) or not all(isinstance(d, str) for d in dependencies):
        raise NotebookLoadError(
            "the '# /// script' header's `dependencies` must be a list of strings", path=path, line=line
        )
    requires_python = table.get("requires-python")
    if requires_python is not None and not isinstance(requires_python, str):
        raise NotebookLoadError("the '# /// script' header's `requires-python` must be a string", path=path, line=line)
    tool = table.get("tool", {}).get("dagster-lakehouse", {}) if isinstance(table.get("tool"), dict) else {}
    isolated = tool.get("isolated", False) if isinstance(tool, dict) else False
    if not isinstance(isolated, bool):
        raise NotebookLoadError(
            "the '# /// script' header's `[tool.dagster-lakehouse] isolated` must be true or false", path=path, line=line
        )
    return ScriptMetadata(tuple(dependencies), requires_python, line, isolated)


def check_environment(script: ScriptMetadata, path: str | Path) -> None:
    """Raise one error listing every declared dependency that is missing or has the wrong version."""
    problems: list[str] = []
    python = python_problem(script.requires_python)
    if python:
        problems.append(python)
    for dependency in script.dependencies:
        problem = _dependency_problem(dependency)
        if problem:
            problems.append(problem)
    if problems:
        raise NotebookLoadError(
            "the notebook's declared dependencies (PEP 723 header) do not match this environment: "
            + "; ".join(problems)
            + ". Install them into the environment Dagster runs in.",
            path=path,
            line=script.line,
        )


def python_problem(requires_python: str | None) -> str | None:
    """Why this Python does not satisfy `requires_python` (invalid, or another version); None when it does."""
    if not requires_python:
        return None
    try:
        python_ok = SpecifierSet(requires_python).contains(platform.python_version(), prereleases=True)
    except InvalidSpecifier as exc:
        return f"requires-python {requires_python!r} is invalid: {exc}"
    if not python_ok:
        return f"requires Python {requires_python} but this is Python {platform.python_version()}"
    return None


def _dependency_problem(dependency: str) -> str | None:
    try:
        requirement = Requirement(dependency)
    except InvalidRequirement as exc:
        return f"{dependency!r} is not a valid requirement: {exc}"
    if requirement.marker is not None and not requirement.marker.evaluate():
        return None
    try:
        installed = metadata.version(requirement.name)
    except metadata.PackageNotFoundError:
        return f"package {requirement.name!r} ({dependency}) is not installed"
    if requirement.specifier and not requirement.specifier.contains(installed, prereleases=True):
        return f"package {requirement.name!r} {installed} is installed but the notebook needs {dependency}"
    return None
