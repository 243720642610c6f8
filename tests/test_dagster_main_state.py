"""An asset's state in Dagster is `main`'s: runs on other branches and failed WAP runs are restated by
`main_state_sensor`, and every run is tagged with the branch it read and wrote and its target."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest
from dagster._core.definitions.data_version import StaleStatus
from dagster._core.loader import LoadingContextForTest
from dagster._utils.test.data_versions import get_stale_status_resolver
from test_dagster_support import TRIPS, fresh_lakehouse_cache, resource_for, seed_trips  # noqa: F401
from test_dagster_wap import (
    ASSETS,
    CHECKS,
    LONG_TRIPS,
    MIN_ROWS_ENV,
    TRIPS_SPEC,
    _resources,
    _run,
    _store,
    _tags,
    _tick,
)

from dagster_lakehouse.dagster import TARGET_TAG, WAP_TAG, build_main_state_sensor, merge_sensor, wap_branch_name

BRANCH = "lakehouse/branch"
main_state = build_main_state_sensor(name="main_state_sensor")


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


def _restate(instance: dg.DagsterInstance, backend: Any, cursor: str | None = None) -> Any:
    """One evaluation of main_state_sensor from `cursor`, its events recorded as the daemon records them."""
    definitions = dg.Definitions(assets=ASSETS, asset_checks=CHECKS, sensors=[main_state], resources=_resources(backend))
    with dg.build_sensor_context(
        instance=instance, definitions=definitions, resources={"lakehouse": resource_for(backend)}, cursor=cursor
    ) as context:
        data = main_state.evaluate_tick(context)
    for event in data.asset_events:
        instance.report_runless_asset_event(event)
    return data


def _latest(instance: dg.DagsterInstance, key: dg.AssetKey = LONG_TRIPS) -> dg.AssetMaterialization:
    return instance.fetch_materializations(key, limit=1).records[0].asset_materialization


def _latest_check(instance: dg.DagsterInstance, name: str) -> dg.AssetCheckEvaluation:
    (record,) = instance.event_log_storage.get_asset_check_execution_history(dg.AssetCheckKey(LONG_TRIPS, name), 1)
    return record.event.dagster_event.event_specific_data


def _value(event: dg.AssetMaterialization, key: str) -> Any:
    return event.metadata[key].value


def _publish_v1(instance: dg.DagsterInstance, backend: Any) -> int:
    store = _store(backend)
    seed_trips(store)
    published = _run(instance, backend)
    assert published.success
    _tick(instance, backend)
    return store.snapshot_id("taxi.long_trips", "main")


def test_runs_on_other_branches_are_restated_at_mains_version(backend: Any, instance: dg.DagsterInstance) -> None:
    store = _store(backend)
    main_snapshot = _publish_v1(instance, backend)
    published = _latest(instance)
    assert _value(published, BRANCH) == "main"

    more = pl.concat([TRIPS, TRIPS.with_columns(pl.col("trip_id") + 100)])
    store.create_branch("dev")
    store.write("taxi.trips", more, branch="dev")
    dev_run = _run(instance, backend, tags={BRANCH: "dev"})
    assert dev_run.success
    assert _value(_latest(instance), BRANCH) == "dev" and _value(_latest(instance), "dagster/row_count") == 6
    assert _tags(instance, dev_run.run_id)[BRANCH] == "dev" and _tags(instance, dev_run.run_id)[TARGET_TAG] == "dev"

    data = _restate(instance, backend)

    latest = _latest(instance)
    assert _value(latest, BRANCH) == "main"
    assert _value(latest, "lakehouse/snapshot_id") == main_snapshot
    assert _value(latest, "dagster/row_count") == store.read("taxi.long_trips", ref="main").height == 3
    assert _value(latest, "lakehouse/restated_after_run") == dev_run.run_id
    assert latest.tags["dagster/data_version"] == str(main_snapshot)
    assert latest.tags["dagster/code_version"] == published.tags["dagster/code_version"]
    assert "dagster/column_schema" in latest.metadata
    assert _latest_check(instance, "enough_long_trips").passed
    assert _latest_check(instance, "enough_long_trips").metadata["lakehouse/branch"].value == "main"
    # the dev version stays in the history, labelled with its branch
    branches = [_value(r.asset_materialization, BRANCH) for r in instance.fetch_materializations(LONG_TRIPS, 5).records]
    assert branches[:2] == ["main", "dev"]
    resolver = get_stale_status_resolver(instance, [dg.AssetsDefinition(specs=[TRIPS_SPEC]), *ASSETS[1:]])
    assert resolver.get_status(LONG_TRIPS) == StaleStatus.FRESH
    assert "restated main's snapshot" in (data.skip_message or "")

    again = _restate(instance, backend)  # idempotent: nothing new to say
    assert not again.asset_events


def test_a_failed_wap_run_does_not_read_as_production(
    local_backend: Any, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    main_snapshot = _publish_v1(instance, local_backend)
    monkeypatch.setenv(MIN_ROWS_ENV, "100")
    failed = _run(instance, local_backend)
    assert not failed.success
    tags = _tags(instance, failed.run_id)
    assert tags[BRANCH] == wap_branch_name(failed.run_id) and tags[TARGET_TAG] == "main"
    _tick(instance, local_backend)  # merge_sensor: skipped
    assert not _latest_check(instance, "enough_long_trips").passed

    _restate(instance, local_backend)

    latest = _latest(instance)
    assert _value(latest, BRANCH) == "main" and _value(latest, "lakehouse/snapshot_id") == main_snapshot
    assert _latest_check(instance, "enough_long_trips").passed


def test_an_asset_not_on_main_keeps_its_branch_version(local_backend: Any, instance: dg.DagsterInstance) -> None:
    seed_trips(_store(local_backend))
    dev_run = _run(instance, local_backend, tags={BRANCH: "dev"})
    assert dev_run.success
    data = _restate(instance, local_backend)
    assert not data.asset_events
    assert "not on main yet" in (data.skip_message or "")
    assert _value(_latest(instance), BRANCH) == "dev"


def test_a_version_written_outside_dagster_is_restated_from_the_table(
    local_backend: Any, instance: dg.DagsterInstance
) -> None:
    store = _store(local_backend)
    seed_trips(store)
    store.write("taxi.long_trips", pl.DataFrame({"trip_id": [7, 8]}), branch="main", allow_main=True)
    assert _run(instance, local_backend, tags={BRANCH: "dev"}).success
    _restate(instance, local_backend)
    latest = _latest(instance)
    assert _value(latest, BRANCH) == "main" and _value(latest, "dagster/row_count") == 2
    assert [c.name for c in _value(latest, "dagster/column_schema").columns] == ["trip_id"]
    assert latest.tags["dagster/data_version"] == str(store.snapshot_id("taxi.long_trips", "main"))


# --- partitions: a partition is on main exactly when Dagster says so --------------------------------------------

MONTHLY = dg.MonthlyPartitionsDefinition(start_date="2013-01-01", end_date="2013-04-01")
EVENTS = dg.AssetKey(["taxi", "monthly_events"])
ROWS = {"2013-01-01": 16, "2013-02-01": 5}


@dg.asset(key=EVENTS, partitions_def=MONTHLY, metadata={"lakehouse/partition_column": "day"})
def monthly_events(context) -> pl.DataFrame:  # noqa: ANN001  (Dagster checks the annotation at runtime)
    """ROWS[partition] rows on the partition's first day."""
    day = context.partition_time_window.start.date()
    return pl.DataFrame({"day": [day] * ROWS[context.partition_key], "v": list(range(ROWS[context.partition_key]))})


