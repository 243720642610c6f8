"""Where a run reads and writes, chosen where users look (run config, EnvVar, configure_at_launch, run tag), tagged on
the run before its first step computes, and writes that cannot happen refused before a model's body runs."""


import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest
from test_dagster_support import failure_text, fresh_lakehouse_cache  # noqa: F401

from dagster_lakehouse import Lakehouse
from dagster_lakehouse.dagster import LakehouseIOManager, LakehouseResource
from dagster_lakehouse.notebook import load_notebook_assets

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = """\
import marimo

app = marimo.App()

with app.setup:
    import os
    from pathlib import Path

    import polars as pl

    from dagster_lakehouse import Input, model


@app.function
@model(inputs={"trips": Input("raw.trips")})
def expensive(trips: pl.DataFrame) -> pl.DataFrame:
    \"\"\"Leaves a mark when its body runs.\"\"\"
    Path(os.environ["BODY_RAN_MARK"]).write_text("ran")
    return trips


@app.function
@model()
def root() -> pl.DataFrame:
    \"\"\"A model without inputs, also marking that its body ran.\"\"\"
    Path(os.environ["BODY_RAN_MARK"]).write_text("ran")
    return pl.DataFrame({"n": [1]})
"""

DEFINITIONS = """\
import dagster as dg
import polars as pl

from dagster_lakehouse.dagster import LakehouseIOManager, LakehouseResource


@dg.asset(key=["t", "numbers"])
def numbers() -> pl.DataFrame:
    return pl.DataFrame({"n": [1, 2, 3]})


lakehouse = LakehouseResource(path=%(path)r, branch="dev")
defs = dg.Definitions(
    assets=[numbers], resources={"lakehouse": lakehouse, "io_manager": LakehouseIOManager(lakehouse=lakehouse)}
)
"""


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    path = tmp_path / "lake"
    with Lakehouse.local(path) as lh:
        lh.write("raw.trips", pl.DataFrame({"trip_id": [1, 2]}), branch="main", allow_main=True)
        lh.tag("v1")
    return path


@pytest.fixture
def notebook_assets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[Any], Path]:
    source = tmp_path / "runs.py"
    source.write_text(NOTEBOOK)
    mark = tmp_path / "body-ran"
    monkeypatch.setenv("BODY_RAN_MARK", str(mark))
    return load_notebook_assets(source), mark


def _resources(lake: Path, **config: Any) -> dict[str, Any]:
    resource = LakehouseResource(path=str(lake), **config)
    return {"lakehouse": resource, "io_manager": LakehouseIOManager(lakehouse=resource)}


@pytest.mark.parametrize("tags", [{}, {"lakehouse/branch": "v1"}], ids=["main", "a-tag"])
@pytest.mark.parametrize("model", ["expensive", "root"])
def test_a_refused_write_is_refused_before_the_models_body_runs(
    lake: Path, notebook_assets: tuple[list[Any], Path], tags: dict[str, str], model: str
) -> None:
    assets, mark = notebook_assets
    selection = [a for a in assets if isinstance(a, dg.AssetSpec) or model in a.key.path]
    result = dg.materialize(selection, resources=_resources(lake), tags=tags, raise_on_error=False)
    text = failure_text(result)
    assert "ProtectedBranchError" in text and f"runs/{model}" in text
    assert ("tag" in text) if tags else ("'main', which is protected" in text)
    assert not mark.exists(), "the model's body ran although its write was going to be refused"
    with Lakehouse.local(lake) as lh:
        assert lh.tables("main") == ["raw.trips"]


def test_a_plain_asset_with_lakehouse_inputs_is_refused_before_its_body(lake: Path) -> None:
    ran = []

    @dg.asset(key=["t", "copy"], ins={"trips": dg.AssetIn(key=["raw", "trips"])})
    def copy(trips: pl.DataFrame) -> pl.DataFrame:
        ran.append(True)
        return trips

    result = dg.materialize([dg.AssetSpec(["raw", "trips"]), copy], resources=_resources(lake), raise_on_error=False)
    assert "asset 't/copy' would be written to branch 'main'" in failure_text(result)
    assert not ran


def test_run_config_chooses_the_branch_for_resource_and_io_manager(lake: Path) -> None:
    seen = {}

    @dg.asset(key=["t", "numbers"])
    def numbers(context: dg.AssetExecutionContext, lakehouse: LakehouseResource) -> pl.DataFrame:
        seen["branch"] = lakehouse.branch_for(context)
        seen["tags"] = dict(context.instance.get_run_by_id(context.run_id).tags)  # tagged before the body runs
        return pl.DataFrame({"n": [1]})

    defs = dg.Definitions(assets=[numbers], resources=_resources(lake, branch="dev"))
    job = defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(run_config={"resources": {"lakehouse": {"config": {"branch": "feat"}}}})
    assert result.success
    assert seen["branch"] == "feat"
    assert seen["tags"]["lakehouse/branch"] == "feat" and seen["tags"]["lakehouse/target"] == "feat"
    with Lakehouse.local(lake) as lh:
        assert "t.numbers" in lh.tables("feat") and "dev" not in lh.branches()


