"""Which branch a run writes to (branch partition > run tag > resource `branch` > main) and the resource itself."""

import threading
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest
from test_dagster_support import (  # noqa: F401  (fresh_lakehouse_cache is an autouse fixture)
    failure_text,
    fresh_lakehouse_cache,
    materialize,
    resource_for,
    seed_trips,
)

from dagster_lakehouse.dagster import (
    LakehouseIOManager,
    LakehouseResource,
    branch_partitions,
    is_branch_partitions,
)
from dagster_lakehouse.lakehouse import Lakehouse

REGIONS = dg.StaticPartitionsDefinition(["east", "west"])
BRANCH_BY_REGION = dg.MultiPartitionsDefinition({"branch": branch_partitions, "region": REGIONS})


def _lakehouse(backend: Any) -> Lakehouse:
    return Lakehouse(backend.catalog_uri, backend.warehouse, dict(backend.properties))


def _instance_with_branches(*branches: str) -> dg.DagsterInstance:
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(branch_partitions.name, list(branches))
    return instance


@dg.asset
def numbers() -> pl.DataFrame:
    """A tiny unpartitioned asset."""
    return pl.DataFrame({"n": [1, 2, 3]})


@dg.asset(partitions_def=branch_partitions)
def per_branch(context: dg.AssetExecutionContext) -> pl.DataFrame:
    """One partition per lakehouse branch."""
    return pl.DataFrame({"written_for": [context.partition_key]})


def test_branch_partitions_definition() -> None:
    assert isinstance(branch_partitions, dg.DynamicPartitionsDefinition)
    assert branch_partitions.name == "lakehouse_branches"
    assert is_branch_partitions(dg.DynamicPartitionsDefinition(name="lakehouse_branches"))
    assert not is_branch_partitions(dg.DynamicPartitionsDefinition(name="customers"))
    assert not is_branch_partitions(REGIONS)


def test_run_tag_selects_the_branch(local_backend: Any) -> None:
    assert materialize([numbers], local_backend, tags={"lakehouse/branch": "feature/x"}).success
    lakehouse = _lakehouse(local_backend)
    assert lakehouse.tables("feature/x") == ["public.numbers"]
    assert lakehouse.tables("main") == []


def test_resource_branch_is_the_default(local_backend: Any) -> None:
    assert materialize([numbers], local_backend, resource={"branch": "staging"}).success
    assert _lakehouse(local_backend).tables("staging") == ["public.numbers"]


def test_run_tag_beats_resource_branch(local_backend: Any) -> None:
    assert materialize(
        [numbers], local_backend, resource={"branch": "staging"}, tags={"lakehouse/branch": "dev"}
    ).success
    lakehouse = _lakehouse(local_backend)
    assert lakehouse.tables("dev") == ["public.numbers"]
    assert not lakehouse.has_branch("staging")


def test_branch_partition_beats_tag_and_resource(backend: Any, lakehouse: Lakehouse) -> None:
    instance = _instance_with_branches("feature")
    result = materialize(
        [per_branch],
        backend,
        resource={"branch": "staging"},
        tags={"lakehouse/branch": "dev"},
        partition_key="feature",
        instance=instance,
    )
    assert result.success
    assert lakehouse.read("public.per_branch", ref="feature")["written_for"].to_list() == ["feature"]
    assert not lakehouse.has_branch("dev") and not lakehouse.has_branch("staging")
    assert lakehouse.tables("main") == []


def test_branch_dimension_of_multi_partitions(local_backend: Any) -> None:
    @dg.asset(partitions_def=BRANCH_BY_REGION, metadata={"lakehouse/partition_column": "region"})
    def sales(context: dg.AssetExecutionContext) -> pl.DataFrame:
        region = context.partition_key.keys_by_dimension["region"]
        return pl.DataFrame({"region": [region], "amount": [10 if region == "east" else 20]})

    instance = _instance_with_branches("q1")
    for region in ("east", "west"):
        key = dg.MultiPartitionKey({"branch": "q1", "region": region})
        assert materialize([sales], local_backend, partition_key=key, instance=instance).success
    lakehouse = _lakehouse(local_backend)
    assert sorted(lakehouse.read("public.sales", ref="q1")["region"].to_list()) == ["east", "west"]
    assert lakehouse.tables("main") == []


