"""`Lakehouse()` configured only by environment variables: a PostgreSQL catalog and an S3 warehouse (moto)."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path

import polars as pl
import pytest

from dagster_lakehouse.lakehouse import Lakehouse

ENV_VARS = (
    "LAKEHOUSE_CATALOG_URI",
    "LAKEHOUSE_WAREHOUSE",
    "LAKEHOUSE_PATH",
    "LAKEHOUSE_PROPERTIES",
    "LAKEHOUSE_S3_ENDPOINT",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
)
UNREACHABLE = "http://127.0.0.1:9"  # discard port: nothing answers there


def _configure(monkeypatch: pytest.MonkeyPatch, backend, how: str, local_path: Path) -> None:
    """Point the environment (and nothing else) at the backend's database and bucket."""
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    props = backend.properties
    monkeypatch.setenv("LAKEHOUSE_CATALOG_URI", backend.catalog_uri)
    monkeypatch.setenv("LAKEHOUSE_WAREHOUSE", backend.warehouse)
    monkeypatch.setenv("LAKEHOUSE_PATH", str(local_path))  # must be ignored: both catalog and warehouse are set
    if how == "properties-json":
        # LAKEHOUSE_PROPERTIES wins over the AWS variables, which point nowhere here
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", UNREACHABLE)
        monkeypatch.setenv("AWS_REGION", "eu-west-3")
        monkeypatch.setenv("LAKEHOUSE_PROPERTIES", json.dumps(props))
        return
    monkeypatch.setenv("AWS_REGION", props["s3.region"])
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", props["s3.access-key-id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", props["s3.secret-access-key"])
    if how == "aws-endpoint":
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", props["s3.endpoint"])
    else:  # LAKEHOUSE_S3_ENDPOINT takes precedence over AWS_ENDPOINT_URL_S3
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", UNREACHABLE)
        monkeypatch.setenv("LAKEHOUSE_S3_ENDPOINT", props["s3.endpoint"])


@pytest.mark.parametrize("how", ["aws-endpoint", "lakehouse-s3-endpoint", "properties-json"])
def test_lakehouse_from_environment_on_postgres_and_s3(
    pg_s3_backend, moto_server, postgres_server, monkeypatch, tmp_path, how
):
    _configure(monkeypatch, pg_s3_backend, how, tmp_path / "local")
    trips = pl.DataFrame({"PULocationID": [1, 2, 3], "trip_miles": [0.5, 2.0, 7.25]})

    with Lakehouse() as lh:
        assert lh.config.catalog_uri == pg_s3_backend.catalog_uri
        assert lh.config.warehouse == pg_s3_backend.warehouse
        assert lh.config.properties["s3.endpoint"] == moto_server.endpoint
        assert lh.config.properties["s3.region"] == "us-east-1"
        lh.create_branch("dev")
        lh.write("taxi.trips", trips, branch="dev")
        assert lh.read("taxi.trips", ref="dev").sort("PULocationID").equals(trips)
        if how == "aws-endpoint":  # with an overriding endpoint, see test_scan_uses_the_configured_endpoint
            assert lh.scan("taxi.trips", ref="dev", filter="trip_miles > 1").collect().height == 2
        assert "taxi.trips" not in lh.tables("main")
        data_files = [t.file.file_path for t in lh.table("taxi.trips", "dev").scan().plan_files()]

    assert not (tmp_path / "local").exists()
    # the data files are objects in the moto bucket, under the warehouse prefix
    bucket, _, prefix = pg_s3_backend.warehouse.removeprefix("s3://").partition("/")
    keys = {o["Key"] for o in moto_server.client("s3").list_objects_v2(Bucket=bucket)["Contents"]}
    assert data_files and {urllib.parse.urlsplit(f).path.lstrip("/") for f in data_files} <= keys
    assert all(key.startswith(prefix + "/") for key in keys)
    # the catalog (tables and branches) lives in the PostgreSQL database
    dbname = urllib.parse.urlsplit(pg_s3_backend.catalog_uri).path.lstrip("/")
    with postgres_server.connect(dbname) as conn:
        (n_tables,) = conn.execute(
            "select count(*) from iceberg_tables where table_namespace = 'taxi' and table_name = 'trips'"
        ).fetchone()
    assert n_tables >= 1

    # a second process-like client built from the same environment sees the branch, and merges it
    with Lakehouse() as again:
        assert "dev" in again.branches()
        again.merge("dev", into="main")
    with Lakehouse() as third:
        assert third.read("taxi.trips").sort("PULocationID").equals(trips)


@pytest.mark.parametrize("how", ["lakehouse-s3-endpoint", "properties-json"])
def test_scan_uses_the_configured_endpoint(pg_s3_backend, monkeypatch, tmp_path, how):
    """LAKEHOUSE_S3_ENDPOINT / LAKEHOUSE_PROPERTIES override AWS_ENDPOINT_URL_S3 for scan() as they do for read()."""
    _configure(monkeypatch, pg_s3_backend, how, tmp_path / "local")
    with Lakehouse() as lh:
        lh.write("taxi.trips", pl.DataFrame({"trip_miles": [0.5, 2.0, 7.25]}), branch="main", allow_main=True)
        assert lh.read("taxi.trips").height == 3
        assert lh.scan("taxi.trips", filter="trip_miles > 1").collect().height == 2
