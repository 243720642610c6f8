"""`lakehouse import --schema col=type,... --timestamp-tz ZONE`: column types and time zones of imported files."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from test_cli import Cli, _no_lakehouse_env, assert_clean_error, cli  # noqa: F401  (fixtures)
from test_cli_startup import imported_by, run_cli

RAW = pl.DataFrame(
    {
        "trip_id": ["1", "2", "3"],
        "fare": ["12.5", "7.25", "30.0"],
        "amount": ["1.25", "2.50", "10.00"],
        "pickup_datetime": ["2022-12-15T00:00:00-05:00", "2022-12-16T01:30:00-05:00", "2023-01-01T00:00:00-05:00"],
        "dropoff_datetime": ["2022-12-15 00:20:00", "2022-12-16 02:00:00", "2023-01-01 00:10:00"],
        "day": ["2022-12-15", "2022-12-16", "2023-01-01"],
        "shared": ["true", "no", "False"],
    }
)


@pytest.fixture
def trips_csv(tmp_path: Path) -> Path:
    path = tmp_path / "trips.csv"
    RAW.write_csv(path)
    return path


def _types(cli: Cli, table: str) -> dict[str, str]:
    return {f.name: str(f.field_type) for f in cli.lakehouse().table(table, "dev").schema().fields}


def test_schema_sets_column_types(cli: Cli, trips_csv: Path) -> None:
    assert cli("branch", "create", "dev") == 0
    schema = "trip_id=long,fare=double,amount=decimal(10,2),pickup_datetime=timestamptz,day=date,shared=bool"
    assert cli("import", str(trips_csv), "taxi.trips", "--branch", "dev", "--schema", schema) == 0, cli.err
    assert _types(cli, "taxi.trips") == {
        "trip_id": "long",
        "fare": "double",
        "amount": "decimal(10, 2)",
        "pickup_datetime": "timestamptz",
        "dropoff_datetime": "timestamp",  # parsed from the CSV as a timestamp, without a zone
        "day": "date",
        "shared": "boolean",
    }
    trips = cli.lakehouse().read("taxi.trips", ref="dev").sort("trip_id")
    assert trips["trip_id"].to_list() == [1, 2, 3]
    assert trips["amount"].to_list() == [Decimal("1.25"), Decimal("2.50"), Decimal("10.00")]
    assert trips["pickup_datetime"][0] == datetime(2022, 12, 15, 5, tzinfo=UTC), "the offset is kept as an instant"
    assert trips["day"].to_list() == [date(2022, 12, 15), date(2022, 12, 16), date(2023, 1, 1)]
    assert trips["shared"].to_list() == [True, False, False]


def test_schema_accepts_the_names_users_type(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "numbers.parquet"
    pl.DataFrame({"a": [1, 2], "b": [1, 2], "c": [1.5, 2.5], "d": [1, 2], "e": [3, 4]}).write_parquet(path)
    assert cli("branch", "create", "dev") == 0
    schema = "a=INT, b=int64,c=float64 ,d=string,e=Float"
    assert cli("import", str(path), "ns.numbers", "--branch", "dev", "--schema", schema) == 0, cli.err
    assert _types(cli, "ns.numbers") == {"a": "int", "b": "long", "c": "double", "d": "string", "e": "float"}
    assert cli.lakehouse().read("ns.numbers", ref="dev")["d"].to_list() == ["1", "2"]


def test_timestamp_tz_reads_naive_timestamps_as_wall_clock_in_the_zone(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "trips.parquet"
    pl.DataFrame(
        {
            "pickup_datetime": [datetime(2022, 12, 15, 0, 0), datetime(2022, 12, 31, 23, 0)],
            "local_time": [datetime(2022, 12, 15, 8, 0), datetime(2022, 12, 31, 8, 0)],
            "trip_id": [1, 2],
        }
    ).write_parquet(path)
    assert cli("branch", "create", "dev") == 0
    argv = ("import", str(path), "taxi.trips", "--branch", "dev", "--timestamp-tz", "America/New_York")
    assert cli(*argv, "--schema", "local_time=timestamp") == 0, cli.err
    assert _types(cli, "taxi.trips") == {"pickup_datetime": "timestamptz", "local_time": "timestamp", "trip_id": "long"}
    lh = cli.lakehouse()
    trips = lh.read("taxi.trips", ref="dev").sort("trip_id")
    assert trips["pickup_datetime"].to_list() == [
        datetime(2022, 12, 15, 5, tzinfo=UTC),
        datetime(2023, 1, 1, 4, tzinfo=UTC),
    ]
    assert trips["local_time"][0] == datetime(2022, 12, 15, 8, 0), "a column --schema types as timestamp keeps no zone"
    window = "pickup_datetime >= '2022-12-15T00:00:00-05:00' AND pickup_datetime < '2023-01-01T00:00:00-05:00'"
    assert lh.read("taxi.trips", ref="dev", filter=window)["trip_id"].to_list() == [1, 2]
    utc = ("import", str(path), "taxi.utc", "--branch", "dev", "--timestamp-tz", "UTC")
    assert cli(*utc) == 0, cli.err
    assert lh.read("taxi.utc", ref="dev").sort("trip_id")["pickup_datetime"][0] == datetime(2022, 12, 15, tzinfo=UTC)


def test_timestamptz_of_naive_values_defaults_to_utc(cli: Cli, trips_csv: Path) -> None:
    assert cli("branch", "create", "dev") == 0
    assert cli("import", str(trips_csv), "taxi.trips", "--branch", "dev", "--schema", "dropoff_datetime=timestamptz") == 0
    trips = cli.lakehouse().read("taxi.trips", ref="dev").sort("dropoff_datetime")
    assert trips["dropoff_datetime"][0] == datetime(2022, 12, 15, 0, 20, tzinfo=UTC)


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (("--schema", "fare=money"), ("column 'fare'", "unknown type 'money'", "decimal(P,S)")),
        (("--schema", "fare"), ("expected COLUMN=TYPE", "'fare'")),
        (("--schema", "amount=decimal(40,2)"), ("'decimal(40,2)'", "1 to 38")),
        (("--timestamp-tz", "Mars/Olympus"), ("unknown time zone 'Mars/Olympus'",)),
    ],
    ids=["unknown-type", "no-type", "bad-decimal", "unknown-zone"],
)
def test_bad_types_and_zones_are_usage_errors(cli: Cli, trips_csv: Path, argv: tuple[str, ...], names: tuple[str, ...]) -> None:
    assert cli("branch", "create", "dev") == 0
    assert cli("import", str(trips_csv), "taxi.trips", "--branch", "dev", *argv) == 2
    for name in names:
        assert name in cli.err, (name, cli.err)
    assert cli.lakehouse().tables("dev") == []


def test_unknown_column_and_values_the_type_cannot_hold(cli: Cli, trips_csv: Path) -> None:
    assert cli("branch", "create", "dev") == 0
    assert cli("import", str(trips_csv), "taxi.trips", "--branch", "dev", "--schema", "fare=double,tip=double") == 1
    assert_clean_error(cli, "--schema names column 'tip'", "trips.csv", "its columns: trip_id, fare")
    assert cli("import", str(trips_csv), "taxi.trips", "--branch", "dev", "--schema", "shared=int") == 1
    assert_clean_error(cli, "trips.csv", "'shared'")
    assert cli.lakehouse().tables("dev") == []


def test_type_options_keep_the_cli_start_up_light() -> None:
    assert imported_by("import dagster_lakehouse.cli.column_types") == []
    code, loaded, out = run_cli("import", "--help")
    assert code == 0 and "--timestamp-tz" in out and "--schema" in out
    assert loaded == []
    code, loaded, _ = run_cli("import", "x.csv", "ns.t", "--branch", "dev", "--schema", "a=nope")
    assert code == 2 and loaded == []
