"""`@model` and `Input`: the decorator leaves the function untouched, and bad specs fail when written."""

from __future__ import annotations

import dataclasses

import pytest

from dagster_lakehouse.lakehouse.errors import LakehouseError
from dagster_lakehouse.notebook import Input, ModelSpec, NotebookLoadError, model


def test_model_returns_the_same_function_with_its_spec_attached():
    def trips_and_zones(trips, zones):
        """Trips joined to zones."""
        return (trips, zones)

    decorated = model(inputs={"trips": Input("taxi.trips", columns=["a"]), "zones": Input("taxi.zones")})(
        trips_and_zones
    )

    assert decorated is trips_and_zones
    assert decorated(1, 2) == (1, 2)
    spec = decorated.__lakehouse_model__
    assert isinstance(spec, ModelSpec)
    assert spec.name == "trips_and_zones"
    assert spec.materialization == "replace"
    assert spec.inputs["trips"] == Input("taxi.trips", columns=["a"])
    assert spec.inputs["zones"].table == "taxi.zones"


def test_bare_model_and_every_option_are_recorded():
    @model
    def plain(x):
        return x

    @model(
        materialization="append",
        name="renamed",
        owners=["team:data", "ann@example.com"],
        tags={"domain": "taxi"},
        key_prefix="analytics",
        description="Overrides the docstring.",
    )
    def options(x):
        """Docstring."""
        return x

    assert plain(3) == 3 and plain.__lakehouse_model__.name == "plain"
    spec = options.__lakehouse_model__
    assert (spec.name, spec.materialization, spec.key_prefix) == ("renamed", "append", "analytics")
    assert spec.owners == ("team:data", "ann@example.com")
    assert dict(spec.tags) == {"domain": "taxi"}
    assert spec.description == "Overrides the docstring."


def test_input_is_a_frozen_hashable_dataclass():
    spec = Input("taxi.trips", columns=["PULocationID", "fare"], filter="fare > 0 and PULocationID in (1, 2)")
    assert spec.columns == ["PULocationID", "fare"]
    assert spec == Input("taxi.trips", ["PULocationID", "fare"], "fare > 0 and PULocationID in (1, 2)")
    assert hash(spec) == hash(Input("taxi.trips", ["PULocationID", "fare"], "fare > 0 and PULocationID in (1, 2)"))
    assert spec.metadata == {"columns": ["PULocationID", "fare"], "filter": "fare > 0 and PULocationID in (1, 2)"}
    assert Input("taxi.zones").metadata == {}
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.table = "taxi.other"  # type: ignore[misc]


def test_input_copies_the_column_list():
    columns = ["a"]
    spec = Input("taxi.trips", columns=columns)
    columns.append("b")
    assert spec.columns == ["a"]


@pytest.mark.parametrize(
    "table", ["trip-s", "1trips", "taxi.trips.extra", "taxi.", ".trips", "taxi.trip-s", "1taxi.trips", ""]
)
def test_input_table_must_be_namespace_dot_table_or_a_model_name(table):
    with pytest.raises(NotebookLoadError, match="namespace.table|must start with a letter"):
        Input(table)


@pytest.mark.parametrize(
    "bad_filter",
    ["fare >", "fare > 1 and", "__import__('os').system('true')", "fare > 1; drop table trips", "lambda: 1"],
)
def test_input_filter_is_parsed_not_evaluated(bad_filter):
    with pytest.raises(NotebookLoadError, match="cannot parse filter"):
        Input("taxi.trips", filter=bad_filter)


def test_input_rejects_a_string_for_columns_and_a_non_string_filter():
    with pytest.raises(NotebookLoadError, match="list of column names"):
        Input("taxi.trips", columns="fare")  # type: ignore[arg-type]
    with pytest.raises(NotebookLoadError, match="non-empty strings"):
        Input("taxi.trips", columns=["fare", 3])  # type: ignore[list-item]
    with pytest.raises(NotebookLoadError, match="filter must be a string"):
        Input("taxi.trips", filter=42)  # type: ignore[arg-type]


def test_notebook_load_error_is_a_lakehouse_error():
    assert issubclass(NotebookLoadError, LakehouseError)
    error = NotebookLoadError("broken", path="/x/nb.py", line=7)
    assert str(error) == "/x/nb.py:7: broken"
    assert str(NotebookLoadError("broken")) == "broken"


def test_model_rejects_bad_options():
    def f(trips):
        return trips

    with pytest.raises(NotebookLoadError, match="materialization='merge'"):
        model(materialization="merge")(f)  # type: ignore[arg-type]
    with pytest.raises(NotebookLoadError, match="inputs names 'zones', which is not a parameter"):
        model(inputs={"zones": Input("taxi.zones")})(f)
    with pytest.raises(NotebookLoadError, match=r"must be Input\('namespace.table'"):
        model(inputs={"trips": "taxi.trips"})(f)  # type: ignore[dict-item]
    with pytest.raises(NotebookLoadError, match="name="):
        model(name="not a name")(f)
    with pytest.raises(NotebookLoadError, match="owners"):
        model(owners="team:data")(f)  # type: ignore[arg-type]
    with pytest.raises(NotebookLoadError, match="PartitionsDefinition"):
        model(partitions="daily")(f)  # type: ignore[arg-type]
    with pytest.raises(NotebookLoadError, match="partition_column=...\\) needs partitions"):
        model(partition_column="day")(f)
    with pytest.raises(NotebookLoadError, match="metadata"):
        model(metadata=["x"])(f)  # type: ignore[arg-type]


def test_model_parameters_must_be_plain_named_inputs():
    def star(*frames):
        return frames

    def positional_only(a, /):
        return a

    def uses_context(context):
        return context

    async def asynchronous(a):
        return a

    with pytest.raises(NotebookLoadError, match="named input"):
        model(star)
    with pytest.raises(NotebookLoadError, match="named input"):
        model(positional_only)
    with pytest.raises(NotebookLoadError, match="'context' is reserved"):
        model(uses_context)
    with pytest.raises(NotebookLoadError, match="plain function"):
        model(asynchronous)
    with pytest.raises(NotebookLoadError, match="plain function"):
        model(len)  # type: ignore[arg-type]
