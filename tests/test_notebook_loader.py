"""`load_notebook_assets` on real marimo files: keys, lineage, code versions, metadata, and a real run."""

from __future__ import annotations

import shutil
import sys
import textwrap
from pathlib import Path

import dagster as dg
import polars as pl
import pyarrow as pa
import pytest

from dagster_lakehouse.notebook import load_notebook_assets
from dagster_lakehouse.notebook.importer import module_name_for

NOTEBOOKS = Path(__file__).parent / "notebooks"
TAXI = NOTEBOOKS / "taxi.py"
REVENUE = NOTEBOOKS / "revenue.py"
IMPORT_LINE = "from dagster_lakehouse import Input, model"


def write_notebook(folder: Path, name: str, cells: str, *, dependencies=("polars>=1.0",), setup: str = "") -> Path:
    """Write a marimo notebook `name`.py whose function cells are `cells` (setup imports polars and our API)."""
    header = "# /// script\n# dependencies = [" + ", ".join(f'"{d}"' for d in dependencies) + "]\n# ///\n"
    setup_lines = "".join(f"    {line}\n" for line in textwrap.dedent(setup).splitlines())
    text = (
        f"{header}\nimport marimo\n\n__generated_with = \"0.25.2\"\napp = marimo.App()\n\n"
        f"with app.setup:\n    import polars as pl\n\n    {IMPORT_LINE}\n{setup_lines}\n\n"
        f"{textwrap.dedent(cells).strip()}\n\n\nif __name__ == \"__main__\":\n    app.run()\n"
    )
    path = folder / f"{name}.py"
    path.write_text(text)
    return path


def line_of(path: Path, snippet: str) -> int:
    """1-based number of the first line of `path` that contains `snippet`."""
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if snippet in line:
            return number
    raise AssertionError(f"{snippet!r} not in {path}")


def by_key(assets) -> dict[tuple[str, ...], dg.AssetsDefinition | dg.AssetSpec]:
    return {tuple(a.key.path): a for a in assets}


def spec_of(asset: dg.AssetsDefinition) -> dg.AssetSpec:
    return asset.specs_by_key[asset.key]


@pytest.fixture(scope="module")
def fixture_assets():
    return by_key(load_notebook_assets([TAXI, REVENUE]))


# --- keys, lineage, types, metadata ------------------------------------------------------------------


def test_models_become_assets_and_tables_become_external_specs(fixture_assets):
    assert set(fixture_assets) == {
        ("raw", "trips"),
        ("raw", "zones"),
        ("taxi", "trips_and_zones"),
        ("taxi", "borough_fares"),
        ("finance", "revenue_share"),
    }
    for key in [("raw", "trips"), ("raw", "zones")]:
        table = fixture_assets[key]
        assert isinstance(table, dg.AssetSpec)
        assert table.metadata == {"lakehouse/table": ".".join(key)}
        assert table.kinds == {"iceberg"}
        assert table.group_name == "lakehouse_tables"
        assert table.description
    for key in [("taxi", "trips_and_zones"), ("taxi", "borough_fares"), ("finance", "revenue_share")]:
        assert isinstance(fixture_assets[key], dg.AssetsDefinition)


def test_lineage_runs_from_raw_tables_through_models_across_notebooks(fixture_assets):
    deps = {}
    for asset in fixture_assets.values():
        if isinstance(asset, dg.AssetsDefinition):
            deps[tuple(asset.key.path)] = {tuple(k.path) for k in asset.asset_deps[asset.key]}
    assert deps == {
        ("taxi", "trips_and_zones"): {("raw", "trips"), ("raw", "zones")},
        ("taxi", "borough_fares"): {("taxi", "trips_and_zones")},
        ("finance", "revenue_share"): {("taxi", "borough_fares"), ("raw", "zones")},
    }
    defs = dg.Definitions(assets=list(fixture_assets.values()))
    graph = defs.resolve_asset_graph()
    assert graph.get(dg.AssetKey(["finance", "revenue_share"])).parent_keys == {
        dg.AssetKey(["taxi", "borough_fares"]),
        dg.AssetKey(["raw", "zones"]),
    }


