"""Partitioned assets: partition-scoped overwrite in one commit, partition reads of partitioned parents."""

from datetime import UTC, date, datetime, timedelta
from typing import Any

import dagster as dg
import polars as pl
import pytest
from pyiceberg.expressions import In
from test_dagster_support import (  # noqa: F401  (fresh_lakehouse_cache is an autouse fixture)
    failure_text,
    fresh_lakehouse_cache,
    materialization,
    materialize,
)

from dagster_lakehouse.dagster import LakehouseIOError, branch_partitions
from dagster_lakehouse.dagster.scope import build_scope
from dagster_lakehouse.lakehouse import Lakehouse

DAILY = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-10")
REGIONS = dg.StaticPartitionsDefinition(["east", "west"])
DEV = {"lakehouse/branch": "dev"}


def _lakehouse(backend: Any) -> Lakehouse:
    return Lakehouse(backend.catalog_uri, backend.warehouse, dict(backend.properties))


def _day_rows(context: dg.AssetExecutionContext, value: int, hours: int = 3) -> pl.DataFrame:
    """`hours` rows at the start of each day of the run's time window (naive wall-clock timestamps)."""
    window = context.partition_time_window
    day, rows = window.start.replace(tzinfo=None), []
    while day < window.end.replace(tzinfo=None):
        rows += [{"ts": day + timedelta(hours=h), "value": value} for h in range(hours)]
        day += timedelta(days=1)
    return pl.DataFrame(rows)


def _metadata_versions(lakehouse: Lakehouse, table: str, branch: str) -> int:
    return len(lakehouse.table(table, branch).metadata.metadata_log) + 1


def test_time_partition_overwrite_in_one_commit(backend: Any, lakehouse: Lakehouse) -> None:
    values = {"2024-01-01": 1, "2024-01-02": 2}

    @dg.asset(partitions_def=DAILY, metadata={"lakehouse/partition_column": "ts"})
    def readings(context: dg.AssetExecutionContext) -> pl.DataFrame:
        return _day_rows(context, values[context.partition_key])

    for day in ("2024-01-01", "2024-01-02"):
        assert materialize([readings], backend, tags=DEV, partition_key=day).success
    versions = _metadata_versions(lakehouse, "public.readings", "dev")
    snapshots_before = {s.snapshot_id for s in lakehouse.table("public.readings", "dev").metadata.snapshots}
    commits_before = len(lakehouse.log("dev"))

    values["2024-01-01"] = 10
    result = materialize([readings], backend, tags=DEV, partition_key="2024-01-01")
    assert result.success

    table = lakehouse.table("public.readings", "dev")
    assert _metadata_versions(lakehouse, "public.readings", "dev") == versions + 1, "one metadata commit"
    assert len(lakehouse.log("dev")) == commits_before + 1
    new = [s for s in table.metadata.snapshots if s.snapshot_id not in snapshots_before]
    assert 1 <= len(new) <= 2  # delete + append of one transaction: no state in between was ever current
    assert all(s.summary["dagster.partition-key"] == "2024-01-01" for s in new)
    assert all(s.summary["dagster.run-id"] == result.run_id for s in new)
    frame = lakehouse.read("public.readings", ref="dev")
    by_day = frame.group_by(pl.col("ts").dt.date()).agg(pl.col("value").unique()).sort("ts")
    assert by_day.to_dicts() == [
        {"ts": date(2024, 1, 1), "value": [10]},
        {"ts": date(2024, 1, 2), "value": [2]},
    ]
    md = materialization(result, "readings").metadata
    assert md["dagster/partition_row_count"].value == 3
    assert md["dagster/row_count"].value == 3, "the partition's rows, not the table's 6"
    assert md["lakehouse/mode"].value == "overwrite"


def test_partition_range_run_overwrites_each_day_once(local_backend: Any) -> None:
    @dg.asset(partitions_def=DAILY, metadata={"lakehouse/partition_column": "ts"})
    def readings(context: dg.AssetExecutionContext) -> pl.DataFrame:
        return _day_rows(context, 7)

    tags = {
        **DEV,
        "dagster/asset_partition_range_start": "2024-01-02",
        "dagster/asset_partition_range_end": "2024-01-04",
    }
    for _ in range(2):
        result = materialize([readings], local_backend, tags=tags)
        assert result.success
    frame = _lakehouse(local_backend).read("public.readings", ref="dev")
    assert frame.height == 9
    assert sorted(frame["ts"].dt.date().unique().to_list()) == [date(2024, 1, d) for d in (2, 3, 4)]


