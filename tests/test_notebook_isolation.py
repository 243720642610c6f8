"""Isolated notebooks: models run in the environment their PEP 723 header (or folder pyproject.toml) declares, built
with uv and cached, through Dagster Pipes, and report exactly what an in-process run reports.

The package the notebooks pin is `tomli-w`, small and pure Python, which the test environment does not have: each
model asserts the version it sees, so a model that ran in the code location's environment would fail.
"""

from __future__ import annotations

import importlib.util
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

import dagster_lakehouse.dagster as layer
from dagster_lakehouse import Lakehouse
from dagster_lakehouse.isolation.environments import HOME_VARIABLE, UV_VARIABLE, read_manifest
from dagster_lakehouse.isolation.errors import IsolatedModelError, NotebookEnvironmentError, UvNotFound
from dagster_lakehouse.lakehouse.errors import ProtectedBranchError
from dagster_lakehouse.notebook import NotebookLoadError, load_notebook_assets

PACKAGE = "tomli-w"


def notebook(folder: Path, name: str, body: str, *, header: list[str] | None = None, setup: str = "") -> Path:
    """A marimo notebook `name`.py with a PEP 723 header declaring `header` (none when None)."""
    lines = []
    if header is not None:
        lines += ["# /// script", f"# dependencies = {header!r}".replace("'", '"'), "# ///"]
    lines += ["import marimo", "", "app = marimo.App()", "", "with app.setup:", "    from importlib import metadata", ""]
    lines += ["    import polars as pl", *(f"    {line}" for line in textwrap.dedent(setup).strip().splitlines())]
    lines += ["", "    from dagster_lakehouse import Input, model", "", ""]
    path = folder / f"{name}.py"
    path.write_text("\n".join(lines) + textwrap.dedent(body).strip() + "\n")
    return path


