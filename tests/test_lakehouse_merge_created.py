"""A table that several branches created since their fork (a parallel write-audit-publish backfill of a new asset)
merges like any commuting work: as if every branch started from an empty table. Merged in any order, the branches
give exactly the serial result; a real clash (overlapping replaces, a full replace, schemas or partition specs that
do not line up) is a `MergeConflict` naming the table that changes no catalog row and no warehouse file. Writers
racing to create one table on one branch both land when their work is disjoint."""

from __future__ import annotations

import itertools
import multiprocessing as mp
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import polars as pl
import pytest
from test_lakehouse_bad_input import unchanged  # noqa: F401  (a fixture: catalog rows and warehouse listing unchanged)
from test_lakehouse_concurrent_writes import race_at_staged

from dagster_lakehouse.lakehouse import Lakehouse, MergeConflict, WriteConflict

MONTHS = [f"2013-{m:02d}-01" for m in range(1, 13)]
TABLE = "fresh"


@dataclass(frozen=True)
class Op:
    """One write of a branch to the new table: replace its month (`where=`), or append rows of its month."""

    kind: str  # "where" or "append"
    month: str
    values: tuple[int, ...]

    def frame(self) -> pl.DataFrame:
        return pl.DataFrame({"month": [self.month] * len(self.values), "v": list(self.values)})

    def apply(self, frame: pl.DataFrame) -> pl.DataFrame:
        if self.kind == "where":
            frame = frame.filter(pl.col("month") != self.month)
        return pl.concat([frame, self.frame()])

    def run(self, lh: Lakehouse, table: str, branch: str) -> None:
        if self.kind == "append":
            lh.write(table, self.frame(), branch=branch, mode="append")
        else:
            lh.write(table, self.frame(), branch=branch, where=f"month = '{self.month}'")


def branch_ops(n: int) -> list[list[Op]]:
    """`n` branches' work on disjoint months: each replaces or appends its own month, some write twice."""
    counter = itertools.count(1)
    work = []
    for i in range(n):
        ops = [Op("where" if i % 2 == 0 else "append", MONTHS[i], (next(counter), next(counter)))]
        if i % 3 == 1:
            ops.append(Op("where", MONTHS[n + i], (next(counter),)))  # a second month, by a replace
        if i % 3 == 2:
            ops.append(Op("append", MONTHS[i], (next(counter),)))  # more rows of its own month
        work.append(ops)
    return work


def rows(frame: pl.DataFrame, columns: tuple[str, ...] = ("month", "v")) -> list[tuple]:
    return sorted(frame.select(*columns).iter_rows())


def serial(work: list[list[Op]], order: tuple[int, ...]) -> pl.DataFrame:
    frame = pl.DataFrame(schema={"month": pl.String, "v": pl.Int64})
    for i in order:
        for op in work[i]:
            frame = op.apply(frame)
    return frame


def run_order(lh: Lakehouse, work: list[list[Op]], order: tuple[int, ...], case: str) -> None:
    """Fork one branch per entry of `work` from `main`, let each create `<case>.fresh`, merge them in `order`."""
    table = f"{case}.{TABLE}"
    branches = [f"wap/{case}-{i}" for i in range(len(work))]
    for branch in branches:
        lh.create_branch(branch)
    for branch, ops in zip(branches, work, strict=True):
        for op in ops:
            op.run(lh, table, branch)
    merged: list[int] = []
    for i in order:
        result = lh.merge(branches[i])
        merged.append(i)
        assert rows(lh.read(table)) == rows(serial(work, tuple(merged))), f"{case}: order {order}, after {merged}"
        assert result.tables == [table]
    assert len(lh.log("main", table=table)) >= len(order)


@pytest.fixture
def lh(lakehouse: Lakehouse) -> Lakehouse:
    """`main` holds one unrelated table, so every branch below forks from a `main` without the new table."""
    lakehouse.write("s.seed", pl.DataFrame({"x": [1]}), branch="main", allow_main=True)
    return lakehouse


def test_three_branches_creating_one_table_merge_in_every_order_to_the_serial_result(lh: Lakehouse) -> None:
    work = branch_ops(3)
    for k, order in enumerate(itertools.permutations(range(3))):
        run_order(lh, work, order, f"p{k}")


def test_five_branches_creating_one_table_merge_in_random_orders_to_the_serial_result(lh: Lakehouse) -> None:
    work, rng = branch_ops(5), random.Random(30)
    orders = {tuple(rng.sample(range(5), 5)) for _ in range(3)}
    for k, order in enumerate(sorted(orders)):
        run_order(lh, work, order, f"r{k}")


