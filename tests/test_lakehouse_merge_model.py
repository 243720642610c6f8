"""Merges checked against a reference model: random appends and partition replaces on two branches of several tables,
applied to the lakehouse and, one after the other, to plain Polars frames.

Whenever merging the second branch succeeds, every table of `main` must equal the serial result (as a row multiset);
it must succeed exactly when the two branches' work is disjoint (no replaced day of one side holds rows the other side
added), and a refused merge must leave `main` as it was.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import polars as pl
import pytest

from dagster_lakehouse.lakehouse import Lakehouse, MergeConflict

DAYS = [f"2024-02-0{i}" for i in range(1, 7)]
NEW_DAYS = ["2024-02-08", "2024-02-09"]  # days the seed does not hold: a replace of one matches no row
TABLES = ("t0", "t1", "t2")


@dataclass(frozen=True)
class Op:
    table: str
    kind: str  # "append" or "replace"
    days: tuple[str, ...]  # an append may span several days; a replace names one
    values: tuple[int, ...]

    def frame(self) -> pl.DataFrame:
        return pl.DataFrame({"day": [self.days[i % len(self.days)] for i in range(len(self.values))], "v": list(self.values)})

    def apply(self, frames: dict[str, pl.DataFrame]) -> None:
        current = frames[self.table]
        if self.kind == "replace":
            current = current.filter(pl.col("day") != self.days[0])
        frames[self.table] = pl.concat([current, self.frame()])

    def run(self, lh: Lakehouse, namespace: str, branch: str) -> None:
        name = f"{namespace}.{self.table}"
        if self.kind == "append":
            lh.write(name, self.frame(), branch=branch, mode="append")
        else:
            lh.write(name, self.frame(), branch=branch, where=f"day = '{self.days[0]}'")


def random_ops(rng: random.Random, counter: list[int]) -> list[Op]:
    ops = []
    for _ in range(rng.randint(1, 4)):
        kind = rng.choice(["append", "replace"])
        days = tuple(sorted(rng.sample(DAYS + NEW_DAYS, rng.choice([1, 1, 2])))) if kind == "append" else (rng.choice(DAYS + NEW_DAYS),)
        values = []
        for _ in range(rng.randint(len(days), 3)):  # every day named holds a row
            counter[0] += 1
            values.append(counter[0])
        ops.append(Op(rng.choice(TABLES), kind, days, tuple(values)))
    return ops


def disjoint(a: list[Op], b: list[Op]) -> bool:
    """No day that one side replaced in a table holds rows the other side added to it."""
    for mine, theirs in ((a, b), (b, a)):
        for op in mine:
            if op.kind == "replace" and any(o.table == op.table and op.days[0] in o.days for o in theirs):
                return False
    return True


def multiset(frame: pl.DataFrame) -> list[tuple]:
    return sorted(frame.select("day", "v").iter_rows())


def run_case(lh: Lakehouse, case: int) -> str:
    rng = random.Random(case)
    ns, counter = f"m{case}", [1000]
    seed = {t: pl.DataFrame({"day": [d for d in DAYS for _ in range(2)], "v": list(range(len(DAYS) * 2))}) for t in TABLES}
    for table, frame in seed.items():
        lh.write(f"{ns}.{table}", frame, branch="main", allow_main=True)
    a_ops, b_ops = random_ops(rng, counter), random_ops(rng, counter)
    lh.create_branch(f"a{case}")
    lh.create_branch(f"b{case}")
    for op in a_ops:
        op.run(lh, ns, f"a{case}")
    for op in b_ops:
        op.run(lh, ns, f"b{case}")
    described = f"case {case}: a={a_ops} b={b_ops}"

    after_a = dict(seed)
    for op in a_ops:
        op.apply(after_a)
    lh.merge(f"a{case}")
    for table in TABLES:
        assert multiset(lh.read(f"{ns}.{table}")) == multiset(after_a[table]), described

    serial = dict(after_a)
    for op in b_ops:
        op.apply(serial)
    try:
        lh.merge(f"b{case}")
    except MergeConflict:
        assert not disjoint(a_ops, b_ops), f"disjoint work was refused: {described}"
        for table in TABLES:
            assert multiset(lh.read(f"{ns}.{table}")) == multiset(after_a[table]), described
        return "conflict"
    assert disjoint(a_ops, b_ops), f"overlapping work was merged: {described}"
    for table in TABLES:
        assert multiset(lh.read(f"{ns}.{table}")) == multiset(serial[table]), f"{described} table {table}"
    return "merged"


def run_cases(lh: Lakehouse, cases: range) -> dict[str, int]:
    outcomes = {"merged": 0, "conflict": 0}
    for case in cases:
        outcomes[run_case(lh, case)] += 1
    assert outcomes["merged"] >= len(cases) // 4 and outcomes["conflict"] >= len(cases) // 10, outcomes
    return outcomes


def test_two_hundred_random_cases_on_the_embedded_backend(local_backend) -> None:
    with Lakehouse(local_backend.catalog_uri, local_backend.warehouse, local_backend.properties) as lh:
        run_cases(lh, range(200))


@pytest.mark.slow
def test_thirty_random_cases_on_postgres_and_s3(pg_s3_backend) -> None:
    with Lakehouse(pg_s3_backend.catalog_uri, pg_s3_backend.warehouse, pg_s3_backend.properties) as lh:
        run_cases(lh, range(1000, 1030))