def test_unpartitioned_asset_in_a_branch_partitioned_run_follows_the_run_tag(local_backend: Any) -> None:
    """The partition key chooses per_branch's branch only; summary follows the run tag, which names the same one."""

    @dg.asset
    def summary(per_branch: pl.DataFrame) -> pl.DataFrame:
        return per_branch

    instance = _instance_with_branches("feature", "other")
    tags = {"lakehouse/branch": "feature"}
    result = materialize([per_branch, summary], local_backend, partition_key="feature", instance=instance, tags=tags)
    assert result.success
    lakehouse = _lakehouse(local_backend)
    assert lakehouse.read("public.summary", ref="feature")["written_for"].to_list() == ["feature"]
    assert not lakehouse.has_branch("other") and lakehouse.tables("main") == []


def test_one_run_over_two_branch_partitions_is_refused(local_backend: Any) -> None:
    @dg.asset(partitions_def=branch_partitions)
    def per_branch() -> pl.DataFrame:
        return pl.DataFrame({"n": [1]})

    instance = _instance_with_branches("a", "b")
    tags = {"dagster/asset_partition_range_start": "a", "dagster/asset_partition_range_end": "b"}
    text = failure_text(materialize([per_branch], local_backend, tags=tags, instance=instance))
    assert "BranchResolutionError" in text and "asset 'per_branch'" in text and "a, b" in text


def test_branch_for_inside_an_asset(local_backend: Any) -> None:
    seen: dict[str, str] = {}
    resource = resource_for(local_backend, branch="staging")

    @dg.asset(partitions_def=branch_partitions)
    def tagged(context: dg.AssetExecutionContext, lakehouse: LakehouseResource) -> None:
        seen["partitioned"] = lakehouse.branch_for(context)

    @dg.asset
    def untagged(context: dg.AssetExecutionContext, lakehouse: LakehouseResource) -> None:
        seen["plain"] = lakehouse.branch_for(context)

    instance = _instance_with_branches("feature")
    resources = {"lakehouse": resource, "io_manager": LakehouseIOManager(lakehouse=resource)}
    assert dg.materialize([tagged], resources=resources, partition_key="feature", instance=instance).success
    assert dg.materialize([untagged], resources=resources).success
    assert dg.materialize([untagged], resources={**resources, "lakehouse": resource_for(local_backend)}).success
    assert seen == {"partitioned": "feature", "plain": "main"}


def test_writing_to_main_is_refused_naming_the_asset(local_backend: Any) -> None:
    text = failure_text(materialize([numbers], local_backend))
    assert "ProtectedBranchError" in text
    assert "asset 'numbers' (table 'public.numbers') would be written to branch 'main'" in text
    assert "allow_main=True" in text
    assert _lakehouse(local_backend).tables("main") == []


def test_writing_to_main_with_the_tag_is_refused_too(local_backend: Any) -> None:
    text = failure_text(materialize([numbers], local_backend, tags={"lakehouse/branch": "main"}))
    assert "ProtectedBranchError" in text and "asset 'numbers'" in text


def test_allow_main_writes_to_main(local_backend: Any) -> None:
    assert materialize([numbers], local_backend, resource={"allow_main": True}).success
    lakehouse = _lakehouse(local_backend)
    assert lakehouse.read("public.numbers", ref="main")["n"].to_list() == [1, 2, 3]
    assert lakehouse.branches() == ["main"]