@dg.asset_check(asset=EVENTS, description="Not empty.")
def events_not_empty(monthly_events: pl.DataFrame) -> dg.AssetCheckResult:
    """At least one row in the partition."""
    return dg.AssetCheckResult(passed=monthly_events.height > 0, metadata={"rows": monthly_events.height})


def _partitioned_definitions(backend: Any) -> dg.Definitions:
    return dg.Definitions(
        assets=[monthly_events], asset_checks=[events_not_empty], sensors=[main_state], resources=_resources(backend)
    )


def _restate_partitioned(instance: dg.DagsterInstance, backend: Any, cursor: str | None) -> Any:
    """One evaluation of main_state_sensor over the partitioned asset, its events recorded as the daemon does."""
    with dg.build_sensor_context(
        instance=instance,
        definitions=_partitioned_definitions(backend),
        resources={"lakehouse": resource_for(backend)},
        cursor=cursor,
    ) as context:
        data = main_state.evaluate_tick(context)
    for event in data.asset_events:
        instance.report_runless_asset_event(event)
    return data


def _run_partition(instance: dg.DagsterInstance, backend: Any, partition: str, branch: str) -> dg.ExecuteInProcessResult:
    result = dg.materialize(
        [monthly_events, events_not_empty],
        instance=instance,
        resources=_resources(backend),
        partition_key=partition,
        tags={BRANCH: branch},
    )
    assert result.success
    return result


def _latest_of(instance: dg.DagsterInstance, partition: str) -> Any:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=EVENTS, asset_partitions=[partition]), limit=1
    ).records
    return records[0]


def _events_count(instance: dg.DagsterInstance) -> int:
    return len(instance.fetch_materializations(EVENTS, limit=1000).records)


def _two_branches(instance: dg.DagsterInstance, backend: Any) -> tuple[Any, str]:
    """January written on branch `a`, February on `b` (both forked from an empty main); the sensor's first cursor."""
    store = _store(backend)
    store.create_branch("a")
    store.create_branch("b")
    _run_partition(instance, backend, "2013-01-01", "a")
    _run_partition(instance, backend, "2013-02-01", "b")
    first = _restate_partitioned(instance, backend, None)
    assert not first.asset_events and "not on main yet" in (first.skip_message or "")
    return store, first.cursor