def test_asset_ins_carry_columns_and_filter_only_when_set(fixture_assets):
    joined = fixture_assets[("taxi", "trips_and_zones")]
    inputs = joined.node_def.input_dict
    assert joined.keys_by_input_name == {
        "trips": dg.AssetKey(["raw", "trips"]),
        "zones": dg.AssetKey(["raw", "zones"]),
    }
    assert inputs["trips"].metadata == {
        "columns": ["PULocationID", "trip_miles", "fare"],
        "filter": "trip_miles > 0",
    }
    assert inputs["zones"].metadata == {}
    share_inputs = fixture_assets[("finance", "revenue_share")].node_def.input_dict
    assert share_inputs["zones"].metadata == {"columns": ["LocationID", "Borough"]}


def test_parameter_and_return_annotations_reach_dagster_types(fixture_assets):
    joined = fixture_assets[("taxi", "trips_and_zones")].node_def
    fares = fixture_assets[("taxi", "borough_fares")].node_def
    assert joined.input_dict["trips"].dagster_type.typing_type is pl.DataFrame
    assert fares.input_dict["trips_and_zones"].dagster_type.typing_type is pl.LazyFrame
    assert fares.output_dict["result"].dagster_type.typing_type is pl.DataFrame


def test_description_group_kinds_owners_tags_and_metadata(fixture_assets):
    joined = spec_of(fixture_assets[("taxi", "trips_and_zones")])
    assert joined.description == "Trips joined to their pickup zone."
    assert joined.group_name == "taxi"
    assert joined.kinds == {"iceberg", "polars", "marimo"}
    assert joined.owners == ["team:data"]
    assert joined.tags["domain"] == "taxi"
    line = line_of(TAXI, "def trips_and_zones")
    assert joined.metadata["lakehouse/table"] == "taxi.trips_and_zones"
    assert joined.metadata["lakehouse/mode"] == "replace"
    assert joined.metadata["lakehouse/notebook"] == str(TAXI.resolve())
    assert joined.metadata["lakehouse/source"] == f"{TAXI.resolve()}:{line}"
    assert joined.metadata["lakehouse/dependencies"] == ["dagster-lakehouse", "marimo>=0.15", "polars>=1.0"]
    references = joined.metadata["dagster/code_references"]
    assert isinstance(references, dg.CodeReferencesMetadataValue)
    (reference,) = references.code_references
    assert (reference.file_path, reference.line_number) == (str(TAXI.resolve()), line)

    fares = spec_of(fixture_assets[("taxi", "borough_fares")])
    assert fares.metadata["lakehouse/mode"] == "append"
    share = spec_of(fixture_assets[("finance", "revenue_share")])
    assert share.group_name == "revenue"
    assert share.metadata["lakehouse/table"] == "finance.revenue_share"
    assert share.metadata["lakehouse/dependencies"] == ["dagster-lakehouse", "polars>=1.0"]


def test_loader_options_key_prefix_group_and_io_manager(tmp_path):
    assets = by_key(load_notebook_assets(str(TAXI), key_prefix="analytics", group_name="nightly", io_manager_key="lake"))
    assert set(assets) == {("raw", "trips"), ("raw", "zones"), ("analytics", "trips_and_zones"), ("analytics", "borough_fares")}
    joined = assets[("analytics", "trips_and_zones")]
    assert spec_of(joined).group_name == "nightly"
    assert spec_of(joined).metadata["lakehouse/table"] == "analytics.trips_and_zones"
    assert joined.get_io_manager_key_for_asset_key(joined.key) == "lake"
    assert assets[("analytics", "borough_fares")].asset_deps[dg.AssetKey(["analytics", "borough_fares"])] == {
        dg.AssetKey(["analytics", "trips_and_zones"])
    }
    trips = assets[("raw", "trips")]
    assert trips.metadata["dagster/io_manager_key"] == "lake"


def test_external_tables_are_listed_once_across_notebooks(fixture_assets):
    specs = [a for a in load_notebook_assets([TAXI, REVENUE, TAXI]) if isinstance(a, dg.AssetSpec)]
    assert sorted(tuple(s.key.path) for s in specs) == [("raw", "trips"), ("raw", "zones")]


