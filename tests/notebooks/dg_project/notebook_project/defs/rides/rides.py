# /// script
# dependencies = ["dagster-lakehouse", "polars>=1.0"]
# ///

import marimo

__generated_with = "0.25.2"
app = marimo.App()

with app.setup:
    import polars as pl

    from dagster_lakehouse import Input, model


@app.function
@model(inputs={"rides": Input("raw.rides", columns=["city", "km"], filter="km > 0")})
def long_rides(rides: pl.DataFrame) -> pl.DataFrame:
    """Rides longer than ten kilometres."""
    return rides.filter(pl.col("km") > 10)


@app.function
@model
def km_per_city(long_rides: pl.DataFrame) -> pl.DataFrame:
    """Kilometres of long rides per city."""
    return long_rides.group_by("city").agg(pl.col("km").sum()).sort("city")


if __name__ == "__main__":
    app.run()
