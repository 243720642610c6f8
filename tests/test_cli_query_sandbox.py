"""`lakehouse query` reads the tables of its ref and nothing else: every way of naming a file, URL or bucket (Polars
SQL's table functions, paths, other names) is refused by name with exit code 1 before anything is opened, through
the CLI and through `sql_context`; ordinary queries over the ref's tables (joins, CTEs, aggregates) still work."""

from __future__ import annotations

import http.server
import json
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from dagster_lakehouse.cli import main
from dagster_lakehouse.cli.data import sql_context
from dagster_lakehouse.cli.sql_scope import check_scope
from dagster_lakehouse.lakehouse import Lakehouse
from dagster_lakehouse.lakehouse.errors import LakehouseError, QueryOutsideRef

SECRET = "s3cr3t-4f1d9c"
"""In every file the queries below try to read; it must never be printed."""

TRIPS = pl.DataFrame({"trip_id": [1, 2, 3, 4], "PULocationID": [1, 2, 1, 3], "miles": [1.5, 2.0, 3.2, 0.4]})
ZONES = pl.DataFrame({"LocationID": [1, 2, 3], "Borough": ["Manhattan", "Queens", "Bronx"]})


@pytest.fixture(autouse=True, scope="module")
def _no_lakehouse_env() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        for var in ("LAKEHOUSE_CATALOG_URI", "LAKEHOUSE_WAREHOUSE", "LAKEHOUSE_PATH", "LAKEHOUSE_PROPERTIES"):
            patch.delenv(var, raising=False)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*SQLContext.*unstable")
            yield


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A lakehouse with taxi.trips and taxi.zones on main, and a branch `dev` that also holds taxi.secrets."""
    path = tmp_path_factory.mktemp("sandbox") / "lh"
    with Lakehouse(path=path) as lh:
        lh.write("taxi.trips", TRIPS, branch="main", allow_main=True)
        lh.write("taxi.zones", ZONES, branch="main", allow_main=True)
        lh.create_branch("dev")
        lh.write("taxi.secrets", pl.DataFrame({"s": [SECRET]}), branch="dev")
    yield path


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The secret in a file of every format Polars SQL can read."""
    folder = tmp_path_factory.mktemp("outside")
    frame = pl.DataFrame({"s": [SECRET]})
    files = {
        "csv": folder / "secret.csv",
        "parquet": folder / "secret.parquet",
        "json": folder / "secret.ndjson",
        "ipc": folder / "secret.arrow",
    }
    frame.write_csv(files["csv"])
    frame.write_parquet(files["parquet"])
    frame.write_ndjson(files["json"])
    frame.write_ipc(files["ipc"])
    return files


