"""Shared fixtures: real PostgreSQL + moto S3 servers, started by the tests.

Servers are started lazily (only when a test needs them), once per session,
bound to 127.0.0.1 only, and stopped at the end of the session.  Every test
gets its own database / bucket / temp dir, so tests stay independent.

Fixtures
--------
postgres_server       (session)  -> servers.PostgresServer
moto_server           (session)  -> servers.MotoServer
postgres_url_factory  (session)  -> callable(prefix="lh") -> str  (fresh DB URL)
postgres_url          (function) -> str  fresh DB URL, dropped after the test
s3_bucket_factory     (session)  -> callable(prefix="lh") -> str  (fresh bucket)
s3_bucket             (function) -> str  fresh bucket, emptied after the test
local_backend         (function) -> Backend  sqlite catalog + file:// warehouse
pg_s3_backend         (function) -> Backend  PostgreSQL catalog + s3:// on moto
backend               (function, params "local" / "pg_s3") -> Backend
lakehouse             (function) -> dagster_lakehouse.lakehouse.Lakehouse on `backend`
"""

from __future__ import annotations

import importlib.util
import os
import sys
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

# --- never talk to real AWS: dummy credentials before anything imports boto3
os.environ["AWS_ACCESS_KEY_ID"] = "testing"
os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
os.environ["AWS_SESSION_TOKEN"] = "testing"
os.environ["AWS_SECURITY_TOKEN"] = "testing"
os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
os.environ["AWS_REGION"] = "us-east-1"
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
for _var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
    os.environ.pop(_var, None)
# local servers must never be reached through an HTTP proxy
for _var in ("NO_PROXY", "no_proxy"):
    _cur = [p for p in os.environ.get(_var, "").split(",") if p]
    os.environ[_var] = ",".join(dict.fromkeys([*_cur, "127.0.0.1", "localhost"]))

import pytest  # noqa: E402

# Normally the package is installed (`pip install -e '.[dev]'`); if it is not,
# make the checkout importable so `import dagster_lakehouse` still works.
_REPO_ROOT = Path(__file__).resolve().parent.parent
if importlib.util.find_spec("dagster_lakehouse") is None:
    sys.path.insert(0, str(_REPO_ROOT))

try:  # works whether or not tests/ is a package
    from .servers import (  # noqa: E402
        Backend,
        MotoServer,
        PostgresServer,
        start_moto,
        start_postgres,
    )
except ImportError:
    from servers import (  # type: ignore[no-redef]  # noqa: E402
        Backend,
        MotoServer,
        PostgresServer,
        start_moto,
        start_postgres,
    )

__all__ = ["Backend"]

# Set LH_TEST_KEEP_DATA=1 to keep per-test databases/buckets for debugging.
_KEEP = os.environ.get("LH_TEST_KEEP_DATA", "") not in ("", "0", "false")


def _unique(prefix: str, sep: str) -> str:
    return f"{prefix}{sep}{uuid.uuid4().hex}"


# --------------------------------------------------------------------------
# servers (session scoped, lazy)
# --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    server = start_postgres(tmp_path_factory.mktemp("postgres"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = start_moto()
    try:
        yield server
    finally:
        server.stop()


# --------------------------------------------------------------------------
# per-test databases and buckets
# --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_url_factory(postgres_server: PostgresServer) -> Callable[..., str]:
    """``make(prefix="lh") -> "postgresql+psycopg://postgres@127.0.0.1:PORT/lh_<hex>"``.

    Each call creates a fresh, empty database.  They are not dropped before
    the session ends (the whole cluster is thrown away then); use the
    ``postgres_url`` fixture for a database dropped right after the test.
    """

    def make(prefix: str = "lh") -> str:
        return postgres_server.create_database(_unique(prefix, "_"))

    return make


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh PostgreSQL database URL for this test (dropped afterwards)."""
    name = _unique("lh", "_")
    url = postgres_server.create_database(name)
    yield url
    _drop_database(postgres_server, name)


def _drop_database(server: PostgresServer, name: str) -> None:
    if _KEEP:
        return
    try:
        server.drop_database(name)  # WITH (FORCE): kicks out leftover pool connections
    except Exception as exc:  # cleanup only; never fail the test for it
        warnings.warn(f"could not drop test database {name}: {exc}", stacklevel=2)


@pytest.fixture(scope="session")
def s3_bucket_factory(moto_server: MotoServer) -> Callable[..., str]:
    """``make(prefix="lh") -> "lh-<hex>"``: creates a fresh bucket on moto."""

    def make(prefix: str = "lh") -> str:
        return moto_server.create_bucket(_unique(prefix, "-"))

    return make


@pytest.fixture
def s3_bucket(moto_server: MotoServer) -> Iterator[str]:
    """A fresh, empty bucket on the moto server (emptied and deleted afterwards)."""
    bucket = moto_server.create_bucket(_unique("lh", "-"))
    yield bucket
    _delete_bucket(moto_server, bucket)


def _delete_bucket(server: MotoServer, bucket: str) -> None:
    if _KEEP:
        return
    try:
        s3 = server.client("s3")
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})
        s3.delete_bucket(Bucket=bucket)
    except Exception as exc:  # cleanup only
        warnings.warn(f"could not delete test bucket {bucket}: {exc}", stacklevel=2)


# --------------------------------------------------------------------------
# backends
# --------------------------------------------------------------------------


def make_local_backend(root: Path) -> Backend:
    warehouse = root / "warehouse"
    warehouse.mkdir(parents=True, exist_ok=True)
    return Backend(
        name="local",
        catalog_uri=f"sqlite:///{root}/catalog.db",
        warehouse=f"file://{warehouse}",
        properties={},
    )


@pytest.fixture
def local_backend(tmp_path: Path) -> Backend:
    """SQLite catalog + local-filesystem warehouse under ``tmp_path``."""
    return make_local_backend(tmp_path)


@pytest.fixture
def pg_s3_backend(postgres_url: str, s3_bucket: str, moto_server: MotoServer) -> Backend:
    """PostgreSQL catalog (fresh database) + S3 warehouse on moto (fresh bucket)."""
    return Backend(
        name="pg_s3",
        catalog_uri=postgres_url,
        warehouse=f"s3://{s3_bucket}/warehouse",
        properties=moto_server.s3_properties(),
    )


@pytest.fixture(params=["local", "pg_s3"])
def backend(request: pytest.FixtureRequest) -> Backend:
    """Every test using this runs twice: ``[local]`` and ``[pg_s3]``."""
    if request.param == "local":
        return request.getfixturevalue("local_backend")
    return request.getfixturevalue("pg_s3_backend")


@pytest.fixture
def lakehouse(backend: Backend):
    from dagster_lakehouse.lakehouse import Lakehouse

    lh = Lakehouse(
        catalog_uri=backend.catalog_uri,
        warehouse=backend.warehouse,
        properties=dict(backend.properties),
    )
    try:
        yield lh
    finally:
        close = getattr(lh, "close", None)
        if callable(close):
            close()
