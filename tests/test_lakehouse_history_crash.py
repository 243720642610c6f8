"""The commit log cannot disagree with the data (issue 12): processes writing, merging, reverting and resetting on
PostgreSQL + S3 are killed with SIGKILL at random moments, at least 50 times; afterwards every ref's log, folded
forward from its first commit, gives exactly the catalog's pointers, each commit's "before" is the state the one
before left, and every commit a worker saw succeed is in the log.

Workers journal each commit id after the call returns (fsynced), so the journal is a subset of what committed. Kills
come at random delays after a worker is ready (mid Parquet write, metadata staging or pointer transaction), and some
workers run with `LAKEHOUSE_FAULT=<step>:kill`, which kills them at that named step of their first commit.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pyiceberg.io import load_file_io
from pyiceberg.serializers import FromInputFile
from sqlalchemy import select, update

from dagster_lakehouse.lakehouse import Lakehouse
from dagster_lakehouse.lakehouse import refs as refstore
from dagster_lakehouse.lakehouse.catalog import IcebergTables

KILLS = 50
WORKERS = 3
STEPS = ["staged", "before-swap", "swapping", "before-commit", "committed"]

WORKER = r"""
import json, os, random, sys
import polars as pl
from dagster_lakehouse.lakehouse import Lakehouse, LakehouseError

config, journal_path, seed = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])
rng = random.Random(seed)
lh = Lakehouse(config["catalog_uri"], config["warehouse"], config["properties"], commit_timeout=60)
journal = open(journal_path, "a")
print("ready", flush=True)

def record(ref, commit_id):
    if commit_id:
        journal.write(json.dumps({"ref": ref, "commit": commit_id}) + "\n")
        journal.flush()
        os.fsync(journal.fileno())

n = seed * 1000
while True:
    n += 1
    branch = rng.choice(["dev", "feat", "main"])
    table = rng.choice(["k.a", "k.b"])
    day = rng.choice(["2024-01-01", "2024-01-02", "2024-01-03"])
    rows = pl.DataFrame({"day": [day] * rng.randint(1, 200), "v": n})
    op = rng.choice(["append", "append", "replace_day", "replace", "merge", "merge", "drop", "revert", "reset"])
    try:
        if op == "merge":
            source, target = rng.choice([("dev", "feat"), ("feat", "dev"), ("dev", "main"), ("feat", "main")])
            record(target, lh.merge(source, target, on_conflict="source").commit_id)
        elif op == "drop" and branch != "main":
            lh.drop_table(table, branch=branch)
            record(branch, lh.log(branch, limit=1)[0].id if lh.log(branch, limit=1)[0].kind == "drop" else None)
        elif op == "revert" and branch != "main":
            head = lh.log(branch, limit=1)[0]
            record(branch, lh.revert(head.id, on=branch).commit_id)
        elif op == "reset" and branch != "main":
            record(branch, lh.reset(branch, to=rng.choice(["main", "dev~1", "feat~2"])).commit_id)
        else:
            exists = lh.exists(table, branch)
            mode = "append" if op == "append" and exists else "replace"
            where = f"day = '{day}'" if op == "replace_day" and exists else None
            record(branch, lh.write(table, rows, branch=branch, mode=mode, where=where, allow_main=True).commit_id)
    except LakehouseError:
        pass  # conflicts, tables dropped meanwhile, nothing to revert: refused with nothing changed
"""


def fold_and_check(lh: Lakehouse) -> int:
    """Fold every ref's own log forward and compare with the catalog; returns the number of commits checked."""
    checked = 0
    with lh.engine.connect() as conn:
        refs = refstore.list_refs(conn)
        rows = conn.execute(
            select(IcebergTables.catalog_name, IcebergTables.table_namespace, IcebergTables.table_name, IcebergTables.metadata_location)
        ).all()
        logs = {ref.name: refstore.commits_of(conn, ref.name)[::-1] for ref in refs}
    pointers: dict[str, dict[str, str]] = {ref.name: {} for ref in refs}
    for ref, namespace, name, location in rows:
        pointers.setdefault(ref, {})[f"{namespace}.{name}"] = location
    for ref in refs:
        commits = logs[ref.name]
        assert commits and commits[0].kind == "create", f"{ref.name}: its log does not start with its creation"
        state: dict[str, str] = {}
        for commit in commits:
            assert commit.changes is not None, f"{ref.name}: commit {commit.short_id} records no pointers"
            for table, (before, after) in commit.changes.items():
                assert state.get(table) == before, f"{ref.name}: commit {commit.short_id} ({commit.kind}) of {table} starts from {before}, the log before it left {state.get(table)}"
                if after is None:
                    state.pop(table, None)
                else:
                    state[table] = after
            checked += 1
        assert state == pointers[ref.name], f"{ref.name}: the log's last state is not the catalog's pointers"
    return checked


