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
@model(
    inputs={"zones": Input("raw.zones", columns=["LocationID", "Borough"])},
    key_prefix="finance",
)
def revenue_share(borough_fares: pl.DataFrame, zones: pl.DataFrame) -> pl.DataFrame:
    """Each borough's share of all fares, with its number of zones."""
    zone_counts = zones.group_by("Borough").agg(pl.len().alias("zones"))
    return borough_fares.with_columns(
        (pl.col("fares") / pl.col("fares").sum()).alias("share")
    ).join(zone_counts, on="Borough", how="left")


if __name__ == "__main__":
    app.run()
