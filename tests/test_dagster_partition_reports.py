"""A partitioned asset's materialization describes its partition, and checks of it audit the run's partition."""

from datetime import date, datetime, timedelta
from typing import Any

import dagster as dg
import polars as pl
from test_dagster_support import (  # noqa: F401  (fresh_lakehouse_cache is an autouse fixture)
    failure_text,
    fresh_lakehouse_cache,
    materialization,
    materialize,
)

from dagster_lakehouse.lakehouse import Lakehouse

MONTHS = dg.MonthlyPartitionsDefinition(start_date="2024-01-01", end_date="2024-05-01")
DEV = {"lakehouse/branch": "dev"}
SIZES = {"2024-01-01": 3, "2024-02-01": 5, "2024-03-01": 2, "2024-04-01": 4}


def _month_rows(month: str, value: int) -> pl.DataFrame:
    """`SIZES[month]` rows on successive days of `month`."""
    start = datetime.fromisoformat(month)
    return pl.DataFrame(
        {"ts": [start + timedelta(days=d) for d in range(SIZES[month])], "value": [value] * SIZES[month]}
    )


@dg.asset(partitions_def=MONTHS, metadata={"lakehouse/partition_column": "ts"})
def monthly(context: dg.AssetExecutionContext) -> pl.DataFrame:
    return pl.concat([_month_rows(key, 1) for key in context.partition_keys])


def _seen(frame: pl.DataFrame) -> dict[str, Any]:
    months = sorted({d.strftime("%Y-%m") for d in frame["ts"].dt.date().to_list()})
    return {"rows": frame.height, "months": ",".join(months)}


@dg.asset_check(asset=monthly)
def month_check(monthly: pl.DataFrame) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True, metadata=_seen(monthly))


@dg.asset_check(asset=monthly, metadata={"lakehouse/scope": "table"})
def table_check(monthly: pl.DataFrame) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True, metadata=_seen(monthly))


@dg.asset_check(asset=monthly, partitions_def=MONTHS)
def partitioned_check(monthly: pl.DataFrame) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True, metadata=_seen(monthly))


def _evaluations(result: dg.ExecuteInProcessResult) -> dict[str, dict[str, Any]]:
    return {
        e.check_name: {key: value.value for key, value in e.metadata.items()}
        for e in result.get_asset_check_evaluations()
    }


def _seed_other_months(backend: Any) -> None:
    for month in ("2024-01-01", "2024-02-01", "2024-04-01"):
        assert materialize([monthly], backend, tags=DEV, partition_key=month).success


def test_an_unpartitioned_check_audits_the_runs_partition(backend: Any) -> None:
    _seed_other_months(backend)
    result = materialize([monthly, month_check, table_check], backend, tags=DEV, partition_key="2024-03-01")
    assert result.success
    checks = _evaluations(result)
    assert checks["month_check"] == {"rows": 2, "months": "2024-03"}
    assert checks["table_check"] == {"rows": 14, "months": "2024-01,2024-02,2024-03,2024-04"}


def test_a_partitioned_check_audits_its_partition(local_backend: Any) -> None:
    _seed_other_months(local_backend)
    result = materialize([monthly, partitioned_check], local_backend, tags=DEV, partition_key="2024-02-01")
    assert result.success
    assert _evaluations(result)["partitioned_check"] == {"rows": 5, "months": "2024-02"}


def test_a_check_in_a_range_run_audits_the_range(local_backend: Any) -> None:
    _seed_other_months(local_backend)
    tags = {
        **DEV,
        "dagster/asset_partition_range_start": "2024-02-01",
        "dagster/asset_partition_range_end": "2024-03-01",
    }
    result = materialize([monthly, month_check], local_backend, tags=tags)
    assert result.success
    assert _evaluations(result)["month_check"] == {"rows": 7, "months": "2024-02,2024-03"}


