"""`NotebookComponent`: notebooks from a defs.yaml, bound to the lakehouse IO manager; `dg` sees it."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster.components.testing import create_defs_folder_sandbox

from dagster_lakehouse.dagster import LakehouseIOManager, LakehouseResource
from dagster_lakehouse.notebook import NotebookComponent, NotebookLoadError

NOTEBOOKS = Path(__file__).parent / "notebooks"
PROJECT = NOTEBOOKS / "dg_project"
DG = Path(sys.executable).parent / "dg"


def test_path_is_a_file_or_a_glob_relative_to_the_defs_folder(tmp_path):
    for name in ("b.py", "a.py", "notes.txt"):
        (tmp_path / name).write_text("")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.py").write_text("")

    assert NotebookComponent(path="a.py").notebook_paths(tmp_path) == [tmp_path / "a.py"]
    assert NotebookComponent(path="*.py").notebook_paths(tmp_path) == [tmp_path / "a.py", tmp_path / "b.py"]
    assert NotebookComponent(path="**/*.py").notebook_paths(tmp_path) == [
        tmp_path / "a.py",
        tmp_path / "b.py",
        tmp_path / "sub" / "c.py",
    ]
    assert NotebookComponent(path="../*.py").notebook_paths(tmp_path / "sub") == [tmp_path / "a.py", tmp_path / "b.py"]
    assert NotebookComponent(path=str(tmp_path / "b.py")).notebook_paths(NOTEBOOKS) == [tmp_path / "b.py"]
    with pytest.raises(NotebookLoadError, match="no notebook matches 'missing/\\*.py'"):
        NotebookComponent(path="missing/*.py").notebook_paths(tmp_path)


def test_fields_and_defaults():
    component = NotebookComponent(path="taxi.py")
    assert (component.group_name, component.key_prefix, component.branch) == (None, None, None)
    assert (component.lakehouse_path, component.catalog_uri, component.warehouse) == (".lakehouse", None, None)
    schema = NotebookComponent.get_model_cls().model_json_schema()
    assert {"path", "group_name", "key_prefix", "branch", "lakehouse_path", "catalog_uri", "warehouse"} <= set(
        schema["properties"]
    )


def test_build_defs_loads_the_notebooks_with_a_lakehouse_io_manager(tmp_path):
    with create_defs_folder_sandbox() as sandbox:
        folder = sandbox.defs_folder_path / "notebooks"
        folder.mkdir()
        shutil.copy(NOTEBOOKS / "taxi.py", folder / "taxi.py")
        shutil.copy(NOTEBOOKS / "revenue.py", folder / "revenue.py")
        attributes = {
            "path": "*.py",
            "group_name": "notebooks",
            "branch": "dev",
            "lakehouse_path": str(tmp_path / "lh"),
            "properties": {"s3.region": "eu-west-1"},
            "wap": True,
        }
        (folder / "defs.yaml").write_text(
            yaml.safe_dump({"type": "dagster_lakehouse.NotebookComponent", "attributes": attributes})
        )
        with sandbox.load_component_and_build_defs(defs_path=folder) as (component, defs):
            assert isinstance(component, NotebookComponent)
            keys = {tuple(k.path) for k in defs.resolve_asset_graph().get_all_asset_keys()}
            joined = defs.resolve_assets_def(dg.AssetKey(["taxi", "trips_and_zones"]))

    assert keys == {
        ("raw", "trips"),
        ("raw", "zones"),
        ("taxi", "trips_and_zones"),
        ("taxi", "borough_fares"),
        ("finance", "revenue_share"),
    }
    assert joined.group_names_by_key[joined.key] == "notebooks"
    io_manager = defs.resources["io_manager"]
    assert isinstance(io_manager, LakehouseIOManager)
    assert isinstance(io_manager.lakehouse, LakehouseResource)
    assert io_manager.lakehouse.branch == "dev"
    assert io_manager.lakehouse.path == str(tmp_path / "lh")
    assert defs.resources["lakehouse"] == io_manager.lakehouse  # sensors take the resource `lakehouse`
    assert io_manager.lakehouse.wap and not io_manager.lakehouse.allow_main
    assert io_manager.lakehouse.properties == {"s3.region": "eu-west-1"}


def _run_dg(*args: str, cwd: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "DAGSTER_DISABLE_TELEMETRY": "1",
    }
    (tmp_path / "dagster_home").mkdir(exist_ok=True)
    (tmp_path / "dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return subprocess.run([str(DG), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_dagster_lakehouse_exports_the_component():
    package = importlib.import_module("dagster_lakehouse")
    assert package.NotebookComponent is NotebookComponent
    assert package.model is importlib.import_module("dagster_lakehouse.notebook").model


def test_dg_list_components_shows_the_notebook_component(tmp_path):
    project = tmp_path / "project"
    shutil.copytree(PROJECT, project)
    result = _run_dg("list", "components", "--json", cwd=project, tmp_path=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "dagster_lakehouse.NotebookComponent" in result.stdout


def test_dg_check_defs_on_a_sample_project(tmp_path):
    project = tmp_path / "project"
    shutil.copytree(PROJECT, project)
    defs_yaml = project / "notebook_project" / "defs" / "rides" / "defs.yaml"
    assert yaml.safe_load(defs_yaml.read_text())["type"] == "dagster_lakehouse.NotebookComponent"

    result = _run_dg("check", "defs", cwd=project, tmp_path=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr

    listed = _run_dg("list", "defs", "--json", cwd=project, tmp_path=tmp_path)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "km_per_city" in listed.stdout and "raw/rides" in listed.stdout


def test_dg_check_defs_reports_a_broken_notebook_with_file_and_line(tmp_path):
    project = tmp_path / "project"
    shutil.copytree(PROJECT, project)
    notebook = project / "notebook_project" / "defs" / "rides" / "rides.py"
    notebook.write_text(notebook.read_text().replace('Input("raw.rides"', 'Input("rides"'))

    result = _run_dg("check", "defs", cwd=project, tmp_path=tmp_path)
    assert result.returncode != 0
    line = next(n for n, text in enumerate(notebook.read_text().splitlines(), 1) if 'Input("rides"' in text)
    assert f"rides.py:{line}: Input('rides')" in result.stdout + result.stderr
