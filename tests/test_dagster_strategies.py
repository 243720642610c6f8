"""Materialization strategies from asset metadata: replace, append, overwrite of the rows a filter matches, upsert."""

from datetime import date
from typing import Any

import dagster as dg
import polars as pl
import pytest
from test_dagster_support import (  # noqa: F401  (fresh_lakehouse_cache is an autouse fixture)
    failure_text,
    fresh_lakehouse_cache,
    materialization,
    materialize,
)

from dagster_lakehouse.lakehouse import Lakehouse

DEV = {"lakehouse/branch": "dev"}
DAILY = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-05")
EVENTS = pl.DataFrame(
    {"day": [date(2024, 1, d) for d in (1, 2, 2, 3)], "id": [1, 2, 3, 4], "value": ["a", "b", "c", "d"]}
)


def _lakehouse(backend: Any) -> Lakehouse:
    return Lakehouse(backend.catalog_uri, backend.warehouse, dict(backend.properties))


def _seed_events(lakehouse: Lakehouse) -> int:
    """`public.events` on branch dev, as four rows over three days; its snapshot id."""
    lakehouse.create_branch("dev")
    lakehouse.write("public.events", EVENTS, branch="dev")
    return lakehouse.snapshot_id("public.events", "dev")


def _events_asset(rows: pl.DataFrame, metadata: dict[str, Any], **kwargs: Any) -> dg.AssetsDefinition:
    @dg.asset(name="events", metadata=metadata, **kwargs)
    def events() -> pl.DataFrame:
        return rows

    return events


# ----- overwrite_filter -------------------------------------------------------------------------------


def test_overwrite_filter_replaces_only_the_matching_rows(backend: Any, lakehouse: Lakehouse) -> None:
    _seed_events(lakehouse)
    new_day = pl.DataFrame({"day": [date(2024, 1, 2)], "id": [9], "value": ["z"]})
    asset = _events_asset(new_day, {"lakehouse/overwrite_filter": "day = '2024-01-02'"})
    result = materialize([asset], backend, tags=DEV)
    assert result.success
    frame = lakehouse.read("public.events", ref="dev").sort("id")
    assert frame["id"].to_list() == [1, 4, 9], "days 1 and 3 kept, day 2 replaced"
    md = materialization(result, "events").metadata
    assert md["lakehouse/overwrite_filter"].value == "day = '2024-01-02'"
    assert md["lakehouse/strategy"].value == "replace rows where day = '2024-01-02'"
    assert md["dagster/row_count"].value == 3


def test_overwrite_filter_refuses_rows_outside_it_and_changes_nothing(local_backend: Any) -> None:
    lakehouse = _lakehouse(local_backend)
    before = _seed_events(lakehouse)
    stray = pl.DataFrame({"day": [date(2024, 1, 2), date(2024, 1, 4)], "id": [9, 10], "value": ["z", "y"]})
    text = failure_text(
        materialize([_events_asset(stray, {"lakehouse/overwrite_filter": "day = '2024-01-02'"})], local_backend, tags=DEV)
    )
    assert "asset 'events'" in text and "table 'public.events'" in text and "1 of 2 rows" in text
    assert lakehouse.snapshot_id("public.events", "dev") == before


@pytest.mark.parametrize(
    ("metadata", "kwargs", "expected"),
    [
        (
            {"lakehouse/overwrite_filter": "day = '2024-01-02'", "lakehouse/mode": "append"},
            {},
            "a 'append' write does not do",
        ),
        (
            {"lakehouse/overwrite_filter": "day = '2024-01-02'", "lakehouse/partition_column": "day"},
            {"partitions_def": DAILY},
            "cannot be used with partitions",
        ),
        ({"lakehouse/overwrite_filter": ""}, {}, "must be a filter string"),
        ({"lakehouse/mode": "upsert"}, {}, "needs the key columns"),
        ({"lakehouse/mode": "upsert", "lakehouse/key": []}, {}, "must be a list of column names"),
        ({"lakehouse/key": ["id"]}, {}, "used by upserts only"),
        ({"lakehouse/mode": "merge"}, {}, "must be one of replace, append, upsert, not 'merge'"),
    ],
    ids=["filter+append", "filter+partitions", "empty-filter", "upsert-no-key", "empty-key", "key-no-upsert", "mode"],
)
def test_strategy_metadata_that_does_not_fit_is_refused(
    local_backend: Any, metadata: dict[str, Any], kwargs: dict[str, Any], expected: str
) -> None:
    lakehouse = _lakehouse(local_backend)
    before = _seed_events(lakehouse)
    run = {"partition_key": "2024-01-02"} if "partitions_def" in kwargs else {}
    text = failure_text(materialize([_events_asset(EVENTS, metadata, **kwargs)], local_backend, tags=DEV, **run))
    assert "LakehouseIOError" in text and "asset 'events'" in text and expected in text
    assert lakehouse.snapshot_id("public.events", "dev") == before


# ----- the strategy in the UI ----------------------------------------------------------------------------


