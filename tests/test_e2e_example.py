"""The user's whole path: seed, `dagster dev`, the quick start's "Materialize all" clicked in Chromium and its commands,
materialize on a branch via GraphQL, check, merge, check main; in Chromium, the lineage and an asset page that shows
`main`'s version whatever ran on other branches."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from e2e_support import REPO, DagsterDev, _alive, descendants, start_dagster_dev, wait_until

from dagster_lakehouse import Lakehouse

MODELS = ["taxi.stats_by_taxi_zones", "taxi.trips_and_zones"]
EVERY_MODEL = ["taxi.borough_summary", "taxi.stats_by_taxi_zones", "taxi.trips_and_zones", "taxi.zone_report"]
STATS = ["taxi", "stats_by_taxi_zones"]
QUICKSTART = REPO / "docs" / "quickstart.md"
pytestmark = pytest.mark.slow  # every test here runs against one `dagster dev` with its daemon

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
    assert server.log_file is not None and server.log_file.closed
    assert not [pid for pid in started if _alive(pid)], "dagster dev left processes behind"


def test_assets_and_lineage_are_served(dagster_dev: DagsterDev) -> None:
    nodes = dagster_dev.graphql(
        "{ assetNodes { assetKey { path } dependencyKeys { path } groupName isExecutable isPartitioned opVersion"
        " kinds } }"
    )["assetNodes"]
    by_key = {"/".join(n["assetKey"]["path"]): n for n in nodes}
    assert set(by_key) >= {"taxi/trips", "taxi/zones", "taxi/trips_and_zones", "taxi/stats_by_taxi_zones"}
    deps = {key: sorted("/".join(d["path"]) for d in n["dependencyKeys"]) for key, n in by_key.items()}
    assert deps["taxi/trips_and_zones"] == ["taxi/trips", "taxi/zones"]
    assert deps["taxi/stats_by_taxi_zones"] == ["taxi/trips_and_zones"]
    model = by_key["taxi/trips_and_zones"]
    assert model["groupName"] == "taxi" and model["opVersion"] and set(model["kinds"]) >= {"iceberg", "polars", "marimo"}
    assert not by_key["taxi/trips"]["isExecutable"]
    partitioned = [key for key, n in by_key.items() if n["isPartitioned"]]
    assert not partitioned, f"Materialize all would open a partitions dialog for {partitioned}"


def _quickstart_commands() -> list[list[str]]:
    """The `.venv/bin/lakehouse ...` commands of the quick start's step 2, in order, as argument lists."""
    text = QUICKSTART.read_text()
    step = text[text.index("## 2. "):text.index("## 3. ")]
    commands = re.findall(r"^\.venv/bin/lakehouse (.+)$", step, flags=re.MULTILINE)
    return [shlex.split(command) for command in commands]


def _lakehouse_cli(dev: DagsterDev, args: list[str]) -> str:
    """Run the `lakehouse` CLI as the quick start does (the lakehouse found from LAKEHOUSE_PATH); returns its stdout."""
    env = {**os.environ, "LAKEHOUSE_PATH": str(dev.lakehouse_path)}
    for var in ("LAKEHOUSE_CATALOG_URI", "LAKEHOUSE_WAREHOUSE"):
        env.pop(var, None)
    cli = Path(sys.executable).with_name("lakehouse")
    done = subprocess.run([str(cli), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"lakehouse {shlex.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _ui_runs(dev: DagsterDev) -> list[dict[str, Any]]:
    """Runs launched from the UI, newest first: runId, status, tags and the asset keys they materialize."""
    results = dev.graphql(
        """{ runsOrError(filter: {tags: [{key: "dagster/from_ui", value: "true"}]}) { ... on Runs { results {
            runId status tags { key value } assetSelection { path } } } } }"""
    )["runsOrError"]["results"]
    return [
        {
            **run,
            "tags": {tag["key"]: tag["value"] for tag in run["tags"]},
            "assets": sorted(".".join(key["path"]) for key in run["assetSelection"]),
        }
        for run in results
    ]


def _click_materialize_all(dev: DagsterDev, page: Any, path: str, screenshot: str) -> dict[str, Any]:
    """On the page at `path`, click "Materialize all" as a user does: no dialog may open; returns the run it launched
    once it finished."""
    from playwright.sync_api import expect

    before = {r["runId"] for r in _ui_runs(dev)}
    _open(page, f"{dev.url}{path}")
    button = page.get_by_role("button", name=re.compile(r"Materialize all"))
    expect(button).to_be_enabled(timeout=60_000)
    expect(page.get_by_text("Loading...")).to_have_count(0, timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / f"{screenshot}-before.png"))
    button.click()
    expect(page.get_by_text(re.compile(r"Launched run"))).to_be_visible(timeout=60_000)
    expect(page.get_by_role("dialog")).to_have_count(0)  # no partitions dialog, no launchpad
    (run,) = wait_until(lambda: [r for r in _ui_runs(dev) if r["runId"] not in before], 60, "the launched run")
    assert dev.wait_for_run(run["runId"]) == "SUCCESS", dev.log_path.read_text()[-3000:]
    _open(page, f"{dev.url}/runs/{run['runId']}")
    expect(page.get_by_text(re.compile(r"Finished execution of run")).first).to_be_visible(timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / f"{screenshot}-run.png"))
    return {**run, "tags": dev.run_tags(run["runId"])}


