"""Deterministic NYC-taxi-shaped sample data (fhvhv-like trips, 265 zones in 5 boroughs) for the example."""

from __future__ import annotations

import argparse
import random
from datetime import datetime, timedelta

import polars as pl

from dagster_lakehouse import Lakehouse

BOROUGHS = {"Manhattan": 69, "Brooklyn": 61, "Queens": 69, "Bronx": 43, "Staten Island": 23}
SERVICE_ZONES = {"Manhattan": "Yellow Zone", "Staten Island": "Boro Zone"}
START = datetime(2024, 1, 1)


def make_zones() -> pl.DataFrame:
    """265 taxi zones, LocationID 1..265, spread over the five boroughs."""
    rows = []
    location_id = 1
    for borough, count in BOROUGHS.items():
        for i in range(count):
            rows.append(
                {
                    "LocationID": location_id,
                    "Borough": borough,
                    "Zone": f"{borough} zone {i + 1}",
                    "service_zone": SERVICE_ZONES.get(borough, "Boro Zone"),
                }
            )
            location_id += 1
    return pl.DataFrame(rows, schema={"LocationID": pl.Int64, "Borough": pl.String, "Zone": pl.String, "service_zone": pl.String})


def make_trips(n: int = 100_000, days: int = 31, seed: int = 42, start: datetime = START) -> pl.DataFrame:
    """`n` trips over `days` days from `start`, sorted by pickup time (so date filters prune files)."""
    rng = random.Random(seed)
    seconds = days * 24 * 3600
    pickups = sorted(rng.randrange(seconds) for _ in range(n))
    pu_ids, do_ids, miles, times, fares, tips, dropoffs = [], [], [], [], [], [], []
    for offset in pickups:
        pu = min(265, max(1, int(rng.triangular(1, 265, 140))))
        pu_ids.append(pu)
        do_ids.append(rng.randint(1, 265))
        distance = round(10 ** rng.gauss(0.45, 0.35), 2) if rng.random() > 0.005 else rng.choice([0.0, 250.0])
        miles.append(distance)
        duration = int(120 + distance * rng.uniform(150, 300))
        times.append(duration)
        fare = round(3.0 + distance * rng.uniform(2.0, 3.2) + duration / 60 * 0.5, 2)
        fares.append(fare)
        tips.append(round(fare * rng.choice([0, 0, 0.1, 0.15, 0.2]), 2))
        dropoffs.append(start + timedelta(seconds=offset + duration))
    return pl.DataFrame(
        {
            "pickup_datetime": [start + timedelta(seconds=s) for s in pickups],
            "dropoff_datetime": dropoffs,
            "PULocationID": pu_ids,
            "DOLocationID": do_ids,
            "trip_miles": miles,
            "trip_time": times,
            "base_passenger_fare": fares,
            "tips": tips,
        },
        schema_overrides={"pickup_datetime": pl.Datetime("us"), "dropoff_datetime": pl.Datetime("us")},
    )


def seed(lakehouse: Lakehouse, trips: int = 100_000, *, force: bool = False) -> bool:
    """Write `taxi.trips` (in weekly appends, so date filters skip files) and `taxi.zones` to main.

    Raw data lands on main the way an ingestion job outside Dagster would put it there. Returns
    False when the tables exist already and `force` is not set.
    """
    if not force and lakehouse.exists("taxi.trips") and lakehouse.exists("taxi.zones"):
        return False
    lakehouse.write("taxi.zones", make_zones(), branch="main", allow_main=True, message="seed zones")
    data = make_trips(trips)
    weeks = data.with_columns(week=pl.col("pickup_datetime").dt.truncate("1w")).partition_by("week", maintain_order=True)
    first = True
    for week in weeks:
        lakehouse.write(
            "taxi.trips",
            week.drop("week"),
            branch="main",
            mode="replace" if first else "append",
            allow_main=True,
            message="seed trips",
        )
        first = False
    return True


def main(argv: list[str] | None = None) -> int:
    """`python -m example_project.seed [--path .lakehouse] [--trips N] [--force]`."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--path", default=None, help="local lakehouse folder (default: $LAKEHOUSE_PATH or .lakehouse)")
    parser.add_argument("--trips", type=int, default=100_000)
    parser.add_argument("--force", action="store_true", help="rewrite the tables even if they exist")
    args = parser.parse_args(argv)
    with Lakehouse(path=args.path) as lakehouse:
        wrote = seed(lakehouse, args.trips, force=args.force)
        state = "seeded" if wrote else "already seeded"
        print(f"{state}: {lakehouse!r} main has {', '.join(lakehouse.tables())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
