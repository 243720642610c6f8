"""Start the example project in `dagster dev` on 127.0.0.1 for end-to-end tests, and talk GraphQL to it."""

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
                        "repositoryLocationName": LOCATION,
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
    bin_dir = Path(sys.executable).parent
    lakehouse_path = root / "lakehouse"
    home = root / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "LAKEHOUSE_PATH": str(lakehouse_path), "DAGSTER_HOME": str(home)}
    for var in ("LAKEHOUSE_CATALOG_URI", "LAKEHOUSE_WAREHOUSE"):
        env.pop(var, None)
    subprocess.run(
        [sys.executable, "-m", "example_project.seed", "--trips", str(trips)], cwd=REPO, env=env, check=True
    )
    port = free_port()
    log_path = root / "dagster-dev.log"
    log = log_path.open("wb")
    try:
        process = subprocess.Popen(
            [str(bin_dir / "dagster"), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except BaseException:
        log.close()
        raise
    server = DagsterDev(process, port, lakehouse_path, log_path, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            server.stop()  # reaps what it left behind and closes the log
            raise AssertionError(f"dagster dev exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            nodes = server.graphql("{ repositoriesOrError { ... on RepositoryConnection { nodes { name } } } }")
            if nodes["repositoriesOrError"].get("nodes"):
                return server
        except (OSError, AssertionError):
            pass
        time.sleep(1)
    server.stop()
    raise AssertionError(f"dagster dev did not come up in {timeout}s:\n{log_path.read_text()[-3000:]}")