def test_reading_from_main_is_allowed(local_backend: Any) -> None:
    seen: dict[str, int] = {}

    @dg.asset(ins={"trips": dg.AssetIn(key=["taxi", "trips"])})
    def peek(trips: pl.DataFrame) -> None:
        seen["rows"] = trips.height

    seed_trips(_lakehouse(local_backend))
    spec = dg.AssetSpec(key=["taxi", "trips"])
    assert materialize([spec, peek], local_backend).success
    assert seen["rows"] == 6


def test_missing_branch_is_created_from_main(local_backend: Any) -> None:
    lakehouse = _lakehouse(local_backend)
    seed_trips(lakehouse)
    assert materialize([numbers], local_backend, tags={"lakehouse/branch": "fresh"}).success
    assert lakehouse.tables("fresh") == ["public.numbers", "taxi.trips"]
    assert lakehouse.ref("fresh").parent == "main"


def test_missing_branch_without_create_branches(local_backend: Any) -> None:
    text = failure_text(
        materialize([numbers], local_backend, resource={"create_branches": False}, tags={"lakehouse/branch": "nope"})
    )
    assert "RefNotFound" in text and "asset 'numbers'" in text and "'nope'" in text and "create_branches=True" in text
    lakehouse = _lakehouse(local_backend)
    assert not lakehouse.has_branch("nope")
    lakehouse.create_branch("nope")
    assert materialize(
        [numbers], local_backend, resource={"create_branches": False}, tags={"lakehouse/branch": "nope"}
    ).success


def test_invalid_branch_name_in_tag(local_backend: Any) -> None:
    text = failure_text(materialize([numbers], local_backend, tags={"lakehouse/branch": "bad..name"}))
    assert "InvalidRefName" in text and "asset 'numbers'" in text and "bad..name" in text


# ----- a branch partition key chooses the branch of the assets partitioned by branch only ----------------


def _mixed_run_assets(seen: dict[str, Any]) -> list[Any]:
    """per_branch (partitioned by branch), summary (unpartitioned, reads per_branch) and tally (unpartitioned), each
    recording the RunBranch its step resolved."""

    @dg.asset(key=["mix", "per_branch"], partitions_def=branch_partitions)
    def mixed_per_branch(context: dg.AssetExecutionContext, lakehouse: LakehouseResource) -> pl.DataFrame:
        seen["per_branch"] = lakehouse.run_branch(context)
        return pl.DataFrame({"written_for": [context.partition_key]})

    @dg.asset(key=["mix", "summary"], ins={"per_branch": dg.AssetIn(key=["mix", "per_branch"])})
    def mixed_summary(
        context: dg.AssetExecutionContext, lakehouse: LakehouseResource, per_branch: pl.DataFrame
    ) -> pl.DataFrame:
        seen["summary"] = lakehouse.run_branch(context)
        return per_branch.with_columns(rows=pl.len())

    @dg.asset(key=["mix", "tally"])
    def mixed_tally(context: dg.AssetExecutionContext, lakehouse: LakehouseResource) -> pl.DataFrame:
        seen["tally"] = lakehouse.run_branch(context)
        return pl.DataFrame({"n": [1]})

    return [mixed_per_branch, mixed_summary, mixed_tally]


def _resources(backend: Any, **overrides: Any) -> dict[str, Any]:
    resource = resource_for(backend, **overrides)
    return {"lakehouse": resource, "io_manager": LakehouseIOManager(lakehouse=resource)}