def test_a_created_partitioned_table_merges_when_both_specs_agree(lh: Lakehouse) -> None:
    for i, month in enumerate(MONTHS[:3]):
        lh.create_branch(f"wap/{i}")
        frame = pl.DataFrame({"month": [month] * 2, "v": [i, i + 10]})
        lh.write("k.fresh", frame, branch=f"wap/{i}", where=f"month = '{month}'", partition_by=["month"])
    for i in (2, 0, 1):
        lh.merge(f"wap/{i}")
    assert rows(lh.read("k.fresh")) == sorted((m, v) for i, m in enumerate(MONTHS[:3]) for v in (i, i + 10))
    assert [f.name for f in lh.table("k.fresh").spec().fields] == ["month"]


@pytest.mark.parametrize("first", ["a", "b"])
def test_a_narrower_column_on_one_side_widens_the_merged_table(lh: Lakehouse, first: str) -> None:
    lh.create_branch("a")
    lh.create_branch("b")
    narrow = pl.DataFrame({"month": [MONTHS[0]], "v": pl.Series([1], dtype=pl.Int32)})
    lh.write("w.fresh", narrow, branch="a", where=f"month = '{MONTHS[0]}'")
    lh.write("w.fresh", pl.DataFrame({"month": [MONTHS[1]], "v": [2**40]}), branch="b", mode="append")
    lh.merge(first)
    lh.merge("b" if first == "a" else "a")
    merged = lh.read("w.fresh")
    assert merged.schema["v"] == pl.Int64
    assert rows(merged) == [(MONTHS[0], 1), (MONTHS[1], 2**40)]


@pytest.mark.parametrize("first", ["a", "b"])
def test_a_column_only_one_side_created_joins_the_merged_table(lh: Lakehouse, first: str) -> None:
    lh.create_branch("a")
    lh.create_branch("b")
    lh.write("c.fresh", pl.DataFrame({"month": [MONTHS[0]], "v": [1]}), branch="a", mode="append")
    wide = pl.DataFrame({"month": [MONTHS[1]], "v": [2], "note": ["late"]})
    lh.write("c.fresh", wide, branch="b", where=f"month = '{MONTHS[1]}'")
    lh.merge(first)
    lh.merge("b" if first == "a" else "a")
    assert rows(lh.read("c.fresh"), ("month", "v", "note")) == [(MONTHS[0], 1, None), (MONTHS[1], 2, "late")]


# ----- clashes: a named conflict that changes nothing ------------------------------------------------------------


def both_create(lh: Lakehouse, a: Callable[[str], None], b: Callable[[str], None]) -> None:
    """Branches `a` and `b` from `main` each create `x.fresh` (`a(branch)`, `b(branch)`); `a` is merged."""
    lh.create_branch("a")
    lh.create_branch("b")
    a("a")
    b("b")
    lh.merge("a")


def month(m: int, *values: int, **extra: Any) -> pl.DataFrame:
    return pl.DataFrame({"month": [MONTHS[m]] * len(values), "v": list(values), **{k: [v] * len(values) for k, v in extra.items()}})


def write(lh: Lakehouse, frame: pl.DataFrame, **kwargs: Any) -> Callable[[str], None]:
    return lambda branch: lh.write("x.fresh", frame, branch=branch, **kwargs)


CLASHES = {
    "both-replaced-a-month": (
        lambda lh: (write(lh, month(0, 1), where=f"month = '{MONTHS[0]}'"), write(lh, month(0, 2), where=f"month = '{MONTHS[0]}'")),
        rf"x.fresh: both 'b' and 'main' created it: both replaced rows where month = '{MONTHS[0]}'",
    ),
    "replace-against-append": (
        lambda lh: (write(lh, month(0, 1), mode="append"), write(lh, month(0, 2), where=f"month = '{MONTHS[0]}'")),
        rf"x.fresh: both 'b' and 'main' created it: both changed rows where month = '{MONTHS[0]}'",
    ),
    "full-replace": (
        lambda lh: (write(lh, month(0, 1), mode="append"), write(lh, month(1, 2))),
        r"x.fresh: both 'b' and 'main' created it: 'b' replaced all rows while 'main' also changed the table",
    ),
    "incompatible-types": (
        lambda lh: (write(lh, month(0, 1), mode="append"), write(lh, pl.DataFrame({"month": [MONTHS[1]], "v": ["two"]}), mode="append")),
        r"x.fresh: both 'b' and 'main' created it with schemas that do not line up: column 'v' is string on 'b' but long on "
        r"'main' \('b': month string, v string; 'main': month string, v long\)",
    ),
    "field-ids-cross": (
        lambda lh: (
            write(lh, pl.DataFrame({"month": [MONTHS[0]], "note": ["a"]}), mode="append"),
            write(lh, pl.DataFrame({"note": ["b"], "month": [MONTHS[1]]}), mode="append"),
        ),
        r"x.fresh: both 'b' and 'main' created it with schemas that do not line up: column 'note' has field id 1 on 'b' "
        r"but 2 on 'main'",
    ),
    "partition-specs": (
        lambda lh: (write(lh, month(0, 1), mode="append", partition_by=["month"]), write(lh, month(1, 2), mode="append")),
        r"x.fresh: both 'b' and 'main' created it: 'b' and 'main' partition the table differently",
    ),
}