def test_input_naming_a_model_table_makes_that_model_the_parent(tmp_path):
    write_notebook(
        tmp_path,
        "base",
        '''
        @app.function
        @model(inputs={"source": Input("raw.events")})
        def events(source: pl.DataFrame) -> pl.DataFrame:
            return source
        ''',
    )
    downstream = write_notebook(
        tmp_path,
        "report",
        '''
        @app.function
        @model(inputs={"rows": Input("base.events", columns=["id"], filter="id > 2")})
        def report(rows: pl.DataFrame) -> pl.DataFrame:
            return rows
        ''',
    )
    assets = by_key(load_notebook_assets([tmp_path / "base.py", downstream]))
    report = assets[("report", "report")]
    assert report.keys_by_input_name == {"rows": dg.AssetKey(["base", "events"])}
    assert report.node_def.input_dict["rows"].metadata == {"columns": ["id"], "filter": "id > 2"}
    assert ("base", "events") in assets and isinstance(assets[("base", "events")], dg.AssetsDefinition)
    assert not any(isinstance(a, dg.AssetSpec) and a.key.path == ["base", "events"] for a in assets.values())


def test_partitions_become_the_partitions_definition(tmp_path):
    path = write_notebook(
        tmp_path,
        "daily",
        '''
        @app.function
        @model(inputs={"events": Input("raw.events")}, partitions=DAILY)
        def daily_events(events: pl.DataFrame) -> pl.DataFrame:
            return events
        ''',
        setup='import dagster as dg\nDAILY = dg.DailyPartitionsDefinition(start_date="2024-01-01")',
    )
    (asset,) = [a for a in load_notebook_assets(path) if isinstance(a, dg.AssetsDefinition)]
    assert asset.partitions_def == dg.DailyPartitionsDefinition(start_date="2024-01-01")
    assert "lakehouse/partition_column" not in spec_of(asset).metadata


def test_partition_column_and_extra_metadata_reach_the_asset(tmp_path):
    path = write_notebook(
        tmp_path,
        "daily_days",
        '''
        @app.function
        @model(
            inputs={"events": Input("raw.events")},
            partitions=DAILY,
            partition_column="day",
            metadata={"owner_note": "nightly", "lakehouse/table": "ignored.table"},
        )
        def per_day(events: pl.DataFrame) -> pl.DataFrame:
            return events
        ''',
        setup='import dagster as dg\nDAILY = dg.DailyPartitionsDefinition(start_date="2024-01-01")',
    )
    (asset,) = [a for a in load_notebook_assets(path) if isinstance(a, dg.AssetsDefinition)]
    metadata = spec_of(asset).metadata
    assert metadata["lakehouse/partition_column"] == "day"
    assert metadata["owner_note"] == "nightly"
    assert metadata["lakehouse/table"] == "daily_days.per_day"  # the loader's keys win


def test_string_annotations_from_future_import_are_resolved(tmp_path):
    path = write_notebook(
        tmp_path,
        "future",
        '''
        @app.function
        @model(inputs={"events": Input("raw.events"), "arrow": Input("raw.arrow")})
        def lazy_events(events: "pl.LazyFrame", arrow: "pa.Table") -> "pl.DataFrame":
            return events.collect()
        ''',
        setup="import pyarrow as pa",
    )
    (asset,) = [a for a in load_notebook_assets(path) if isinstance(a, dg.AssetsDefinition)]
    assert asset.node_def.input_dict["events"].dagster_type.typing_type is pl.LazyFrame
    assert asset.node_def.input_dict["arrow"].dagster_type.typing_type is pa.Table
    assert asset.node_def.output_dict["result"].dagster_type.typing_type is pl.DataFrame


# --- import without running cells --------------------------------------------------------------------


def test_loading_runs_only_the_setup_cell(tmp_path):
    marker = tmp_path / "cell-ran"
    path = write_notebook(
        tmp_path,
        "side_effects",
        f'''
        @app.function
        @model(inputs={{"events": Input("raw.events")}})
        def events_copy(events: pl.DataFrame) -> pl.DataFrame:
            return events


        @app.cell
        def _():
            open({str(marker)!r}, "w").write("ran")
            raise RuntimeError("cells must not run at load time")
            return
        ''',
    )
    assets = load_notebook_assets(path)
    assert len(assets) == 2
    assert not marker.exists()


