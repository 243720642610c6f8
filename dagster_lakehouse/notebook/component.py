"""`NotebookComponent`: marimo notebooks as Dagster assets from a `defs.yaml`, with the lakehouse IO manager."""

import os
from pathlib import Path

import dagster as dg
from pydantic import Field

from dagster_lakehouse.notebook.errors import NotebookLoadError
from dagster_lakehouse.notebook.loader import load_notebook_assets


class NotebookComponent(dg.Component, dg.Model, dg.Resolvable):
    """marimo notebooks whose `@model` functions become assets, written to the lakehouse on a branch.

    ```yaml
    type: dagster_lakehouse.NotebookComponent
    attributes:
      path: notebooks/*.py
      branch: dev
    ```
    """

    path: str = Field(description="A notebook file or glob, relative to the folder of this defs.yaml.")
    group_name: str | None = Field(default=None, description="Asset group; defaults to each notebook's stem.")
    key_prefix: str | None = Field(
        default=None, description="Namespace the models write to; defaults to each notebook's stem."
    )
    branch: str | None = Field(default=None, description="Default lakehouse branch of a run.")
    lakehouse_path: str = Field(
        default=".lakehouse", description="Folder of the embedded local lakehouse (no catalog_uri), relative to the working directory."
    )
    catalog_uri: str | None = Field(default=None, description="SQL catalog URI, e.g. postgresql+psycopg://...")
    warehouse: str | None = Field(default=None, description="Warehouse location, e.g. s3://bucket/prefix.")
    properties: dict[str, str] = Field(
        default_factory=dict, description="PyIceberg FileIO properties, e.g. s3.endpoint and s3.region."
    )
    allow_main: bool = Field(default=False, description="Allow runs to write to the protected branch 'main'.")
    wap: bool = Field(default=False, description="Write-audit-publish: every run builds on its own branch.")
    isolated: bool | list[str] = Field(
        default=False,
        description="Run models in the environment their notebook declares (PEP 723 header, or a pyproject.toml in "
        "its folder or above), built with uv and cached, through Dagster Pipes: true for every notebook, or a list of "
        "notebook files or globs (relative to this defs.yaml) to isolate. Their packages need not be installed in "
        "the code location.",
    )

    def notebook_paths(self, folder: Path, path: str | None = None) -> list[Path]:
        """The notebook files `path` (default: the `path` field) names, relative to `folder` unless absolute; a glob
        matching nothing is an error."""
        path = self.path if path is None else path
        pattern = Path(path).expanduser()
        if not pattern.is_absolute():
            pattern = Path(os.path.normpath(folder / pattern))
        if not any(c in path for c in "*?["):
            return [pattern]
        anchor = Path(pattern.anchor)
        matches = sorted(p for p in anchor.glob(str(pattern.relative_to(anchor))) if p.is_file())
        if not matches:
            raise NotebookLoadError(f"NotebookComponent: no notebook matches {path!r} in {folder}")
        return matches

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        """Load the notebooks' assets and bind them to a lakehouse IO manager on the configured branch."""
        from dagster_lakehouse.dagster import LakehouseIOManager, LakehouseResource

        folder = Path(context.path)
        isolated = (
            self.isolated
            if isinstance(self.isolated, bool)
            else [p for pattern in self.isolated for p in self.notebook_paths(folder, pattern)]
        )
        assets = load_notebook_assets(
            self.notebook_paths(folder),
            key_prefix=self.key_prefix,
            group_name=self.group_name,
            isolated=isolated,
        )
        lakehouse = LakehouseResource(
            catalog_uri=self.catalog_uri,
            warehouse=self.warehouse,
            path=self.lakehouse_path,
            properties=dict(self.properties),
            branch=self.branch,
            allow_main=self.allow_main,
            wap=self.wap,
        )
        return dg.Definitions(
            assets=assets,
            resources={"lakehouse": lakehouse, "io_manager": LakehouseIOManager(lakehouse=lakehouse)},
        )