def test_timestamptz_column_and_partition_timezone(local_backend: Any) -> None:
    new_york = dg.DailyPartitionsDefinition(start_date="2024-01-01", timezone="America/New_York")

    @dg.asset(partitions_def=new_york, metadata={"lakehouse/partition_column": "at"})
    def visits(context: dg.AssetExecutionContext) -> pl.DataFrame:
        start = context.partition_time_window.start.astimezone(UTC)
        times = [start, start + timedelta(hours=23, minutes=59)]
        return pl.DataFrame({"at": times, "day": [context.partition_key] * 2}).with_columns(
            pl.col("at").dt.convert_time_zone("UTC")
        )

    for day in ("2024-03-01", "2024-03-02", "2024-03-01"):
        assert materialize([visits], local_backend, tags=DEV, partition_key=day).success
    frame = _lakehouse(local_backend).read("public.visits", ref="dev")
    assert sorted(frame["day"].to_list()) == ["2024-03-01", "2024-03-01", "2024-03-02", "2024-03-02"]
    assert frame["at"].min() == datetime(2024, 3, 1, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("dtype", "make"),
    [(pl.Date, lambda d: d), (pl.Utf8, lambda d: d.isoformat())],
    ids=["date", "string"],
)
def test_date_and_string_columns(local_backend: Any, dtype: Any, make: Any) -> None:
    @dg.asset(partitions_def=DAILY, metadata={"partition_expr": "day"})
    def daily_totals(context: dg.AssetExecutionContext) -> pl.DataFrame:
        day = context.partition_time_window.start.date()
        return pl.DataFrame({"day": [make(day)], "total": [day.day]}, schema={"day": dtype, "total": pl.Int64})

    for day in ("2024-01-01", "2024-01-02", "2024-01-01"):
        assert materialize([daily_totals], local_backend, tags=DEV, partition_key=day).success
    assert sorted(_lakehouse(local_backend).read("public.daily_totals", ref="dev")["total"].to_list()) == [1, 2]


def test_static_partition_overwrite(backend: Any, lakehouse: Lakehouse) -> None:
    amounts = {"east": [1, 2], "west": [3]}

    @dg.asset(partitions_def=REGIONS, metadata={"lakehouse/partition_column": "region"})
    def sales(context: dg.AssetExecutionContext) -> pl.DataFrame:
        region = context.partition_key
        return pl.DataFrame({"region": region, "amount": amounts[region]})

    for region in ("east", "west"):
        assert materialize([sales], backend, tags=DEV, partition_key=region).success
    versions = _metadata_versions(lakehouse, "public.sales", "dev")
    amounts["east"] = [100]
    assert materialize([sales], backend, tags=DEV, partition_key="east").success
    assert _metadata_versions(lakehouse, "public.sales", "dev") == versions + 1
    frame = lakehouse.read("public.sales", ref="dev").sort("amount")
    assert frame.rows() == [("west", 3), ("east", 100)]


def test_static_partition_on_integer_column(local_backend: Any) -> None:
    @dg.asset(partitions_def=dg.StaticPartitionsDefinition(["1", "2"]), metadata={"lakehouse/partition_column": "zone"})
    def zones(context: dg.AssetExecutionContext) -> pl.DataFrame:
        return pl.DataFrame({"zone": [int(context.partition_key)], "name": [f"zone {context.partition_key}"]})

    for key in ("1", "2", "1"):
        assert materialize([zones], local_backend, tags=DEV, partition_key=key).success
    assert sorted(_lakehouse(local_backend).read("public.zones", ref="dev")["zone"].to_list()) == [1, 2]


def test_multi_partitions_with_a_column_per_dimension(local_backend: Any) -> None:
    multi = dg.MultiPartitionsDefinition({"date": DAILY, "region": REGIONS})

    @dg.asset(partitions_def=multi, metadata={"lakehouse/partition_column": {"date": "ts", "region": "region"}})
    def regional(context: dg.AssetExecutionContext) -> pl.DataFrame:
        key = context.partition_key.keys_by_dimension
        start = datetime.fromisoformat(key["date"])
        return pl.DataFrame(
            {"ts": [start, start + timedelta(hours=1)], "region": key["region"], "run": [context.run.run_id] * 2}
        )

    keys = [
        dg.MultiPartitionKey({"date": d, "region": r}) for d in ("2024-01-01", "2024-01-02") for r in ("east", "west")
    ]
    for key in keys:
        assert materialize([regional], local_backend, tags=DEV, partition_key=key).success
    result = materialize([regional], local_backend, tags=DEV, partition_key=keys[0])
    frame = _lakehouse(local_backend).read("public.regional", ref="dev")
    assert frame.height == 8
    assert frame.filter(pl.col("run") == result.run_id)[["region"]].to_series().to_list() == ["east", "east"]