def test_notebook_can_import_a_module_beside_it_and_sys_path_is_restored(tmp_path):
    (tmp_path / "helpers_for_nb.py").write_text("FACTOR = 3\n")
    path = write_notebook(
        tmp_path,
        "with_helper",
        '''
        @app.function
        @model(inputs={"events": Input("raw.events")})
        def scaled(events: pl.DataFrame) -> pl.DataFrame:
            return events.with_columns(pl.col("x") * FACTOR)
        ''',
        setup="from helpers_for_nb import FACTOR",
    )
    before = list(sys.path)
    assert len(load_notebook_assets(path)) == 2
    assert sys.path == before


def test_loading_leaves_no_bytecode_beside_the_notebook(tmp_path):
    shutil.copy(TAXI, tmp_path / "taxi.py")
    load_notebook_assets(tmp_path / "taxi.py")
    assert not (tmp_path / "__pycache__").exists()


def test_two_notebooks_with_one_stem_in_different_folders_load_as_different_modules(tmp_path):
    for folder, model_name in (("a", "first"), ("b", "second")):
        (tmp_path / folder).mkdir()
        write_notebook(
            tmp_path / folder,
            "same",
            f'''
            @app.function
            @model(inputs={{"events": Input("raw.events")}})
            def {model_name}(events: pl.DataFrame) -> pl.DataFrame:
                return events
            ''',
        )
    paths = [tmp_path / "a" / "same.py", tmp_path / "b" / "same.py"]
    assert module_name_for(paths[0].resolve()) != module_name_for(paths[1].resolve())
    keys = {tuple(a.key.path) for a in load_notebook_assets(paths)}
    assert keys == {("raw", "events"), ("same", "first"), ("same", "second")}


# --- code versions -----------------------------------------------------------------------------------


def _code_versions(path: Path) -> dict[str, str]:
    return {
        a.key.path[-1]: a.code_versions_by_key[a.key]
        for a in load_notebook_assets(path)
        if isinstance(a, dg.AssetsDefinition)
    }


def test_code_version_changes_only_when_the_functions_own_source_changes(tmp_path):
    notebook = tmp_path / "taxi.py"
    shutil.copy(TAXI, notebook)
    original = _code_versions(notebook)
    assert original == _code_versions(notebook)
    assert len(set(original.values())) == 2 and all(len(v) == 64 for v in original.values())

    text = notebook.read_text()
    notebook.write_text(text.replace('.sort("Borough")', '.sort("fares")'))
    body_edit = _code_versions(notebook)
    assert body_edit["borough_fares"] != original["borough_fares"]
    assert body_edit["trips_and_zones"] == original["trips_and_zones"]

    notebook.write_text(text.replace("[1.5, 3.0, 0.5]", "[1.5, 3.0, 9.5]"))
    assert _code_versions(notebook) == original, "editing a non-model function changes no model's version"

    notebook.write_text(text.replace("@app.function\n@model(\n", "@app.function\ndef helper():\n    return 1\n\n\n@app.function\n@model(\n", 1))
    assert line_of(notebook, "def trips_and_zones") != line_of(TAXI, "def trips_and_zones")
    assert _code_versions(notebook) == original, "moving a function down the file keeps its version"

    notebook.write_text(text.replace('filter="trip_miles > 0"', 'filter="trip_miles > 1"'))
    decorator_edit = _code_versions(notebook)
    assert decorator_edit["trips_and_zones"] != original["trips_and_zones"]
    assert decorator_edit["borough_fares"] == original["borough_fares"]


# --- a real run --------------------------------------------------------------------------------------


class FrameIOManager(dg.IOManager):
    """Hands Polars frames from one asset to the next in memory; external tables come from `tables`."""

    def __init__(self, tables: dict[tuple[str, ...], pl.DataFrame]):
        self.tables = dict(tables)
        self.loads: list[tuple[tuple[str, ...], dict, type]] = []

    def handle_output(self, context: dg.OutputContext, obj: pl.DataFrame) -> None:
        assert isinstance(obj, pl.DataFrame)
        self.tables[tuple(context.asset_key.path)] = obj

    def load_input(self, context: dg.InputContext):
        key = tuple(context.asset_key.path)
        metadata = dict(context.definition_metadata or {})
        wanted = context.dagster_type.typing_type
        self.loads.append((key, metadata, wanted))
        frame = self.tables[key]
        if "columns" in metadata:
            frame = frame.select(metadata["columns"])
        return frame.lazy() if wanted is pl.LazyFrame else frame


