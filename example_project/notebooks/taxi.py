# /// script
# requires-python = ">=3.11"
# dependencies = [
#     "dagster-lakehouse",
#     "marimo>=0.15",
#     "polars>=1.30",
# ]
# ///
"""NYC taxi: trips joined to their pickup zones, then trip statistics per zone.

Open it with `marimo edit example_project/notebooks/taxi.py`; Dagster loads the `@model` functions
as assets (see example_project/definitions.py).
"""

import marimo

__generated_with = "0.25.2"
app = marimo.App(width="medium")

with app.setup:
    import dagster as dg
    import marimo as mo
    import polars as pl

    from dagster_lakehouse import Input, Lakehouse, model


@app.function
@model(
    name="trips_and_zones",
    inputs={
        "trips": Input(
            "taxi.trips",
            columns=["pickup_datetime", "PULocationID", "trip_miles", "trip_time", "base_passenger_fare", "tips"],
            filter="pickup_datetime >= '2024-01-01'",
        ),
        "zones": Input("taxi.zones", columns=["LocationID", "Borough", "Zone"]),
    },
    owners=["team:data-science"],
    tags={"domain": "taxi"},
)
def join_taxi_tables(trips: pl.DataFrame, zones: pl.DataFrame) -> pl.DataFrame:
    """Trips joined to their pickup zone and borough."""
    return trips.join(zones, left_on="PULocationID", right_on="LocationID", how="inner")


@app.function
@model(
    owners=["team:data-science"],
    tags={"domain": "taxi"},
    automation_condition=dg.AutomationCondition.eager(),
)
def stats_by_taxi_zones(trips_and_zones: pl.DataFrame) -> pl.DataFrame:
    """Per pickup zone: number of trips, median of log10 trip miles (0 < miles < 200), mean fare and tip."""
    return (
        trips_and_zones.filter((pl.col("trip_miles") > 0) & (pl.col("trip_miles") < 200))
        .group_by("PULocationID", "Zone", "Borough")
        .agg(
            trips=pl.len(),
            median_log10_miles=pl.col("trip_miles").log10().median(),
            mean_fare=pl.col("base_passenger_fare").mean(),
            mean_tip=pl.col("tips").mean(),
        )
        .sort("trips", "PULocationID", descending=[True, False])
    )


@app.cell
def _():
    lakehouse = Lakehouse()
    branch = mo.ui.dropdown(options=lakehouse.branches(), value="main", label="data branch")
    branch
    return branch, lakehouse


@app.cell
def _(branch, lakehouse):
    trips = lakehouse.read(
        "taxi.trips",
        ref=branch.value,
        columns=["pickup_datetime", "PULocationID", "trip_miles", "trip_time", "base_passenger_fare", "tips"],
        filter="pickup_datetime >= '2024-01-01'",
    )
    zones = lakehouse.read("taxi.zones", ref=branch.value, columns=["LocationID", "Borough", "Zone"])
    return trips, zones


@app.cell
def _(trips, zones):
    stats = stats_by_taxi_zones(join_taxi_tables(trips, zones))
    stats
    return


if __name__ == "__main__":
    app.run()