def test_input_metadata_asks_for_the_whole_table(local_backend: Any) -> None:
    _seed_other_months(local_backend)

    @dg.asset_check(
        asset=monthly, additional_ins={"other": dg.AssetIn("monthly_copy", metadata={"lakehouse/scope": "table"})}
    )
    def compares(monthly: pl.DataFrame, other: pl.DataFrame) -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=True, metadata={"own": monthly.height, "other": other.height})

    @dg.asset(partitions_def=MONTHS, metadata={"lakehouse/partition_column": "ts"})
    def monthly_copy(context: dg.AssetExecutionContext) -> pl.DataFrame:
        return _month_rows(context.partition_key, 2)

    for month in SIZES:
        assert materialize([monthly_copy], local_backend, tags=DEV, partition_key=month).success
    result = materialize([monthly, monthly_copy, compares], local_backend, tags=DEV, partition_key="2024-01-01")
    assert result.success
    assert _evaluations(result)["compares"] == {"own": 3, "other": 14}


def test_an_unknown_scope_is_refused_by_name(local_backend: Any) -> None:
    @dg.asset_check(asset=monthly, metadata={"lakehouse/scope": "everything"})
    def odd_check(monthly: pl.DataFrame) -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=True)

    result = materialize([monthly, odd_check], local_backend, tags=DEV, partition_key="2024-01-01")
    text = failure_text(result)
    assert "'lakehouse/scope' is 'everything'" in text
    assert "input 'monthly' from 'monthly'" in text


# ----- what a partition's materialization reports ------------------------------------------------------


def _month_filter(month: str) -> str:
    start = date.fromisoformat(month)
    end = date(start.year + start.month // 12, start.month % 12 + 1, 1)
    return f"ts >= '{start}' and ts < '{end}'"


def _reported(result: dg.ExecuteInProcessResult) -> dict[str, dict[str, Any]]:
    return {
        str(m.partition): {key: value.value for key, value in m.metadata.items()}
        | {"data_version": m.tags["dagster/data_version"]}
        for m in result.asset_materializations_for_node("monthly")
    }


def test_a_partitions_row_count_is_its_rows_on_the_branch(backend: Any, lakehouse: Lakehouse) -> None:
    bulk = pl.concat([_month_rows(month, 0) for month in SIZES])  # one file holding every month
    lakehouse.create_branch("dev")
    lakehouse.write("public.monthly", bulk, branch="dev")
    for month in ("2024-01-01", "2024-02-01", "2024-04-01"):
        result = materialize([monthly], backend, tags=DEV, partition_key=month)
        assert result.success
        reported = _reported(result)[month]
        on_branch = lakehouse.read("public.monthly", ref="dev", filter=_month_filter(month))
        assert reported["dagster/row_count"] == on_branch.height == SIZES[month]
        assert reported["dagster/partition_row_count"] == SIZES[month]
        assert reported["data_version"] == str(reported["lakehouse/snapshot_id"]), "the snapshot this write committed"
        assert reported["lakehouse/snapshot_id"] == lakehouse.snapshot_id("public.monthly", "dev")
    assert lakehouse.read("public.monthly", ref="dev").height == sum(SIZES.values()), "the bulk's March is kept"
    assert lakehouse.read("public.monthly", ref="dev", filter=_month_filter("2024-03-01"))["value"].to_list() == [0, 0]


def test_a_range_run_reports_each_partitions_rows(local_backend: Any) -> None:
    _seed_other_months(local_backend)
    tags = {
        **DEV,
        "dagster/asset_partition_range_start": "2024-02-01",
        "dagster/asset_partition_range_end": "2024-03-01",
    }
    result = materialize([monthly], local_backend, tags=tags)
    assert result.success
    reported = _reported(result)
    assert {month: r["dagster/row_count"] for month, r in reported.items()} == {"2024-02-01": 5, "2024-03-01": 2}
    assert {r["data_version"] for r in reported.values()} == {str(reported["2024-02-01"]["lakehouse/snapshot_id"])}


def test_an_appended_partition_reports_all_its_rows(local_backend: Any) -> None:
    @dg.asset(partitions_def=MONTHS, metadata={"lakehouse/partition_column": "ts", "lakehouse/mode": "append"})
    def monthly_log(context: dg.AssetExecutionContext) -> pl.DataFrame:
        return _month_rows(context.partition_key, 1)

    counts = []
    for month in ("2024-01-01", "2024-02-01", "2024-01-01"):
        result = materialize([monthly_log], local_backend, tags=DEV, partition_key=month)
        counts.append(materialization(result, "monthly_log").metadata["dagster/row_count"].value)
    assert counts == [3, 5, 6]
