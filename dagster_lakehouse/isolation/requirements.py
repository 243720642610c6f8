"""What an isolated notebook's environment is made of: the packages it declares, and the runtime its process needs.

A notebook declares its packages in its PEP 723 header (the one `marimo edit --sandbox` builds), else in the nearest
`pyproject.toml` of its folder or a folder above it (shared by the notebooks below it; a `uv.lock` beside it pins
them). To those the model's process adds what reading and writing the lakehouse needs: dagster-lakehouse's own
requirements, without Dagster itself (the process talks to the step through `dagster-pipes`), each pinned to the
version the code location runs unless the notebook asks for that package itself. dagster-lakehouse is not installed
from an index: the environment links the code location's installation.
"""

from __future__ import annotations

import subprocess
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from dagster_lakehouse.isolation.errors import NotebookEnvironmentError
from dagster_lakehouse.notebook.pep723 import ScriptMetadata

DISTRIBUTION = "dagster-lakehouse"
NOT_IN_RUNTIME = frozenset({"dagster", "dagster-webserver", "dagster-dg-cli", "uv"})
"""dagster-lakehouse requirements the model's process does not need: it reaches Dagster through dagster-pipes."""
PIPES = "dagster-pipes"


@dataclass(frozen=True)
class DeclaredEnvironment:
    """The packages a notebook's environment is declared with, and where: its header, or a folder's pyproject."""

    requirements: tuple[str, ...]
    requires_python: str | None
    declared_in: Path
    line: int | None = None
    locked: bool = False

    @property
    def location(self) -> str:
        return f"{self.declared_in}:{self.line}" if self.line else str(self.declared_in)

    def error(self, message: str, cls: type[NotebookEnvironmentError] = NotebookEnvironmentError) -> Exception:
        return cls(message, path=self.declared_in, line=self.line)


def declared_environment(
    notebook: Path, script: ScriptMetadata, *, export_lock: Callable[[Path], list[str]] | None = None
) -> DeclaredEnvironment:
    """The environment `notebook` declares: its `# /// script` header if it has one, else the nearest
    `pyproject.toml` at or above its folder (with its `uv.lock`, exported by `export_lock`, when there is one)."""
    if script.line is not None:
        return DeclaredEnvironment(script.dependencies, script.requires_python, notebook, script.line)
    for folder in [notebook.parent, *notebook.parent.parents]:
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file():
            return _from_pyproject(pyproject, export_lock)
    raise NotebookEnvironmentError(
        "an isolated notebook runs in the environment it declares, and this one declares none: add a PEP 723 header "
        "('# /// script', '# dependencies = [\"polars\", ...]', '# ///'; `marimo edit --sandbox` writes one), or a "
        "pyproject.toml with [project] dependencies in its folder or a folder above it",
        path=notebook,
    )


def environment_fingerprint(notebook: Path, script: ScriptMetadata) -> str:
    """What an isolated notebook's environment is declared as, read without uv (the header's requirements, or the
    folder's `pyproject.toml` and `uv.lock` texts): part of its models' code version, so a changed environment marks
    them changed in Dagster. Empty when nothing is declared (the run then says so)."""
    if script.line is not None:
        return "\n".join([*script.dependencies, script.requires_python or ""])
    for folder in [notebook.parent, *notebook.parent.parents]:
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file():
            lock = folder / "uv.lock"
            texts = [pyproject.read_text(encoding="utf-8"), lock.read_text(encoding="utf-8") if lock.is_file() else ""]
            return "\n".join(texts)
    return ""


def _from_pyproject(pyproject: Path, export_lock: Callable[[Path], list[str]] | None) -> DeclaredEnvironment:
    try:
        table = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise NotebookEnvironmentError(f"cannot read the folder's environment: {exc}", path=pyproject) from None
    project = table.get("project")
    dependencies = project.get("dependencies", []) if isinstance(project, dict) else None
    if not isinstance(dependencies, list) or not all(isinstance(d, str) for d in dependencies):
        raise NotebookEnvironmentError(
            "a folder's environment is its [project] table's `dependencies`, a list of requirement strings",
            path=pyproject,
        )
    requires_python = project.get("requires-python") if isinstance(project, dict) else None
    lock = pyproject.parent / "uv.lock"
    if lock.is_file() and export_lock is not None:
        return DeclaredEnvironment(tuple(export_lock(pyproject.parent)), requires_python, pyproject, locked=True)
    return DeclaredEnvironment(tuple(dependencies), requires_python, pyproject)


def runtime_requirements(declared: DeclaredEnvironment) -> list[str]:
    """Every requirement the environment is resolved from: the declared ones, then dagster-lakehouse's runtime
    pinned to this installation's versions (a package the notebook names keeps its spec and gains only our range).

    A declared `dagster-lakehouse` is checked against this installation and left out: it is linked, not installed.
    """
    own_names: dict[str, Requirement] = {}
    lines: list[str] = []
    for text in declared.requirements:
        try:
            requirement = Requirement(text)
        except InvalidRequirement as exc:
            raise declared.error(f"{text!r} is not a valid requirement: {exc}") from None
        name = canonicalize_name(requirement.name)
        if name == DISTRIBUTION:
            _check_own_version(requirement, declared)
            continue
        own_names[name] = requirement
        lines.append(text)
    for requirement in _runtime():
        name = canonicalize_name(requirement.name)
        extras = f"[{','.join(sorted(requirement.extras))}]" if requirement.extras else ""
        if name in own_names:
            if requirement.specifier:
                lines.append(f"{requirement.name}{extras}{requirement.specifier}")
            continue
        lines.append(f"{requirement.name}{extras}=={metadata.version(requirement.name)}")
    return lines


def _runtime() -> list[Requirement]:
    """dagster-lakehouse's own requirements that the model's process needs, and dagster-pipes."""
    found = []
    for text in metadata.requires(DISTRIBUTION) or []:
        requirement = Requirement(text)
        if requirement.marker is not None and "extra" in str(requirement.marker):
            continue
        if canonicalize_name(requirement.name) in NOT_IN_RUNTIME:
            continue
        found.append(requirement)
    return [*found, Requirement(PIPES)]


def _check_own_version(requirement: Requirement, declared: DeclaredEnvironment) -> None:
    installed = metadata.version(DISTRIBUTION)
    if requirement.specifier and not requirement.specifier.contains(installed, prereleases=True):
        raise declared.error(
            f"the notebook asks for {requirement} but the code location runs dagster-lakehouse {installed}, which its "
            "isolated environment uses (dagster-lakehouse is linked from the code location, not installed): "
            "relax the requirement or upgrade the code location"
        )


def export_uv_lock(uv: str) -> Callable[[Path], list[str]]:
    """A function that reads a folder's `uv.lock` as pinned requirements (`uv export --frozen`), no resolution."""

    def export(folder: Path) -> list[str]:
        done = subprocess.run(
            [uv, "export", "--frozen", "--no-hashes", "--no-dev", "--no-emit-project", "--no-header",
             "--no-annotate", "--format", "requirements.txt"],
            cwd=folder, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise NotebookEnvironmentError(
                f"cannot read uv.lock: {done.stderr.strip() or done.stdout.strip()}", path=folder / "uv.lock"
            )
        return [line.strip() for line in done.stdout.splitlines() if line.strip() and not line.lstrip().startswith(("#", "-"))]

    return export
