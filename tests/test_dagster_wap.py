"""Write-audit-publish: WAP runs write only their own branch; `merge_sensor` publishes them when every check passed."""

import hashlib
import logging
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from types import SimpleNamespace
from typing import Any

import dagster as dg
import polars as pl
import pytest
from dagster._core.definitions.data_version import StaleStatus
from dagster._utils.test.data_versions import get_stale_status_resolver
from sqlalchemy import select
from test_dagster_support import (  # noqa: F401  (fresh_lakehouse_cache is an autouse fixture)
    TRIPS,
    fresh_lakehouse_cache,
    resource_for,
    seed_trips,
)

from dagster_lakehouse.dagster import (
    MERGE_REASON_TAG,
    MERGE_TAG,
    WAP_TAG,
    BranchResolutionError,
    LakehouseIOManager,
    LakehouseResource,
    branch_partitions,
    build_merge_sensor,
    lakehouse_table_spec,
    merge_sensor,
    wap_branch_name,
)
from dagster_lakehouse.dagster.sensors.merge import publish_run
from dagster_lakehouse.dagster.wap import ensure_wap_branch, wap_enabled
from dagster_lakehouse.lakehouse import Lakehouse
from dagster_lakehouse.lakehouse.catalog import IcebergTables

TRIPS_SPEC = lakehouse_table_spec("taxi.trips")
LONG_TRIPS = dg.AssetKey(["taxi", "long_trips"])
MILEAGE = dg.AssetKey(["taxi", "mileage"])
MIN_ROWS_ENV = "WAP_TEST_MIN_LONG_TRIPS"
seen_during_run: dict[str, Any] = {}


@dg.asset(key=LONG_TRIPS, ins={"trips": dg.AssetIn(key=["taxi", "trips"])})
def long_trips(trips: pl.DataFrame) -> pl.DataFrame:
    """Trips over two miles."""
    return trips.filter(pl.col("trip_miles") > 2)


@dg.asset(key=["taxi", "mileage"], ins={"long_trips": dg.AssetIn(key=LONG_TRIPS)})
def mileage(context: dg.AssetExecutionContext, long_trips: pl.DataFrame, lakehouse: LakehouseResource) -> pl.DataFrame:
    """Total miles of long trips; records what main and the run's branch look like mid-run."""
    store = lakehouse.get_lakehouse()
    seen_during_run["branch"] = lakehouse.branch_for(context)
    seen_during_run["target"] = lakehouse.target_branch_for(context)
    seen_during_run["main_tables"] = store.tables("main")
    seen_during_run["branch_tables"] = store.tables(seen_during_run["branch"])
    return pl.DataFrame({"miles": [long_trips["trip_miles"].sum()]})


def _min_rows() -> int:
    return int(os.environ.get(MIN_ROWS_ENV, "1"))


@dg.asset_check(asset=LONG_TRIPS, blocking=True, description="Enough long trips.")
def enough_long_trips(long_trips: pl.DataFrame) -> dg.AssetCheckResult:
    """Blocking: at least `WAP_TEST_MIN_LONG_TRIPS` (default 1) rows."""
    return dg.AssetCheckResult(passed=long_trips.height >= _min_rows(), metadata={"rows": long_trips.height})


@dg.asset_check(asset=LONG_TRIPS, blocking=False, description="Never more than 100 long trips.")
def not_too_many(long_trips: pl.DataFrame) -> dg.AssetCheckResult:
    """Non-blocking: at most 100 rows (fails when the env var sets the limit below the data)."""
    limit = int(os.environ.get("WAP_TEST_MAX_LONG_TRIPS", "100"))
    return dg.AssetCheckResult(passed=long_trips.height <= limit)


ASSETS = [TRIPS_SPEC, long_trips, mileage]
CHECKS = [enough_long_trips, not_too_many]


