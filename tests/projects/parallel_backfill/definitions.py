"""A small Dagster code location for the parallel-backfill end-to-end tests (`tests/test_e2e_parallel_backfill.py`).

Three daily-partitioned assets, each stored in an *unpartitioned* Iceberg table `parallel.<name>` whose rows carry
their day in column `day`: the IO manager writes a partition as `replace ... where day in [day, day + 1)`. The tests
seed each table on `main` with one bulk write holding several days, so the data files are shared across days.

- `parallel/wap_days`: backfilled with write-audit-publish, 8 runs at once, each on its own `wap/<run>` branch;
  the merge sensor publishes them.
- `parallel/conflict_days`: two concurrent WAP runs replace the same day; the second to merge conflicts.
- `parallel/branch_days`: backfilled without WAP, 8 runs at once writing one branch.
- `parallel/flights`, `parallel/delays`: monthly partitions whose tables do not exist on main: a first WAP backfill
  (all runs at once) creates the table on every run's branch; run tag `parallel/fail_partitions` makes the audit of
  those months fail, and `parallel/hold` holds every audit until the test releases it (to write to main meanwhile).

Each asset has a blocking partitioned check (the audit). The run tags below make runs meet at barriers, so the
tests know the runs really ran at the same time rather than one after another:

- `parallel/group` + `parallel/size`: the run waits in the asset body, before its write, until `size` runs of the
  group got there, and again in its check (after its write), so every run of the group has written (and forked its
  WAP branch) before any of them finishes and can be merged; a run that waits in vain (150 s for the first
  barrier, 60 s for the second) fails naming the group and the runs that arrived.
- `parallel/version`: stamped in column `run` of every row the run writes.
- `parallel/audit_delay`: seconds the check sleeps after the audit barrier (to order the runs' ends).

The barrier folder is `$PARALLEL_BACKFILL_BARRIER_DIR` (the tests set it for `dagster dev`).
"""

import os
import time
import warnings
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import polars as pl

from dagster_lakehouse.dagster import (
    LakehouseIOManager,
    LakehouseResource,
    build_main_state_sensor,
    build_merge_sensor,
)

DAILY = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-11")
HOURS = 24
GROUP_TAG = "parallel/group"
SIZE_TAG = "parallel/size"
VERSION_TAG = "parallel/version"
AUDIT_DELAY_TAG = "parallel/audit_delay"
BARRIER_ENV = "PARALLEL_BACKFILL_BARRIER_DIR"
BARRIER_TIMEOUT = float(os.environ.get("PARALLEL_BACKFILL_BARRIER_TIMEOUT", "150"))  # all runs start
AUDIT_BARRIER_TIMEOUT = 60.0  # all runs already run: only their writes lie between the barriers
SCHEMA = {"day": pl.Date, "hour": pl.Int32, "run": pl.Utf8, "value": pl.Int64}


def day_rows(day: str | date, version: str) -> pl.DataFrame:
    """The rows a run labelled `version` writes for `day`: one per hour, values derived from both."""
    if isinstance(day, str):
        day = date.fromisoformat(day)
    salt = sum(map(ord, version))
    return pl.DataFrame(
        {
            "day": [day] * HOURS,
            "hour": list(range(HOURS)),
            "run": [version] * HOURS,
            "value": [day.toordinal() * 1000 + hour * 10 + salt for hour in range(HOURS)],
        },
        schema=SCHEMA,
    )


def days_rows(first: str, last: str, version: str) -> pl.DataFrame:
    """`day_rows` of every day from `first` to `last` inclusive, in one frame (the seed's bulk write)."""
    start, end = date.fromisoformat(first), date.fromisoformat(last)
    return pl.concat([day_rows(start + timedelta(days=n), version) for n in range((end - start).days + 1)])


def arrive(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext, stage: str, timeout: float) -> None:
    """Wait until every run of the run's `parallel/group` reached `stage` (no-op for runs without a group)."""
    tags = context.run.tags
    group, size = tags.get(GROUP_TAG), int(tags.get(SIZE_TAG, "0"))
    if not group or size <= 1:
        return
    folder = Path(os.environ[BARRIER_ENV]) / group / stage
    folder.mkdir(parents=True, exist_ok=True)
    (folder / context.run.run_id).touch()
    started = time.monotonic()
    while (arrived := sum(1 for _ in folder.iterdir())) < size:
        if time.monotonic() - started > timeout:
            raise dg.Failure(
                f"only {arrived} of {size} runs of group {group!r} reached {stage!r} within {timeout:.0f}s "
                f"(arrived: {', '.join(sorted(p.name for p in folder.iterdir()))}): "
                + (
                    "the runs did not run concurrently (run queue limit, or a slow launch)"
                    if stage == "write"
                    else "another run of the group failed (or hung) between its write and its audit"
                )
            )
        time.sleep(0.1)
    context.log.info(f"all {size} runs of group {group!r} reached {stage!r} after {time.monotonic() - started:.1f}s")


MONTHLY = dg.MonthlyPartitionsDefinition(start_date="2013-01-01", end_date="2014-01-01")
MONTHS = MONTHLY.get_partition_keys()
FAIL_TAG = "parallel/fail_partitions"
HOLD_TAG = "parallel/hold"
HOLD_TIMEOUT = 150.0
MONTH_SCHEMA = {"day": pl.Date, "flight": pl.Int64, "run": pl.Utf8, "delay": pl.Int64}