RAW_TRIPS = pl.DataFrame(
    {"PULocationID": [1, 2, 2], "trip_miles": [1.5, 3.0, 0.5], "fare": [10.0, 20.0, 7.5], "vendor": ["a", "b", "c"]}
)
RAW_ZONES = pl.DataFrame({"LocationID": [1, 2], "Borough": ["Bronx", "Queens"], "zone": ["x", "y"]})


def test_materialize_calls_the_models_with_their_inputs():
    io = FrameIOManager({("raw", "trips"): RAW_TRIPS, ("raw", "zones"): RAW_ZONES})
    result = dg.materialize(load_notebook_assets(TAXI), resources={"io_manager": io})

    assert result.success
    joined = io.tables[("taxi", "trips_and_zones")]
    assert joined.columns == ["PULocationID", "trip_miles", "fare", "Borough", "zone"]  # trips were projected
    assert io.tables[("taxi", "borough_fares")].to_dicts() == [
        {"Borough": "Bronx", "fares": 10.0, "trips": 1},
        {"Borough": "Queens", "fares": 27.5, "trips": 2},
    ]
    assert sorted(io.loads, key=lambda load: load[0]) == [
        (("raw", "trips"), {"columns": ["PULocationID", "trip_miles", "fare"], "filter": "trip_miles > 0"}, pl.DataFrame),
        (("raw", "zones"), {}, pl.DataFrame),
        (("taxi", "trips_and_zones"), {}, pl.LazyFrame),
    ]


def test_materialize_passes_each_parameter_its_own_frame(tmp_path):
    path = write_notebook(
        tmp_path,
        "calls",
        '''
        @app.function
        @model(inputs={"left": Input("raw.left"), "right": Input("raw.right", columns=["k", "r"])})
        def joined(right: pl.DataFrame, left: pl.DataFrame) -> pl.DataFrame:
            CALLS.append(("joined", left.columns, right.columns))
            return left.join(right, on="k")


        @app.function
        @model
        def totals(joined: pl.LazyFrame) -> pl.DataFrame:
            CALLS.append(("totals", type(joined).__name__))
            return joined.select(pl.col("l").sum(), pl.col("r").sum()).collect()
        ''',
        setup="CALLS = []",
    )
    io = FrameIOManager(
        {
            ("raw", "left"): pl.DataFrame({"k": [1, 2], "l": [10, 20]}),
            ("raw", "right"): pl.DataFrame({"k": [1, 2], "r": [1, 2], "unused": [0, 0]}),
        }
    )
    assets = load_notebook_assets(path)
    assert dg.materialize(assets, resources={"io_manager": io}).success

    calls = sys.modules[module_name_for(path.resolve())].CALLS
    assert calls == [("joined", ["k", "l"], ["k", "r"]), ("totals", "LazyFrame")]
    assert io.tables[("calls", "totals")].to_dicts() == [{"l": 30, "r": 3}]


class TablesIOManager(dg.IOManager):
    """Serves external lakehouse tables only; models hand their frames through Dagster's mem_io_manager."""

    def __init__(self, tables: dict[tuple[str, ...], pl.DataFrame]):
        self.tables = tables

    def handle_output(self, context: dg.OutputContext, obj: object) -> None:
        raise AssertionError("external tables are never written by a run")

    def load_input(self, context: dg.InputContext) -> pl.DataFrame:
        return self.tables[tuple(context.asset_key.path)]


def test_materialize_with_dagsters_mem_io_manager_between_models(tmp_path):
    path = write_notebook(
        tmp_path,
        "chain",
        '''
        @app.function
        @model(inputs={"events": Input("raw.events")})
        def first(events: pl.DataFrame) -> pl.DataFrame:
            return events.with_columns(pl.col("x") + 1)


        @app.function
        @model
        def second(first: pl.DataFrame) -> pl.DataFrame:
            return first.with_columns(pl.col("x") * 10)
        ''',
    )
    assets = [
        a.with_io_manager_key("tables") if isinstance(a, dg.AssetSpec) else a for a in load_notebook_assets(path)
    ]
    result = dg.materialize(
        assets,
        resources={"io_manager": dg.mem_io_manager, "tables": TablesIOManager({("raw", "events"): pl.DataFrame({"x": [1, 2]})})},
    )
    assert result.success
    assert result.output_for_node("chain__first")["x"].to_list() == [2, 3]
    assert result.output_for_node("chain__second")["x"].to_list() == [20, 30]
