"""Helpers shared by the Dagster-layer tests (this module holds no tests)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dagster as dg
import polars as pl
import pytest

from dagster_lakehouse.dagster import LakehouseIOManager, LakehouseResource, clear_lakehouse_cache
from dagster_lakehouse.lakehouse import Lakehouse

TRIPS = pl.DataFrame(
    {
        "trip_id": [1, 2, 3, 4, 5, 6],
        "PULocationID": [1, 2, 3, 1, 2, 3],
        "trip_miles": [1.5, 2.0, 3.5, 0.5, 7.25, 4.0],
        "borough": ["Queens", "Bronx", "Manhattan", "Queens", "Bronx", "Manhattan"],
    }
)


def resource_for(backend: Any, **overrides: Any) -> LakehouseResource:
    """A `LakehouseResource` on the test backend."""
    return LakehouseResource(
        catalog_uri=backend.catalog_uri, warehouse=backend.warehouse, properties=dict(backend.properties), **overrides
    )


def io_manager_for(backend: Any, **overrides: Any) -> LakehouseIOManager:
    """A `LakehouseIOManager` on the test backend."""
    return LakehouseIOManager(lakehouse=resource_for(backend, **overrides))


def seed_trips(lakehouse: Lakehouse, data: pl.DataFrame = TRIPS) -> None:
    """Put the raw table `taxi.trips` on main, as an ingestion job outside Dagster would."""
    lakehouse.write("taxi.trips", data, branch="main", allow_main=True)


def materialize(
    assets: list[Any], backend: Any, *, resource: dict[str, Any] | None = None, **kwargs: Any
) -> dg.ExecuteInProcessResult:
    """`dg.materialize` with the lakehouse IO manager bound as `io_manager`; failures are returned, not raised."""
    kwargs.setdefault("raise_on_error", False)
    return dg.materialize(assets, resources={"io_manager": io_manager_for(backend, **(resource or {}))}, **kwargs)


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    """Class names and messages of the failed steps' errors, causes included."""
    assert not result.success, "expected the run to fail"
    parts: list[str] = []
    for event in result.get_step_failure_events():
        error = event.step_failure_data.error
        while error is not None:
            parts.append(f"{error.cls_name}: {error.message}")
            error = error.cause
    return "\n".join(parts)


def materialization(result: dg.ExecuteInProcessResult, node: str) -> dg.AssetMaterialization:
    """The one materialization a run recorded for `node`."""
    (event,) = result.asset_materializations_for_node(node)
    return event


@pytest.fixture(autouse=True)
def fresh_lakehouse_cache() -> Iterator[None]:
    """Forget Lakehouse connections cached by resources once a test ends (its database is dropped).

    Autouse in every test module that imports it."""
    yield
    clear_lakehouse_cache()