def _store(backend: Any) -> Lakehouse:
    return Lakehouse(backend.catalog_uri, backend.warehouse, dict(backend.properties))


def _resources(backend: Any, **overrides: Any) -> dict[str, Any]:
    resource = resource_for(backend, **overrides)
    return {"lakehouse": resource, "io_manager": LakehouseIOManager(lakehouse=resource)}


def _run(
    instance: dg.DagsterInstance, backend: Any, *, tags: dict[str, str] | None = None, **resource: Any
) -> dg.ExecuteInProcessResult:
    """A WAP run (unless `tags` say otherwise) of the assets and checks, failures returned."""
    return dg.materialize(
        [*ASSETS, *CHECKS],
        instance=instance,
        resources=_resources(backend, **resource),
        tags={WAP_TAG: "true"} if tags is None else tags,
        raise_on_error=False,
    )


class _Records(logging.Handler):
    """Collects the log records of the sensor's `context.log` (what the UI shows as the tick's logs)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _tick(
    instance: dg.DagsterInstance,
    backend: Any,
    sensor: dg.SensorDefinition = merge_sensor,
    log: _Records | None = None,
) -> dg.SensorResult | Any:
    """Evaluate the merge sensor once and record its asset events in the instance, as the daemon does."""
    resources = {"lakehouse": resource_for(backend)}
    definitions = dg.Definitions(assets=ASSETS, asset_checks=CHECKS, sensors=[sensor], resources=_resources(backend))
    with dg.build_sensor_context(instance=instance, definitions=definitions, resources=resources) as context:
        if log is not None:
            context.log.addHandler(log)
        data = sensor.evaluate_tick(context)
    for event in data.asset_events:
        instance.report_runless_asset_event(event)
    return data


def _tags(instance: dg.DagsterInstance, run_id: str) -> dict[str, str]:
    run = instance.get_run_by_id(run_id)
    assert run is not None
    return dict(run.tags)


def _merges(store: Lakehouse, ref: str = "main") -> list[Any]:
    return [c for c in store.log(ref) if c.kind == "merge"]


def fingerprint(store: Lakehouse, ref: str = "main") -> dict[str, Any]:
    """Everything `ref` is: its catalog rows, its log, and the bytes of every file reachable from it."""
    with store.engine.connect() as conn:
        rows = sorted(
            tuple(row)
            for row in conn.execute(
                select(
                    IcebergTables.table_namespace,
                    IcebergTables.table_name,
                    IcebergTables.metadata_location,
                    IcebergTables.previous_metadata_location,
                ).where(IcebergTables.catalog_name == ref)
            )
        )
    files: dict[str, str] = {}
    for name in store.tables(ref):
        table = store.table(name, ref)
        paths = {table.metadata_location}
        for snapshot in table.metadata.snapshots:
            paths.add(snapshot.manifest_list)
            paths.update(m.manifest_path for m in snapshot.manifests(table.io))
        paths.update(task.file.file_path for task in table.scan().plan_files())
        for path in paths:
            with table.io.new_input(path).open() as stream:
                files[path] = hashlib.sha256(stream.read()).hexdigest()
    return {"rows": rows, "files": files, "log": [c.id for c in store.log(ref)]}


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MIN_ROWS_ENV, raising=False)
    monkeypatch.delenv("WAP_TEST_MAX_LONG_TRIPS", raising=False)
    seen_during_run.clear()


# ----- the WAP branch ------------------------------------------------------------------------------------


def test_wap_branch_name_and_tag_values() -> None:
    assert wap_branch_name("abc-123") == "wap/abc-123"
    assert wap_enabled({WAP_TAG: "true"}) and wap_enabled({WAP_TAG: "True"}) and wap_enabled({WAP_TAG: "1"})
    assert not wap_enabled({WAP_TAG: "false"}, default=True)
    assert wap_enabled({}, default=True) and not wap_enabled({})
    with pytest.raises(BranchResolutionError, match="lakehouse/wap"):
        wap_enabled({WAP_TAG: "maybe"})


def test_wap_run_writes_and_reads_only_its_branch(local_backend: Any, instance: dg.DagsterInstance) -> None:
    store = _store(local_backend)
    seed_trips(store)
    before = fingerprint(store)
    result = _run(instance, local_backend)
    assert result.success
    branch = wap_branch_name(result.run_id)
    assert seen_during_run == {
        "branch": branch,
        "target": "main",
        "main_tables": ["taxi.trips"],
        "branch_tables": ["taxi.long_trips", "taxi.trips"],
    }
    assert fingerprint(store) == before
    assert store.ref(branch).parent == "main"
    assert store.read("taxi.long_trips", ref=branch).height == 3
    (event,) = result.asset_materializations_for_node("taxi__long_trips")
    assert event.metadata["lakehouse/branch"].value == branch
    tags = _tags(instance, result.run_id)
    assert tags[WAP_TAG] == "true" and tags[MERGE_TAG] == "pending"


def test_resource_wap_flag_and_tag_override(local_backend: Any, instance: dg.DagsterInstance) -> None:
    store = _store(local_backend)
    seed_trips(store)
    by_resource = _run(instance, local_backend, tags={}, wap=True)
    assert by_resource.success
    assert store.ref(wap_branch_name(by_resource.run_id)).parent == "main"
    assert _tags(instance, by_resource.run_id)[WAP_TAG] == "true"
    switched_off = _run(instance, local_backend, tags={WAP_TAG: "false"}, wap=True, branch="dev")
    assert switched_off.success
    assert store.tables("dev") == ["taxi.long_trips", "taxi.mileage", "taxi.trips"]
    assert not store.has_branch(wap_branch_name(switched_off.run_id))
    assert MERGE_TAG not in _tags(instance, switched_off.run_id)


def test_wap_target_follows_the_branch_rule(local_backend: Any, instance: dg.DagsterInstance) -> None:
    store = _store(local_backend)
    seed_trips(store)
    result = _run(instance, local_backend, tags={WAP_TAG: "true", "lakehouse/branch": "dev"})
    assert result.success
    assert seen_during_run["target"] == "dev"
    assert store.ref(wap_branch_name(result.run_id)).parent == "dev"
    assert store.tables("dev") == ["taxi.trips"]
    _tick(instance, local_backend)
    assert store.tables("dev") == ["taxi.long_trips", "taxi.mileage", "taxi.trips"]
    assert store.tables("main") == ["taxi.trips"]


# ----- publishing ------------------------------------------------------------------------------------------


def test_passing_checks_are_merged_into_main(backend: Any, instance: dg.DagsterInstance) -> None:
    store = _store(backend)
    seed_trips(store)
    result = _run(instance, backend)
    assert result.success
    branch = wap_branch_name(result.run_id)
    written = store.snapshot_id("taxi.long_trips", branch)

    data = _tick(instance, backend)

    assert f"run {result.run_id}: merged" in (data.skip_message or "")
    assert not store.has_branch(branch)
    assert store.read("taxi.long_trips", ref="main").height == 3
    assert store.snapshot_id("taxi.long_trips", "main") == written
    (merge,) = _merges(store)
    assert merge.run_id == result.run_id and sorted(merge.tables) == ["taxi.long_trips", "taxi.mileage"]
    tags = _tags(instance, result.run_id)
    assert tags[MERGE_TAG] == "merged"
    assert "taxi.long_trips" in tags[MERGE_REASON_TAG] and "'main'" in tags[MERGE_REASON_TAG]

    record = instance.fetch_materializations(LONG_TRIPS, limit=1).records[0]
    event = record.asset_materialization
    assert event is not None and record.run_id == ""
    assert event.metadata["lakehouse/branch"].value == "main"
    assert event.metadata["lakehouse/merged_from"].value == branch
    assert event.metadata["lakehouse/snapshot_id"].value == written
    assert event.metadata["lakehouse/merge_commit"].value == merge.id
    assert event.metadata["lakehouse/run_id"].value == result.run_id
    assert event.tags["dagster/data_version"] == str(written)
    mileage_event = instance.fetch_materializations(dg.AssetKey(["taxi", "mileage"]), limit=1).records[0]
    assert mileage_event.asset_materialization.metadata["lakehouse/branch"].value == "main"
    resolver = get_stale_status_resolver(instance, [dg.AssetsDefinition(specs=[TRIPS_SPEC]), long_trips, mileage])
    assert resolver.get_status(LONG_TRIPS) == resolver.get_status(mileage.key) == StaleStatus.FRESH
    checks = {e.check_name: e for e in data.asset_events if isinstance(e, dg.AssetCheckEvaluation)}
    assert sorted(checks) == ["enough_long_trips", "not_too_many"]
    check = checks["enough_long_trips"]
    assert check.asset_key == LONG_TRIPS and check.passed and checks["not_too_many"].passed
    assert check.metadata["lakehouse/audited_on"].value == branch
    assert data.asset_events.index(check) > data.asset_events.index(
        next(e for e in data.asset_events if isinstance(e, dg.AssetMaterialization) and e.asset_key == LONG_TRIPS)
    )


def test_failing_blocking_check_leaves_main_byte_for_byte(
    local_backend: Any, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _store(local_backend)
    seed_trips(store)
    before = fingerprint(store)
    monkeypatch.setenv(MIN_ROWS_ENV, "10")
    result = _run(instance, local_backend)
    assert not result.success
    branch = wap_branch_name(result.run_id)
    assert fingerprint(store) == before
    assert store.tables(branch) == ["taxi.long_trips", "taxi.trips"]

    _tick(instance, local_backend)

    assert fingerprint(store) == before
    assert store.has_branch(branch)
    tags = _tags(instance, result.run_id)
    assert tags[MERGE_TAG] == "skipped"
    reason = tags[MERGE_REASON_TAG]
    assert "FAILURE" in reason and "taxi/long_trips:enough_long_trips" in reason and "taxi/mileage" in reason
    assert f"{branch!r} (tables written: taxi.long_trips) kept for inspection" in reason
    assert instance.fetch_materializations(LONG_TRIPS, limit=5).records[0].run_id == result.run_id


def test_failing_non_blocking_check_blocks_the_merge(
    local_backend: Any, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _store(local_backend)
    seed_trips(store)
    monkeypatch.setenv("WAP_TEST_MAX_LONG_TRIPS", "1")
    result = _run(instance, local_backend)
    assert result.success
    data = _tick(instance, local_backend)
    assert store.tables("main") == ["taxi.trips"]
    assert store.has_branch(wap_branch_name(result.run_id))
    reason = _tags(instance, result.run_id)[MERGE_REASON_TAG]
    assert "taxi/long_trips:not_too_many" in reason and "non-blocking" in reason
    # nothing is published, and Dagster says so: each asset observed as not published, the run marked failed
    assert all(isinstance(e, dg.AssetObservation) for e in data.asset_events)
    assert {e.asset_key for e in data.asset_events} == {LONG_TRIPS, MILEAGE}
    assert all(e.metadata["lakehouse/published"].value is False for e in data.asset_events)
    assert all(e.metadata["lakehouse/merge_reason"].value == reason for e in data.asset_events)
    run = instance.get_run_by_id(result.run_id)
    assert run is not None and run.status == dg.DagsterRunStatus.FAILURE
    (failure,) = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    assert "Not published" in failure.message and "taxi/long_trips:not_too_many" in failure.message


def test_conflict_is_reported_and_keeps_both_branches(local_backend: Any, instance: dg.DagsterInstance) -> None:
    store = _store(local_backend)
    seed_trips(store)
    result = _run(instance, local_backend)
    assert result.success
    branch = wap_branch_name(result.run_id)
    store.write("taxi.long_trips", TRIPS.head(1), branch="main", allow_main=True)
    main_before = fingerprint(store)
    branch_before = fingerprint(store, branch)

    log = _Records()
    data = _tick(instance, local_backend, log=log)

    assert fingerprint(store) == main_before and fingerprint(store, branch) == branch_before
    # the tick says what happened to the run, and its log warns naming the branch and the conflicting table
    assert data.skip_message == f"run {result.run_id}: conflict"
    warnings = [r.getMessage() for r in log.records if r.levelno == logging.WARNING]
    conflict_logs = [m for m in warnings if result.run_id in m and "conflict" in m]
    assert conflict_logs, f"no conflict warning in the sensor log: {[r.getMessage() for r in log.records]}"
    assert "taxi.long_trips" in conflict_logs[0] and repr(branch) in conflict_logs[0]
    assert "both branches kept" in conflict_logs[0]
    tags = _tags(instance, result.run_id)
    assert tags[MERGE_TAG] == "conflict"
    assert "taxi.long_trips" in tags[MERGE_REASON_TAG] and branch in tags[MERGE_REASON_TAG]
    assert all(isinstance(e, dg.AssetObservation) for e in data.asset_events)
    (observation,) = [e for e in data.asset_events if e.asset_key == LONG_TRIPS]
    assert observation.metadata["lakehouse/conflicting_tables"].value == "taxi.long_trips"
    reason = observation.metadata["lakehouse/conflict_reason"].value
    assert reason.startswith("taxi.long_trips: ") and reason.split(": ", 1)[1] in tags[MERGE_REASON_TAG]
    assert list(observation.metadata["lakehouse/conflict_reasons"].value) == ["taxi.long_trips"]
    assert observation.metadata["lakehouse/target"].value == "main"
    recorded = instance.fetch_observations(LONG_TRIPS, limit=1).records[0].asset_observation
    assert recorded is not None and recorded.metadata["lakehouse/branch"].value == branch


def test_a_run_is_handled_once(local_backend: Any, instance: dg.DagsterInstance) -> None:
    store = _store(local_backend)
    seed_trips(store)
    result = _run(instance, local_backend)
    first = _tick(instance, local_backend)
    second = _tick(instance, local_backend)
    assert len([e for e in first.asset_events if isinstance(e, dg.AssetMaterialization)]) == 2
    assert second.asset_events == [] and "no finished run waits" in (second.skip_message or "")
    assert len(_merges(store)) == 1
    assert _tags(instance, result.run_id)[MERGE_TAG] == "merged"


def test_daemon_free_sequence_merges_twice(local_backend: Any, instance: dg.DagsterInstance) -> None:
    store = _store(local_backend)
    seed_trips(store)
    first = _run(instance, local_backend)
    _tick(instance, local_backend)
    store.write("taxi.trips", TRIPS.with_columns(pl.col("trip_miles") * 2), branch="main", allow_main=True)
    second = _run(instance, local_backend)
    _tick(instance, local_backend)
    merges = _merges(store)
    assert [m.run_id for m in merges] == [second.run_id, first.run_id]
    assert store.read("taxi.long_trips", ref="main").height == 5
    assert store.branches() == ["main"]
    runs = [r.run_id for r in instance.fetch_materializations(LONG_TRIPS, limit=10).records if r.run_id == ""]
    assert len(runs) == 2


def test_tick_budget_leaves_runs_for_the_next_tick(local_backend: Any, instance: dg.DagsterInstance) -> None:
    store = _store(local_backend)
    seed_trips(store)
    first = _run(instance, local_backend)
    second = _run(instance, local_backend, tags={WAP_TAG: "true", "lakehouse/branch": "dev"})
    sensor = build_merge_sensor(name="one_at_a_time", tick_budget_seconds=0)
    data = _tick(instance, local_backend, sensor)
    assert f"run {first.run_id}: merged" in data.skip_message and "1 more run(s) wait" in data.skip_message
    assert _tags(instance, second.run_id)[MERGE_TAG] == "pending"
    data = _tick(instance, local_backend, sensor)
    assert data.skip_message == f"run {second.run_id}: merged"
    assert store.tables("dev") == ["taxi.long_trips", "taxi.mileage", "taxi.trips"]


def test_sensor_keeps_the_branch_when_asked(local_backend: Any, instance: dg.DagsterInstance) -> None:
    store = _store(local_backend)
    seed_trips(store)
    result = _run(instance, local_backend)
    _tick(instance, local_backend, build_merge_sensor(name="keep", delete_merged_branch=False))
    assert store.has_branch(wap_branch_name(result.run_id))
    assert store.read("taxi.long_trips", ref="main").height == 3


def test_merge_into_publishes_a_plain_branch_run(local_backend: Any, instance: dg.DagsterInstance) -> None:
    store = _store(local_backend)
    seed_trips(store)
    result = _run(instance, local_backend, tags={"lakehouse/branch": "dev", "lakehouse/merge_into": "main"})
    assert result.success and _tags(instance, result.run_id)[MERGE_TAG] == "pending"
    _tick(instance, local_backend)
    assert store.read("taxi.long_trips", ref="main").height == 3
    assert store.has_branch("dev")
    assert _tags(instance, result.run_id)[MERGE_TAG] == "merged"


def test_plain_branch_runs_are_not_published(local_backend: Any, instance: dg.DagsterInstance) -> None:
    store = _store(local_backend)
    seed_trips(store)
    result = _run(instance, local_backend, tags={"lakehouse/branch": "dev"})
    assert result.success and MERGE_TAG not in _tags(instance, result.run_id)
    data = _tick(instance, local_backend)
    assert "no finished run waits" in (data.skip_message or "")
    assert store.tables("main") == ["taxi.trips"]


# ----- re-execution after a failed audit -------------------------------------------------------------------


def wap_job() -> dg.JobDefinition:
    """The assets and checks as a job, on the lakehouse named by LAKEHOUSE_* variables (for re-execution)."""
    resource = LakehouseResource()
    defs = dg.Definitions(
        assets=ASSETS,
        asset_checks=CHECKS,
        jobs=[dg.define_asset_job("wap_job", selection=[LONG_TRIPS, dg.AssetKey(["taxi", "mileage"])])],
        resources={"lakehouse": resource, "io_manager": LakehouseIOManager(lakehouse=resource)},
    )
    return defs.resolve_job_def("wap_job")


def test_reexecution_after_a_failed_audit_is_published(
    local_backend: Any, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAKEHOUSE_CATALOG_URI", local_backend.catalog_uri)
    monkeypatch.setenv("LAKEHOUSE_WAREHOUSE", local_backend.warehouse)
    monkeypatch.setenv(MIN_ROWS_ENV, "10")
    store = _store(local_backend)
    seed_trips(store)
    in_process = {"execution": {"config": {"in_process": {}}}}
    job = dg.reconstructable(wap_job)
    failed = dg.execute_job(job, instance=instance, tags={WAP_TAG: "true"}, run_config=in_process)
    assert not failed.success
    monkeypatch.setenv(MIN_ROWS_ENV, "1")
    options = dg.ReexecutionOptions.from_failure(failed.run_id, instance)
    retried = dg.execute_job(job, instance=instance, reexecution_options=options, run_config=in_process)
    assert retried.success
    branch = wap_branch_name(failed.run_id)
    assert store.tables(branch) == ["taxi.long_trips", "taxi.mileage", "taxi.trips"]

    _tick(instance, local_backend)

    assert _tags(instance, failed.run_id)[MERGE_TAG] == "skipped"
    assert _tags(instance, retried.run_id)[MERGE_TAG] == "merged"
    assert store.tables("main") == ["taxi.long_trips", "taxi.mileage", "taxi.trips"]
    assert not store.has_branch(branch)


# ----- branch creation, partitions and several lakehouses -------------------------------------------------


def test_wap_branch_creation_is_race_safe(backend: Any) -> None:
    store = _store(backend)
    seed_trips(store)
    with ThreadPoolExecutor(max_workers=6) as pool:
        names = list(pool.map(lambda _: ensure_wap_branch(store, "run-1", "main"), range(6)))
    assert names == ["wap/run-1"] * 6
    assert store.ref("wap/run-1").parent == "main" and store.tables("wap/run-1") == ["taxi.trips"]
    store.create_branch("dev")
    with pytest.raises(BranchResolutionError, match="forked from 'main', but this step targets 'dev'"):
        ensure_wap_branch(store, "run-1", "dev")


def test_wap_on_a_branch_partition_publishes_into_that_branch(local_backend: Any, instance: dg.DagsterInstance) -> None:
    @dg.asset(key=["taxi", "per_branch"], partitions_def=branch_partitions)
    def per_branch(context: dg.AssetExecutionContext) -> pl.DataFrame:
        return pl.DataFrame({"written_for": [context.partition_key]})

    @dg.asset_check(asset=per_branch, partitions_def=branch_partitions)
    def has_row(per_branch: pl.DataFrame) -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=per_branch.height == 1)

    store = _store(local_backend)
    store.create_branch("dev")
    instance.add_dynamic_partitions(branch_partitions.name, ["dev"])
    result = dg.materialize(
        [per_branch, has_row],
        instance=instance,
        partition_key="dev",
        resources=_resources(local_backend),
        tags={WAP_TAG: "true"},
    )
    assert result.success
    assert store.ref(wap_branch_name(result.run_id)).parent == "dev" and store.tables("dev") == []
    definitions = dg.Definitions(assets=[per_branch], asset_checks=[has_row], resources=_resources(local_backend))
    with dg.build_sensor_context(
        instance=instance, definitions=definitions, resources={"lakehouse": resource_for(local_backend)}
    ) as context:
        data = merge_sensor.evaluate_tick(context)
    event, check = data.asset_events
    assert event.partition == "dev" and event.metadata["lakehouse/branch"].value == "dev"
    assert isinstance(check, dg.AssetCheckEvaluation) and check.passed and check.partition == "dev"
    assert store.read("taxi.per_branch", ref="dev")["written_for"].to_list() == ["dev"]


def test_runs_of_another_lakehouse_are_left_alone(
    local_backend: Any, instance: dg.DagsterInstance, tmp_path: Any
) -> None:
    seed_trips(_store(local_backend))
    result = _run(instance, local_backend)
    (tmp_path / "other").mkdir()
    other = SimpleNamespace(
        catalog_uri=f"sqlite:///{tmp_path}/other.db", warehouse=f"file://{tmp_path}/other", properties={}
    )
    data = _tick(instance, other)
    assert "no finished run waits" in (data.skip_message or "")
    assert _tags(instance, result.run_id)[MERGE_TAG] == "pending"
    _tick(instance, local_backend)
    assert _tags(instance, result.run_id)[MERGE_TAG] == "merged"


# ----- concurrent work on one table ------------------------------------------------------------------------

DAYS = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-05")


@dg.asset(key=["taxi", "daily"], partitions_def=DAYS, metadata={"lakehouse/partition_column": "day"})
def daily(context: dg.AssetExecutionContext) -> pl.DataFrame:
    """Two rows of its day, labelled with the run tag `label`."""
    day = context.partition_time_window.start.date()
    return pl.DataFrame({"day": [day, day], "label": [context.run.tags["label"]] * 2})


def test_wap_runs_of_different_days_merge_and_the_same_day_conflicts(
    local_backend: Any, instance: dg.DagsterInstance
) -> None:
    """Three WAP runs forked from one main: days 1 and 2 both merge (each replaced its own day); a second run of
    day 1 conflicts, with the table and the day in its reason, and main keeps the first run's rows of day 1."""
    store = _store(local_backend)
    seed = pl.DataFrame({"day": [date(2024, 1, d) for d in (1, 2, 3)], "label": ["seed"] * 3})
    store.write("taxi.daily", seed, branch="main", allow_main=True)  # one file holding every day

    def run(day: str, label: str) -> str:
        result = dg.materialize(
            [daily],
            instance=instance,
            partition_key=day,
            resources=_resources(local_backend),
            tags={WAP_TAG: "true", "label": label},
        )
        assert result.success
        return result.run_id

    first, other_day, same_day = run("2024-01-01", "first"), run("2024-01-02", "other"), run("2024-01-01", "again")
    definitions = dg.Definitions(assets=[daily], sensors=[merge_sensor], resources=_resources(local_backend))
    with dg.build_sensor_context(
        instance=instance, definitions=definitions, resources={"lakehouse": resource_for(local_backend)}
    ) as context:
        data = merge_sensor.evaluate_tick(context)

    statuses = {run_id: _tags(instance, run_id)[MERGE_TAG] for run_id in (first, other_day, same_day)}
    assert statuses == {first: "merged", other_day: "merged", same_day: "conflict"}, data.skip_message
    reason = _tags(instance, same_day)[MERGE_REASON_TAG]
    assert "taxi.daily" in reason and "2024-01-01" in reason, reason
    main = store.read("taxi.daily", ref="main").sort("day", "label")
    assert main.to_dicts() == [
        {"day": date(2024, 1, 1), "label": "first"},
        {"day": date(2024, 1, 1), "label": "first"},
        {"day": date(2024, 1, 2), "label": "other"},
        {"day": date(2024, 1, 2), "label": "other"},
        {"day": date(2024, 1, 3), "label": "seed"},
    ]
    published = [e for e in data.asset_events if isinstance(e, dg.AssetMaterialization)]
    assert sorted(e.partition for e in published) == ["2024-01-01", "2024-01-02"]
    (observation,) = [e for e in data.asset_events if isinstance(e, dg.AssetObservation)]
    assert observation.partition == "2024-01-01"
    assert "2024-01-01" in observation.metadata["lakehouse/conflict_reason"].value