def test_append_mode_on_a_partitioned_asset_appends(local_backend: Any) -> None:
    @dg.asset(partitions_def=REGIONS, metadata={"lakehouse/partition_column": "region", "lakehouse/mode": "append"})
    def log(context: dg.AssetExecutionContext) -> pl.DataFrame:
        return pl.DataFrame({"region": [context.partition_key]})

    for _ in range(2):
        assert materialize([log], local_backend, tags=DEV, partition_key="east").success
    assert _lakehouse(local_backend).read("public.log", ref="dev").height == 2


# ----- reading partitioned parents --------------------------------------------------------------------


def test_partitioned_parent_reads_only_the_partition(backend: Any, lakehouse: Lakehouse) -> None:
    seen: dict[str, Any] = {}

    @dg.asset(partitions_def=DAILY, metadata={"lakehouse/partition_column": "ts"})
    def readings(context: dg.AssetExecutionContext) -> pl.DataFrame:
        return _day_rows(context, int(context.partition_key[-2:]))

    @dg.asset(partitions_def=DAILY, metadata={"lakehouse/partition_column": "ts"})
    def daily_max(context: dg.AssetExecutionContext, readings: pl.LazyFrame) -> pl.DataFrame:
        frame = readings.collect()
        seen[context.partition_key] = frame.height
        return frame.group_by(pl.col("ts").dt.truncate("1d")).agg(pl.col("value").max())

    @dg.asset
    def overall(readings: pl.DataFrame) -> pl.DataFrame:
        seen["overall"] = readings.height
        return readings.select(pl.len())

    for day in ("2024-01-01", "2024-01-02", "2024-01-03"):
        assert materialize([readings, daily_max], backend, tags=DEV, partition_key=day).success
    assert seen == {"2024-01-01": 3, "2024-01-02": 3, "2024-01-03": 3}
    frame = lakehouse.read("public.daily_max", ref="dev").sort("ts")
    assert frame["value"].to_list() == [1, 2, 3]
    assert materialize([readings.to_source_asset(), overall], backend, tags=DEV).success
    assert seen["overall"] == 9


def test_partitioned_asset_reads_only_its_rows_of_an_unpartitioned_raw_table(local_backend: Any) -> None:
    """An incremental daily model over a raw table: input metadata names the raw table's partition column."""
    lakehouse = _lakehouse(local_backend)
    days = [datetime(2024, 1, d, h) for d in (1, 2, 3) for h in (1, 13)]
    lakehouse.write("raw.events", pl.DataFrame({"ts": days, "n": range(6)}), allow_main=True)
    spec = dg.AssetSpec(key=["raw", "events"], metadata={"lakehouse/table": "raw.events"})
    seen: dict[str, list[int]] = {}

    @dg.asset(
        partitions_def=DAILY,
        metadata={"lakehouse/partition_column": "ts"},
        ins={"events": dg.AssetIn(key=spec.key, metadata={"lakehouse/partition_column": "ts"})},
    )
    def daily_events(context: dg.AssetExecutionContext, events: pl.DataFrame) -> pl.DataFrame:
        seen[context.partition_key] = sorted(events["n"])
        return events

    @dg.asset(ins={"events": dg.AssetIn(key=spec.key)})
    def all_events(events: pl.DataFrame) -> pl.DataFrame:
        seen["all"] = sorted(events["n"])
        return events

    assert materialize([spec, daily_events], local_backend, tags=DEV, partition_key="2024-01-02").success
    assert materialize([spec, all_events], local_backend, tags=DEV).success
    assert seen == {"2024-01-02": [2, 3], "all": [0, 1, 2, 3, 4, 5]}
    assert lakehouse.read("public.daily_events", ref="dev")["n"].to_list() == [2, 3]


def test_partition_filter_combines_with_the_input_filter(local_backend: Any) -> None:
    seen: dict[str, Any] = {}

    @dg.asset(partitions_def=DAILY, metadata={"lakehouse/partition_column": "ts"})
    def readings(context: dg.AssetExecutionContext) -> pl.DataFrame:
        return _day_rows(context, 1, hours=6)

    @dg.asset(
        partitions_def=DAILY,
        metadata={"lakehouse/partition_column": "ts"},
        ins={"readings": dg.AssetIn(metadata={"filter": "ts >= '2024-01-02 03:00:00'", "columns": ["ts"]})},
    )
    def late(readings: pl.DataFrame) -> pl.DataFrame:
        seen["frame"] = readings
        return readings

    for day in ("2024-01-01", "2024-01-02", "2024-01-03"):
        assert materialize([readings], local_backend, tags=DEV, partition_key=day).success
    assert materialize([readings.to_source_asset(), late], local_backend, tags=DEV, partition_key="2024-01-02").success
    assert seen["frame"].columns == ["ts"]
    assert seen["frame"]["ts"].to_list() == [datetime(2024, 1, 2, h) for h in (3, 4, 5)]


