"""Start `dagster dev` on 127.0.0.1 for end-to-end tests (the example project, or a test code location such as
`tests/projects/parallel_backfill`), and talk GraphQL to it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parent.parent
LOCATION = "example_project.definitions"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class DagsterDev:
    """A running `dagster dev` (webserver + daemon) serving the example workspace."""

    process: subprocess.Popen
    port: int
    lakehouse_path: Path
    log_path: Path
    log_file: IO[bytes] | None = None
    location: str = LOCATION

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(f"{self.url}/graphql", body, {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                payload = json.load(response)
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"GraphQL HTTP {exc.code}: {exc.read().decode()[:2000]}") from exc
        if payload.get("errors"):
            raise AssertionError(f"GraphQL errors: {payload['errors']}")
        return payload["data"]

    def launch(self, job: str, tags: dict[str, str], asset_selection: list[list[str]] | None = None) -> str:
        data = self.graphql(
            """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
                __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
                ... on InvalidSubsetError { message } ... on RunConfigValidationInvalid { errors { message } } } }""",
            {
                "params": {
                    "selector": {
                        "repositoryLocationName": self.location,
                        "repositoryName": "__repository__",
                        "jobName": job,
                        **({"assetSelection": [{"path": p} for p in asset_selection]} if asset_selection else {}),
                    },
                    "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
                    "runConfigData": {},
                }
            },
        )["launchRun"]
        assert data["__typename"] == "LaunchRunSuccess", data
        return data["run"]["runId"]

    def launch_backfill(
        self, asset_selection: list[list[str]], partitions: list[str], tags: dict[str, str] | None = None
    ) -> str:
        """Launch an asset backfill of `partitions` of the assets (as the UI's "Materialize" > backfill does): the
        backfill daemon submits one run per partition to the run queue. Returns the backfill id."""
        data = self.graphql(
            """mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
                __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message }
                ... on PartitionSetNotFoundError { message } ... on PartitionKeysNotFoundError { message }
                ... on InvalidSubsetError { message } ... on RunConfigValidationInvalid { errors { message } } } }""",
            {
                "params": {
                    "assetSelection": [{"path": p} for p in asset_selection],
                    "partitionNames": partitions,
                    "tags": [{"key": k, "value": v} for k, v in (tags or {}).items()],
                }
            },
        )["launchPartitionBackfill"]
        assert data["__typename"] == "LaunchBackfillSuccess", data
        return data["backfillId"]

    def runs(self, tags: dict[str, str]) -> list[dict[str, Any]]:
        """Runs carrying all `tags`: runId, status, startTime, endTime (epoch seconds) and tags (as a dict)."""
        results = self.graphql(
            """query($filter: RunsFilter) { runsOrError(filter: $filter) { __typename ... on Runs { results {
                runId status startTime endTime tags { key value } } } ... on PythonError { message } } }""",
            {"filter": {"tags": [{"key": k, "value": v} for k, v in tags.items()]}},
        )["runsOrError"]
        assert results["__typename"] == "Runs", results
        return [{**r, "tags": {t["key"]: t["value"] for t in r["tags"]}} for r in results["results"]]

    def asset_events(
        self, asset_path: list[str], kind: str, partitions: list[str] | None = None
    ) -> list[dict[str, Any]]:
        """The asset's `kind` events ("assetMaterializations" or "assetObservations"), newest first: runId,
        partition, timestamp, tags and metadata (label -> text, int or float value)."""
        assert kind in ("assetMaterializations", "assetObservations")
        node = self.graphql(
            "query($key: AssetKeyInput!, $partitions: [String!]) { assetOrError(assetKey: $key) { __typename"
            f" ... on Asset {{ {kind}(partitions: $partitions) {{ runId partition timestamp"
            " tags { key value } metadataEntries { label __typename ... on TextMetadataEntry { text }"
            " ... on IntMetadataEntry { intRepr } ... on FloatMetadataEntry { floatValue } } } } } }",
            {"key": {"path": asset_path}, "partitions": partitions},
        )["assetOrError"]
        assert node["__typename"] == "Asset", node
        events = []
        for event in node[kind]:
            metadata = {}
            for entry in event.pop("metadataEntries"):
                for field in ("text", "intRepr", "floatValue"):
                    if field in entry:
                        metadata[entry["label"]] = int(entry[field]) if field == "intRepr" else entry[field]
            events.append({**event, "tags": {t["key"]: t["value"] for t in event["tags"]}, "metadata": metadata})
        return events

    def run_tags(self, run_id: str) -> dict[str, str]:
        tags = self.graphql(
            "query($id: ID!) { runOrError(runId: $id) { ... on Run { tags { key value } } } }", {"id": run_id}
        )["runOrError"]["tags"]
        return {tag["key"]: tag["value"] for tag in tags}

    def partition_keys(self, asset_path: list[str]) -> list[str]:
        node = self.graphql(
            "query($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) { ... on AssetNode {"
            " partitionKeysByDimension { partitionKeys } } } }",
            {"key": {"path": asset_path}},
        )["assetNodeOrError"]
        return [key for dim in node["partitionKeysByDimension"] for key in dim["partitionKeys"]]

    def wait_for_run(self, run_id: str, timeout: float = 300) -> str:
        deadline = time.monotonic() + timeout
        status = "UNKNOWN"
        while time.monotonic() < deadline:
            status = self.graphql(
                "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }", {"id": run_id}
            )["runOrError"]["status"]
            if status in ("SUCCESS", "FAILURE", "CANCELED"):
                return status
            time.sleep(1)
        raise AssertionError(f"run {run_id} still {status} after {timeout}s; log: {self.log_path}")

    def stop(self) -> None:
        """Stop dagster dev and every process it started (its code servers run in sessions of their own)."""
        family = descendants(self.process.pid)
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        for pid in family:
            _kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(_alive(pid) for pid in family):
            time.sleep(0.2)
        for pid in family:
            _kill(pid, signal.SIGKILL)
        if self.log_file is not None and not self.log_file.closed:
            self.log_file.close()


def descendants(root: int) -> list[int]:
    """Every live process below `root`, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, queue = [], [root]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def wait_until(predicate: Any, timeout: float, what: str) -> Any:
    """Poll `predicate` every second until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def start_dagster_dev(root: Path, trips: int = 20_000, timeout: float = 180) -> DagsterDev:
    """Seed a lakehouse under `root`, then start `dagster dev -w workspace.yaml` bound to 127.0.0.1."""
    lakehouse_path = root / "lakehouse"
    env = {"LAKEHOUSE_PATH": str(lakehouse_path), "DAGSTER_LAKEHOUSE_ENVIRONMENTS": str(root / "environments")}
    subprocess.run(
        [sys.executable, "-m", "example_project.seed", "--trips", str(trips)],
        cwd=REPO,
        env=_dagster_env(root, env),
        check=True,
    )
    return launch_dagster_dev(root, REPO / "workspace.yaml", LOCATION, env=env, timeout=timeout)


def launch_dagster_dev(
    root: Path,
    workspace: Path,
    location: str,
    *,
    env: dict[str, str] | None = None,
    instance_yaml: str = "",
    timeout: float = 180,
) -> DagsterDev:
    """Start `dagster dev -w <workspace>` bound to 127.0.0.1 with DAGSTER_HOME under `root` (its dagster.yaml is
    `instance_yaml` plus telemetry off), the lakehouse at `env["LAKEHOUSE_PATH"]` (default `root/lakehouse`) and
    `env` added to the environment; returns once GraphQL serves the repository of code location `location`."""
    env = {"LAKEHOUSE_PATH": str(root / "lakehouse"), **(env or {})}
    home = root / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n" + instance_yaml)
    bin_dir = Path(sys.executable).parent
    port = free_port()
    log_path = root / "dagster-dev.log"
    log = log_path.open("wb")
    try:
        process = subprocess.Popen(
            [str(bin_dir / "dagster"), "dev", "-w", str(workspace), "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO,
            env=_dagster_env(root, env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except BaseException:
        log.close()
        raise
    server = DagsterDev(process, port, Path(env["LAKEHOUSE_PATH"]), log_path, log, location)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            server.stop()  # reaps what it left behind and closes the log
            raise AssertionError(f"dagster dev exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            nodes = server.graphql(
                "{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name } } } } }"
            )
            if any(n["location"]["name"] == location for n in nodes["repositoriesOrError"].get("nodes") or []):
                return server
        except (OSError, AssertionError):
            pass
        time.sleep(1)
    server.stop()
    raise AssertionError(f"dagster dev did not come up in {timeout}s:\n{log_path.read_text()[-3000:]}")


def _dagster_env(root: Path, extra: dict[str, str]) -> dict[str, str]:
    """The environment of `dagster dev` and the example's seed: DAGSTER_HOME under `root`, the embedded lakehouse
    (LAKEHOUSE_CATALOG_URI/LAKEHOUSE_WAREHOUSE unset) and `extra`."""
    (root / "dagster_home").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "DAGSTER_HOME": str(root / "dagster_home"), **extra}
    for var in ("LAKEHOUSE_CATALOG_URI", "LAKEHOUSE_WAREHOUSE"):
        env.pop(var, None)
    return env