def test_quickstart_materialize_all_runs_every_asset_on_dev(dagster_dev: DagsterDev) -> None:
    """Quick start step 2 from a fresh seed: "Materialize all" on the global Lineage page launches one run of every
    asset on `dev`, no dialog; `main` is untouched until the quick start's commands (run as written) merge `dev`
    into it. A group page's "Materialize all" runs that group on `dev` too."""
    dev = dagster_dev
    commands = _quickstart_commands()
    assert [c[:2] for c in commands] == [
        ["branch", "list"], ["branch", "diff"], ["table", "head"], ["query", commands[3][1]], ["branch", "merge"]
    ], commands
    with Lakehouse.local(dev.lakehouse_path) as lh:
        assert lh.branches() == ["main"]
        seeded = [c.id for c in lh.log("main")]

    with _browser_page() as page:
        run = _click_materialize_all(dev, page, "/asset-groups", "quickstart-materialize-all")
        assert run["assets"] == sorted(EVERY_MODEL)
        assert run["tags"]["lakehouse/branch"] == run["tags"]["lakehouse/target"] == "dev"
        assert not [key for key in run["tags"] if key.startswith("dagster/partition")]
        with Lakehouse.local(dev.lakehouse_path) as lh:
            assert set(EVERY_MODEL) <= set(lh.tables("dev"))
            assert [c.id for c in lh.log("main")] == seeded and not set(EVERY_MODEL) & set(lh.tables("main"))
            stats = lh.read("taxi.stats_by_taxi_zones", ref="dev")

        listed, diff, head, query = (_lakehouse_cli(dev, args) for args in commands[:4])
        assert {line.split()[0] for line in listed.splitlines()[1:] if line.strip()} == {"main", "dev"}, listed
        assert all(table in diff for table in EVERY_MODEL), diff
        assert head.startswith("shape: (5, ") and "Borough" in head, head
        assert all(borough in query for borough in ("Manhattan", "Brooklyn", "Queens", "Bronx", "Staten Island")), query
        with Lakehouse.local(dev.lakehouse_path) as lh:
            assert [c.id for c in lh.log("main")] == seeded  # looking changes nothing

        _lakehouse_cli(dev, commands[4])
        with Lakehouse.local(dev.lakehouse_path) as lh:
            assert lh.log("main")[0].kind == "merge" and [c.id for c in lh.log("main")[1:]] == seeded
            assert set(EVERY_MODEL) <= set(lh.tables("main"))
            assert lh.read("taxi.stats_by_taxi_zones", ref="main").equals(stats)

        group_run = _click_materialize_all(
            dev, page, "/locations/example_project.definitions/asset-groups/taxi", "quickstart-materialize-group"
        )
        assert group_run["assets"] == MODELS
        assert group_run["tags"]["lakehouse/branch"] == group_run["tags"]["lakehouse/target"] == "dev"
    assert (ARTIFACTS / "quickstart-materialize-all-run.png").stat().st_size > 10_000