def check_logged_metadata(lh: Lakehouse) -> None:
    """Every metadata file a log entry moved a pointer to exists, with the snapshot the entry recorded."""
    io = load_file_io(lh.config.properties, lh.config.warehouse)
    with lh.engine.connect() as conn:
        commits = [c for ref in refstore.list_refs(conn) for c in refstore.commits_of(conn, ref.name)]
    for commit in commits:
        for table, (_, after) in (commit.changes or {}).items():
            if after is None:
                continue
            metadata = FromInputFile.table_metadata(io.new_input(after))
            if commit.kind == "write":
                snapshot = metadata.current_snapshot()
                assert commit.snapshots[table] == (snapshot.snapshot_id if snapshot else None), commit


def run_until_killed(backend, journal: Path, kills_wanted: int, deadline: float) -> tuple[int, int]:
    """Start workers, kill them (random delay, or a fault step), restart them; returns (kills, fault kills)."""
    config = json.dumps({"catalog_uri": backend.catalog_uri, "warehouse": backend.warehouse, "properties": backend.properties})
    rng = random.Random(12)
    kills = faults = 0
    seed = 0
    running: list[tuple[subprocess.Popen, float | None]] = []

    def start() -> None:
        nonlocal seed
        seed += 1
        env = dict(os.environ)
        env.pop("LAKEHOUSE_FAULT", None)
        if rng.random() < 0.3:
            env["LAKEHOUSE_FAULT"] = f"{rng.choice(STEPS)}:kill"
        process = subprocess.Popen(
            [sys.executable, "-c", WORKER, config, str(journal), str(seed)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert process.stdout.readline().strip() == "ready", process.stderr.read()[-3000:]
        kill_at = None if "LAKEHOUSE_FAULT" in env else time.monotonic() + rng.uniform(0.05, 1.5)
        running.append((process, kill_at))

    try:
        while kills + faults < kills_wanted:
            assert time.monotonic() < deadline, f"only {kills + faults} kills before the deadline"
            while len(running) < WORKERS:
                start()
            time.sleep(0.02)
            for entry in list(running):
                process, kill_at = entry
                code = process.poll()
                if kill_at is None and code is None and time.monotonic() > deadline - 5:
                    process.kill()  # a fault step never reached: not counted
                    process.wait()
                    running.remove(entry)
                elif code is not None:
                    assert code == -signal.SIGKILL, process.stderr.read()[-3000:]
                    faults += kill_at is None
                    running.remove(entry)
                elif kill_at is not None and time.monotonic() >= kill_at:
                    process.send_signal(signal.SIGKILL)
                    process.wait()
                    kills += 1
                    running.remove(entry)
    finally:
        for process, _ in running:
            process.kill()
            process.wait()
    return kills, faults


def seed_lake(lh: Lakehouse) -> None:
    import polars as pl

    for table in ("k.a", "k.b"):
        lh.write(table, pl.DataFrame({"day": ["2024-01-01"], "v": [0]}), allow_main=True)
    lh.create_branch("dev")
    lh.create_branch("feat", from_ref="dev")


def test_sigkill_during_writes_and_merges_leaves_the_log_exact(pg_s3_backend, tmp_path: Path) -> None:
    backend = pg_s3_backend
    with Lakehouse(backend.catalog_uri, backend.warehouse, backend.properties) as lh:
        seed_lake(lh)
    journal = tmp_path / "journal.jsonl"
    journal.touch()
    kills, faults = run_until_killed(backend, journal, KILLS, time.monotonic() + 240)
    assert kills + faults >= KILLS
    journaled = [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]
    assert len(journaled) > 20, "the workers committed too little for the kills to land among commits"
    with Lakehouse(backend.catalog_uri, backend.warehouse, backend.properties) as lh:
        checked = fold_and_check(lh)
        with lh.engine.connect() as conn:
            logged = {(row.ref, row.id) for row in conn.execute(select(refstore.commits_table.c.ref, refstore.commits_table.c.id))}
        missing = [entry for entry in journaled if (entry["ref"], entry["commit"]) not in logged]
        assert missing == [], f"commits that returned to their caller but are not in the log: {missing[:5]}"
        check_logged_metadata(lh)
        for ref in lh.branches():
            for table in lh.tables(ref):
                assert lh.read(table, ref=ref).height > 0
            for commit in random.Random(ref).sample(lh.log(ref), 3):
                for table in lh.tables(f"{ref}@{commit.id}"):
                    lh.read(table, ref=f"{ref}@{commit.id[:12]}")
    print(f"{kills} random kills + {faults} at fault steps; {len(journaled)} commits journaled; {checked} log entries folded")


def test_the_fold_check_finds_a_pointer_the_log_does_not_know(local_backend) -> None:
    with Lakehouse(local_backend.catalog_uri, local_backend.warehouse, local_backend.properties) as lh:
        seed_lake(lh)
        fold_and_check(lh)
        other = lh.table("k.b", "dev").metadata_location
        with lh.engine.begin() as conn:
            conn.execute(
                update(IcebergTables.__table__)
                .where(IcebergTables.catalog_name == "dev", IcebergTables.table_name == "a")
                .values(metadata_location=other)
            )
        with pytest.raises(AssertionError, match="dev: the log's last state is not the catalog's pointers"):
            fold_and_check(lh)