def test_configure_at_launch_and_env_var(lake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    @dg.asset(key=["t", "numbers"])
    def numbers() -> pl.DataFrame:
        return pl.DataFrame({"n": [1]})

    at_launch = LakehouseResource.configure_at_launch(path=str(lake), branch="dev")
    defs = dg.Definitions(
        assets=[numbers], resources={"lakehouse": at_launch, "io_manager": LakehouseIOManager(lakehouse=at_launch)}
    )
    job = defs.resolve_implicit_global_asset_job_def()
    assert job.execute_in_process().success
    assert job.execute_in_process(run_config={"resources": {"lakehouse": {"config": {"branch": "late"}}}}).success

    monkeypatch.setenv("TEST_LAKEHOUSE_BRANCH", "from-env")
    env_resource = LakehouseResource(path=str(lake), branch=dg.EnvVar("TEST_LAKEHOUSE_BRANCH"))
    assert dg.materialize([numbers], resources={"io_manager": LakehouseIOManager(lakehouse=env_resource)}).success
    with Lakehouse.local(lake) as lh:
        assert all("t.numbers" in lh.tables(b) for b in ("dev", "late", "from-env"))


def test_the_run_tag_beats_run_config(lake: Path) -> None:
    @dg.asset(key=["t", "numbers"])
    def numbers() -> pl.DataFrame:
        return pl.DataFrame({"n": [1]})

    defs = dg.Definitions(assets=[numbers], resources=_resources(lake))
    job = defs.resolve_implicit_global_asset_job_def()
    run_config = {"resources": {"lakehouse": {"config": {"branch": "configured"}}}}
    assert job.execute_in_process(run_config=run_config, tags={"lakehouse/branch": "tagged"}).success
    with Lakehouse.local(lake) as lh:
        assert "t.numbers" in lh.tables("tagged") and "configured" not in lh.branches()


def test_dagster_asset_materialize_with_config_json_writes_that_branch_only(tmp_path: Path, lake: Path) -> None:
    definitions = tmp_path / "defs.py"
    definitions.write_text(DEFINITIONS % {"path": str(lake)})
    config = json.dumps({"resources": {"lakehouse": {"config": {"branch": "feat"}}}})
    dagster = Path(sys.executable).with_name("dagster")
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home")}
    (tmp_path / "home").mkdir()
    done = subprocess.run(
        [str(dagster), "asset", "materialize", "-f", str(definitions), "--select", "*", "--config-json", config],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with Lakehouse.local(lake) as lh:
        assert "t.numbers" in lh.tables("feat")
        assert "dev" not in lh.branches() and "t.numbers" not in lh.tables("main")


def test_the_launchpad_offers_a_typed_branch_field() -> None:
    """The example's taxi_job opens with `resources.lakehouse.config.branch: dev`, a described String field."""
    import example_project.definitions as example

    job = example.defs.resolve_job_def("taxi_job")
    resources = job.run_config_schema.config_type.fields["resources"].config_type.fields
    branch = resources["lakehouse"].config_type.fields["config"].config_type.fields["branch"]
    assert "String" in branch.config_type.key and "branch" in (branch.description or "")
    assert example.taxi_job.config == {"resources": {"lakehouse": {"config": {"branch": "dev"}}}}


def test_branch_partition_main_is_written_by_audit_and_published(lake: Path) -> None:
    """Partition `main` of a branch-partitioned asset never writes `main` directly: its run writes its own WAP
    branch and merge_sensor publishes it; with allow_main it writes `main` itself."""
    from dagster_lakehouse.dagster import branch_partitions, merge_sensor

    @dg.asset(key=["t", "per_branch"], partitions_def=branch_partitions)
    def per_branch() -> pl.DataFrame:
        return pl.DataFrame({"n": [1, 2]})

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(branch_partitions.name, ["main"])
        resources = _resources(lake)
        result = dg.materialize([per_branch], resources=resources, partition_key="main", instance=instance)
        assert result.success
        tags = instance.get_run_by_id(result.run_id).tags
        assert tags["lakehouse/branch"] == f"wap/{result.run_id}" and tags["lakehouse/target"] == "main"
        assert tags["lakehouse/wap"] == "true" and tags["lakehouse/merge"] == "pending"
        with Lakehouse.local(lake) as lh:
            assert "t.per_branch" not in lh.tables("main")
        definitions = dg.Definitions(assets=[per_branch], sensors=[merge_sensor], resources=resources)
        with dg.build_sensor_context(instance=instance, definitions=definitions, resources=resources) as context:
            merge_sensor.evaluate_tick(context)
        with Lakehouse.local(lake) as lh:
            assert lh.read("t.per_branch", ref="main")["n"].to_list() == [1, 2]

        direct = dg.materialize(
            [per_branch], resources=_resources(lake, allow_main=True), partition_key="main", instance=instance
        )
        assert direct.success and instance.get_run_by_id(direct.run_id).tags["lakehouse/branch"] == "main"