def test_materialize_on_a_branch_then_merge_into_main(dagster_dev: DagsterDev) -> None:
    with Lakehouse.local(dagster_dev.lakehouse_path) as lh:
        on_main = {table: lh.snapshot_id(table, "main") if lh.exists(table, ref="main") else None for table in MODELS}
    run_id = dagster_dev.launch("taxi_job", {"lakehouse/branch": "e2e-run"})
    assert dagster_dev.wait_for_run(run_id) == "SUCCESS", dagster_dev.log_path.read_text()[-3000:]

    with Lakehouse.local(dagster_dev.lakehouse_path) as lh:
        assert set(MODELS) <= set(lh.tables("e2e-run"))
        assert {t: lh.snapshot_id(t, "main") if lh.exists(t, ref="main") else None for t in MODELS} == on_main
        stats = lh.read("taxi.stats_by_taxi_zones", ref="e2e-run")
        assert stats["Borough"].n_unique() == 5 and stats["trips"].sum() > 0
        summary = lh.table("taxi.stats_by_taxi_zones", "e2e-run").current_snapshot().summary
        assert summary["dagster.run-id"] == run_id

        result = lh.merge("e2e-run", into="main")
        assert sorted(result.tables) == MODELS
        assert lh.read("taxi.stats_by_taxi_zones", ref="main").equals(stats)
        assert lh.log("main")[0].kind == "merge"


def test_an_isolated_notebook_runs_in_the_environment_its_header_declares(dagster_dev: DagsterDev) -> None:
    """`zone_report.py` declares `humanize`, which the code location does not have: its model runs in the environment
    of its PEP 723 header (built by the run with uv, in the server's environment cache) and writes the run's branch."""
    assert importlib.util.find_spec("humanize") is None
    report = ["taxi", "zone_report"]
    with Lakehouse.local(dagster_dev.lakehouse_path) as lh:
        on_main = lh.snapshot_id("taxi.zone_report", "main") if lh.exists("taxi.zone_report") else None
    run_id = dagster_dev.launch(
        "__ASSET_JOB", {"lakehouse/branch": "isolated-run"}, asset_selection=[["taxi", "trips_and_zones"], STATS, report]
    )
    assert dagster_dev.wait_for_run(run_id) == "SUCCESS", dagster_dev.log_path.read_text()[-3000:]
    with Lakehouse.local(dagster_dev.lakehouse_path) as lh:
        table = lh.read("taxi.zone_report", ref="isolated-run")
        assert table.height == 10 and table["trips_in_words"].null_count() == 0
        assert table["mean_fare_text"].str.starts_with("$").all()
        assert (lh.snapshot_id("taxi.zone_report", "main") if lh.exists("taxi.zone_report") else None) == on_main
    entries = dagster_dev.graphql(
        """query($key: AssetKeyInput!) { assetOrError(assetKey: $key) { ... on Asset {
            assetMaterializations(limit: 1) { runId metadataEntries { label
                ... on TextMetadataEntry { text } ... on IntMetadataEntry { intValue }
                ... on BoolMetadataEntry { boolValue } ... on JsonMetadataEntry { jsonString } } } } } }""",
        {"key": {"path": report}},
    )["assetOrError"]["assetMaterializations"][0]
    assert entries["runId"] == run_id
    by_label = {e["label"]: e for e in entries["metadataEntries"]}
    assert by_label["dagster/row_count"]["intValue"] == 10
    assert by_label["lakehouse/branch"]["text"] == "isolated-run"
    assert "humanize==4.9.0" in by_label["lakehouse/environment_packages"]["jsonString"]
    environment = by_label["lakehouse/environment"]["text"]
    assert (dagster_dev.lakehouse_path.parent / "environments" / "envs" / environment / "bin" / "python").exists()


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


