"""`@model(materialization=..., key=..., overwrite_filter=...)` becomes the asset metadata the IO manager writes by."""

from __future__ import annotations

import textwrap
from pathlib import Path

import dagster as dg
import pytest

from dagster_lakehouse.notebook import NotebookLoadError, load_notebook_assets, model

HEADER = "import marimo\n\napp = marimo.App()\n\nwith app.setup:\n    import dagster as dg\n\n    from dagster_lakehouse import Input, model\n\n\n"


def write_notebook(folder: Path, name: str, cells: str) -> Path:
    path = folder / f"{name}.py"
    path.write_text(HEADER + textwrap.dedent(cells).strip() + "\n")
    return path


def line_of(path: Path, snippet: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), start=1) if snippet in line)


def definition_metadata(assets, name: str) -> dict:
    (asset,) = [a for a in assets if isinstance(a, dg.AssetsDefinition) and a.key.path[-1] == name]
    return dict(asset.specs_by_key[asset.key].metadata)


def strategy(metadata: dict) -> dict:
    return {k: v for k, v in metadata.items() if k in ("lakehouse/mode", "lakehouse/key", "lakehouse/overwrite_filter")}


def test_each_strategy_becomes_the_contract_metadata(tmp_path):
    path = write_notebook(
        tmp_path,
        "strategies",
        '''
        @app.function
        @model
        def replaced(trips=Input("raw.trips")):
            return trips


        @app.function
        @model(materialization="append")
        def appended(trips=Input("raw.trips")):
            return trips


        @app.function
        @model(materialization="upsert", key=["trip_id", "vendor"])
        def upserted(trips=Input("raw.trips")):
            return trips


        @app.function
        @model(overwrite_filter="pickup_datetime >= '2024-01-01' AND vendor = 'a'")
        def overwritten(trips=Input("raw.trips")):
            return trips
        ''',
    )
    assets = load_notebook_assets(path)
    assert strategy(definition_metadata(assets, "replaced")) == {"lakehouse/mode": "replace"}
    assert strategy(definition_metadata(assets, "appended")) == {"lakehouse/mode": "append"}
    assert strategy(definition_metadata(assets, "upserted")) == {
        "lakehouse/mode": "upsert",
        "lakehouse/key": ["trip_id", "vendor"],
    }
    assert strategy(definition_metadata(assets, "overwritten")) == {
        "lakehouse/mode": "replace",
        "lakehouse/overwrite_filter": "pickup_datetime >= '2024-01-01' AND vendor = 'a'",
    }


def test_the_spec_records_key_and_overwrite_filter():
    def f(x):
        return x

    spec = model(materialization="upsert", key=("id",))(f).__lakehouse_model__
    assert (spec.materialization, spec.key, spec.overwrite_filter) == ("upsert", ("id",), None)


@pytest.mark.parametrize(
    "options, fragments",
    [
        ('materialization="upsert"', ["materialization='upsert') needs key=[...]", "key=['trip_id']"]),
        ('key=["id"]', ["@model(key=..., materialization='replace')", "use materialization='upsert' or drop key"]),
        ('materialization="append", key=["id"]', ["materialization='append'", "drop key"]),
        ('materialization="upsert", key="id"', ["non-empty list of column names, got 'id'"]),
        ('materialization="upsert", key=[]', ["non-empty list of column names, got []"]),
        ('materialization="upsert", key=["id", ""]', ["non-empty strings"]),
        ('materialization="upsert", key=["id", "id"]', ["column 'id' is listed twice"]),
        ('materialization="merge"', ["materialization='merge'", "'replace', 'append', 'upsert'"]),
        (
            'materialization="append", overwrite_filter="id > 1"',
            ["overwrite_filter=..., materialization='append'", "only with materialization='replace'"],
        ),
        (
            'materialization="upsert", key=["id"], overwrite_filter="id > 1"',
            ["materialization='upsert'", "only with materialization='replace'"],
        ),
        (
            'partitions=dg.DailyPartitionsDefinition(start_date="2024-01-01"), overwrite_filter="id > 1"',
            ["overwrite_filter=..., partitions=...", "drop overwrite_filter"],
        ),
        ('overwrite_filter="id >"', ["cannot parse overwrite_filter 'id >'"]),
        ("overwrite_filter=3", ["overwrite_filter must be a string"]),
    ],
)
def test_bad_strategies_fail_at_load_naming_notebook_and_line(tmp_path, options, fragments):
    path = write_notebook(
        tmp_path,
        "bad",
        f'''
        @app.function
        @model({options})
        def first(trips=Input("raw.trips")):
            return trips
        ''',
    )
    with pytest.raises(NotebookLoadError) as info:
        load_notebook_assets(path)
    message = str(info.value)
    assert message.startswith(f"{path.resolve()}:{line_of(path, '@model(')}: "), message
    for fragment in fragments:
        assert fragment in message, message
