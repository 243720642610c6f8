"""An asset's state in Dagster is `main`'s: runs on other branches and failed WAP runs are restated by
`main_state_sensor`, and every run is tagged with the branch it read and wrote and its target."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dagster as dg
import polars as pl
import pytest
from dagster._core.definitions.data_version import StaleStatus
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

from dagster_lakehouse.dagster import TARGET_TAG, build_main_state_sensor, wap_branch_name

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