def _assert_restated(instance: dg.DagsterInstance, store: Any, partition: str, rows: int, snapshot: int) -> None:
    record = _latest_of(instance, partition)
    latest = record.asset_materialization
    assert _value(latest, BRANCH) == "main"
    assert _value(latest, "lakehouse/snapshot_id") == snapshot
    assert latest.tags["dagster/data_version"] == str(snapshot)
    assert _value(latest, "dagster/row_count") == rows
    assert store.read("taxi.monthly_events", ref="main", filter=f"day = '{partition}'").height == rows
    # the check that audited this version is restated after it: the UI shows it evaluated, passed, on main
    (check,) = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(EVENTS, "events_not_empty"), limit=1
    )
    assert asyncio.run(check.targets_latest_materialization(LoadingContextForTest(instance)))  # not "Not evaluated"
    evaluation = check.event.dagster_event.event_specific_data
    assert evaluation.passed and evaluation.metadata["lakehouse/branch"].value == "main"
    assert evaluation.metadata["rows"].value == rows


def test_only_the_merged_partition_is_restated_after_a_python_merge(
    backend: Any, instance: dg.DagsterInstance
) -> None:
    store, cursor = _two_branches(instance, backend)
    store.merge("a", into="main")  # no Dagster run: only main's commit log says so
    jan = store.snapshot_id("taxi.monthly_events", "a")

    data = _restate_partitioned(instance, backend, cursor)

    _assert_restated(instance, store, "2013-01-01", 16, jan)
    restated = [e for e in data.asset_events if isinstance(e, dg.AssetMaterialization)]
    assert [e.partition for e in restated] == ["2013-01-01"]
    assert _value(restated[0], "lakehouse/restated_after") == "merge: merge 'a' into 'main'"
    feb = _latest_of(instance, "2013-02-01").asset_materialization  # not on main: stays b's, labelled so
    assert _value(feb, BRANCH) == "b"

    before = _events_count(instance)
    again = _restate_partitioned(instance, backend, data.cursor)  # no new commit: no work, no event
    assert not again.asset_events and _events_count(instance) == before
    assert json.loads(again.cursor)["main_seq"] == json.loads(data.cursor)["main_seq"]


def test_a_cli_merge_is_restated_within_two_evaluations(backend: Any, instance: dg.DagsterInstance) -> None:
    store, cursor = _two_branches(instance, backend)
    store.merge("a", into="main")
    cursor = _restate_partitioned(instance, backend, cursor).cursor
    jan_record = _latest_of(instance, "2013-01-01")

    env = {
        **os.environ,
        "LAKEHOUSE_CATALOG_URI": backend.catalog_uri,
        "LAKEHOUSE_WAREHOUSE": backend.warehouse,
        "LAKEHOUSE_PROPERTIES": json.dumps(dict(backend.properties)),
    }
    cli = Path(sys.executable).parent / "lakehouse"
    done = subprocess.run(
        [str(cli), "branch", "merge", "b", "--into", "main"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    feb = store.snapshot_id("taxi.monthly_events", "main")  # a replay: main's own snapshot, not b's
    assert feb != store.snapshot_id("taxi.monthly_events", "b")

    for _ in range(2):
        cursor = _restate_partitioned(instance, backend, cursor).cursor
        if _value(_latest_of(instance, "2013-02-01").asset_materialization, BRANCH) == "main":
            break
    _assert_restated(instance, store, "2013-02-01", 5, feb)
    assert _latest_of(instance, "2013-01-01").storage_id == jan_record.storage_id  # January untouched


def test_published_wap_partitions_show_their_check_evaluated(local_backend: Any, instance: dg.DagsterInstance) -> None:
    cursor = _restate_partitioned(instance, local_backend, None).cursor
    for partition in ("2013-01-01", "2013-02-01"):  # a backfill: one WAP run per partition, each published
        result = dg.materialize(
            [monthly_events, events_not_empty],
            instance=instance,
            resources=_resources(local_backend),
            partition_key=partition,
            tags={WAP_TAG: "true"},
        )
        assert result.success
        with dg.build_sensor_context(
            instance=instance,
            definitions=dg.Definitions(
                assets=[monthly_events], asset_checks=[events_not_empty], sensors=[merge_sensor],
                resources=_resources(local_backend),
            ),
            resources={"lakehouse": resource_for(local_backend)},
        ) as context:
            for event in merge_sensor.evaluate_tick(context).asset_events:
                instance.report_runless_asset_event(event)
    store = _store(local_backend)

    for _ in range(2):
        cursor = _restate_partitioned(instance, local_backend, cursor).cursor

    feb = store.table("taxi.monthly_events", "main").current_snapshot().snapshot_id
    _assert_restated(instance, store, "2013-02-01", 5, feb)
    jan = _latest_of(instance, "2013-01-01").asset_materialization
    assert _value(jan, BRANCH) == "main" and _value(jan, "dagster/row_count") == 16
    assert _value(jan, "lakehouse/snapshot_id") != feb  # never another partition's snapshot
