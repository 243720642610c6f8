"""Object-store outages on PostgreSQL + moto S3: reads, writes and merges ride out a short outage by retrying, and a
longer one than `storage_retry_seconds` fails with `StorageUnavailable` having changed nothing.

The outage is made by `faults.FlakyProxy` between the lakehouse and moto (moto keeps its objects in memory, so it
cannot be restarted); it starts after a number of requests of the operation under test, so it hits it mid-way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import polars as pl
import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from dagster_lakehouse.cli import main
from dagster_lakehouse.lakehouse import Lakehouse, LakehouseConfig, LakehouseError
from dagster_lakehouse.lakehouse import refs as refstore
from dagster_lakehouse.lakehouse.catalog import IcebergNamespaceProperties, IcebergTables
from dagster_lakehouse.lakehouse.errors import StorageUnavailable
from dagster_lakehouse.lakehouse.storage import is_transient

try:
    from .faults import FlakyProxy
    from .servers import free_port
except ImportError:
    from faults import FlakyProxy  # type: ignore[no-redef]
    from servers import free_port  # type: ignore[no-redef]

DAYS = ["2024-03-01", "2024-03-02"]
OUTAGE = 8.0


@pytest.fixture
def proxy(moto_server: Any) -> Iterator[FlakyProxy]:
    with FlakyProxy(moto_server.host, moto_server.port) as flaky:
        yield flaky


@pytest.fixture
def open_store(postgres_url: str, s3_bucket: str, moto_server: Any, proxy: FlakyProxy) -> Iterator[Callable[..., Lakehouse]]:
    """`open_store(**kwargs)`: a Lakehouse on PostgreSQL whose S3 (moto) traffic goes through `proxy`."""
    opened: list[Lakehouse] = []
    properties = {**moto_server.s3_properties(), "s3.endpoint": proxy.endpoint}

    def open_(**kwargs: Any) -> Lakehouse:
        lh = Lakehouse(postgres_url, f"s3://{s3_bucket}/warehouse", properties, **kwargs)
        opened.append(lh)
        return lh

    yield open_
    proxy.end_outage()
    for lh in opened:
        lh.close()


def catalog_state(lh: Lakehouse) -> dict[str, list[tuple]]:
    """Every ref's catalog rows (tables, namespaces), the refs with their merge bases, and the whole commit log."""
    with lh.engine.connect() as conn:
        return {
            "pointers": sorted(tuple(r) for r in conn.execute(select(IcebergTables.__table__))),
            "namespaces": sorted(tuple(r) for r in conn.execute(select(IcebergNamespaceProperties.__table__))),
            "refs": sorted(tuple(r) for r in conn.execute(select(refstore.refs_table))),
            "merge_bases": sorted(tuple(r) for r in conn.execute(select(refstore.merge_bases_table))),
            "commits": sorted(tuple(r) for r in conn.execute(select(refstore.commits_table))),
        }


def contents(lh: Lakehouse, ref: str = "main") -> dict[str, list[tuple]]:
    return {t: sorted(lh.read(t, ref=ref).iter_rows()) for t in lh.tables(ref)}


def seed(lh: Lakehouse, tables: int, replayed: int) -> list[str]:
    """`tables` tables of two days on main; branch `b` replaces day 2 of each, main replaces day 1 of the first
    `replayed` (those replay in a merge of `b`; the others only switch pointers)."""
    names = [f"t.t{i:02}" for i in range(tables)]
    for name in names:
        lh.write(name, pl.DataFrame({"day": DAYS * 2, "v": [1, 2, 3, 4]}), branch="main", allow_main=True)
    lh.create_branch("b")
    for name in names:
        lh.write(name, pl.DataFrame({"day": [DAYS[1]], "v": [20]}), branch="b", where=f"day = '{DAYS[1]}'")
    for name in names[:replayed]:
        lh.write(name, pl.DataFrame({"day": [DAYS[0]], "v": [10]}), branch="main", where=f"day = '{DAYS[0]}'", allow_main=True)
    return names


def merged(lh: Lakehouse, names: list[str], replayed: int) -> dict[str, list[tuple]]:
    """What main holds once `b` is merged into it."""
    day1 = [(DAYS[0], 10)]
    return {
        name: sorted((day1 if i < replayed else [(DAYS[0], 1), (DAYS[0], 3)]) + [(DAYS[1], 20)])
        for i, name in enumerate(names)
    }


def during_outage(proxy: FlakyProxy, operation: Callable[[], Any], after_requests: int, seconds: float = OUTAGE) -> Any:
    """Run `operation` with an outage of `seconds` starting after `after_requests` of its requests; assert it hit."""
    proxy.outage(seconds, after_requests=after_requests)
    started = time.monotonic()
    result = operation()
    ended = time.monotonic()
    assert proxy.outages, "the operation finished before the outage started"
    begin, end = proxy.outages[-1]
    assert started < begin < ended and end is not None and end - begin >= seconds - 0.1
    assert ended >= end  # it finished only once the store was back
    return result


