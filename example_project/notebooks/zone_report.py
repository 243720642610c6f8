# /// script
# requires-python = ">=3.11"
# dependencies = [
#     "humanize==4.9.0",
#     "marimo",
#     "polars",
# ]
#
# [tool.dagster-lakehouse]
# isolated = true
# ///
"""Busiest pickup zones in words: a notebook that runs isolated, in the environment its header declares.

`humanize` is not installed in the code location: Dagster runs `zone_report` in the environment the header above
declares (the one `marimo edit --sandbox example_project/notebooks/zone_report.py` builds), made with uv and cached,
and talks to it through Dagster Pipes. The model still reads and writes the run's lakehouse branch itself.
"""

import marimo

__generated_with = "0.25.2"
app = marimo.App(width="medium")

with app.setup:
    import humanize
    import polars as pl

    from dagster_lakehouse import Input, model


@app.function
@model(
    key_prefix="taxi",
    inputs={"stats": Input("taxi.stats_by_taxi_zones", columns=["Borough", "Zone", "trips", "mean_fare"])},
    owners=["team:data-science"],
    tags={"domain": "taxi"},
)
def zone_report(stats: pl.DataFrame) -> pl.DataFrame:
    """The ten busiest pickup zones, with their trips and mean fare spelled out for a report."""
    top = stats.sort("trips", descending=True).head(10)
    return top.with_columns(
        trips_in_words=pl.col("trips").map_elements(humanize.intword, return_dtype=pl.String),
        mean_fare_text=pl.col("mean_fare").map_elements(lambda fare: f"${humanize.intcomma(round(fare, 2))}", return_dtype=pl.String),
    )


@app.cell
def _():
    from dagster_lakehouse import load_inputs

    inputs = load_inputs(zone_report, ref="dev", key_prefix="taxi")
    zone_report(**inputs)
    return


if __name__ == "__main__":
    app.run()