def test_a_branch_partition_key_chooses_only_the_branch_partitioned_assets(backend: Any, lakehouse: Lakehouse) -> None:
    """In a run of partition `dev` that also materializes unpartitioned assets (what "Materialize all" with a
    partition launches), those resolve by the resource's branch, here the same `dev`: one branch, tagged on the run;
    summary reads per_branch on its own branch although other branch partitions exist."""
    seed_trips(lakehouse)
    seen: dict[str, Any] = {}
    instance = _instance_with_branches("dev", "main", "other")
    result = dg.materialize(
        _mixed_run_assets(seen), resources=_resources(backend, branch="dev"), partition_key="dev", instance=instance
    )
    assert result.success
    assert seen["per_branch"].chosen_by == "branch partition"
    assert seen["summary"].chosen_by == seen["tally"].chosen_by == "resource config 'branch'"
    assert {(s.branch, s.target, s.wap) for s in seen.values()} == {("dev", "dev", False)}
    tags = instance.get_run_by_id(result.run_id).tags
    assert tags["lakehouse/branch"] == tags["lakehouse/target"] == "dev"
    assert lakehouse.read("mix.summary", ref="dev").to_dicts() == [{"written_for": "dev", "rows": 1}]
    assert lakehouse.tables("main") == ["taxi.trips"] and sorted(lakehouse.branches()) == ["dev", "main"]


@pytest.mark.parametrize("partition", ["main", "feature"])
def test_a_run_whose_partition_and_other_assets_would_write_two_branches_is_refused(
    backend: Any, lakehouse: Lakehouse, partition: str
) -> None:
    """Partition `main` (write-audit-published) or `feature` with unpartitioned assets on the resource's `dev`: every
    step fails as it resolves its branch, naming the assets and both branches; no branch is made, nothing written."""
    seed_trips(lakehouse)
    commits = [c.id for c in lakehouse.log("main")]
    seen: dict[str, Any] = {}
    instance = _instance_with_branches("main", "feature")
    result = dg.materialize(
        _mixed_run_assets(seen),
        resources=_resources(backend, branch="dev"),
        partition_key=partition,
        instance=instance,
        raise_on_error=False,
    )
    text = failure_text(result)
    assert not seen, "an asset's body ran in a run that was going to be refused"
    assert "BranchResolutionError" in text and "this run mixes assets partitioned by branch (mix/per_branch" in text
    assert "assets that are not (mix/summary, mix/tally: lakehouse branch 'dev'" in text
    expected = f"'wap/{result.run_id}' (write-audit-publish into 'main'" if partition == "main" else "'feature'"
    assert expected in text
    fix = "'lakehouse/branch=main' and 'lakehouse/wap=true'" if partition == "main" else "'lakehouse/branch=feature'"
    assert f"give this run the tag {fix}" in text
    assert lakehouse.branches() == ["main"] and lakehouse.tables("main") == ["taxi.trips"]
    assert [c.id for c in lakehouse.log("main")] == commits
    assert "lakehouse/branch" not in instance.get_run_by_id(result.run_id).tags


def test_the_tags_a_refused_mixed_run_names_make_it_one_write_audit_publish_run(local_backend: Any) -> None:
    """With `lakehouse/branch=main` and `lakehouse/wap=true`, partition `main` and the unpartitioned assets share the
    run's WAP branch: one branch, published into `main` by merge_sensor, and the run's tags say so."""
    lakehouse = _lakehouse(local_backend)
    seen: dict[str, Any] = {}
    instance = _instance_with_branches("main")
    result = dg.materialize(
        _mixed_run_assets(seen),
        resources=_resources(local_backend, branch="dev"),
        partition_key="main",
        instance=instance,
        tags={"lakehouse/branch": "main", "lakehouse/wap": "true"},
    )
    assert result.success
    wap = f"wap/{result.run_id}"
    assert {(s.branch, s.target, s.wap) for s in seen.values()} == {(wap, "main", True)}
    tags = instance.get_run_by_id(result.run_id).tags
    assert tags["lakehouse/branch"] == wap and tags["lakehouse/target"] == "main"
    assert tags["lakehouse/merge"] == "pending"
    assert lakehouse.tables(wap) == ["mix.per_branch", "mix.summary", "mix.tally"] and lakehouse.tables("main") == []
    assert not lakehouse.has_branch("dev")


