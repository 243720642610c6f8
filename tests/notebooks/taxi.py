# /// script
# requires-python = ">=3.11"
# dependencies = [
#     "dagster-lakehouse",
#     "marimo>=0.15",
#     "polars>=1.0",
# ]
# ///

import marimo

__generated_with = "0.25.2"
app = marimo.App()

with app.setup:
    import polars as pl

    from dagster_lakehouse import Input, model


@app.function
@model(
    inputs={
        "trips": Input(
            "raw.trips",
            columns=["PULocationID", "trip_miles", "fare"],
            filter="trip_miles > 0",
        ),
        "zones": Input("raw.zones"),
    },
    owners=["team:data"],
    tags={"domain": "taxi"},
)
def trips_and_zones(trips: pl.DataFrame, zones: pl.DataFrame) -> pl.DataFrame:
    """Trips joined to their pickup zone."""
    return trips.join(zones, left_on="PULocationID", right_on="LocationID")


@app.function
@model(materialization="append")
def borough_fares(trips_and_zones: pl.LazyFrame) -> pl.DataFrame:
    """Total fare and trip count per borough."""
    return (
        trips_and_zones.group_by("Borough")
        .agg(pl.col("fare").sum().alias("fares"), pl.len().alias("trips"))
        .sort("Borough")
        .collect()
    )


@app.function
def demo_frames() -> tuple[pl.DataFrame, pl.DataFrame]:
    """Small in-memory stand-ins for the raw tables, to run the notebook anywhere."""
    trips = pl.DataFrame(
        {"PULocationID": [1, 2, 2], "trip_miles": [1.5, 3.0, 0.5], "fare": [10.0, 20.0, 7.5]}
    )
    zones = pl.DataFrame({"LocationID": [1, 2], "Borough": ["Bronx", "Queens"]})
    return trips, zones


@app.cell
def _():
    trips, zones = demo_frames()
    joined = trips_and_zones(trips, zones)
    fares = borough_fares(joined.lazy())
    fares
    return


if __name__ == "__main__":
    app.run()
