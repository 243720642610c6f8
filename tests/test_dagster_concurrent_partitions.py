"""Runs of different partitions of one asset racing on one branch all land; runs of the same partition fail by name."""

from typing import Any

import dagster as dg
import polars as pl
import pytest
from test_dagster_support import (  # noqa: F401  (fresh_lakehouse_cache is an autouse fixture)
    failure_text,
    fresh_lakehouse_cache,
    materialize,
)

from dagster_lakehouse.lakehouse import Lakehouse, commits

DAYS = dg.StaticPartitionsDefinition(["2024-01-01", "2024-01-02"])
DEV = {"lakehouse/branch": "dev"}


@dg.asset(partitions_def=DAYS, metadata={"lakehouse/partition_column": "day"})
def daily(context: dg.AssetExecutionContext) -> pl.DataFrame:
    return pl.DataFrame({"day": [context.partition_key] * 2, "source": ["run"] * 2})


def concurrent_write_at_commit(monkeypatch: pytest.MonkeyPatch, lakehouse: Lakehouse, day: str) -> None:
    """Another run's write of `day` commits while this run's write sits between staging and its pointer swap."""
    original, fired = commits.checkpoint, []

    def hooked(step: str) -> None:
        if step == "staged" and not fired:
            fired.append(step)
            frame = pl.DataFrame({"day": [day], "source": ["other run"]})
            lakehouse.write("public.daily", frame, branch="dev", where=f"day = '{day}'")
        original(step)

    monkeypatch.setattr(commits, "checkpoint", hooked)


def rows(lakehouse: Lakehouse) -> list[tuple]:
    return sorted(lakehouse.read("public.daily", ref="dev").iter_rows())


def test_another_partition_committed_during_the_write_is_kept(backend: Any, lakehouse: Lakehouse, monkeypatch) -> None:
    assert materialize([daily], backend, tags=DEV, partition_key="2024-01-01").success
    concurrent_write_at_commit(monkeypatch, lakehouse, "2024-01-02")
    assert materialize([daily], backend, tags=DEV, partition_key="2024-01-01").success
    assert rows(lakehouse) == [("2024-01-01", "run"), ("2024-01-01", "run"), ("2024-01-02", "other run")]


def test_the_same_partition_committed_during_the_write_fails_the_run_by_name(backend: Any, lakehouse: Lakehouse, monkeypatch) -> None:
    assert materialize([daily], backend, tags=DEV, partition_key="2024-01-02").success
    concurrent_write_at_commit(monkeypatch, lakehouse, "2024-01-01")
    result = materialize([daily], backend, tags=DEV, partition_key="2024-01-01")
    text = failure_text(result)
    assert "WriteConflict: cannot write table 'public.daily' on branch 'dev'" in text
    assert "day = '2024-01-01'" in text
    assert rows(lakehouse) == [("2024-01-01", "other run"), ("2024-01-02", "run"), ("2024-01-02", "run")]