def month_rows(month: str | date, version: str) -> pl.DataFrame:
    """The flights a run labelled `version` writes for the month starting `month`: 5 + its month number rows (so
    every month has its own row count), on days 1 to 28 of that month."""
    if isinstance(month, str):
        month = date.fromisoformat(month)
    count, salt = 5 + month.month, sum(map(ord, version))
    return pl.DataFrame(
        {
            "day": [month.replace(day=1 + n % 28) for n in range(count)],
            "flight": [month.month * 1000 + n for n in range(count)],
            "run": [version] * count,
            "delay": [(n * 7 + salt) % 90 for n in range(count)],
        },
        schema=MONTH_SCHEMA,
    )


def hold(context: dg.AssetCheckExecutionContext) -> None:
    """With run tag `parallel/hold`, wait until the test creates `<barriers>/<hold>/release` (or fail after 150 s)."""
    name = context.run.tags.get(HOLD_TAG)
    if not name:
        return
    release = Path(os.environ[BARRIER_ENV]) / name / "release"
    started = time.monotonic()
    while not release.exists():
        if time.monotonic() - started > HOLD_TIMEOUT:
            raise dg.Failure(f"hold {name!r} was not released within {HOLD_TIMEOUT:.0f}s")
        time.sleep(0.1)


def partitioned_asset(
    name: str,
    partitions_def: dg.PartitionsDefinition,
    rows: Callable[[str, str], pl.DataFrame],
    order_by: str,
    check_name: str,
) -> tuple[dg.AssetsDefinition, dg.AssetChecksDefinition]:
    """The asset `parallel/<name>` (table `parallel.<name>`, partition column `day`, a partition's rows from `rows`)
    and its blocking partitioned check: the partition's rows on the run's branch are exactly its own (and the
    partition is not in `parallel/fail_partitions`); the check meets the group's audit barrier and the hold."""
    key = dg.AssetKey(["parallel", name])

    @dg.asset(
        key=key,
        partitions_def=partitions_def,
        metadata={"lakehouse/partition_column": "day"},
        group_name="parallel",
        kinds={"iceberg", "polars"},
    )
    def _asset(context: dg.AssetExecutionContext) -> pl.DataFrame:
        arrive(context, "write", BARRIER_TIMEOUT)
        return rows(context.partition_key, context.run.tags.get(VERSION_TAG) or context.run.run_id)

    def _check(context: dg.AssetCheckExecutionContext, written: pl.DataFrame) -> dg.AssetCheckResult:
        # `written` is read back through the IO manager: the partition's rows on the run's (WAP) branch
        expected = rows(context.partition_key, context.run.tags.get(VERSION_TAG) or context.run.run_id)
        failing = context.partition_key in context.run.tags.get(FAIL_TAG, "").split(",")
        arrive(context, "audit", AUDIT_BARRIER_TIMEOUT)
        hold(context)
        time.sleep(float(context.run.tags.get(AUDIT_DELAY_TAG, "0")))
        return dg.AssetCheckResult(
            passed=written.sort(order_by).equals(expected) and not failing,
            metadata={"rows": written.height, "forced_to_fail": failing},
        )

    with warnings.catch_warnings():  # partitioned asset checks are a preview feature
        warnings.simplefilter("ignore", dg.PreviewWarning)
        check = dg.asset_check(
            asset=key, name=check_name, partitions_def=partitions_def, blocking=True, description="Its own rows."
        )(_check)
    return _asset, check


flights, flights_check = partitioned_asset("flights", MONTHLY, month_rows, "flight", "its_month")
delays, delays_check = partitioned_asset("delays", MONTHLY, month_rows, "flight", "its_month")
wap_days, wap_days_check = partitioned_asset("wap_days", DAILY, day_rows, "hour", "one_row_per_hour")
conflict_days, conflict_days_check = partitioned_asset("conflict_days", DAILY, day_rows, "hour", "one_row_per_hour")
branch_days, branch_days_check = partitioned_asset("branch_days", DAILY, day_rows, "hour", "one_row_per_hour")

conflict_days_job = dg.define_asset_job(
    "conflict_days_job",
    selection=dg.AssetSelection.assets(conflict_days),
    tags={"lakehouse/wap": "true"},
    description="Write-audit-publish one day of parallel.conflict_days into main.",
)

lakehouse = LakehouseResource()
"""The embedded lakehouse under $LAKEHOUSE_PATH; runs target main unless tagged."""

merge_sensor = build_merge_sensor(minimum_interval_seconds=5, default_status=dg.DefaultSensorStatus.RUNNING)
main_state_sensor = build_main_state_sensor(minimum_interval_seconds=5, default_status=dg.DefaultSensorStatus.RUNNING)

defs = dg.Definitions(
    assets=[wap_days, conflict_days, branch_days, flights, delays],
    asset_checks=[wap_days_check, conflict_days_check, branch_days_check, flights_check, delays_check],
    jobs=[conflict_days_job],
    sensors=[merge_sensor, main_state_sensor],
    resources={"lakehouse": lakehouse, "io_manager": LakehouseIOManager(lakehouse=lakehouse)},
    executor=dg.in_process_executor,
)