@contextlib.contextmanager
def _browser_page() -> Iterator[Any]:
    """A headless Chromium page (1600x1000); skips (fails on CI) when Debian's chromium is not installed."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail("Debian's chromium is not installed (.ci/run installs it)")
        pytest.skip("no /usr/bin/chromium here; `apt-get install chromium` to run the browser test")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=flags)
        try:
            yield browser.new_page(viewport={"width": 1600, "height": 1000})
        finally:
            browser.close()


def _open(page: Any, url: str) -> None:
    page.goto(url)
    try:
        page.get_by_role("button", name="Skip").click(timeout=15_000)  # the first-visit community dialog
    except Exception:
        pass


def _latest_materialization(dev: DagsterDev, key: list[str]) -> dict[str, Any]:
    return dev.asset_events(key, "assetMaterializations")[0]


def test_asset_page_shows_mains_version(dagster_dev: DagsterDev) -> None:
    """After a run on a work branch and a failed write-audit-publish run, the asset page still shows `main`'s row
    count and snapshot id (main_state_sensor restates it); after a successful one, the version it published."""
    from playwright.sync_api import expect

    dev = dagster_dev
    with Lakehouse.local(dev.lakehouse_path) as lh:
        zones = lh.read("taxi.zones", ref="main")
        lh.create_branch("ui-dev", exist_ok=True)
        lh.write("taxi.zones", zones.filter(pl.col("LocationID") % 2 == 0), branch="ui-dev")
        lh.create_branch("ui-bad", exist_ok=True)
        no_staten_island = pl.when(pl.col("Borough") == "Staten Island").then(pl.lit("Manhattan"))
        lh.write("taxi.zones", zones.with_columns(Borough=no_staten_island.otherwise("Borough")), branch="ui-bad")
        main_snapshot = lh.snapshot_id("taxi.stats_by_taxi_zones", "main")
        main_rows = lh.read("taxi.stats_by_taxi_zones", ref="main").height

    dev_run = dev.launch("taxi_job", {"lakehouse/branch": "ui-dev"})
    assert dev.wait_for_run(dev_run) == "SUCCESS", dev.log_path.read_text()[-3000:]
    failing = dev.launch("publish_taxi_job", {"lakehouse/branch": "ui-bad"})
    assert dev.wait_for_run(failing) == "FAILURE"  # stats_are_plausible (blocking) fails: four boroughs
    assert dev.run_tags(failing)["lakehouse/branch"] == f"wap/{failing}"
    events = dev.asset_events(STATS, "assetMaterializations")
    assert any(e["runId"] == failing and e["metadata"]["lakehouse/branch"] == f"wap/{failing}" for e in events)

    def restated() -> dict[str, Any] | None:
        latest = _latest_materialization(dev, STATS)
        return latest if latest["metadata"].get("lakehouse/branch") == "main" and not latest["runId"] else None

    latest = wait_until(restated, 120, "main_state_sensor to restate main's version")
    assert latest["metadata"]["lakehouse/snapshot_id"] == main_snapshot
    assert latest["metadata"]["dagster/row_count"] == main_rows
    assert latest["tags"]["dagster/data_version"] == str(main_snapshot)

    with _browser_page() as page:
        _open(page, f"{dev.url}/assets/taxi/stats_by_taxi_zones")
        expect(page.get_by_text("Row count")).to_be_visible(timeout=60_000)
        expect(page.get_by_text(str(main_snapshot), exact=True)).to_be_visible(timeout=60_000)
        text = page.inner_text("body")
        page.screenshot(path=str(ARTIFACTS / "asset-page-main-after-failed-wap.png"), full_page=True)
        assert f"Row count\n{main_rows}" in text, text[:2000]

        published = dev.launch("publish_taxi_job", {})
        assert dev.wait_for_run(published) == "SUCCESS", dev.log_path.read_text()[-3000:]
        wait_until(lambda: dev.run_tags(published).get("lakehouse/merge") == "merged", 120, "merge_sensor")
        with Lakehouse.local(dev.lakehouse_path) as lh:
            new_snapshot = lh.snapshot_id("taxi.stats_by_taxi_zones", "main")
            new_rows = lh.read("taxi.stats_by_taxi_zones", ref="main").height
        assert new_snapshot != main_snapshot
        latest = _latest_materialization(dev, STATS)
        assert latest["metadata"]["lakehouse/snapshot_id"] == new_snapshot
        _open(page, f"{dev.url}/assets/taxi/stats_by_taxi_zones")
        expect(page.get_by_text(str(new_snapshot), exact=True)).to_be_visible(timeout=60_000)
        assert f"Row count\n{new_rows}" in page.inner_text("body")
        page.screenshot(path=str(ARTIFACTS / "asset-page-main-after-publish.png"), full_page=True)
    assert (ARTIFACTS / "asset-page-main-after-failed-wap.png").stat().st_size > 10_000


def test_browser_shows_the_lineage(dagster_dev: DagsterDev) -> None:
    from playwright.sync_api import expect

    with _browser_page() as page:
        _open(page, f"{dagster_dev.url}/assets/taxi/stats_by_taxi_zones?view=lineage&lineageScope=upstream&lineageDepth=5")
        for name in ("trips", "zones", "trips_and_zones", "stats_by_taxi_zones"):
            expect(page.get_by_text(name, exact=True).first).to_be_visible(timeout=60_000)
        expect(page.get_by_text("Loading...")).to_have_count(0, timeout=60_000)
        expect(page.locator("svg foreignObject [data-tooltip='trips_and_zones']")).to_be_visible(timeout=60_000)
        graph = page.evaluate(_LINEAGE_GEOMETRY_JS, LINEAGE_NODES)
        page.screenshot(path=str(ARTIFACTS / "asset-lineage.png"))
    assert (ARTIFACTS / "asset-lineage.png").stat().st_size > 10_000

    boxes = graph["boxes"]
    assert set(boxes) == set(LINEAGE_NODES), f"asset nodes not drawn in the lineage graph: {boxes}"
    # laid out left to right: raw tables, then the join, then the stats
    for raw in ("trips", "zones"):
        assert boxes[raw]["right"] <= boxes["trips_and_zones"]["left"], boxes
    assert boxes["trips_and_zones"]["right"] <= boxes["stats_by_taxi_zones"]["left"], boxes
    # each drawn edge runs from one node (its start) to another (its arrowhead): together exactly the lineage
    drawn = {(_nearest_node(boxes, e["start"]), _nearest_node(boxes, e["end"])) for e in graph["edges"]}
    assert drawn == LINEAGE_EDGES, f"edges drawn: {sorted(drawn)}; raw geometry: {graph}"


LINEAGE_NODES = ["trips", "zones", "trips_and_zones", "stats_by_taxi_zones"]
LINEAGE_EDGES = {("trips", "trips_and_zones"), ("zones", "trips_and_zones"), ("trips_and_zones", "stats_by_taxi_zones")}

# Geometry of Dagster's asset lineage graph, in screen pixels: each asset node is an SVG <foreignObject> holding an
# element with data-tooltip=<asset name>; each edge is an SVG <path> with an arrowhead (marker-end) in the same <svg>
# (Dagster draws every edge twice, plain and highlighted, so edges are de-duplicated by their path data).
_LINEAGE_GEOMETRY_JS = """
(names) => {
  const node = (name) => {
    const label = document.querySelector(`svg foreignObject [data-tooltip="${name}"]`);
    return label ? label.closest('foreignObject') : null;
  };
  const boxes = {};
  let svg = null;
  for (const name of names) {
    const fo = node(name);
    if (!fo) continue;
    svg = fo.ownerSVGElement;
    const r = fo.getBoundingClientRect();
    boxes[name] = {left: r.left, right: r.right, top: r.top, bottom: r.bottom};
  }
  const edges = [];
  const seen = new Set();
  for (const path of svg ? svg.querySelectorAll('path[marker-end]') : []) {
    const d = path.getAttribute('d');
    if (seen.has(d)) continue;
    seen.add(d);
    const m = path.getScreenCTM();
    const screen = (p) => ({x: p.x * m.a + p.y * m.c + m.e, y: p.x * m.b + p.y * m.d + m.f});
    edges.push({start: screen(path.getPointAtLength(0)), end: screen(path.getPointAtLength(path.getTotalLength()))});
  }
  return {boxes, edges};
}
"""


def _nearest_node(boxes: dict[str, dict[str, float]], point: dict[str, float], tolerance: float = 25.0) -> str:
    """The node whose box is closest to `point` (an edge's end), which must be at most `tolerance` px away."""

    def distance(box: dict[str, float]) -> float:
        dx = max(box["left"] - point["x"], 0.0, point["x"] - box["right"])
        dy = max(box["top"] - point["y"], 0.0, point["y"] - box["bottom"])
        return (dx * dx + dy * dy) ** 0.5

    name = min(boxes, key=lambda n: distance(boxes[n]))
    assert distance(boxes[name]) <= tolerance, f"edge end {point} is near no node: {boxes}"
    return name