def version_model(name: str, version: str) -> str:
    return f'''
    @app.function
    @model
    def {name}(trips=Input("raw.trips", columns=["trip_miles"])) -> pl.DataFrame:
        seen = metadata.version("{PACKAGE}")
        assert seen == "{version}", f"expected {PACKAGE} {version}, got {{seen}}"
        import tomli_w

        return trips.with_columns(version=pl.lit(seen), toml=pl.lit(tomli_w.dumps({{"v": seen}}).strip()))
    '''


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh environment cache for the test (uv's own download cache stays shared)."""
    folder = tmp_path / "environments"
    monkeypatch.setenv(HOME_VARIABLE, str(folder))
    return folder


@pytest.fixture
def seeded(tmp_path) -> Path:
    path = tmp_path / "lakehouse"
    lakehouse = Lakehouse.local(path)
    trips = pl.DataFrame({"trip_miles": [1.5, 3.0, 0.5], "fare": [10.0, 20.0, 7.5], "vendor": ["a", "b", "c"]})
    lakehouse.write("raw.trips", trips, branch="main", allow_main=True)
    return path


def io_manager_for(path: Path, branch: str | None = "dev", **config) -> layer.LakehouseIOManager:
    return layer.LakehouseIOManager(lakehouse=layer.LakehouseResource(path=str(path), branch=branch, **config))


def materialization(result: dg.ExecuteInProcessResult, key: list[str]) -> dg.AssetMaterialization:
    (found,) = [
        e.event_specific_data.materialization
        for e in result.all_events
        if e.event_type_value == "ASSET_MATERIALIZATION" and e.event_specific_data.materialization.asset_key.path == key
    ]
    return found


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    return "\n".join(
        f"{e.event_specific_data.error.cls_name}: {e.event_specific_data.error.to_string()}"
        for e in result.all_events
        if e.event_type_value == "STEP_FAILURE"
    )


def uv_log(tmp_path: Path, monkeypatch) -> Path:
    """Route every uv call through a script that logs its arguments, then runs the real uv."""
    from dagster_lakehouse.isolation.environments import find_uv

    real = find_uv()
    log = tmp_path / "uv-calls.log"
    wrapper = tmp_path / "uv-logging"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {log}\nexec {real} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv(UV_VARIABLE, str(wrapper))
    log.touch()
    return log


def test_two_notebooks_pinning_different_versions_materialize_in_one_run(tmp_path, home, seeded):
    assert importlib.util.find_spec("tomli_w") is None, "the Dagster process must have neither version"
    old = notebook(tmp_path, "old", version_model("old_version", "1.0.0"), header=[f"{PACKAGE}==1.0.0", "polars"])
    new = notebook(tmp_path, "new", version_model("new_version", "1.1.0"), header=[f"{PACKAGE}==1.1.0", "polars"])
    assets = load_notebook_assets([old, new], isolated=True)

    result = dg.materialize(assets, resources={"io_manager": io_manager_for(seeded)}, raise_on_error=False)

    assert result.success, failure_text(result)
    lakehouse = Lakehouse.local(seeded)
    assert lakehouse.read("old.old_version", ref="dev")["toml"].unique().to_list() == ['v = "1.0.0"']
    assert lakehouse.read("new.new_version", ref="dev")["toml"].unique().to_list() == ['v = "1.1.0"']
    assert not lakehouse.exists("old.old_version", ref="main")
    hashes = {materialization(result, [n, f"{n}_version"]).metadata["lakehouse/environment"].value for n in ("old", "new")}
    assert len(hashes) == 2
    assert "tomli_w" not in sys.modules


def test_environment_is_built_once_reused_and_rebuilt_when_the_header_changes(tmp_path, home, seeded, monkeypatch):
    calls = uv_log(tmp_path, monkeypatch)
    path = notebook(tmp_path, "pinned", version_model("pinned", "1.0.0"), header=[f"{PACKAGE}==1.0.0", "polars"])
    io_manager = io_manager_for(seeded)

    first = dg.materialize(load_notebook_assets(path, isolated=True), resources={"io_manager": io_manager})
    built = materialization(first, ["pinned", "pinned"]).metadata
    first_calls = calls.read_text().splitlines()
    assert any(c.startswith("pip compile") for c in first_calls) and any(c.startswith("pip install") for c in first_calls)
    assert built["lakehouse/environment_cache_hit"].value is False

    second = dg.materialize(load_notebook_assets(path, isolated=True), resources={"io_manager": io_manager})
    reused = materialization(second, ["pinned", "pinned"]).metadata
    assert calls.read_text().splitlines() == first_calls, "a second run must not call uv at all (no resolution)"
    assert reused["lakehouse/environment_cache_hit"].value is True
    assert reused["lakehouse/environment"].value == built["lakehouse/environment"].value
    packages = reused["lakehouse/environment_packages"].value["packages"]
    assert f"{PACKAGE}==1.0.0" in packages and any(p.startswith("pyiceberg==") for p in packages)
    assert not any(p.startswith("dagster==") for p in packages), "the model's process needs dagster-pipes, not Dagster"
    env_path = home / "envs" / reused["lakehouse/environment"].value
    assert read_manifest(env_path)["packages"] == packages

    path.write_text(path.read_text().replace(f"{PACKAGE}==1.0.0", f"{PACKAGE}==1.2.0").replace('"1.0.0"', '"1.2.0"'))
    third = dg.materialize(load_notebook_assets(path, isolated=True), resources={"io_manager": io_manager})
    rebuilt = materialization(third, ["pinned", "pinned"]).metadata
    assert rebuilt["lakehouse/environment"].value != built["lakehouse/environment"].value
    assert rebuilt["lakehouse/environment_cache_hit"].value is False
    assert sum(c.startswith("pip compile") for c in calls.read_text().splitlines()) == 2
    assert Lakehouse.local(seeded).read("pinned.pinned", ref="dev")["version"].unique().to_list() == ["1.2.0"]


def test_notebooks_declaring_the_same_set_share_one_environment(tmp_path, home, seeded):
    header = [f"{PACKAGE}==1.1.0", "polars"]
    one = notebook(tmp_path, "one", version_model("first", "1.1.0"), header=header)
    two = notebook(tmp_path, "two", version_model("second", "1.1.0"), header=header)
    result = dg.materialize(load_notebook_assets([one, two], isolated=True), resources={"io_manager": io_manager_for(seeded)})
    assert result.success
    hashes = {materialization(result, [n, m]).metadata["lakehouse/environment"].value for n, m in (("one", "first"), ("two", "second"))}
    assert len(hashes) == 1
    assert [p.name for p in (home / "envs").iterdir() if p.is_dir()] == list(hashes)


MODEL_FOR_EQUALITY = '''
@app.function
@model(inputs={"trips": Input("raw.trips", columns=["trip_miles", "fare"], filter="fare > 8")})
def fares(trips: pl.DataFrame) -> pl.DataFrame:
    """Fares per mile, passed through and computed."""
    return trips.with_columns(per_mile=pl.col("fare") / pl.col("trip_miles"))
'''

RUN_SPECIFIC = {"lakehouse/snapshot_id", "lakehouse/commit_id", "lakehouse/metadata_location", "lakehouse/branch"}


def test_output_metadata_and_data_version_equal_those_of_the_in_process_run(tmp_path, home, seeded):
    path = notebook(tmp_path, "equal", MODEL_FOR_EQUALITY, header=["polars"])
    in_process = dg.materialize(load_notebook_assets(path), resources={"io_manager": io_manager_for(seeded, "inproc")})
    isolated = dg.materialize(
        load_notebook_assets(path, isolated=True), resources={"io_manager": io_manager_for(seeded, "isolated")}
    )
    a = materialization(in_process, ["equal", "fares"])
    b = materialization(isolated, ["equal", "fares"])

    assert set(a.metadata) <= set(b.metadata)
    assert {k for k in b.metadata if k not in a.metadata} == {
        "lakehouse/environment", "lakehouse/environment_declared_in", "lakehouse/environment_packages",
        "lakehouse/environment_cache_hit", "lakehouse/environment_seconds",
    }  # fmt: skip
    for key in set(a.metadata) - RUN_SPECIFIC:
        assert a.metadata[key] == b.metadata[key], key
    assert "dagster/column_lineage" in b.metadata and "dagster/column_schema" in b.metadata
    assert b.metadata["dagster/row_count"].value == 2
    lakehouse = Lakehouse.local(seeded)
    for result, event, branch in ((in_process, a, "inproc"), (isolated, b, "isolated")):
        snapshot = lakehouse.table("equal.fares", branch).current_snapshot().snapshot_id
        assert event.metadata["lakehouse/snapshot_id"].value == snapshot
        assert event.metadata["lakehouse/branch"].value == branch
        assert event.tags["dagster/data_version"] == str(snapshot)
    assert lakehouse.read("equal.fares", ref="inproc").equals(lakehouse.read("equal.fares", ref="isolated"))


def test_definitions_load_without_the_notebooks_packages_installed(tmp_path, home):
    path = notebook(
        tmp_path,
        "exotic",
        '''
        @app.function
        @model(inputs={"trips": Input("raw.trips")})
        def shaped(trips: some_missing_package.Frame) -> tomli_w.Whatever | None:
            return some_missing_package.shape(trips)
        ''',
        header=["some-missing-package", f"{PACKAGE}==1.0.0"],
        setup="import some_missing_package\nimport tomli_w\nfrom some_missing_package.sub import helper\nLIMIT = helper(3) + 1",
    )
    with pytest.raises(NotebookLoadError, match="some-missing-package"):
        load_notebook_assets(path)  # in-process: the header is checked against this environment

    assets = load_notebook_assets(path, isolated=True)

    (asset,) = [a for a in assets if isinstance(a, dg.AssetsDefinition)]
    assert asset.key.path == ["exotic", "shaped"]
    assert {dep.asset_key.path[-1] for dep in asset.specs_by_key[asset.key].deps} == {"trips"}
    assert asset.specs_by_key[asset.key].metadata["lakehouse/isolated"] is True
    assert "some_missing_package" not in sys.modules and "tomli_w" not in sys.modules
    assert importlib.util.find_spec("some_missing_package") is None  # no placeholder leaks to other code


def test_a_header_flag_isolates_its_notebook(tmp_path, home):
    path = tmp_path / "flagged.py"
    notebook(tmp_path, "flagged", version_model("flagged", "1.0.0"), header=[f"{PACKAGE}==1.0.0"])
    text = path.read_text().replace("# ///\n", "#\n# [tool.dagster-lakehouse]\n# isolated = true\n# ///\n", 1)
    path.write_text(text)
    (asset,) = [a for a in load_notebook_assets(path) if isinstance(a, dg.AssetsDefinition)]
    assert asset.specs_by_key[asset.key].metadata["lakehouse/isolated"] is True


def test_a_failing_model_shows_its_traceback_with_notebook_line(tmp_path, home, seeded):
    path = notebook(
        tmp_path,
        "broken",
        '''
        @app.function
        @model
        def broken(trips=Input("raw.trips")) -> pl.DataFrame:
            total = trips["fare"].sum()
            raise ValueError(f"fares add up to {total}, refusing")
        ''',
        header=["polars"],
    )
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if "raise ValueError" in text)
    result = dg.materialize(
        load_notebook_assets(path, isolated=True), resources={"io_manager": io_manager_for(seeded)}, raise_on_error=False
    )
    assert not result.success
    text = failure_text(result)
    assert "IsolatedModelError" in text
    assert f"model 'broken' failed at {path}:{line}" in text
    assert "ValueError: fares add up to 37.5, refusing" in text
    assert f'File "{path}", line {line}, in broken' in text
    assert not Lakehouse.local(seeded).exists("broken.broken", ref="dev")