def test_publishes_racing_each_other_both_merge(backend: Any, instance: dg.DagsterInstance) -> None:
    """Two merge sensors (each with its own connection) publish WAP runs of different days at the same moment:
    whichever loses the race on main's pointer is merged again on fresh metadata, not reported as a conflict."""
    seed = pl.DataFrame({"day": [date(2024, 1, d) for d in (1, 2, 3)], "label": ["seed"] * 3})
    _store(backend).write("taxi.daily", seed, branch="main", allow_main=True)
    runs = []
    for day in ("2024-01-01", "2024-01-02"):
        result = dg.materialize(
            [daily],
            instance=instance,
            partition_key=day,
            resources=_resources(backend),
            tags={WAP_TAG: "true", "label": day},
        )
        assert result.success
        runs.append(instance.get_run_by_id(result.run_id))
    stores = [_store(backend), _store(backend)]
    start = threading.Barrier(2)

    def publish(index: int) -> Any:
        start.wait()
        return publish_run(instance, stores[index], runs[index], log=logging.getLogger("racing"))

    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = list(pool.map(publish, range(2)))
    assert [o.status for o in outcomes] == ["merged", "merged"], [o.reason for o in outcomes]
    main = _store(backend).read("taxi.daily", ref="main").sort("day")
    assert main["label"].to_list() == ["2024-01-01", "2024-01-01", "2024-01-02", "2024-01-02", "seed"]
    for store in stores:
        store.close()