# ----- errors -----------------------------------------------------------------------------------------


def test_rows_outside_the_partition_are_refused(local_backend: Any) -> None:
    @dg.asset(partitions_def=DAILY, metadata={"lakehouse/partition_column": "ts"})
    def sloppy(context: dg.AssetExecutionContext) -> pl.DataFrame:
        return pl.DataFrame({"ts": [datetime(2024, 1, 1, 12), datetime(2024, 1, 2, 0)]})

    text = failure_text(materialize([sloppy], local_backend, tags=DEV, partition_key="2024-01-01"))
    assert "LakehouseIOError" in text and "asset 'sloppy'" in text and "branch 'dev'" in text
    assert "1 of 2 rows lie outside partition 2024-01-01" in text
    assert "ts >= '2024-01-01T00:00:00' and ts < '2024-01-02T00:00:00'" in text
    assert not _lakehouse(local_backend).exists("public.sloppy", "dev")


def test_partitioned_asset_without_partition_column(local_backend: Any) -> None:
    @dg.asset(partitions_def=REGIONS)
    def unlabelled(context: dg.AssetExecutionContext) -> pl.DataFrame:
        return pl.DataFrame({"region": [context.partition_key]})

    text = failure_text(materialize([unlabelled], local_backend, tags=DEV, partition_key="east"))
    assert "asset 'unlabelled'" in text and "'lakehouse/partition_column'" in text


def test_partition_column_missing_from_output(local_backend: Any) -> None:
    @dg.asset(partitions_def=REGIONS, metadata={"lakehouse/partition_column": "region"})
    def wrong(context: dg.AssetExecutionContext) -> pl.DataFrame:
        return pl.DataFrame({"area": [context.partition_key]})

    text = failure_text(materialize([wrong], local_backend, tags=DEV, partition_key="east"))
    assert "asset 'wrong'" in text and "partition column 'region' is not in the output (columns: area)" in text


def test_multi_partitions_need_a_column_per_dimension(local_backend: Any) -> None:
    multi = dg.MultiPartitionsDefinition({"date": DAILY, "region": REGIONS})

    @dg.asset(partitions_def=multi, metadata={"lakehouse/partition_column": "ts"})
    def half(context: dg.AssetExecutionContext) -> pl.DataFrame:
        return pl.DataFrame({"ts": [datetime(2024, 1, 1)], "region": ["east"]})

    key = dg.MultiPartitionKey({"date": "2024-01-01", "region": "east"})
    text = failure_text(materialize([half], local_backend, tags=DEV, partition_key=key))
    assert "asset 'half'" in text and "several dimensions" in text and "date, region" in text


# ----- the partition scope itself ---------------------------------------------------------------------


def test_scope_of_several_static_keys() -> None:
    scope = build_scope(REGIONS, ["east", "west"], {None: "region"}, lambda c: "string", "asset 'x'")
    assert scope is not None
    assert scope.text() == "region in ('east', 'west')"
    assert isinstance(scope.iceberg(), In)
    frame = pl.DataFrame({"region": ["east", "north", None, "west"]})
    assert frame.filter(scope.polars())["region"].to_list() == ["east", "west"]


def test_scope_merges_adjacent_days_and_keeps_gaps() -> None:
    keys = ["2024-01-01", "2024-01-02", "2024-01-05"]
    scope = build_scope(DAILY, keys, {None: "day"}, lambda c: "date", "asset 'x'")
    assert scope is not None
    assert scope.text() == (
        "(day >= '2024-01-01' and day < '2024-01-03') or (day >= '2024-01-05' and day < '2024-01-06')"
    )


def test_scope_skips_the_branch_dimension() -> None:
    multi = dg.MultiPartitionsDefinition({"branch": branch_partitions, "region": REGIONS})
    key = dg.MultiPartitionKey({"branch": "dev", "region": "west"})
    scope = build_scope(multi, [key], {"region": "region"}, lambda c: "string", "asset 'x'")
    assert scope is not None and scope.text() == "region = 'west'"
    assert build_scope(branch_partitions, ["dev"], {}, lambda c: "string", "asset 'x'") is None


def test_static_key_that_is_not_an_integer() -> None:
    with pytest.raises(LakehouseIOError, match="partition key 'east' is not a valid int for column 'zone'"):
        build_scope(REGIONS, ["east"], {None: "zone"}, lambda c: "int", "asset 'x'")
