"""Lake history in Dagster (issue 12): a run may read a past commit (`main@<commit>`, `dev~1`) read-only, pinned to one
commit for all its steps; a revert or reset of `main` is restated on the assets it changed by `main_state_sensor`,
with the restored snapshot id as data version, so staleness is right afterwards."""

import json
from collections.abc import Iterator
from typing import Any

import dagster as dg
import polars as pl
import pytest
from dagster._core.definitions.data_version import StaleStatus
from dagster._utils.test.data_versions import get_stale_status_resolver
from test_dagster_main_state import _latest, _restate
from test_dagster_support import TRIPS, failure_text, fresh_lakehouse_cache, resource_for, seed_trips  # noqa: F401
from test_dagster_wap import ASSETS, LONG_TRIPS, TRIPS_SPEC, _resources, _run, _store, _tick

from dagster_lakehouse.dagster import BRANCH_TAG, LakehouseResource
from dagster_lakehouse.lakehouse import Lakehouse

MILEAGE = dg.AssetKey(["taxi", "mileage"])
seen: dict[str, Any] = {}


@dg.asset(ins={"long_trips": dg.AssetIn(key=LONG_TRIPS)}, io_manager_key="mem")
def report(context: dg.AssetExecutionContext, long_trips: pl.DataFrame, lakehouse: LakehouseResource) -> int:
    """Counts long trips; kept in memory, so it writes nothing to the lakehouse."""
    seen["rows"] = long_trips.height
    seen["branch"] = lakehouse.branch_for(context)
    return long_trips.height


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


def _publish(instance: dg.DagsterInstance, backend: Any, trips: pl.DataFrame) -> None:
    """Write raw trips to main outside Dagster, then a WAP run of the assets, merged into main by merge_sensor."""
    _store(backend).write("taxi.trips", trips, branch="main", allow_main=True)
    assert _run(instance, backend).success
    _tick(instance, backend)


def _two_versions(instance: dg.DagsterInstance, backend: Any) -> tuple[Lakehouse, str]:
    """Main with v1 (3 long trips) then v2 (6): the id of main's last commit of v1."""
    store = _store(backend)
    seed_trips(store)
    _publish(instance, backend, TRIPS)
    v1 = store.log("main")[0].id
    _publish(instance, backend, pl.concat([TRIPS, TRIPS.with_columns(pl.col("trip_id") + 100)]))
    assert store.read("taxi.long_trips").height == 6
    return store, v1


def _produced_at(instance: dg.DagsterInstance, key: dg.AssetKey, snapshot: int) -> dg.AssetMaterialization:
    """The materialization that recorded main's `snapshot` of `key` (the merge sensor's, after a WAP run)."""
    return next(
        r.asset_materialization
        for r in instance.fetch_materializations(key, limit=50).records
        if r.asset_materialization.tags.get("dagster/data_version") == str(snapshot)
    )


def _status(instance: dg.DagsterInstance, key: dg.AssetKey) -> StaleStatus:
    return get_stale_status_resolver(instance, [dg.AssetsDefinition(specs=[TRIPS_SPEC]), *ASSETS[1:]]).get_status(key)


# ----- reading a past commit ---------------------------------------------------------------------------------


def _report(instance: dg.DagsterInstance, backend: Any, **kwargs: Any) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [*ASSETS, report],
        selection=[report.key],
        instance=instance,
        resources={**_resources(backend, **kwargs.pop("resource", {})), "mem": dg.InMemoryIOManager()},
        raise_on_error=False,
        **kwargs,
    )


def test_a_run_tagged_with_a_past_commit_reads_the_lake_as_it_was(backend: Any, instance: dg.DagsterInstance) -> None:
    store, v1 = _two_versions(instance, backend)
    result = _report(instance, backend, tags={BRANCH_TAG: f"main@{v1[:8]}"})
    assert result.success, failure_text(result)
    assert seen["rows"] == 3 and result.output_for_node("report") == 3
    assert seen["branch"] == f"main@{v1}"  # pinned to the full commit id
    assert instance.get_run_by_id(result.run_id).tags[BRANCH_TAG] == f"main@{v1}"
    logs = [e.message for e in instance.all_logs(result.run_id) if e.message]
    assert any("read-only: the lake as at commit" in m for m in logs)

    now = _report(instance, backend)
    assert now.success and now.output_for_node("report") == 6


def test_run_config_may_name_a_past_commit_by_steps_back(local_backend: Any, instance: dg.DagsterInstance) -> None:
    store, v1 = _two_versions(instance, local_backend)
    back = next(i for i, c in enumerate(store.log("main")) if c.id == v1)
    result = _report(
        instance,
        local_backend,
        run_config={"resources": {"lakehouse": {"config": {"branch": f"main~{back}"}}}},
    )
    assert result.success, failure_text(result)
    assert seen["rows"] == 3 and instance.get_run_by_id(result.run_id).tags[BRANCH_TAG] == f"main@{v1}"


