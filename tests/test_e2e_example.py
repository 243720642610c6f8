"""The user's whole path: seed, `dagster dev`, materialize on a branch via GraphQL, check, merge, check main."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from e2e_support import REPO, DagsterDev, _alive, descendants, start_dagster_dev, wait_until

from dagster_lakehouse import Lakehouse

MODELS = ["taxi.stats_by_taxi_zones", "taxi.trips_and_zones"]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture(scope="module")
def dagster_dev(tmp_path_factory: pytest.TempPathFactory):
    server = start_dagster_dev(tmp_path_factory.mktemp("e2e"))
    try:
        yield server
    finally:
        started = descendants(server.process.pid)
        server.stop()
    assert server.process.poll() is not None
    assert not [pid for pid in started if _alive(pid)], "dagster dev left processes behind"


def test_assets_and_lineage_are_served(dagster_dev: DagsterDev) -> None:
    nodes = dagster_dev.graphql(
        "{ assetNodes { assetKey { path } dependencyKeys { path } groupName isExecutable opVersion kinds } }"
    )["assetNodes"]
    by_key = {"/".join(n["assetKey"]["path"]): n for n in nodes}
    assert set(by_key) >= {"taxi/trips", "taxi/zones", "taxi/trips_and_zones", "taxi/stats_by_taxi_zones"}
    deps = {key: sorted("/".join(d["path"]) for d in n["dependencyKeys"]) for key, n in by_key.items()}
    assert deps["taxi/trips_and_zones"] == ["taxi/trips", "taxi/zones"]
    assert deps["taxi/stats_by_taxi_zones"] == ["taxi/trips_and_zones"]
    model = by_key["taxi/trips_and_zones"]
    assert model["groupName"] == "taxi" and model["opVersion"] and set(model["kinds"]) >= {"iceberg", "polars", "marimo"}
    assert not by_key["taxi/trips"]["isExecutable"]


def test_materialize_on_a_branch_then_merge_into_main(dagster_dev: DagsterDev) -> None:
    run_id = dagster_dev.launch("taxi_job", {"lakehouse/branch": "e2e-run"})
    assert dagster_dev.wait_for_run(run_id) == "SUCCESS", dagster_dev.log_path.read_text()[-3000:]

    with Lakehouse.local(dagster_dev.lakehouse_path) as lh:
        assert set(MODELS) <= set(lh.tables("e2e-run"))
        assert not set(MODELS) & set(lh.tables("main"))
        stats = lh.read("taxi.stats_by_taxi_zones", ref="e2e-run")
        assert stats["Borough"].n_unique() == 5 and stats["trips"].sum() > 0
        summary = lh.table("taxi.stats_by_taxi_zones", "e2e-run").current_snapshot().summary
        assert summary["dagster.run-id"] == run_id

        result = lh.merge("e2e-run", into="main")
        assert sorted(result.tables) == MODELS
        assert lh.read("taxi.stats_by_taxi_zones", ref="main").equals(stats)
        assert lh.log("main")[0].kind == "merge"


def test_branches_become_partitions_and_a_branch_partition_runs_on_its_branch(dagster_dev: DagsterDev) -> None:
    with Lakehouse.local(dagster_dev.lakehouse_path) as lh:
        lh.create_branch("report-branch", exist_ok=True)
    summary = ["taxi", "borough_summary"]
    wait_until(lambda: "report-branch" in dagster_dev.partition_keys(summary), 120, "branch_sync_sensor to add the partition")
    run_id = dagster_dev.launch("taxi_job", {"lakehouse/branch": "report-branch"})
    assert dagster_dev.wait_for_run(run_id) == "SUCCESS"
    run_id = dagster_dev.launch("__ASSET_JOB", {"dagster/partition": "report-branch"}, asset_selection=[summary])
    assert dagster_dev.wait_for_run(run_id) == "SUCCESS", dagster_dev.log_path.read_text()[-3000:]
    with Lakehouse.local(dagster_dev.lakehouse_path) as lh:
        boroughs = lh.read("taxi.borough_summary", ref="report-branch")
        assert boroughs.height == 5
        assert "taxi.borough_summary" not in lh.tables("main")


def test_write_audit_publish_is_merged_by_the_sensor_daemon(dagster_dev: DagsterDev) -> None:
    run_id = dagster_dev.launch("publish_taxi_job", {})
    assert dagster_dev.wait_for_run(run_id) == "SUCCESS", dagster_dev.log_path.read_text()[-3000:]

    def merged() -> bool:
        return dagster_dev.run_tags(run_id).get("lakehouse/merge") == "merged"

    wait_until(merged, 180, "merge_sensor to publish the run")
    with Lakehouse.local(dagster_dev.lakehouse_path) as lh:
        assert f"wap/{run_id}" not in lh.branches()
        merge = next(c for c in lh.log("main") if c.kind == "merge" and c.run_id == run_id)
        assert sorted(merge.tables) == MODELS
        summary = lh.table("taxi.stats_by_taxi_zones", "main").current_snapshot().summary
        assert summary["dagster.run-id"] == run_id


def test_browser_shows_the_lineage(dagster_dev: DagsterDev) -> None:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail("Debian's chromium is not installed (.ci/run installs it)")
        pytest.skip("no /usr/bin/chromium here; `apt-get install chromium` to run the browser test")
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=flags)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(f"{dagster_dev.url}/assets/taxi/stats_by_taxi_zones?view=lineage&lineageScope=upstream&lineageDepth=5")
            skip = page.get_by_role("button", name="Skip")
            try:
                skip.click(timeout=15_000)  # the first-visit community dialog
            except Exception:
                pass
            for name in ("trips", "zones", "trips_and_zones", "stats_by_taxi_zones"):
                expect(page.get_by_text(name, exact=True).first).to_be_visible(timeout=60_000)
            expect(page.get_by_text("Loading...")).to_have_count(0, timeout=60_000)
            edges = page.locator("svg path[stroke]")
            assert edges.count() >= 3
            page.screenshot(path=str(ARTIFACTS / "asset-lineage.png"))
        finally:
            browser.close()
    assert (ARTIFACTS / "asset-lineage.png").stat().st_size > 10_000
