"""Parallel backfills through the real Dagster daemon: 8 runs of a daily-partitioned asset at once, each replacing
its day of one unpartitioned Iceberg table whose seed file holds every day.

`dagster dev` serves the code location `tests/projects/parallel_backfill/definitions.py` with a run queue that
lets 8 runs run at once; the runs meet at barriers (see that module), so they provably overlap: every WAP run has
forked its branch and written before any of them can be merged.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from e2e_support import REPO, DagsterDev, _alive, descendants, launch_dagster_dev, wait_until
from projects.parallel_backfill.definitions import (
    AUDIT_DELAY_TAG,
    BARRIER_ENV,
    FAIL_TAG,
    GROUP_TAG,
    HOLD_TAG,
    MONTHS,
    SIZE_TAG,
    VERSION_TAG,
    day_rows,
    days_rows,
    month_rows,
)

from dagster_lakehouse import Lakehouse
from dagster_lakehouse.dagster import BRANCH_TAG, MERGE_REASON_TAG, MERGE_TAG, WAP_TAG, wap_branch_name
from dagster_lakehouse.lakehouse.partition_state import partition_state

pytestmark = pytest.mark.slow

PROJECT = REPO / "tests" / "projects" / "parallel_backfill"
LOCATION = "parallel_backfill"
# dagster dev's QueuedRunCoordinator defaults to 10 runs at once; the monthly backfill runs 12 together
INSTANCE_YAML = """run_queue:
  max_concurrent_runs: 12
  dequeue_use_threads: true
  dequeue_num_workers: 12
  dequeue_interval_seconds: 1
"""
SEED_FIRST, SEED_LAST = "2023-12-31", "2024-01-10"
BACKFILL_DAYS = [(date(2024, 1, 1) + timedelta(days=n)).isoformat() for n in range(8)]
TABLES = ["parallel.wap_days", "parallel.conflict_days", "parallel.branch_days"]
FINISHED = ("SUCCESS", "FAILURE", "CANCELED")
PARTITION_TAG = "dagster/partition"


@pytest.fixture(scope="module")
def dagster_dev(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("parallel")
    lakehouse_path = root / "lakehouse"
    with Lakehouse.local(lakehouse_path) as lh:
        for table in TABLES:  # one bulk write: a single data file shared by every day
            lh.write(table, days_rows(SEED_FIRST, SEED_LAST, "seed"), branch="main", allow_main=True)
            assert len(list(lh.table(table).scan().plan_files())) == 1
    workspace = root / "workspace.yaml"
    workspace.write_text(
        "load_from:\n  - python_file:\n"
        f"      relative_path: {PROJECT / 'definitions.py'}\n"
        f"      location_name: {LOCATION}\n"
        f"      working_directory: {REPO}\n"
    )
    server = launch_dagster_dev(
        root,
        workspace,
        LOCATION,
        env={"LAKEHOUSE_PATH": str(lakehouse_path), BARRIER_ENV: str(root / "barriers")},
        instance_yaml=INSTANCE_YAML,
    )
    try:
        yield server
    finally:
        started = descendants(server.process.pid)
        server.stop()
    assert server.process.poll() is not None
    assert not [pid for pid in started if _alive(pid)], "dagster dev left processes behind"


# ----- helpers ----------------------------------------------------------------------------------------------


def _log_tail(dev: DagsterDev, chars: int = 4000) -> str:
    return dev.log_path.read_text(errors="replace")[-chars:]


def _backfill_runs(dev: DagsterDev, backfill_id: str, count: int, timeout: float = 300) -> list[dict[str, Any]]:
    """The `count` runs the backfill daemon launched for `backfill_id`, once all of them finished."""

    def finished() -> list[dict[str, Any]] | None:
        runs = dev.runs({"dagster/backfill": backfill_id})
        return runs if len(runs) == count and all(r["status"] in FINISHED for r in runs) else None

    try:
        return wait_until(finished, timeout, f"the {count} runs of backfill {backfill_id} to finish")
    except AssertionError as exc:
        runs = dev.runs({"dagster/backfill": backfill_id})
        states = [(r["tags"].get(PARTITION_TAG), r["status"]) for r in runs]
        raise AssertionError(f"{exc}; runs so far: {states}\n{_log_tail(dev)}") from None


def _timeline(runs: list[dict[str, Any]], since: float) -> str:
    """When the runs started and ended, in seconds after `since` (epoch), for the test's output."""
    starts = sorted(r["startTime"] - since for r in runs if r["startTime"])
    ends = sorted(r["endTime"] - since for r in runs if r["endTime"])
    return f"runs started {starts[0]:.0f}-{starts[-1]:.0f}s, ended {ends[0]:.0f}-{ends[-1]:.0f}s after the launch"