def test_writing_to_a_past_commit_fails_before_computing_and_changes_nothing(
    local_backend: Any, instance: dg.DagsterInstance
) -> None:
    store, v1 = _two_versions(instance, local_backend)
    log_before = [c.id for c in store.log("main")]
    result = dg.materialize(
        ASSETS[:2],
        selection=[LONG_TRIPS],
        instance=instance,
        resources=_resources(local_backend, allow_main=True),
        tags={BRANCH_TAG: f"main@{v1[:8]}"},
        raise_on_error=False,
    )
    text = failure_text(result)
    assert "PinnedRefError" in text and f"main@{v1}" in text and "read-only" in text
    assert "create_branch" in text
    assert [c.id for c in store.log("main")] == log_before
    assert not instance.fetch_materializations(LONG_TRIPS, limit=50).records or all(
        r.run_id != result.run_id for r in instance.fetch_materializations(LONG_TRIPS, limit=50).records
    )


def test_a_past_commit_that_does_not_exist_is_named(local_backend: Any, instance: dg.DagsterInstance) -> None:
    _two_versions(instance, local_backend)
    result = _report(instance, local_backend, tags={BRANCH_TAG: "main@0000dead"})
    text = failure_text(result)
    assert "CommitNotFound" in text and "main@0000dead" in text


# ----- revert and reset of main ------------------------------------------------------------------------------


def test_reverting_a_merge_on_main_restates_the_versions_it_restored(
    backend: Any, instance: dg.DagsterInstance
) -> None:
    store = _store(backend)
    seed_trips(store)
    _publish(instance, backend, TRIPS)
    v1 = {name: store.snapshot_id(name, "main") for name in ("taxi.long_trips", "taxi.mileage")}
    cursor = _restate(instance, backend, None).cursor  # the sensor starts following main's log here
    _publish(instance, backend, pl.concat([TRIPS, TRIPS.with_columns(pl.col("trip_id") + 100)]))
    merge = store.log("main", table="taxi.long_trips")[0]
    assert merge.kind == "merge" and _latest(instance, LONG_TRIPS).metadata["dagster/row_count"].value == 6

    undo = store.revert(merge.id)
    assert sorted(undo.restored) == ["taxi.long_trips", "taxi.mileage"]
    data = _restate(instance, backend, cursor)

    for key, table in ((LONG_TRIPS, "taxi.long_trips"), (MILEAGE, "taxi.mileage")):
        latest = _latest(instance, key)
        assert store.snapshot_id(table, "main") == v1[table]
        assert latest.tags["dagster/data_version"] == str(v1[table])
        assert latest.metadata["lakehouse/snapshot_id"].value == v1[table]
        assert latest.metadata["lakehouse/restated_after_commit"].value == undo.commit_id
        assert latest.metadata["lakehouse/branch"].value == "main"
        produced = _produced_at(instance, key, v1[table])
        assert latest.tags["dagster/code_version"] == produced.tags["dagster/code_version"]
        assert latest.metadata["dagster/row_count"] == produced.metadata["dagster/row_count"]
    assert _latest(instance, LONG_TRIPS).metadata["dagster/row_count"].value == 3
    assert _status(instance, MILEAGE) == StaleStatus.FRESH
    assert "revert commit" in (data.skip_message or "")

    again = _restate(instance, backend, data.cursor)
    assert not again.asset_events and json.loads(again.cursor)["main_seq"] == json.loads(data.cursor)["main_seq"]


def test_resetting_main_restates_and_earlier_history_is_not_restated(
    local_backend: Any, instance: dg.DagsterInstance
) -> None:
    store, v1 = _two_versions(instance, local_backend)
    first = _restate(instance, local_backend, None)
    assert not first.asset_events  # the v1 -> v2 history before the sensor ran is left alone
    v1_snapshot = store.snapshot_id("taxi.long_trips", f"main@{v1}")

    undo = store.reset("main", to=f"main@{v1}", allow_main=True)
    data = _restate(instance, local_backend, first.cursor)

    latest = _latest(instance, LONG_TRIPS)
    assert latest.tags["dagster/data_version"] == str(v1_snapshot) == str(store.snapshot_id("taxi.long_trips"))
    assert latest.metadata["lakehouse/restated_after_commit"].value == undo.commit_id
    assert latest.metadata["lakehouse/restated_after"].value.startswith("reset: ")
    assert latest.metadata["dagster/row_count"].value == store.read("taxi.long_trips").height == 3
    assert _status(instance, LONG_TRIPS) == StaleStatus.FRESH and _status(instance, MILEAGE) == StaleStatus.FRESH
    assert {e.asset_key for e in data.asset_events if isinstance(e, dg.AssetMaterialization)} == {LONG_TRIPS, MILEAGE}


def test_a_file_level_revert_is_restated_at_the_new_snapshot(local_backend: Any, instance: dg.DagsterInstance) -> None:
    store, _ = _two_versions(instance, local_backend)
    cursor = _restate(instance, local_backend, None).cursor
    merge = store.log("main", table="taxi.long_trips")[0]
    store.write("taxi.long_trips", TRIPS.head(1), branch="main", mode="append", allow_main=True)  # a later commit
    undo = store.revert(merge.id)
    assert "taxi.long_trips" in undo.inverted
    _restate(instance, local_backend, cursor)

    latest = _latest(instance, LONG_TRIPS)
    now = store.snapshot_id("taxi.long_trips")
    assert latest.tags["dagster/data_version"] == str(now) == str(undo.inverted["taxi.long_trips"])
    assert latest.metadata["dagster/row_count"].value == store.read("taxi.long_trips").height == 4
    assert latest.metadata["lakehouse/restated_after_commit"].value == undo.commit_id