def test_an_unpartitioned_asset_reads_a_branch_partitioned_parent_on_its_own_branch(local_backend: Any) -> None:
    """Without a partition mapping an unpartitioned child reads its parent's table on its own branch (that branch's
    partition), however many branch partitions exist; an explicit mapping to one partition reads that branch."""
    lakehouse = _lakehouse(local_backend)
    lakehouse.write("public.per_branch", pl.DataFrame({"written_for": ["main"]}), branch="main", allow_main=True)
    lakehouse.create_branch("dev")
    lakehouse.write("public.per_branch", pl.DataFrame({"written_for": ["dev"]}), branch="dev")

    @dg.asset
    def own_branch(per_branch: pl.DataFrame) -> pl.DataFrame:
        return per_branch

    mapped = dg.AssetIn(key="per_branch", partition_mapping=dg.SpecificPartitionsPartitionMapping(["main"]))

    @dg.asset(ins={"per_branch": mapped})
    def from_main(per_branch: pl.DataFrame) -> pl.DataFrame:
        return per_branch

    instance = _instance_with_branches("main", "dev", "other")
    result = dg.materialize(
        [per_branch, own_branch, from_main],
        selection=[own_branch, from_main],
        resources=_resources(local_backend, branch="dev"),
        instance=instance,
    )
    assert result.success
    assert lakehouse.read("public.own_branch", ref="dev")["written_for"].to_list() == ["dev"]
    assert lakehouse.read("public.from_main", ref="dev")["written_for"].to_list() == ["main"]
    assert instance.get_run_by_id(result.run_id).tags["lakehouse/branch"] == "dev"


def test_checks_of_a_branch_partitioned_asset_and_partitioned_op_jobs_use_the_partition(local_backend: Any) -> None:
    """An unpartitioned check of a branch-partitioned asset runs on the asset's partition; so does an op of a job
    partitioned by branch (it materializes no asset: the job's partitions are its own)."""
    seen: dict[str, str] = {}

    @dg.asset_check(asset=per_branch)
    def has_a_row(context: dg.AssetCheckExecutionContext, lakehouse: LakehouseResource) -> dg.AssetCheckResult:
        seen["check"] = lakehouse.branch_for(context)
        return dg.AssetCheckResult(passed=True)

    @dg.op
    def report(context: dg.OpExecutionContext, lakehouse: LakehouseResource) -> None:
        seen["op"] = lakehouse.branch_for(context)

    @dg.job(partitions_def=branch_partitions)
    def report_job() -> None:
        report()

    instance = _instance_with_branches("feature")
    resources = _resources(local_backend, branch="dev")
    assert dg.materialize(
        [per_branch, has_a_row], resources=resources, partition_key="feature", instance=instance
    ).success
    assert report_job.execute_in_process(resources=resources, partition_key="feature", instance=instance).success
    assert seen == {"check": "feature", "op": "feature"}


# ----- the resource ---------------------------------------------------------------------------------------


def test_get_lakehouse_is_cached_per_configuration(local_backend: Any, tmp_path: Any) -> None:
    first = resource_for(local_backend)
    assert first.get_lakehouse() is resource_for(local_backend).get_lakehouse()
    other = LakehouseResource(path=str(tmp_path / "other"))
    assert other.get_lakehouse() is not first.get_lakehouse()
    assert other.get_lakehouse().config.catalog_uri.endswith("other/catalog.db")