def test_strategy_shown_for_replace_append_and_partitions(local_backend: Any) -> None:
    lakehouse = _lakehouse(local_backend)
    _seed_events(lakehouse)
    replaced = materialize([_events_asset(EVENTS, {})], local_backend, tags=DEV)
    assert materialization(replaced, "events").metadata["lakehouse/strategy"].value == "replace the table"
    appended = materialize([_events_asset(EVENTS, {"lakehouse/mode": "append"})], local_backend, tags=DEV)
    md = materialization(appended, "events").metadata
    assert md["lakehouse/strategy"].value == "append rows" and md["lakehouse/mode"].value == "append"
    assert lakehouse.read("public.events", ref="dev").height == 8

    @dg.asset(partitions_def=DAILY, metadata={"lakehouse/partition_column": "day"})
    def daily(context: dg.AssetExecutionContext) -> pl.DataFrame:
        return pl.DataFrame({"day": [context.partition_time_window.start.date()], "n": [1]})

    result = materialize([daily], local_backend, tags=DEV, partition_key="2024-01-02")
    strategy = materialization(result, "daily").metadata["lakehouse/strategy"].value
    assert strategy.startswith("replace partition rows where") and "2024-01-02" in strategy


# ----- upsert -----------------------------------------------------------------------------------------------

UPSERT = {"lakehouse/mode": "upsert", "lakehouse/key": ["id"]}


def test_upsert_updates_matching_keys_and_inserts_the_others(backend: Any, lakehouse: Lakehouse) -> None:
    _seed_events(lakehouse)
    changes = pl.DataFrame({"day": [date(2024, 1, 2), date(2024, 1, 5)], "id": [2, 9], "value": ["B", "new"]})
    result = materialize([_events_asset(changes, UPSERT)], backend, tags=DEV)
    assert result.success
    frame = lakehouse.read("public.events", ref="dev").sort("id")
    assert frame["id"].to_list() == [1, 2, 3, 4, 9]
    assert frame["value"].to_list() == ["a", "B", "c", "d", "new"]
    md = materialization(result, "events").metadata
    assert md["lakehouse/strategy"].value == "upsert on key (id)" and md["lakehouse/mode"].value == "upsert"
    assert md["lakehouse/key"].value == "id"
    assert md["dagster/row_count"].value == 5
    (commit,) = [c for c in lakehouse.log("dev") if c.run_id == result.run_id]
    assert commit.tables == ["public.events"]


def test_upsert_of_a_lazy_output_on_a_composite_key(local_backend: Any) -> None:
    lakehouse = _lakehouse(local_backend)
    _seed_events(lakehouse)

    @dg.asset(name="events", metadata={"lakehouse/mode": "upsert", "lakehouse/key": ["day", "id"]})
    def events() -> pl.LazyFrame:
        return pl.LazyFrame({"day": [date(2024, 1, 1), date(2024, 1, 3)], "id": [1, 1], "value": ["A", "other day"]})

    assert materialize([events], local_backend, tags=DEV).success
    frame = lakehouse.read("public.events", ref="dev").sort("day", "id")
    assert frame.select("day", "id", "value").rows() == [
        (date(2024, 1, 1), 1, "A"),
        (date(2024, 1, 2), 2, "b"),
        (date(2024, 1, 2), 3, "c"),
        (date(2024, 1, 3), 1, "other day"),
        (date(2024, 1, 3), 4, "d"),
    ]


def test_upsert_with_a_key_the_output_lacks_is_refused_and_changes_nothing(local_backend: Any) -> None:
    lakehouse = _lakehouse(local_backend)
    before = _seed_events(lakehouse)
    asset = _events_asset(EVENTS.drop("id"), UPSERT)
    text = failure_text(materialize([asset], local_backend, tags=DEV))
    assert "asset 'events'" in text and "table 'public.events'" in text and "'id'" in text
    assert lakehouse.snapshot_id("public.events", "dev") == before


def test_first_upsert_creates_the_table(local_backend: Any) -> None:
    assert materialize([_events_asset(EVENTS, UPSERT)], local_backend, tags=DEV).success
    assert _lakehouse(local_backend).read("public.events", ref="dev").sort("id")["id"].to_list() == [1, 2, 3, 4]


def test_upsert_of_a_partitioned_asset_keeps_to_its_partition(local_backend: Any) -> None:
    values = iter(["first", "second"])

    @dg.asset(partitions_def=DAILY, metadata={**UPSERT, "lakehouse/partition_column": "day"})
    def daily(context: dg.AssetExecutionContext) -> pl.DataFrame:
        day = context.partition_time_window.start.date()
        return pl.DataFrame({"day": [day], "id": [1], "value": [next(values)]})

    for _ in range(2):
        assert materialize([daily], local_backend, tags=DEV, partition_key="2024-01-02").success
    frame = _lakehouse(local_backend).read("public.daily", ref="dev")
    assert frame.select("id", "value").rows() == [(1, "second")]

    @dg.asset(name="daily", partitions_def=DAILY, metadata={**UPSERT, "lakehouse/partition_column": "day"})
    def stray() -> pl.DataFrame:
        return pl.DataFrame({"day": [date(2024, 1, 3)], "id": [2], "value": ["x"]})

    text = failure_text(materialize([stray], local_backend, tags=DEV, partition_key="2024-01-02"))
    assert "asset 'daily'" in text and "outside partition 2024-01-02" in text
    assert _lakehouse(local_backend).read("public.daily", ref="dev").height == 1