# ----- a short outage is ridden out ---------------------------------------------------------------


def test_a_write_rides_out_an_8s_outage_mid_write(open_store: Callable[..., Lakehouse], proxy: FlakyProxy) -> None:
    lh = open_store()
    seed(lh, tables=1, replayed=0)
    before = contents(lh, "b")
    commits = len(lh.log("b"))
    result = during_outage(
        proxy,
        lambda: lh.write("t.t00", pl.DataFrame({"day": [DAYS[0]], "v": [7]}), branch="b", mode="append"),
        after_requests=4,
    )
    assert result.attempts >= 2 and result.rows == 1
    assert contents(lh, "b") == {"t.t00": sorted(before["t.t00"] + [(DAYS[0], 7)])}
    log = lh.log("b")
    assert len(log) == commits + 1 and log[0].snapshots == {"t.t00": lh.snapshot_id("t.t00", "b")}


def test_a_20_table_merge_rides_out_an_8s_outage_and_holds_no_transaction_open(
    open_store: Callable[..., Lakehouse], proxy: FlakyProxy, postgres_server: Any, postgres_url: str
) -> None:
    lh = open_store()
    names = seed(lh, tables=20, replayed=10)
    source_snapshots = {name: lh.snapshot_id(name, "b") for name in names}
    states: list[tuple[str, float, str]] = []
    done = threading.Event()

    def watch_sessions() -> None:
        """What every other session of the catalog database is doing, and for how long its transaction has been
        open, while the merge retries."""
        with postgres_server.connect(make_url(postgres_url).database, autocommit=True) as conn:
            while not done.is_set():
                rows = conn.execute(
                    "SELECT state, coalesce(extract(epoch FROM now() - xact_start), 0), query FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
                if proxy.outages and proxy.outages[-1][1] is None:
                    states.extend((state, float(age), query) for (state, age, query) in rows if state)
                time.sleep(0.05)

    watcher = threading.Thread(target=watch_sessions)
    watcher.start()
    try:
        result = during_outage(proxy, lambda: lh.merge("b"), after_requests=100)
    finally:
        done.set()
        watcher.join()
    # A transaction held across a retried storage call stays open for the outage's seconds; a session's own short
    # read (begun, answered, closed within a sample or two) is not one.
    held = [(state, age, query) for (state, age, query) in states if state.startswith("idle in transaction") and age > 1.0]
    assert states and not held
    assert result.tables == names and result.replayed == names[:10]
    assert contents(lh) == merged(lh, names, replayed=10)
    (entry,) = [c for c in lh.log("main") if c.kind == "merge"]
    assert entry.snapshots == {name: lh.snapshot_id(name, "main") for name in names}
    assert {n: entry.snapshots[n] for n in names[10:]} == {n: source_snapshots[n] for n in names[10:]}


def test_a_read_rides_out_an_8s_outage(open_store: Callable[..., Lakehouse], proxy: FlakyProxy) -> None:
    lh = open_store()
    names = seed(lh, tables=1, replayed=0)
    expected = contents(lh, "b")[names[0]]
    frame = during_outage(proxy, lambda: lh.read(names[0], ref="b"), after_requests=2)
    assert sorted(frame.iter_rows()) == expected


@pytest.mark.parametrize("mode", ["hang", "throttle"])
def test_reads_ride_out_timeouts_and_throttling(open_store: Callable[..., Lakehouse], proxy: FlakyProxy, mode: str) -> None:
    lh = open_store()
    lh.write("t.x", pl.DataFrame({"v": [1, 2]}), branch="main", allow_main=True)
    proxy.outage(5, after_requests=1, mode=mode)  # type: ignore[arg-type]
    assert sorted(lh.read("t.x")["v"]) == [1, 2]
    assert proxy.outages and proxy.outages[-1][1] is not None


def test_a_merge_that_only_switches_pointers_needs_no_object_store(
    open_store: Callable[..., Lakehouse], proxy: FlakyProxy
) -> None:
    lh = open_store()
    names = seed(lh, tables=20, replayed=0)
    source_snapshots = {name: lh.snapshot_id(name, "b") for name in names}
    lh = open_store(storage_retry_seconds=0)  # any object-store request during the merge would fail it at once
    proxy.outage(600)
    requests = proxy.requests
    result = lh.merge("b")
    assert proxy.requests == requests and proxy.failing
    assert result.tables == names and result.fast_forward and result.replayed == []
    assert lh.log("main")[0].snapshots == source_snapshots
    proxy.end_outage()
    assert contents(lh) == merged(lh, names, replayed=0)


# ----- a longer outage than the bound fails and changes nothing -----------------------------------


OPERATIONS: dict[str, tuple[Callable[[Lakehouse], Any], int]] = {
    "write": (lambda lh: lh.write("t.t00", pl.DataFrame({"day": [DAYS[0]], "v": [7]}), branch="b", mode="append"), 4),
    "merge": (lambda lh: lh.merge("b"), 10),
    "read": (lambda lh: lh.read("t.t00", ref="b"), 0),  # from the first request: its metadata may be cached
}


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_an_outage_longer_than_the_bound_raises_storage_unavailable_and_changes_nothing(
    open_store: Callable[..., Lakehouse], proxy: FlakyProxy, operation: str
) -> None:
    run, after_requests = OPERATIONS[operation]
    names = seed(open_store(), tables=4, replayed=2)
    lh = open_store(storage_retry_seconds=3)
    before, data = catalog_state(lh), {ref: contents(lh, ref) for ref in ("main", "b")}
    proxy.outage(20, after_requests=after_requests)
    started = time.monotonic()
    with pytest.raises(StorageUnavailable) as caught:
        run(lh)
    elapsed = time.monotonic() - started
    assert proxy.outages and 3 <= elapsed < 20
    error = caught.value
    assert isinstance(error.__cause__, OSError) and is_transient(error.__cause__)
    assert error.location == lh.config.warehouse and error.location in str(error) and "nothing was committed" in str(error)
    assert ("'b'" in error.what) and (operation == "merge" or "'t.t00'" in error.what)
    assert catalog_state(lh) == before
    proxy.end_outage()
    assert catalog_state(lh) == before and {ref: contents(lh, ref) for ref in ("main", "b")} == data
    run(lh)  # once the store is back the same operation succeeds
    if operation == "merge":
        assert contents(lh) == merged(lh, names, replayed=2)


def test_cli_reports_storage_unavailable_as_a_lakehouse_error(
    open_store: Callable[..., Lakehouse], proxy: FlakyProxy, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    lh = open_store()
    lh.write("t.x", pl.DataFrame({"v": [1]}), branch="main", allow_main=True)
    monkeypatch.setenv("LAKEHOUSE_CATALOG_URI", lh.config.catalog_uri)
    monkeypatch.setenv("LAKEHOUSE_WAREHOUSE", lh.config.warehouse)
    monkeypatch.setenv("LAKEHOUSE_PROPERTIES", json.dumps(lh.config.properties))
    monkeypatch.setenv("LAKEHOUSE_STORAGE_RETRY_SECONDS", "1")
    proxy.outage(30)
    capsys.readouterr()
    assert main(["table", "show", "t.x"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: table 't.x' on 'main': the object store at") and "unavailable" in err


# ----- what is retried, and the bound ----------------------------------------------------------------


def test_a_missing_file_is_not_retried(local_backend: Any) -> None:
    with Lakehouse(local_backend.catalog_uri, local_backend.warehouse, storage_retry_seconds=60) as lh:
        lh.write("t.x", pl.DataFrame({"v": [1]}), branch="main", allow_main=True)
        (data_file,) = [task.file.file_path for task in lh.table("t.x").scan().plan_files()]
        lh.table("t.x").io.delete(data_file)
        started = time.monotonic()
        with pytest.raises(FileNotFoundError) as caught:
            lh.read("t.x")
        assert time.monotonic() - started < 5 and not is_transient(caught.value)


def test_an_unreachable_catalog_database_is_not_a_storage_error() -> None:
    from sqlalchemy import create_engine
    from sqlalchemy.exc import OperationalError

    engine = create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/lh", connect_args={"connect_timeout": 2})
    with pytest.raises(OperationalError) as caught:
        engine.connect()
    engine.dispose()
    assert not is_transient(caught.value)  # commits retry the catalog's errors themselves; never `StorageUnavailable`


def test_storage_retry_seconds_from_argument_environment_or_default(local_backend: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    uri, warehouse = local_backend.catalog_uri, local_backend.warehouse
    assert LakehouseConfig.resolve(uri, warehouse, environ={}).storage_retry_seconds == 30
    assert LakehouseConfig.resolve(uri, warehouse, environ={"LAKEHOUSE_STORAGE_RETRY_SECONDS": "7.5"}).storage_retry_seconds == 7.5
    monkeypatch.setenv("LAKEHOUSE_STORAGE_RETRY_SECONDS", "12")
    with Lakehouse(uri, warehouse) as lh:
        assert lh.config.storage_retry_seconds == 12
    with Lakehouse(uri, warehouse, storage_retry_seconds=0) as lh:
        assert lh.config.storage_retry_seconds == 0
    for bad in ("soon", "-1", "nan"):
        with pytest.raises(LakehouseError, match="LAKEHOUSE_STORAGE_RETRY_SECONDS"):
            LakehouseConfig.resolve(uri, warehouse, environ={"LAKEHOUSE_STORAGE_RETRY_SECONDS": bad})