def test_resource_reads_env_vars(local_backend: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_CATALOG", local_backend.catalog_uri)
    monkeypatch.setenv("MY_WAREHOUSE", local_backend.warehouse)
    monkeypatch.setenv("MY_BRANCH", "from-env")
    resource = LakehouseResource(
        catalog_uri=dg.EnvVar("MY_CATALOG"), warehouse=dg.EnvVar("MY_WAREHOUSE"), branch=dg.EnvVar("MY_BRANCH")
    )
    result = dg.materialize([numbers], resources={"io_manager": LakehouseIOManager(lakehouse=resource)})
    assert result.success
    assert _lakehouse(local_backend).tables("from-env") == ["public.numbers"]


def test_lakehouse_env_vars_apply_when_unset(local_backend: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAKEHOUSE_CATALOG_URI", local_backend.catalog_uri)
    monkeypatch.setenv("LAKEHOUSE_WAREHOUSE", local_backend.warehouse)
    lakehouse = LakehouseResource().get_lakehouse()
    assert lakehouse.config.catalog_uri == local_backend.catalog_uri


def test_resources_in_definitions(local_backend: Any) -> None:
    resource = resource_for(local_backend, branch="dev")
    defs = dg.Definitions(
        assets=[numbers], resources={"lakehouse": resource, "io_manager": LakehouseIOManager(lakehouse=resource)}
    )
    job = defs.resolve_implicit_global_asset_job_def()
    assert job.execute_in_process().success
    assert _lakehouse(local_backend).tables("dev") == ["public.numbers"]


def test_concurrent_steps_creating_the_run_branch(local_backend: Any) -> None:
    resource = resource_for(local_backend)
    resource.get_lakehouse()
    barrier, errors = threading.Barrier(8), []

    def create() -> None:
        barrier.wait()
        try:
            resource.ensure_branch("dev")
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert _lakehouse(local_backend).branches() == ["dev", "main"]


# ----- a real multi-process run ---------------------------------------------------------------------------


@dg.asset(key_prefix="mp")
def mp_source() -> pl.DataFrame:
    """First step of the multi-process job."""
    return pl.DataFrame({"n": [1, 2, 3, 4]})


@dg.asset(key_prefix="mp", ins={"mp_source": dg.AssetIn(key=["mp", "mp_source"], metadata={"filter": "n > 2"})})
def mp_big(mp_source: pl.DataFrame) -> pl.DataFrame:
    """Second step, in another process, reading the first one's table from the same branch."""
    return mp_source


@dg.asset(key_prefix="mp")
def mp_other() -> pl.DataFrame:
    """A step running in parallel with the others."""
    return pl.DataFrame({"x": ["a"]})


def multiprocess_job() -> dg.JobDefinition:
    """The job `test_multiprocess_run` reconstructs in each step process (configured by environment variables)."""
    resource = LakehouseResource(catalog_uri=dg.EnvVar("TEST_LH_CATALOG"), warehouse=dg.EnvVar("TEST_LH_WAREHOUSE"))
    defs = dg.Definitions(
        assets=[mp_source, mp_big, mp_other],
        jobs=[dg.define_asset_job("mp_job", executor_def=dg.multiprocess_executor)],
        resources={"io_manager": LakehouseIOManager(lakehouse=resource)},
    )
    return defs.resolve_job_def("mp_job")


def test_multiprocess_run(local_backend: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("TEST_LH_CATALOG", local_backend.catalog_uri)
    monkeypatch.setenv("TEST_LH_WAREHOUSE", local_backend.warehouse)
    monkeypatch.chdir(Path(__file__).parent)  # step processes import this module from the working directory
    lakehouse = _lakehouse(local_backend)
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        result = dg.execute_job(
            dg.reconstructable(multiprocess_job), instance=instance, tags={"lakehouse/branch": "mp-run"}
        )
        assert result.success
        event = instance.get_latest_materialization_event(dg.AssetKey(["mp", "mp_big"]))
        assert event is not None and event.asset_materialization is not None
        snapshot_id = event.asset_materialization.metadata["lakehouse/snapshot_id"].value
    assert lakehouse.tables("mp-run") == ["mp.mp_big", "mp.mp_other", "mp.mp_source"]
    assert lakehouse.read("mp.mp_big", ref="mp-run")["n"].to_list() == [3, 4]
    assert lakehouse.snapshot_id("mp.mp_big", "mp-run") == snapshot_id