def test_a_model_importing_an_undeclared_package_is_named(tmp_path, home, seeded):
    path = notebook(
        tmp_path,
        "undeclared",
        '''
        @app.function
        @model
        def undeclared(trips=Input("raw.trips")) -> pl.DataFrame:
            import tomli_w

            return trips
        ''',
        header=["polars"],
    )
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if "import tomli_w" in text)
    result = dg.materialize(
        load_notebook_assets(path, isolated=True), resources={"io_manager": io_manager_for(seeded)}, raise_on_error=False
    )
    text = failure_text(result)
    assert "NotebookLoadError" in text and f"{path}:{line}" in text
    assert "module 'tomli_w', imported by model function undeclared(), is not installed" in text
    assert "Declare the package that provides it in the notebook's PEP 723 header" in text


def test_a_header_that_does_not_resolve_is_named(tmp_path, home, seeded):
    path = notebook(tmp_path, "unresolvable", version_model("unresolvable", "0"), header=[f"{PACKAGE}==999.0.0"])
    result = dg.materialize(
        load_notebook_assets(path, isolated=True), resources={"io_manager": io_manager_for(seeded)}, raise_on_error=False
    )
    text = failure_text(result)
    assert "NotebookEnvironmentError" in text and f"{path}:1" in text
    assert "declared dependencies do not resolve" in text and "tomli-w" in text