class _Recorder(http.server.BaseHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        self.requests.append(self.path)
        body = f"s\n{SECRET}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET  # noqa: N815

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def web() -> Iterator[tuple[str, list[str]]]:
    """A local HTTP server that serves the secret as CSV and records every request it gets."""
    _Recorder.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", _Recorder.requests
    finally:
        server.shutdown()
        server.server_close()


BYPASSES = [
    "SELECT * FROM read_csv('{csv}')",
    "SELECT * FROM read_parquet('{parquet}')",
    "SELECT * FROM read_json('{json}')",
    "SELECT * FROM read_ndjson('{json}')",
    "SELECT * FROM read_ipc('{ipc}')",
    "SELECT * FROM READ_PARQUET('{parquet}')",
    "SELECT * FROM Read_Csv('{csv}')",
    'SELECT * FROM "read_parquet"(\'{parquet}\')',
    'SELECT * FROM "READ_CSV"(\'{csv}\')',
    "SELECT * FROM `read_csv`('{csv}')",
    "SELECT * FROM read_csv /* a comment */ ('{csv}')",
    "SELECT * FROM read_csv\n-- a comment\n('{csv}')",
    "SELECT * FROM read_csv(['{csv}', '{csv}'])",
    "SELECT * FROM read_csv('{csv}') AS t(s)",
    "SELECT * FROM (read_csv('{csv}'))",
    "SELECT * FROM ((read_csv('{csv}')))",
    "SELECT * FROM taxi.trips, read_csv('{csv}')",
    "SELECT * FROM taxi.trips CROSS JOIN read_csv('{csv}')",
    "SELECT * FROM taxi.trips t LEFT JOIN read_csv('{csv}') x ON true",
    "SELECT * FROM (taxi.trips JOIN read_csv('{csv}') ON true)",
    "SELECT * FROM taxi.trips WHERE trip_id IN (SELECT * FROM read_parquet('{parquet}'))",
    "SELECT (SELECT max(s) FROM read_csv('{csv}')) AS leaked",
    "SELECT EXTRACT(YEAR FROM (SELECT max(s) FROM read_csv('{csv}')))",
    "WITH leaked AS (SELECT * FROM read_csv('{csv}')) SELECT * FROM leaked",
    "WITH a AS (SELECT 1 AS x), b AS (SELECT * FROM read_parquet('{parquet}')) SELECT * FROM b",
    "WITH read_csv AS (SELECT 1 AS x) SELECT * FROM read_csv('{csv}')",
    "WITH read_csv AS (SELECT 1 AS x) SELECT * FROM read_csv",
    "SELECT trip_id::VARCHAR AS s FROM taxi.trips UNION ALL SELECT * FROM read_csv('{csv}')",
    "SELECT * FROM read_csv('{csv}') UNION SELECT Borough FROM taxi.zones",
    "SELECT 1; SELECT * FROM read_csv('{csv}')",
    "FROM read_csv('{csv}') SELECT *",
    "EXPLAIN SELECT * FROM read_csv('{csv}')",
    "SELECT * FROM taxi.trips JOIN LATERAL read_csv('{csv}') ON true",
    "SELECT * FROM x.read_csv('{csv}')",
    "SELECT * FROM '{csv}'",
    'SELECT * FROM "{csv}"',
    "SELECT * FROM `{csv}`",
    "SELECT * FROM read_csv",
    "SELECT * FROM taxi.nope",
    "SELECT * FROM generate_series(1, 3)",
    "SELECT * FROM UNNEST([1, 2]) AS u(x)",
    # text a different reading of strings or comments would hide
    "/* /* */ ' */ SELECT * FROM read_csv('{csv}') -- '",
    "SELECT 'a\\' AS x FROM read_csv('{csv}') -- '",
    "SELECT $$ ' $$ AS x FROM read_csv('{csv}') -- '",
    "SELECT E'\\'' AS x FROM read_csv('{csv}') -- '",
    "SELECT * FROM 'never closed",
    # the warehouse's own files, of a branch other than the one queried
    "SELECT * FROM read_parquet('{warehouse}/taxi/**/*.parquet')",
    # URLs and buckets
    "SELECT * FROM read_csv('{url}/secret.csv')",
    "SELECT * FROM read_parquet('s3://another-bucket/secret.parquet')",
    "SELECT * FROM read_csv('gs://another-bucket/secret.csv')",
]


def _sql(template: str, secrets: dict[str, Path], warehouse: str, url: str) -> str:
    return template.format(**{k: str(v) for k, v in secrets.items()}, warehouse=warehouse.removeprefix("file://"), url=url)


def _warehouse(root: Path) -> str:
    with Lakehouse(path=root) as lh:
        return lh.config.warehouse


def test_the_bypasses_would_read_the_secret(secrets: dict[str, Path]) -> None:
    """Without the check, Polars SQL reads these files: the refusals below guard something real."""
    for kind, sql in [("csv", "read_csv"), ("parquet", "read_parquet"), ("json", "read_ndjson"), ("ipc", "read_ipc")]:
        frame = pl.SQLContext().execute(f"SELECT * FROM {sql}('{secrets[kind]}')", eager=True)
        assert frame["s"].to_list() == [SECRET]


@pytest.mark.parametrize("template", BYPASSES)
def test_cli_refuses(
    root: Path, secrets: dict[str, Path], web: tuple[str, list[str]], template: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url, requests = web
    sql = _sql(template, secrets, _warehouse(root), url)
    capsys.readouterr()
    assert main(["--path", str(root), "query", sql]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("error: query on 'main' refused: "), err
    assert "Traceback" not in err and SECRET not in err
    assert "hint: " in err and "lakehouse import" in err
    assert requests == []  # no URL was fetched


@pytest.mark.parametrize("template", BYPASSES)
def test_python_entry_refuses(root: Path, secrets: dict[str, Path], web: tuple[str, list[str]], template: str) -> None:
    url, requests = web
    with Lakehouse(path=root) as lh:
        sql = _sql(template, secrets, lh.config.warehouse, url)
        with pytest.raises(QueryOutsideRef) as caught:
            sql_context(lh, "dev", sql)
    assert isinstance(caught.value, LakehouseError)
    assert caught.value.ref == "dev" and "taxi.secrets" in str(caught.value)
    assert requests == []


def test_refusal_names_what(root: Path, secrets: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--path", str(root), "query", f"SELECT * FROM READ_PARQUET('{secrets['parquet']}')", "--ref", "dev"]) == 1
    err = capsys.readouterr().err
    assert "READ_PARQUET(...) is a table function reading files, URLs or buckets" in err
    assert "Tables on 'dev': taxi.secrets, taxi.trips, taxi.zones" in err
    assert main(["--path", str(root), "query", "SELECT * FROM taxi.secrets"]) == 1
    assert "'taxi.secrets' is not a table of the ref" in capsys.readouterr().err  # dev's table, not main's


LEGIT = [
    ("SELECT count(*) AS n FROM taxi.trips", [{"n": 4}]),
    ("SELECT count(*) AS n FROM taxi_trips", [{"n": 4}]),
    ('SELECT count(*) AS n FROM "taxi"."trips"', [{"n": 4}]),
    (
        "SELECT z.Borough, count(*) AS n FROM trips t JOIN zones z ON t.PULocationID = z.LocationID "
        "GROUP BY z.Borough ORDER BY z.Borough",
        [{"Borough": "Bronx", "n": 1}, {"Borough": "Manhattan", "n": 2}, {"Borough": "Queens", "n": 1}],
    ),
    (
        "WITH per_zone AS (SELECT PULocationID, sum(miles) AS miles FROM taxi.trips GROUP BY PULocationID), "
        "named AS (SELECT Borough, miles FROM per_zone JOIN taxi.zones ON PULocationID = LocationID) "
        "SELECT Borough FROM named WHERE miles > 1 ORDER BY Borough",
        [{"Borough": "Manhattan"}, {"Borough": "Queens"}],
    ),
    (
        "SELECT trip_id FROM trips WHERE PULocationID IN (SELECT LocationID FROM zones WHERE Borough = 'Queens')",
        [{"trip_id": 2}],
    ),
    ("SELECT LocationID AS id FROM zones UNION ALL SELECT trip_id FROM trips ORDER BY id LIMIT 2", [{"id": 1}, {"id": 1}]),
    ("SELECT * FROM (SELECT max(miles) AS m FROM trips) AS s, (SELECT count(*) AS c FROM zones) c", [{"m": 3.2, "c": 3}]),
    ("SELECT count(*) AS n FROM (trips JOIN zones ON PULocationID = LocationID)", [{"n": 4}]),
    ("SELECT SUBSTRING(Borough FROM 1 FOR 3) AS b FROM zones WHERE LocationID = 1", [{"b": "Man"}]),
    ("SELECT count(*) AS n FROM trips WHERE miles IS DISTINCT FROM 2.0", [{"n": 3}]),
    ("SELECT 'read_csv(''/etc/passwd'')' AS s FROM zones LIMIT 1 -- read_parquet('/x')", [{"s": "read_csv('/etc/passwd')"}]),
    ("/* FROM read_csv('/x') */ SELECT count(*) AS n FROM zones", [{"n": 3}]),
    ("SELECT 1 AS one", [{"one": 1}]),
]


@pytest.mark.parametrize(("sql", "rows"), LEGIT)
def test_legit_queries_work(root: Path, sql: str, rows: list[dict], capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["--path", str(root), "query", sql, "--format", "json"]) == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out) == rows


def test_legit_query_on_a_branch(root: Path) -> None:
    with Lakehouse(path=root) as lh:
        context, _ = sql_context(lh, "dev", "SELECT s FROM secrets")
        assert context.execute("SELECT s FROM secrets", eager=True)["s"].to_list() == [SECRET]


def test_check_scope_alone() -> None:
    """The allow-list on its own: aliases of the ref's tables and CTEs pass, anything else is refused."""
    aliases = {"taxi.trips": "taxi.trips", "taxi_trips": "taxi.trips", "trips": "taxi.trips"}
    check_scope("WITH x AS (SELECT * FROM trips) SELECT * FROM x JOIN taxi_trips USING (trip_id)", "main", aliases)
    check_scope("SELECT EXTRACT(YEAR FROM d) FROM TAXI.TRIPS", "main", aliases)
    for sql in ("SELECT * FROM read_csv('/x')", "SELECT * FROM zones", "SELECT * FROM '/x'", "SELECT * FROM scan_parquet('/x')"):
        with pytest.raises(QueryOutsideRef):
            check_scope(sql, "main", aliases)