def _assert_succeeded_together(dev: DagsterDev, runs: list[dict[str, Any]]) -> None:
    failed = [(r["runId"], r["tags"].get(PARTITION_TAG), r["status"]) for r in runs if r["status"] != "SUCCESS"]
    assert not failed, f"runs that did not succeed: {failed}\n{_log_tail(dev)}"
    # each run waited at the barrier for all the others, so they were all running at one moment
    assert max(r["startTime"] for r in runs) < min(r["endTime"] for r in runs), [
        (r["startTime"], r["endTime"]) for r in runs
    ]


def _settled(dev: DagsterDev, run_ids: list[str], timeout: float = 120) -> dict[str, dict[str, str]]:
    """Tags of each run once `merge_sensor` handled it (its `lakehouse/merge` tag is no longer `pending`)."""

    def done() -> dict[str, dict[str, str]] | None:
        tags = {run_id: dev.run_tags(run_id) for run_id in run_ids}
        return tags if all(t.get(MERGE_TAG) not in (None, "pending") for t in tags.values()) else None

    try:
        return wait_until(done, timeout, "merge_sensor to handle every run")
    except AssertionError as exc:
        states = {run_id: dev.run_tags(run_id).get(MERGE_TAG) for run_id in run_ids}
        raise AssertionError(f"{exc}: {states}\n{_log_tail(dev)}") from None


def _published(dev: DagsterDev, key: list[str], by_day: dict[str, str], timeout: float = 60) -> dict[str, list]:
    """Per day, the runless materializations that record the publication of that day's run."""

    def found() -> dict[str, list] | None:
        events = {
            day: [
                e
                for e in dev.asset_events(key, "assetMaterializations", [day])
                if e["runId"] == "" and e["metadata"].get("lakehouse/run_id") == run_id
            ]
            for day, run_id in by_day.items()
        }
        return events if all(events.values()) else None

    try:
        return wait_until(found, timeout, "the publications to be recorded as materializations")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{_log_tail(dev)}") from None


