"""The example's Dagster definitions: the taxi notebook's models as assets, audited and published by branch.

No asset here is partitioned, so "Materialize all" (on the global Lineage page or a group's page) launches one run of
every asset on `dev` with no partitions dialog; `branch_partitions` are documented in docs/dagster.md ("Which branch
a run uses") and tested in tests/test_dagster_branch.py.
"""

from __future__ import annotations

import math
from pathlib import Path

import dagster as dg
import polars as pl

from dagster_lakehouse import load_notebook_assets
from dagster_lakehouse.dagster import (
    LakehouseIOManager,
    LakehouseResource,
    build_main_state_sensor,
    build_merge_sensor,
    build_raw_table_sensor,
)

NOTEBOOK = Path(__file__).parent / "notebooks" / "taxi.py"
REPORT_NOTEBOOK = Path(__file__).parent / "notebooks" / "zone_report.py"
"""Runs isolated (its header says `isolated = true`): in the environment its header declares, through Dagster Pipes."""
TRIPS_AND_ZONES = dg.AssetKey(["taxi", "trips_and_zones"])
STATS = dg.AssetKey(["taxi", "stats_by_taxi_zones"])

lakehouse = LakehouseResource(branch="dev")
"""Local `.lakehouse/` unless LAKEHOUSE_CATALOG_URI/LAKEHOUSE_WAREHOUSE say otherwise; runs default to `dev` (run
config `resources.lakehouse.config.branch` or the run tag `lakehouse/branch` choose another)."""

notebook_assets = load_notebook_assets([NOTEBOOK, REPORT_NOTEBOOK])


@dg.asset_check(asset=TRIPS_AND_ZONES, blocking=True, description="Every trip found its pickup zone.")
def trips_have_zones(trips_and_zones: pl.DataFrame) -> dg.AssetCheckResult:
    """A join that lost rows or produced null boroughs means the zones table is incomplete."""
    missing = trips_and_zones.filter(pl.col("Borough").is_null()).height
    return dg.AssetCheckResult(
        passed=trips_and_zones.height > 0 and missing == 0,
        metadata={"rows": trips_and_zones.height, "rows_without_borough": missing},
    )


@dg.asset_check(asset=STATS, blocking=True, description="Stats cover the five boroughs with plausible medians.")
def stats_are_plausible(stats_by_taxi_zones: pl.DataFrame) -> dg.AssetCheckResult:
    """Medians of log10(miles) must lie in (log10 of 0.01 mile, log10 of 200 miles)."""
    boroughs = stats_by_taxi_zones["Borough"].n_unique()
    medians = stats_by_taxi_zones["median_log10_miles"]
    in_range = bool(((medians > -2) & (medians < math.log10(200))).all())
    return dg.AssetCheckResult(
        passed=boroughs == 5 and in_range,
        metadata={"boroughs": boroughs, "zones": stats_by_taxi_zones.height, "medians_in_range": in_range},
    )


@dg.asset(
    key=["taxi", "borough_summary"],
    ins={
        "trips": dg.AssetIn(key=["taxi", "trips"], metadata={"columns": ["PULocationID"]}),
        "zones": dg.AssetIn(key=["taxi", "zones"], metadata={"columns": ["LocationID", "Borough"]}),
    },
    group_name="reports",
    kinds={"iceberg", "polars"},
)
def borough_summary(trips: pl.DataFrame, zones: pl.DataFrame) -> pl.DataFrame:
    """Trips per borough of the run's branch: a plain Dagster asset (no notebook) that reads lakehouse tables through
    the IO manager (only the columns its inputs' metadata name) and writes its own on the run's branch."""
    joined = trips.join(zones, left_on="PULocationID", right_on="LocationID", how="inner")
    return joined.group_by("Borough").agg(trips=pl.len()).sort("Borough")


taxi_job = dg.define_asset_job(
    "taxi_job",
    selection=dg.AssetSelection.groups("taxi"),
    config={"resources": {"lakehouse": {"config": {"branch": "dev"}}}},
    description="Materialize the taxi models on the branch in the launchpad's config (dev), or the run tag "
    "lakehouse/branch.",
)

publish_job = dg.define_asset_job(
    "publish_taxi_job",
    selection=dg.AssetSelection.groups("taxi"),
    tags={"lakehouse/branch": "main", "lakehouse/wap": "true"},
    description="Write-audit-publish: build on a fresh branch off main; the merge sensor publishes it when checks pass.",
)

daily_publish = dg.ScheduleDefinition(
    name="daily_publish",
    job=publish_job,
    cron_schedule="0 6 * * *",
    description="Rebuild and publish the taxi stats every morning.",
)

RUNNING = dg.DefaultSensorStatus.RUNNING
taxi_automation = dg.AutomationConditionSensorDefinition(
    "taxi_automation",
    target=dg.AssetSelection.groups("taxi"),
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Runs the models whose @model(automation_condition=...) asks for it (stats_by_taxi_zones: eager, "
    "after trips_and_zones changes); turn it on in Automation.",
)
merge_sensor = build_merge_sensor(name="merge_sensor", minimum_interval_seconds=5, default_status=RUNNING)
main_state_sensor = build_main_state_sensor(name="main_state_sensor", minimum_interval_seconds=5, default_status=RUNNING)
raw_taxi_tables_sensor = build_raw_table_sensor(
    [spec for spec in notebook_assets if isinstance(spec, dg.AssetSpec)],
    name="raw_taxi_tables_sensor",
    job=publish_job,
    minimum_interval_seconds=30,
    default_status=RUNNING,
)

defs = dg.Definitions(
    assets=[*notebook_assets, borough_summary],
    asset_checks=[trips_have_zones, stats_are_plausible],
    jobs=[taxi_job, publish_job],
    schedules=[daily_publish],
    sensors=[merge_sensor, main_state_sensor, raw_taxi_tables_sensor, taxi_automation],
    resources={"lakehouse": lakehouse, "io_manager": LakehouseIOManager(lakehouse=lakehouse)},
)
