"""The test servers are real, reachable, and bound to 127.0.0.1 only."""

from __future__ import annotations

import socket
import urllib.parse

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyarrow import fs as pafs

try:
    from .servers import Backend, listening_addresses
except ImportError:
    from servers import Backend, listening_addresses  # type: ignore[no-redef]


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
# backends
# --------------------------------------------------------------------------


def test_backend_shapes(backend, tmp_path):
    assert isinstance(backend, Backend)
    if backend.name == "local":
        assert backend.catalog_uri == f"sqlite:///{tmp_path}/catalog.db"
        assert backend.warehouse == f"file://{tmp_path}/warehouse"
        assert (tmp_path / "warehouse").is_dir()
        assert backend.properties == {}
    else:
        assert backend.name == "pg_s3"
        assert backend.catalog_uri.startswith("postgresql+psycopg://postgres@127.0.0.1:")
        assert backend.warehouse.startswith("s3://lh-") and backend.warehouse.endswith("/warehouse")
        props = backend.properties
        assert props["s3.endpoint"].startswith("http://127.0.0.1:")
        assert props["s3.region"] == "us-east-1"
        assert props["s3.path-style-access"] == "true"
        assert props["s3.access-key-id"] == props["s3.secret-access-key"] == "testing"
    with pytest.raises(AttributeError):
        backend.name = "other"  # frozen


def test_dummy_aws_credentials():
    import os

    assert os.environ["AWS_ACCESS_KEY_ID"] == "testing"
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == "testing"
    assert os.environ["AWS_DEFAULT_REGION"] == "us-east-1"