def _sorted_rows(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select(sorted(frame.columns)).sort(sorted(frame.columns))


def assert_same_rows(actual: pl.DataFrame, expected: pl.DataFrame, what: str) -> None:
    """`actual` holds exactly the rows of `expected`, as multisets (order aside; duplicates count)."""
    assert actual.height == expected.height, f"{what}: {actual.height} rows, expected {expected.height}"
    assert not actual.is_duplicated().any(), f"{what}: duplicate rows\n{actual.filter(actual.is_duplicated())}"
    a, e = _sorted_rows(actual), _sorted_rows(expected.select(actual.columns))
    if not a.equals(e):
        missing = e.join(a, on=e.columns, how="anti")
        extra = a.join(e, on=a.columns, how="anti")
        raise AssertionError(f"{what}: rows differ\nmissing:\n{missing}\nunexpected:\n{extra}")


def _seed_except(days: list[str]) -> pl.DataFrame:
    seed = days_rows(SEED_FIRST, SEED_LAST, "seed")
    return seed.filter(~pl.col("day").is_in([date.fromisoformat(d) for d in days]))


# ----- tests ------------------------------------------------------------------------------------------------


def test_parallel_wap_backfill_publishes_every_partition(dagster_dev: DagsterDev) -> None:
    """8 WAP runs at once, one per day, each on its own `wap/<run>` branch: all 8 are merged into main."""
    dev, key, table = dagster_dev, ["parallel", "wap_days"], "parallel.wap_days"
    started = time.time()
    backfill = dev.launch_backfill([key], BACKFILL_DAYS, {WAP_TAG: "true", GROUP_TAG: "wap-backfill", SIZE_TAG: "8"})
    runs = _backfill_runs(dev, backfill, len(BACKFILL_DAYS))
    _assert_succeeded_together(dev, runs)
    by_day = {r["tags"][PARTITION_TAG]: r["runId"] for r in runs}
    assert sorted(by_day) == BACKFILL_DAYS

    tags = _settled(dev, list(by_day.values()))
    outcomes = {day: (tags[run][MERGE_TAG], tags[run].get(MERGE_REASON_TAG)) for day, run in by_day.items()}
    assert all(status == "merged" for status, _ in outcomes.values()), outcomes
    print(f"\n8 WAP runs: {_timeline(runs, started)}; all published after {time.time() - started:.0f}s")

    expected = pl.concat([_seed_except(BACKFILL_DAYS), *(day_rows(d, r) for d, r in by_day.items())])
    with Lakehouse.local(dev.lakehouse_path) as lh:
        assert_same_rows(lh.read(table, ref="main"), expected, f"{table} on main")
        assert not [b for b in lh.branches() if b in {wap_branch_name(r) for r in by_day.values()}]
        merges = [c for c in lh.log("main") if c.kind == "merge" and table in c.tables]  # newest first
        assert sorted(c.run_id for c in merges) == sorted(by_day.values())
        current = lh.snapshot_id(table, "main")

    # each publish is recorded on its partition: a runless materialization of main's state, naming the run (the
    # sensor tags runs as it merges them, the daemon stores the tick's materializations once the tick returns)
    published = _published(dev, key, by_day)
    for day, run_id in by_day.items():
        (event,) = published[day]
        assert event["partition"] == day
        assert event["metadata"]["lakehouse/branch"] == "main"
        assert event["metadata"]["lakehouse/merged_from"] == wap_branch_name(run_id)
        assert event["metadata"]["lakehouse/merge_commit"] in {c.id for c in merges}
        assert event["tags"]["dagster/data_version"] == str(event["metadata"]["lakehouse/snapshot_id"])
        if event["metadata"]["lakehouse/merge_commit"] == merges[0].id:  # the last publish: main's current state
            assert event["metadata"]["lakehouse/snapshot_id"] == current


def test_two_wap_runs_replacing_one_day_conflict_on_merge(dagster_dev: DagsterDev) -> None:
    """Two concurrent WAP runs replace the same day: the first is merged; the second is tagged conflict with a reason
    naming the table and the day, and main keeps the first run's rows."""
    dev, key, table, day = dagster_dev, ["parallel", "conflict_days"], "parallel.conflict_days", "2024-01-05"
    same_day = {PARTITION_TAG: day, GROUP_TAG: "same-day", SIZE_TAG: "2"}
    first = dev.launch("conflict_days_job", {**same_day, VERSION_TAG: "first"})
    # both runs write before either audits (barrier); the second finishes its audit 8 s later, so it merges second
    second = dev.launch("conflict_days_job", {**same_day, VERSION_TAG: "second", AUDIT_DELAY_TAG: "8"})
    for run_id in (first, second):
        assert dev.wait_for_run(run_id, timeout=180) == "SUCCESS", _log_tail(dev)

    tags = _settled(dev, [first, second])
    assert tags[first][MERGE_TAG] == "merged", tags[first]
    assert tags[second][MERGE_TAG] == "conflict", tags[second]
    reason = tags[second][MERGE_REASON_TAG]
    assert table in reason and wap_branch_name(second) in reason, reason
    assert day in reason and "both replaced rows where" in reason, (
        f"the reason does not say both runs replaced the day: {reason}"
    )

    with Lakehouse.local(dev.lakehouse_path) as lh:
        expected = pl.concat([_seed_except([day]), day_rows(day, "first")])
        assert_same_rows(lh.read(table, ref="main"), expected, f"{table} on main")
        assert lh.has_branch(wap_branch_name(second)) and not lh.has_branch(wap_branch_name(first))
        kept = lh.read(table, ref=wap_branch_name(second), filter=f"day >= '{day}' and day <= '{day}'")
        assert_same_rows(kept, day_rows(day, "second"), "the conflicting run's branch")

    def observed() -> list[dict[str, Any]]:
        events = dev.asset_events(key, "assetObservations", [day])
        return [e for e in events if e["metadata"].get("lakehouse/run_id") == second]

    (observation,) = wait_until(observed, 60, "the conflict to be recorded as an observation")
    assert observation["metadata"]["lakehouse/merge"] == "conflict"
    assert observation["metadata"]["lakehouse/conflicting_tables"] == table
    assert observation["metadata"]["lakehouse/target"] == "main"
    conflict_reason = observation["metadata"]["lakehouse/conflict_reason"]
    assert table in conflict_reason and day in conflict_reason, conflict_reason


def test_parallel_backfill_on_one_branch_writes_every_partition(dagster_dev: DagsterDev) -> None:
    """8 runs at once without WAP, one per day, all writing one branch: each day holds exactly its run's rows."""
    dev, key, table, branch = dagster_dev, ["parallel", "branch_days"], "parallel.branch_days", "parallel-dev"
    started = time.time()
    backfill = dev.launch_backfill(
        [key], BACKFILL_DAYS, {BRANCH_TAG: branch, GROUP_TAG: "branch-backfill", SIZE_TAG: "8"}
    )
    runs = _backfill_runs(dev, backfill, len(BACKFILL_DAYS))
    _assert_succeeded_together(dev, runs)
    by_day = {r["tags"][PARTITION_TAG]: r["runId"] for r in runs}
    assert sorted(by_day) == BACKFILL_DAYS
    print(f"\n8 runs on one branch: {_timeline(runs, started)}")

    with Lakehouse.local(dev.lakehouse_path) as lh:
        written = lh.read(table, ref=branch)
        expected = pl.concat([_seed_except(BACKFILL_DAYS), *(day_rows(d, r) for d, r in by_day.items())])
        assert_same_rows(written, expected, f"{table} on {branch!r}")
        for day, run_id in by_day.items():
            rows = written.filter(pl.col("day") == date.fromisoformat(day))
            assert_same_rows(rows, day_rows(day, run_id), f"day {day} on {branch!r}")
        writes = [c for c in lh.log(branch) if c.ref == branch and c.kind == "write" and table in c.tables]
        assert sorted(c.run_id for c in writes) == sorted(by_day.values())
        assert_same_rows(lh.read(table, ref="main"), days_rows(SEED_FIRST, SEED_LAST, "seed"), f"{table} on main")
    for day, run_id in by_day.items():
        (event,) = dev.asset_events(key, "assetMaterializations", [day])
        assert event["runId"] == run_id and event["metadata"]["lakehouse/branch"] == branch


# ----- partitions of a new table: first WAP backfills, and what Dagster shows of main --------------------------


def _next_month(month: str) -> str:
    start = date.fromisoformat(month)
    return (
        start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    ).isoformat()


def _month_filter(month: str) -> str:
    return f"day >= '{month}' and day < '{_next_month(month)}'"


def _backfill(dev: DagsterDev, backfill_id: str) -> dict[str, Any]:
    """The backfill's status and, per asset, its partition counts as the Backfills page shows them."""
    node = dev.graphql(
        "query($id: String!) { partitionBackfillOrError(backfillId: $id) { __typename ... on PartitionBackfill {"
        " status assetBackfillData { assetBackfillStatuses { __typename ... on AssetPartitionsStatusCounts {"
        " assetKey { path } numPartitionsTargeted numPartitionsMaterialized numPartitionsFailed } } } } } }",
        {"id": backfill_id},
    )["partitionBackfillOrError"]
    assert node["__typename"] == "PartitionBackfill", node
    counts = {tuple(c["assetKey"]["path"]): c for c in node["assetBackfillData"]["assetBackfillStatuses"]}
    return {"status": node["status"], "counts": counts}


def _finished_backfill(dev: DagsterDev, backfill_id: str, status: str, timeout: float = 120) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        backfill = _backfill(dev, backfill_id)
        return backfill if backfill["status"] == status else None

    try:
        return wait_until(done, timeout, f"backfill {backfill_id} to end {status}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {_backfill(dev, backfill_id)}\n{_log_tail(dev)}") from None


def _latest_by_partition(dev: DagsterDev, key: list[str], partitions: list[str]) -> dict[str, dict[str, Any] | None]:
    """Each partition's latest materialization as the asset's partition page shows it (None: never materialized)."""
    node = dev.graphql(
        "query($key: AssetKeyInput!, $partitions: [String!]) { assetNodeOrError(assetKey: $key) { ... on AssetNode {"
        " latestMaterializationByPartition(partitions: $partitions) { runId partition tags { key value }"
        " metadataEntries { label __typename ... on TextMetadataEntry { text } ... on IntMetadataEntry { intRepr } } }"
        " } } }",
        {"key": {"path": key}, "partitions": partitions},
    )["assetNodeOrError"]
    latest = {}
    for partition, event in zip(partitions, node["latestMaterializationByPartition"], strict=True):
        if event is None:
            latest[partition] = None
            continue
        metadata = {e["label"]: e.get("text", e.get("intRepr")) for e in event["metadataEntries"]}
        latest[partition] = {**event, "tags": {t["key"]: t["value"] for t in event["tags"]}, "metadata": metadata}
    return latest


def _mismatches(dev: DagsterDev, key: list[str], table: str, months: list[str]) -> list[str]:
    """Where Dagster's latest materialization per partition disagrees with what `main` holds: a partition on main
    must be shown on main with main's row count and data version, a partition main lacks must not be."""
    latest = _latest_by_partition(dev, key, months)
    problems = []
    with Lakehouse.local(dev.lakehouse_path) as lh:
        for month in months:
            event, where = latest[month], _month_filter(month)
            state = partition_state(lh, table, "main", where) if table in lh.tables("main") else None
            shown = event is not None and event["metadata"].get("lakehouse/branch") == "main"
            if state is None:
                if shown:
                    problems.append(f"{month}: shown on main, but main holds none of its rows")
                continue
            rows = lh.read(table, ref="main", filter=where).height
            assert rows == state.rows, (month, rows, state)
            if not shown:
                branch = event["metadata"].get("lakehouse/branch") if event else None
                problems.append(f"{month}: main holds {rows} rows, but the latest materialization is on {branch!r}")
                continue
            row_count = int(event["metadata"].get("dagster/row_count", -1))
            version = event["tags"].get("dagster/data_version")
            if row_count != rows or version != str(state.snapshot_id):
                problems.append(
                    f"{month}: shown with {row_count} rows and data version {version}, main holds {rows} rows at "
                    f"snapshot {state.snapshot_id}"
                )
    return problems


def _assert_dagster_shows_main(dev: DagsterDev, key: list[str], table: str, months: list[str]) -> None:
    """Within the sensors' next ticks, every partition's page describes exactly what main holds."""
    try:
        wait_until(lambda: not _mismatches(dev, key, table, months), 90, "the partitions to show main's state")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {_mismatches(dev, key, table, months)}\n{_log_tail(dev)}") from None


def test_first_wap_backfill_of_a_new_table_publishes_every_month(dagster_dev: DagsterDev) -> None:
    """12 WAP runs of monthly partitions at once, into a table main does not have yet: every run creates the table on
    its own branch, and all 12 are published; main equals the serial union, and each partition's page shows main."""
    dev, key, table = dagster_dev, ["parallel", "flights"], "parallel.flights"
    with Lakehouse.local(dev.lakehouse_path) as lh:
        assert table not in lh.tables("main")
    started = time.time()
    backfill = dev.launch_backfill([key], MONTHS, {WAP_TAG: "true", GROUP_TAG: "first-months", SIZE_TAG: "12"})
    runs = _backfill_runs(dev, backfill, len(MONTHS))
    _assert_succeeded_together(dev, runs)
    by_month = {r["tags"][PARTITION_TAG]: r["runId"] for r in runs}
    assert sorted(by_month) == MONTHS

    tags = _settled(dev, list(by_month.values()))
    outcomes = {month: (tags[run][MERGE_TAG], tags[run].get(MERGE_REASON_TAG)) for month, run in by_month.items()}
    assert all(status == "merged" for status, _ in outcomes.values()), outcomes
    print(f"\n12 WAP runs of a new table: {_timeline(runs, started)}; all published after {time.time() - started:.0f}s")

    with Lakehouse.local(dev.lakehouse_path) as lh:
        expected = pl.concat([month_rows(m, run_id) for m, run_id in by_month.items()])
        assert_same_rows(lh.read(table, ref="main"), expected, f"{table} on main")
    backfill_state = _finished_backfill(dev, backfill, "COMPLETED_SUCCESS")
    counts = backfill_state["counts"][tuple(key)]
    assert (counts["numPartitionsMaterialized"], counts["numPartitionsFailed"]) == (12, 0), counts
    _assert_dagster_shows_main(dev, key, table, MONTHS)


def test_backfill_with_partitions_that_cannot_publish_shows_them_failed(dagster_dev: DagsterDev) -> None:
    """A WAP backfill of 6 months of a new table where one month's audit fails and another conflicts with a write to
    main made while the runs were held: those two runs and the backfill end failed with the reason, the four others
    are published, and each partition's page shows exactly what main holds."""
    dev, key, table = dagster_dev, ["parallel", "delays"], "parallel.delays"
    months, failing, conflicting = MONTHS[:6], MONTHS[1], MONTHS[2]
    hold_name = "delays-hold"
    backfill = dev.launch_backfill(
        [key],
        months,
        {WAP_TAG: "true", GROUP_TAG: "delays", SIZE_TAG: "6", FAIL_TAG: failing, HOLD_TAG: hold_name},
    )
    barriers = dev.lakehouse_path.parent / "barriers"
    wait_until(
        lambda: (barriers / "delays" / "audit").is_dir() and len(list((barriers / "delays" / "audit").iterdir())) == 6,
        240,
        "the 6 runs to write and reach their audit",
    )
    with Lakehouse.local(dev.lakehouse_path) as lh:  # outside Dagster, main gets the conflicting month first
        outside = month_rows(conflicting, "outside")
        lh.write(table, outside, branch="main", allow_main=True, where=_month_filter(conflicting))
    (barriers / hold_name).mkdir(parents=True, exist_ok=True)
    (barriers / hold_name / "release").touch()

    runs = _backfill_runs(dev, backfill, len(months))
    by_month = {r["tags"][PARTITION_TAG]: r for r in runs}
    tags = _settled(dev, [r["runId"] for r in runs])
    merged = {m for m, r in by_month.items() if tags[r["runId"]][MERGE_TAG] == "merged"}
    assert merged == set(months) - {failing, conflicting}, {m: tags[r["runId"]][MERGE_TAG] for m, r in by_month.items()}
    assert tags[by_month[failing]["runId"]][MERGE_TAG] == "skipped"
    assert "its_month" in tags[by_month[failing]["runId"]][MERGE_REASON_TAG]
    assert tags[by_month[conflicting]["runId"]][MERGE_TAG] == "conflict"
    assert table in tags[by_month[conflicting]["runId"]][MERGE_REASON_TAG]

    # the runs that were not published end failed, saying why; the backfill is not a success
    def statuses() -> dict[str, str] | None:
        found = {
            m: r["status"] for m, r in ((r["tags"][PARTITION_TAG], r) for r in dev.runs({"dagster/backfill": backfill}))
        }
        return found if found[failing] == found[conflicting] == "FAILURE" else None

    final = wait_until(statuses, 60, "the unpublished runs to show failure")
    assert {m for m, status in final.items() if status == "SUCCESS"} == merged, final
    backfill_state = _finished_backfill(dev, backfill, "COMPLETED_FAILED")
    counts = backfill_state["counts"][tuple(key)]
    assert (counts["numPartitionsMaterialized"], counts["numPartitionsFailed"]) == (4, 2), counts
    for month in (failing, conflicting):
        run_id = by_month[month]["runId"]
        messages = dev.graphql(
            "query($id: ID!) { runOrError(runId: $id) { ... on Run { eventConnection { events { __typename"
            " ... on RunFailureEvent { message } } } } } }",
            {"id": run_id},
        )["runOrError"]["eventConnection"]["events"]
        failures = [e["message"] for e in messages if e["__typename"] == "RunFailureEvent"]
        assert any(tags[run_id][MERGE_REASON_TAG][:80] in m or "its_month" in m for m in failures), failures

    with Lakehouse.local(dev.lakehouse_path) as lh:
        expected = pl.concat([outside, *(month_rows(m, by_month[m]["runId"]) for m in sorted(merged))])
        assert_same_rows(lh.read(table, ref="main"), expected, f"{table} on main")
    _assert_dagster_shows_main(dev, key, table, months)
    latest = _latest_by_partition(dev, key, [failing])[failing]
    assert latest is not None and latest["metadata"]["lakehouse/branch"] == wap_branch_name(by_month[failing]["runId"])


def test_merge_from_a_shell_is_shown_within_two_ticks(dagster_dev: DagsterDev) -> None:
    """`lakehouse branch merge` from a shell while dagster dev runs: main_state_sensor reads main's commit log, and
    the partition's latest materialization carries main's new snapshot within two ticks (5 s each)."""
    dev, key, table, month = dagster_dev, ["parallel", "flights"], "parallel.flights", MONTHS[0]
    with Lakehouse.local(dev.lakehouse_path) as lh:
        assert table in lh.tables("main"), "runs after test_first_wap_backfill_of_a_new_table_publishes_every_month"
        lh.create_branch("shell-fix")
        lh.write(table, month_rows(month, "shell"), branch="shell-fix", where=_month_filter(month))
    env = {**os.environ, "LAKEHOUSE_PATH": str(dev.lakehouse_path)}
    merged = subprocess.run(
        [str(Path(sys.executable).parent / "lakehouse"), "branch", "merge", "shell-fix", "--into", "main"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert merged.returncode == 0, merged.stderr
    merged_at = time.monotonic()
    with Lakehouse.local(dev.lakehouse_path) as lh:
        state = partition_state(lh, table, "main", _month_filter(month))
        assert state is not None and state.rows == month_rows(month, "shell").height

    def shown() -> dict[str, Any] | None:
        event = _latest_by_partition(dev, key, [month])[month]
        return event if event and event["tags"].get("dagster/data_version") == str(state.snapshot_id) else None

    event = wait_until(shown, 30, "the merge to be shown on the partition's page")
    elapsed = time.monotonic() - merged_at
    assert event["metadata"]["lakehouse/branch"] == "main" and int(event["metadata"]["dagster/row_count"]) == state.rows
    assert elapsed < 2 * 5 + 10, f"shown after {elapsed:.0f}s"  # two ticks of 5 s, plus the daemon's own latency
    _assert_dagster_shows_main(dev, key, table, MONTHS)
