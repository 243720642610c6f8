"""Build, with uv, the environment an isolated notebook declares, and cache it by the hash of what it resolved to.

Two caches, both under `environments_home()`: `resolved/<key>.txt` maps what was declared (requirements, Python,
platform) to the pinned packages uv resolved it to, so a second run does no resolution; `envs/<hash>/` is the
environment of one resolved set, shared by every notebook that resolves to it, so a changed header builds a new one
and an unchanged one reuses it. An environment is built in a temporary folder and renamed into place when complete,
under a lock, so concurrent steps build it once and a killed build leaves nothing half-made.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster_lakehouse
from dagster_lakehouse.isolation.errors import NotebookEnvironmentError, UvNotFound
from dagster_lakehouse.isolation.requirements import (
    DeclaredEnvironment,
    declared_environment,
    export_uv_lock,
    runtime_requirements,
)
from dagster_lakehouse.notebook.pep723 import ScriptMetadata, python_problem

HOME_VARIABLE = "DAGSTER_LAKEHOUSE_ENVIRONMENTS"
UV_VARIABLE = "DAGSTER_LAKEHOUSE_UV"
MANIFEST = "lakehouse-environment.json"
_OFFLINE = re.compile(
    r"(?i)failed to fetch|error sending request|dns error|connection refused|network is unreachable|"
    r"offline|timed out|failed to connect|tcp connect error"
)

Log = Callable[[str], None]


@dataclass(frozen=True)
class Environment:
    """A built environment: its folder and Python, the hash that names it, the packages it holds, and how this
    call got it (`built`: this call built it; `resolved`: this call ran uv's resolver; `seconds` it took)."""

    hash: str
    path: Path
    packages: tuple[str, ...]
    declared_in: str
    built: bool
    resolved: bool
    seconds: float

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"


def environments_home() -> Path:
    """Where environments are cached: `$DAGSTER_LAKEHOUSE_ENVIRONMENTS`, else `$XDG_CACHE_HOME` (or `~/.cache`)
    `/dagster-lakehouse/environments`."""
    configured = os.environ.get(HOME_VARIABLE)
    if configured:
        return Path(configured).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "dagster-lakehouse" / "environments"


def find_uv(declared_in: Path | None = None, line: int | None = None) -> str:
    """The uv executable: `$DAGSTER_LAKEHOUSE_UV`, else the `uv` package's binary, else `uv` on PATH."""
    configured = os.environ.get(UV_VARIABLE)
    if configured:
        if shutil.which(configured) is None:
            raise UvNotFound(f"{UV_VARIABLE}={configured!r} is not an executable", path=declared_in, line=line)
        return configured
    try:
        import uv

        return uv.find_uv_bin()
    except (ImportError, FileNotFoundError):
        pass
    found = shutil.which("uv")
    if found is None:
        raise UvNotFound(
            "isolated notebooks build their environment with uv, which is not installed here: "
            "`pip install uv` (a dependency of dagster-lakehouse), or set DAGSTER_LAKEHOUSE_UV to its path",
            path=declared_in,
            line=line,
        )
    return found


def ensure_environment(notebook: Path, script: ScriptMetadata, *, log: Log | None = None) -> Environment:
    """The environment `notebook` declares, from the cache when it is there, else resolved and built now."""
    started = time.perf_counter()
    say = log or (lambda message: None)
    uv = find_uv(notebook, script.line)
    declared = declared_environment(notebook, script, export_lock=export_uv_lock(uv))
    requirements = runtime_requirements(declared)
    home = environments_home()
    packages, resolved = _resolved(uv, declared, requirements, home, say)
    digest = environment_hash(packages)
    path = home / "envs" / digest
    built = False
    if not (path / MANIFEST).is_file():
        with _locked(home / "envs" / f"{digest}.lock"):
            if not (path / MANIFEST).is_file():
                say(f"building environment {digest} ({len(packages)} packages) declared in {declared.location}")
                _build(uv, declared, packages, digest, path)
                built = True
    return Environment(digest, path, packages, declared.location, built, resolved, time.perf_counter() - started)


def environment_hash(packages: tuple[str, ...]) -> str:
    """The name of the environment of `packages` on this Python, platform and dagster-lakehouse installation."""
    identity = {
        "packages": sorted(packages),
        "python": sys.version,
        "executable": os.path.realpath(sys.executable),
        "platform": [sys.platform, platform.machine()],
        "dagster_lakehouse": str(Path(dagster_lakehouse.__file__).resolve().parent),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def _resolved(
    uv: str, declared: DeclaredEnvironment, requirements: list[str], home: Path, say: Log
) -> tuple[tuple[str, ...], bool]:
    """The pinned packages `requirements` resolve to: from the cache of earlier resolutions, else from uv."""
    key = hashlib.sha256(
        json.dumps(
            {"requirements": requirements, "python": sys.version, "platform": [sys.platform, platform.machine()]}
        ).encode()
    ).hexdigest()[:24]
    cached = home / "resolved" / f"{key}.txt"
    if cached.is_file():
        return tuple(cached.read_text(encoding="utf-8").splitlines()), False
    _check_python(declared)
    say(f"resolving the environment declared in {declared.location} with uv")
    done = subprocess.run(
        [uv, "pip", "compile", "-", "--python", sys.executable, "--no-header", "--no-annotate", "--quiet"],
        input="\n".join(requirements), capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        problem = done.stderr.strip() or done.stdout.strip()
        if _OFFLINE.search(problem):
            raise declared.error(
                "cannot build the notebook's environment: uv could not reach the package index (offline?). Build it "
                "once while online (it is cached), or point uv at a reachable index (UV_INDEX_URL) or its cache "
                f"(UV_OFFLINE=1 with the packages cached). uv said: {problem}"
            )
        raise declared.error(f"the notebook's declared dependencies do not resolve: {problem}")
    packages = tuple(
        line.replace(" ", "")
        for line in done.stdout.splitlines()
        if line.strip() and not line.lstrip().startswith(("#", "-"))
    )
    cached.parent.mkdir(parents=True, exist_ok=True)
    temporary = cached.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text("\n".join(packages) + "\n", encoding="utf-8")
    os.replace(temporary, cached)
    return packages, True


def _check_python(declared: DeclaredEnvironment) -> None:
    problem = python_problem(declared.requires_python)
    if problem:
        raise declared.error(f"{problem}; isolated environments use the code location's Python")


def _build(uv: str, declared: DeclaredEnvironment, packages: tuple[str, ...], digest: str, path: Path) -> None:
    """Make the environment in a temporary folder (venv, the pinned packages, a link to this dagster-lakehouse),
    then rename it into place: it exists whole or not at all."""
    started = time.perf_counter()
    temporary = path.parent / f".{digest}.{os.getpid()}.building"
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        _uv(uv, declared, ["venv", str(temporary), "--python", sys.executable, "--quiet", "--no-project"])
        requirements = temporary / "requirements.txt"
        requirements.write_text("\n".join(packages) + "\n", encoding="utf-8")
        _uv(
            uv,
            declared,
            ["pip", "install", "--python", str(temporary / "bin" / "python"), "--no-deps", "--compile-bytecode", "--quiet", "-r",
             str(requirements)],
        )  # fmt: skip
        site = temporary / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
        (site / "dagster_lakehouse").symlink_to(Path(dagster_lakehouse.__file__).resolve().parent)
        manifest = {
            "hash": digest,
            "packages": list(packages),
            "declared_in": declared.location,
            "python": sys.version,
            "built_at": time.time(),
            "build_seconds": round(time.perf_counter() - started, 3),
        }
        (temporary / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        shutil.rmtree(path, ignore_errors=True)  # an incomplete one (no manifest) from an older version
        os.rename(temporary, path)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def _uv(uv: str, declared: DeclaredEnvironment, arguments: list[str]) -> None:
    done = subprocess.run([uv, *arguments], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        problem = done.stderr.strip() or done.stdout.strip()
        if _OFFLINE.search(problem):
            raise declared.error(
                f"cannot build the notebook's environment: uv could not download its packages (offline?): {problem}"
            )
        raise declared.error(f"cannot build the notebook's environment: `uv {arguments[0]}` failed: {problem}")


@contextmanager
def _locked(lock: Path) -> Iterator[None]:
    """An exclusive lock on `lock` (a file): one process builds an environment while others wait for it."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_manifest(path: Path) -> dict:
    """What an environment records of itself (packages, where declared, build time)."""
    try:
        return json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise NotebookEnvironmentError(f"environment {path} has no readable manifest: {exc}") from None