@pytest.mark.parametrize("case", list(CLASHES))
def test_clashing_creations_are_a_named_conflict_that_changes_nothing(lh: Lakehouse, unchanged, case: str) -> None:
    make, match = CLASHES[case]
    a, b = make(lh)
    both_create(lh, a, b)
    before = rows(lh.read("x.fresh"), tuple(lh.read("x.fresh").columns))
    with unchanged(), pytest.raises(MergeConflict, match=match) as info:
        lh.merge("b")
    assert info.value.tables == ["x.fresh"]
    assert rows(lh.read("x.fresh"), tuple(lh.read("x.fresh").columns)) == before


def test_a_conflict_between_creations_can_still_be_settled_by_taking_one_side(lh: Lakehouse) -> None:
    both_create(lh, write(lh, month(0, 1), mode="append"), write(lh, month(0, 2), where=f"month = '{MONTHS[0]}'"))
    result = lh.merge("b", on_conflict="source")
    assert result.resolved == {"x.fresh": "source"}
    assert rows(lh.read("x.fresh")) == [(MONTHS[0], 2)]


# ----- one branch, writers racing to create the table ------------------------------------------------------------


def test_two_writers_creating_one_table_on_one_branch_both_land(lh: Lakehouse, monkeypatch) -> None:
    lh.create_branch("dev")
    fired = race_at_staged(monkeypatch, lambda: lh.write("x.fresh", month(1, 2, 3), branch="dev", where=f"month = '{MONTHS[1]}'"))
    result = lh.write("x.fresh", month(0, 1), branch="dev", where=f"month = '{MONTHS[0]}'")
    assert fired and result.attempts == 2
    assert rows(lh.read("x.fresh", ref="dev")) == [(MONTHS[0], 1), (MONTHS[1], 2), (MONTHS[1], 3)]
    lh.merge("dev")
    assert rows(lh.read("x.fresh")) == [(MONTHS[0], 1), (MONTHS[1], 2), (MONTHS[1], 3)]


def test_a_writer_creating_a_table_a_racer_created_with_its_rows_is_a_named_conflict(lh: Lakehouse, monkeypatch) -> None:
    lh.create_branch("dev")
    race_at_staged(monkeypatch, lambda: lh.write("x.fresh", month(0, 2), branch="dev", mode="append"))
    with pytest.raises(WriteConflict, match=rf"table 'x.fresh' on branch 'dev': it replaces rows where month = '{MONTHS[0]}'"):
        lh.write("x.fresh", month(0, 1), branch="dev", where=f"month = '{MONTHS[0]}'")
    assert rows(lh.read("x.fresh", ref="dev")) == [(MONTHS[0], 2)]


def _create_month(catalog_uri: str, warehouse: str, properties: dict[str, str], writer: int, start) -> int:
    start.wait()
    with Lakehouse(catalog_uri, warehouse, properties) as lh:
        m = MONTHS[writer]
        frame = pl.DataFrame({"month": [m] * 3, "v": [writer] * 3})
        if writer % 2:
            return lh.write("x.fresh", frame, branch="dev", mode="append").attempts
        return lh.write("x.fresh", frame, branch="dev", where=f"month = '{m}'").attempts


def test_six_processes_creating_one_table_on_one_branch_all_land(pg_s3_backend) -> None:
    b, writers = pg_s3_backend, 6
    with Lakehouse(b.catalog_uri, b.warehouse, b.properties) as lh:
        lh.create_branch("dev")
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        start = manager.Barrier(writers)
        with ctx.Pool(writers) as pool:
            attempts = pool.starmap(_create_month, [(b.catalog_uri, b.warehouse, b.properties, w, start) for w in range(writers)])
    with Lakehouse(b.catalog_uri, b.warehouse, b.properties) as lh:
        assert rows(lh.read("x.fresh", ref="dev")) == sorted((MONTHS[w], w) for w in range(writers) for _ in range(3))
        assert len([c for c in lh.log("dev") if c.kind == "write"]) == writers
    assert sum(attempts) > writers  # they raced


def test_a_replayed_file_older_than_a_column_reads_that_column_as_null(lh: Lakehouse) -> None:
    """Not only for created tables: a merge that replays a file written before the target gained a column."""
    lh.write("o.trips", month(0, 0), branch="main", allow_main=True)
    lh.create_branch("x")
    lh.create_branch("y")
    lh.write("o.trips", month(1, 1), branch="x", mode="append")
    lh.write("o.trips", month(2, 2, note="late"), branch="y", mode="append")
    lh.merge("y")
    lh.merge("x")  # x's file, lacking `note`, is now the newest of the table
    expected = [(MONTHS[0], 0, None), (MONTHS[1], 1, None), (MONTHS[2], 2, "late")]
    assert rows(lh.read("o.trips"), ("month", "v", "note")) == expected
    assert rows(lh.read("o.trips", columns=["note", "v", "month"]), ("month", "v", "note")) == expected
