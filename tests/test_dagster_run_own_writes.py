"""Two runs of one job on one branch at once: each downstream step reads, and records as read, its own run's write.

The runs execute in two processes (as a run launcher would start them) on one Dagster instance, and interleave
for certain: run B writes `source` only after run A has, and run A's `derived` step loads `source` only after run B
has written it, so dev's head then holds B's rows while A's step runs.
"""

import json
import multiprocessing
import os
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest
from test_dagster_support import fresh_lakehouse_cache  # noqa: F401  (autouse fixture)

from dagster_lakehouse.dagster import LakehouseIOManager, LakehouseResource
from dagster_lakehouse.lakehouse import Lakehouse

RUN_TAG = "test/run"
DEV = {"lakehouse/branch": "dev"}
SOURCE, DERIVED = dg.AssetKey("source"), dg.AssetKey("derived")
WAIT_SECONDS = 120.0


def _wait_for(path: Path, what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not path.exists():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


class InterleavingIOManager(LakehouseIOManager):
    """The lakehouse IO manager, with run A's read of `source` held until run B's write of it has landed, and run
    B's `derived` step held until A's write of `derived` has (two replaces of one table at once conflict)."""

    sync_dir: str

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        super().handle_output(context, obj)
        (Path(self.sync_dir) / f"{context.step_context.run_tags[RUN_TAG]}.{context.asset_key.path[-1]}").touch()

    def load_input(self, context: dg.InputContext) -> Any:
        run, step = context.step_context.run_tags[RUN_TAG], context.step_context.step.key
        if run == "A" and context.asset_key == SOURCE:
            _wait_for(Path(self.sync_dir) / "B.source", "run B wrote source")
        if run == "B" and step == "derived":
            _wait_for(Path(self.sync_dir) / "A.derived", "run A wrote derived")
        return super().load_input(context)


@dg.asset
def source(context: dg.AssetExecutionContext) -> pl.DataFrame:
    run = context.run.tags[RUN_TAG]
    if run == "B":  # B writes source only after A has: A's downstream step then finds B's write at dev's head
        _wait_for(Path(context.run.tags["test/sync_dir"]) / "A.source", "run A wrote source")
    return pl.DataFrame({"run": [run] * 3, "value": [1, 2, 3] if run == "A" else [10, 20, 30]})


@dg.asset
def derived(context: dg.AssetExecutionContext, source: pl.DataFrame) -> pl.DataFrame:
    flag = context.run.tags.get("test/fail_while")
    if flag and Path(flag).exists():
        raise RuntimeError(f"derived fails while {flag} exists")
    return source.with_columns(doubled=pl.col("value") * 2)


@dg.asset_check(asset=source)
def source_is_one_run(source: pl.DataFrame) -> dg.AssetCheckResult:
    runs = sorted(source["run"].unique())
    return dg.AssetCheckResult(
        passed=len(runs) == 1, metadata={"runs": ",".join(runs), "total": int(source["value"].sum())}
    )


def _run(name: str, lakehouse: dict[str, Any], dagster_home: str, sync_dir: str) -> tuple[str, bool]:
    """One run of the job, in this (spawned) process: its run id and whether it succeeded."""
    instance = dg.DagsterInstance.from_config(dagster_home)
    io_manager = InterleavingIOManager(lakehouse=LakehouseResource(**lakehouse), sync_dir=sync_dir)
    result = dg.materialize(
        [source, derived, source_is_one_run],
        instance=instance,
        resources={"io_manager": io_manager},
        tags={**DEV, RUN_TAG: name, "test/sync_dir": sync_dir},
        raise_on_error=False,
    )
    return result.run_id, result.success


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    home = tmp_path / "dagster"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        yield instance


def _run_both(backend: Any, instance: dg.DagsterInstance, tmp_path: Path) -> dict[str, str]:
    """Run ids of runs A and B, run at once in two processes; both must succeed."""
    sync_dir = tmp_path / "sync"
    sync_dir.mkdir()
    lakehouse = {
        "catalog_uri": backend.catalog_uri,
        "warehouse": backend.warehouse,
        "properties": dict(backend.properties),
    }
    home = str(instance.root_directory)
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {name: pool.submit(_run, name, lakehouse, home, str(sync_dir)) for name in ("A", "B")}
        outcomes = {name: future.result(timeout=3 * WAIT_SECONDS) for name, future in futures.items()}
    assert all(success for _, success in outcomes.values()), outcomes
    return {name: run_id for name, (run_id, _) in outcomes.items()}


def _records(instance: dg.DagsterInstance, run_id: str, kind: dg.DagsterEventType) -> list[dg.EventLogRecord]:
    return list(instance.get_records_for_run(run_id, of_type=kind).records)


def _materialization(instance: dg.DagsterInstance, run_id: str, key: dg.AssetKey) -> dg.AssetMaterialization:
    (record,) = [r for r in _records(instance, run_id, dg.DagsterEventType.ASSET_MATERIALIZATION) if r.asset_key == key]
    assert record.asset_materialization is not None
    return record.asset_materialization


def _storage_id(instance: dg.DagsterInstance, run_id: str, key: dg.AssetKey) -> int:
    """The id of the run's materialization of `key` in the asset index (what Dagster's event pointers name)."""
    (record,) = [r for r in instance.fetch_materializations(key, limit=100).records if r.run_id == run_id]
    return record.storage_id


def test_each_run_reads_its_own_upstream_write(
    backend: Any, lakehouse: Lakehouse, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    runs = _run_both(backend, instance, tmp_path)
    assert _storage_id(instance, runs["A"], SOURCE) < _storage_id(instance, runs["B"], SOURCE)
    assert sorted(lakehouse.read("public.source", ref="dev")["run"].unique()) == ["B"], "B's source is dev's head"

    sources = {name: _materialization(instance, run_id, SOURCE) for name, run_id in runs.items()}
    versions = {name: m.tags["dagster/data_version"] for name, m in sources.items()}
    assert versions["A"] != versions["B"]
    for name, run_id in runs.items():
        derived_materialization = _materialization(instance, run_id, DERIVED)
        tags, metadata = derived_materialization.tags, derived_materialization.metadata
        assert tags["dagster/input_data_version/source"] == versions[name], f"run {name} records its own source"
        assert tags["dagster/input_event_pointer/source"] == str(_storage_id(instance, run_id, SOURCE))
        assert metadata["lakehouse/input_snapshots"].value == {
            "public.source": sources[name].metadata["lakehouse/snapshot_id"].value
        }
        commit = metadata["lakehouse/commit_id"].value
        written = lakehouse.read("public.derived", ref=f"dev@{commit}").sort("value")
        values = [1, 2, 3] if name == "A" else [10, 20, 30]
        assert written.to_dicts() == [{"run": name, "value": v, "doubled": 2 * v} for v in values]


def test_a_check_audits_its_own_runs_write(backend: Any, instance: dg.DagsterInstance, tmp_path: Path) -> None:
    runs = _run_both(backend, instance, tmp_path)
    for name, total in (("A", 6), ("B", 60)):
        (record,) = _records(instance, runs[name], dg.DagsterEventType.ASSET_CHECK_EVALUATION)
        evaluation = record.event_log_entry.dagster_event.event_specific_data
        assert evaluation.passed
        assert evaluation.metadata["runs"].value == name
        assert evaluation.metadata["total"].value == total


def _env_lakehouse() -> LakehouseResource:
    return LakehouseResource(
        catalog_uri=os.environ["TEST_LAKEHOUSE_CATALOG"],
        warehouse=os.environ["TEST_LAKEHOUSE_WAREHOUSE"],
        properties=json.loads(os.environ["TEST_LAKEHOUSE_PROPERTIES"]),
    )


def reexecutable_job() -> dg.JobDefinition:
    """`source` and `derived` on the lakehouse named by the environment (a re-execution reconstructs its job)."""
    definitions = dg.Definitions(
        assets=[source, derived],
        jobs=[dg.define_asset_job("two_steps", selection=[SOURCE, DERIVED], executor_def=dg.in_process_executor)],
        resources={"io_manager": LakehouseIOManager(lakehouse=_env_lakehouse())},
    )
    return definitions.resolve_job_def("two_steps")


def test_a_reexecution_reads_what_its_parent_run_wrote(
    local_backend: Any, instance: dg.DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_LAKEHOUSE_CATALOG", local_backend.catalog_uri)
    monkeypatch.setenv("TEST_LAKEHOUSE_WAREHOUSE", local_backend.warehouse)
    monkeypatch.setenv("TEST_LAKEHOUSE_PROPERTIES", json.dumps(dict(local_backend.properties)))
    flag = tmp_path / "derived-fails"
    flag.touch()
    job = dg.reconstructable(reexecutable_job)
    tags = {**DEV, RUN_TAG: "A", "test/fail_while": str(flag)}
    with dg.execute_job(job, instance=instance, tags=tags, raise_on_error=False) as first:
        assert not first.success
        parent = first.run_id
    other = dg.materialize(  # another run replaces source on dev meanwhile
        [source],
        instance=instance,
        resources={"io_manager": LakehouseIOManager(lakehouse=_env_lakehouse())},
        tags={**DEV, RUN_TAG: "C"},
    )
    assert other.success
    flag.unlink()
    options = dg.ReexecutionOptions.from_failure(parent, instance)
    with dg.execute_job(
        job, instance=instance, reexecution_options=options, tags={**DEV, RUN_TAG: "A"}, raise_on_error=False
    ) as again:
        assert again.success
        run_id = again.run_id
    parent_source = _materialization(instance, parent, SOURCE)
    derived_materialization = _materialization(instance, run_id, DERIVED)
    assert (
        derived_materialization.tags["dagster/input_data_version/source"] == parent_source.tags["dagster/data_version"]
    )
    lakehouse = Lakehouse(local_backend.catalog_uri, local_backend.warehouse, dict(local_backend.properties))
    commit = derived_materialization.metadata["lakehouse/commit_id"].value
    assert lakehouse.read("public.derived", ref=f"dev@{commit}")["run"].unique().to_list() == ["A"]
    assert lakehouse.read("public.source", ref="dev")["run"].unique().to_list() == ["C"]
