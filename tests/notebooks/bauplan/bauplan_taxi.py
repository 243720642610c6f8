import marimo

__generated_with = "0.13.6"
app = marimo.App(width="medium")

with app.setup:
    from dagster_lakehouse.notebook import bauplan
    import marimo as mo
    import pyarrow as pa
    import pyarrow.compute as pc


@app.cell(hide_code=True)
def _():
    mo.md(r"""
    Models are functions from input tables (`data=bauplan.Model(...)`) to an output table: the first joins
    December trips with their pickup zone, the second ranks pickup zones in pandas.
    """)
    return


@app.function
@bauplan.model()
@bauplan.python("3.11", pip={"pandas": "2.2.0"})
def trips_and_zones(
    trips=bauplan.Model(
        "taxi_fhvhv",
        columns=["pickup_datetime", "PULocationID", "trip_miles"],
        filter="pickup_datetime >= '2022-12-15T00:00:00-05:00' AND pickup_datetime < '2023-01-01T00:00:00-05:00'",
    ),
    zones=bauplan.Model("taxi_zones", columns=["LocationID", "Borough", "Zone"]),
):
    # PyArrow: keep real trips, then join each with its pickup zone
    trips = trips.filter(pc.greater(trips["trip_miles"], 0.0))
    return trips.join(zones, "PULocationID", "LocationID").combine_chunks()


@app.function
@bauplan.model(materialization_strategy="REPLACE")
@bauplan.python("3.11", pip={"pandas": "2.2.0"})
def top_pickup_locations(data=bauplan.Model("trips_and_zones")):
    # pandas: trips per pickup zone, most first
    df = data.to_pandas()
    top = (
        df.groupby(["PULocationID", "Borough", "Zone"])
        .agg(number_of_trips=("pickup_datetime", "count"), miles=("trip_miles", "sum"))
        .reset_index()
        .sort_values(["number_of_trips", "PULocationID"], ascending=[False, True])
    )
    return top


if __name__ == "__main__":
    app.run()