def test_uv_missing_or_offline_is_named(tmp_path, home, seeded, monkeypatch):
    path = notebook(tmp_path, "offline", version_model("offline", "1.0.0"), header=[f"{PACKAGE}==1.0.0"])
    assets = load_notebook_assets(path, isolated=True)
    monkeypatch.setenv(UV_VARIABLE, str(tmp_path / "no-such-uv"))
    result = dg.materialize(assets, resources={"io_manager": io_manager_for(seeded)}, raise_on_error=False)
    assert "UvNotFound" in failure_text(result) and "no-such-uv" in failure_text(result)

    monkeypatch.delenv(UV_VARIABLE)
    monkeypatch.setenv("UV_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("UV_NO_CACHE", "1")
    result = dg.materialize(assets, resources={"io_manager": io_manager_for(seeded)}, raise_on_error=False)
    text = failure_text(result)
    assert "NotebookEnvironmentError" in text and "could not reach the package index (offline?)" in text
    assert not (home / "envs").exists() or not [p for p in (home / "envs").iterdir() if p.is_dir()]


def test_a_write_to_protected_main_is_refused_before_the_environment_is_built(tmp_path, home, seeded):
    path = notebook(tmp_path, "guarded", version_model("guarded", "1.0.0"), header=[f"{PACKAGE}==1.0.0"])
    result = dg.materialize(
        load_notebook_assets(path, isolated=True), resources={"io_manager": io_manager_for(seeded, None)},
        raise_on_error=False,
    )  # fmt: skip
    assert ProtectedBranchError.__name__ in failure_text(result)
    assert not home.exists(), "nothing is resolved or built for a write that cannot happen"


def test_a_folder_pyproject_defines_the_environment_of_the_notebooks_below_it(tmp_path, home, seeded):
    folder = tmp_path / "shared"
    (folder / "sub").mkdir(parents=True)
    (folder / "pyproject.toml").write_text(
        f'[project]\nname = "shared-notebooks"\nversion = "0"\nrequires-python = ">=3.11"\n'
        f'dependencies = ["{PACKAGE}==1.1.0", "polars"]\n'
    )
    one = notebook(folder, "one", version_model("first", "1.1.0"))
    two = notebook(folder / "sub", "two", version_model("second", "1.1.0"))
    result = dg.materialize(load_notebook_assets([one, two], isolated=True), resources={"io_manager": io_manager_for(seeded)})
    first = materialization(result, ["one", "first"]).metadata
    second = materialization(result, ["two", "second"]).metadata
    assert first["lakehouse/environment"].value == second["lakehouse/environment"].value
    assert first["lakehouse/environment_declared_in"].value == str(folder / "pyproject.toml")


def test_a_folder_lock_pins_the_environment(tmp_path, home, seeded):
    """The lock (made as of 2023, when tomli-w 1.0.0 was newest) wins over what `tomli-w<2` resolves to today."""
    from dagster_lakehouse.isolation.environments import find_uv

    folder = tmp_path / "locked"
    folder.mkdir()
    (folder / "pyproject.toml").write_text(
        f'[project]\nname = "locked-notebooks"\nversion = "0"\nrequires-python = ">=3.11"\n'
        f'dependencies = ["{PACKAGE}<2"]\n'
    )
    subprocess.run(
        [find_uv(), "lock", "--quiet"], cwd=folder, check=True, env={**os.environ, "UV_EXCLUDE_NEWER": "2023-01-01T00:00:00Z"}
    )
    path = notebook(folder, "locked", version_model("locked", "1.0.0"))
    result = dg.materialize(load_notebook_assets(path, isolated=True), resources={"io_manager": io_manager_for(seeded)})
    packages = materialization(result, ["locked", "locked"]).metadata["lakehouse/environment_packages"].value
    assert f"{PACKAGE}==1.0.0" in packages["packages"]


@pytest.mark.parametrize("isolated", [True, ["rev*.py"]])
def test_the_component_isolates_every_notebook_or_those_listed(tmp_path, isolated):
    import shutil

    import yaml
    from dagster.components.testing import create_defs_folder_sandbox

    notebooks = Path(__file__).parent / "notebooks"
    with create_defs_folder_sandbox() as sandbox:
        folder = sandbox.defs_folder_path / "notebooks"
        folder.mkdir()
        shutil.copy(notebooks / "taxi.py", folder / "taxi.py")
        shutil.copy(notebooks / "revenue.py", folder / "revenue.py")
        attributes = {"path": "*.py", "branch": "dev", "lakehouse_path": str(tmp_path / "lh"), "isolated": isolated}
        (folder / "defs.yaml").write_text(yaml.safe_dump({"type": "dagster_lakehouse.NotebookComponent", "attributes": attributes}))
        with sandbox.load_component_and_build_defs(defs_path=folder) as (_, defs):
            flags = {
                key.to_user_string(): defs.resolve_assets_def(key).specs_by_key[key].metadata.get("lakehouse/isolated", False)
                for key in (dg.AssetKey(["taxi", "trips_and_zones"]), dg.AssetKey(["finance", "revenue_share"]))
            }
    assert flags == {"taxi/trips_and_zones": isolated is True, "finance/revenue_share": True}


def test_a_header_naming_dagster_lakehouse_uses_this_installation(tmp_path, home, seeded):
    path = notebook(tmp_path, "own", version_model("own", "1.0.0"), header=[f"{PACKAGE}==1.0.0", "dagster-lakehouse>=0.1"])
    result = dg.materialize(load_notebook_assets(path, isolated=True), resources={"io_manager": io_manager_for(seeded)})
    packages = materialization(result, ["own", "own"]).metadata["lakehouse/environment_packages"].value["packages"]
    assert not any(p.startswith("dagster-lakehouse") for p in packages)  # linked from the code location, not installed

    path.write_text(path.read_text().replace("dagster-lakehouse>=0.1", "dagster-lakehouse>=99"))
    result = dg.materialize(
        load_notebook_assets(path, isolated=True), resources={"io_manager": io_manager_for(seeded)}, raise_on_error=False
    )
    text = failure_text(result)
    assert "NotebookEnvironmentError" in text and "dagster-lakehouse>=99" in text and "code location runs dagster-lakehouse" in text


def test_requires_python_is_checked_against_the_code_locations_python(tmp_path, home, seeded):
    path = notebook(tmp_path, "future", version_model("future", "1.0.0"), header=[f"{PACKAGE}==1.0.0"])
    path.write_text(path.read_text().replace("# ///\n", '# requires-python = ">=3.99"\n# ///\n', 1))
    result = dg.materialize(
        load_notebook_assets(path, isolated=True), resources={"io_manager": io_manager_for(seeded)}, raise_on_error=False
    )
    text = failure_text(result)
    assert "requires Python >=3.99" in text and "isolated environments use the code location's Python" in text


def test_an_isolated_model_reads_and_writes_postgresql_and_s3_itself(tmp_path, home, pg_s3_backend):
    backend = pg_s3_backend
    lakehouse = Lakehouse(backend.catalog_uri, backend.warehouse, dict(backend.properties))
    lakehouse.write("raw.trips", pl.DataFrame({"trip_miles": [1.0, 2.0, 4.0]}), branch="main", allow_main=True)
    path = notebook(tmp_path, "remote", version_model("remote", "1.1.0"), header=[f"{PACKAGE}==1.1.0", "polars"])
    resource = layer.LakehouseResource(
        catalog_uri=backend.catalog_uri, warehouse=backend.warehouse, properties=dict(backend.properties), branch="dev"
    )
    result = dg.materialize(
        load_notebook_assets(path, isolated=True), resources={"io_manager": layer.LakehouseIOManager(lakehouse=resource)}
    )
    event = materialization(result, ["remote", "remote"])
    written = lakehouse.read("remote.remote", ref="dev")
    assert written["version"].unique().to_list() == ["1.1.0"] and written.height == 3
    assert event.metadata["lakehouse/uri"].value.startswith(backend.warehouse)
    assert event.tags["dagster/data_version"] == str(lakehouse.table("remote.remote", "dev").current_snapshot().snapshot_id)
    (entry,) = [c for c in lakehouse.log("dev") if "remote.remote" in c.tables]
    assert entry.run_id == result.run_id  # the commit log records the run, written by the model's process
    lakehouse.close()


def test_a_write_audit_publish_run_writes_its_own_branch(tmp_path, home, seeded):
    path = notebook(tmp_path, "audited", version_model("audited", "1.0.0"), header=[f"{PACKAGE}==1.0.0", "polars"])
    result = dg.materialize(
        load_notebook_assets(path, isolated=True), resources={"io_manager": io_manager_for(seeded, "dev", wap=True)}
    )
    lakehouse = Lakehouse.local(seeded)
    assert lakehouse.exists("audited.audited", ref=f"wap/{result.run_id}")
    assert not lakehouse.exists("audited.audited", ref="dev")
    assert materialization(result, ["audited", "audited"]).metadata["lakehouse/branch"].value == f"wap/{result.run_id}"


def test_the_declared_environment_is_part_of_an_isolated_models_code_version(tmp_path, home):
    path = notebook(tmp_path, "versioned", version_model("versioned", "1.0.0"), header=[f"{PACKAGE}==1.0.0"])

    def code_version() -> str:
        (asset,) = [a for a in load_notebook_assets(path, isolated=True) if isinstance(a, dg.AssetsDefinition)]
        return asset.code_versions_by_key[asset.key]

    before = code_version()
    assert code_version() == before
    path.write_text(path.read_text().replace(f"{PACKAGE}==1.0.0", f"{PACKAGE}==1.1.0", 1))
    assert code_version() != before


def test_isolating_a_notebook_that_is_not_loaded_is_an_error(tmp_path, home):
    path = notebook(tmp_path, "loaded", version_model("loaded", "1.0.0"), header=[f"{PACKAGE}==1.0.0"])
    with pytest.raises(NotebookLoadError, match=r"isolated names .*elsewhere\.py, which is not among the notebooks loaded"):
        load_notebook_assets(path, isolated=[tmp_path / "elsewhere.py"])
