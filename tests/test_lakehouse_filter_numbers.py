"""Numeric literals in filters: scientific notation, `.5`, `1.`, signs and mixed `in` lists select the rows Polars
selects on the same data (through `read`, `scan` and a `where=` replace), fractions compared with integer and decimal
columns are exact, and malformed or out-of-range numbers are refused with `InvalidFilter` at their position, changing
nothing."""

from __future__ import annotations

import re
from decimal import Decimal

import polars as pl
import pytest
from test_lakehouse_bad_input import refused, unchanged  # noqa: F401  (unchanged is a fixture)

from dagster_lakehouse.lakehouse import InvalidFilter, Lakehouse

T = "n.values"
DATA = pl.DataFrame(
    {
        "id": list(range(10)),
        "i": [-2000, -1, 0, 1, 2, 999, 1000, 1001, 10**12, None],
        "f": [-2e3, -1.5e-3, 0.0, 1e-3, 1.5, 999.9, 1000.0, 1e4, 2.5e12, None],
    }
).with_columns(d=pl.col("f").cast(pl.Decimal(18, 3)))

CASES = {
    "i > 1e3": pl.col("i") > 1000,
    "i >= 1E3": pl.col("i") >= 1000,
    "1e3 < i": pl.col("i") > 1000,
    "i > 1.5e3": pl.col("i") > 1500,
    "i < -1e3": pl.col("i") < -1000,
    "i = 1e12": pl.col("i") == 10**12,
    "i > 1.5": pl.col("i") > 1.5,
    "i >= 1.5": pl.col("i") >= 1.5,
    "i < 1.5": pl.col("i") < 1.5,
    "i <= -1.5": pl.col("i") <= -1.5,
    "i = 1.5": pl.col("i") == 1.5,
    "i != 1.5": pl.col("i") != 1.5,
    "i = 2.0": pl.col("i") == 2,
    "i in (1, 2.5)": pl.col("i").is_in([1]),
    "i not in (1, 2.5)": ~pl.col("i").is_in([1]) & pl.col("i").is_not_null(),
    "i in (1e3, 2)": pl.col("i").is_in([1000, 2]),
    "i between 1e0 and 1e3": pl.col("i").is_between(1, 1000),
    "i > 1e300": pl.col("i") > 1e300,
    "i > -1e300": pl.col("i") > -1e300,
    "i != 1e300": pl.col("i") != 1e300,
    "i <= 99999999999999999999": pl.col("i").is_not_null(),
    "d < 1e30": pl.col("d").is_not_null(),
    "f > 1e3": pl.col("f") > 1e3,
    "f >= -1.5e-3": pl.col("f") >= -1.5e-3,
    "f < 1E-3": pl.col("f") < 1e-3,
    "f <= 1e-3": pl.col("f") <= 1e-3,
    "f > .5": pl.col("f") > 0.5,
    "f > +.5e1": pl.col("f") > 5.0,
    "f < 1.": pl.col("f") < 1.0,
    "f = 2.5e12": pl.col("f") == 2.5e12,
    "f in (1e3, 0, 1.5)": pl.col("f").is_in([1e3, 0.0, 1.5]),
    "d > 1.5": pl.col("d") > Decimal("1.5"),
    "d > 1e3": pl.col("d") > Decimal(1000),
    "d >= 1.5e-3": pl.col("d") >= Decimal("0.0015"),
    "d = 1.0005": pl.col("d") == Decimal("1.0005"),
    "d = 1e-3": pl.col("d") == Decimal("0.001"),
    "i > 1e3 and f < 1e4 or d = 1.5": ((pl.col("i") > 1000) & (pl.col("f") < 1e4)) | (pl.col("d") == Decimal("1.5")),
}


@pytest.fixture
def lh(lakehouse: Lakehouse) -> Lakehouse:
    lakehouse.create_branch("dev")
    lakehouse.write(T, DATA, branch="dev")
    return lakehouse


def ids(frame: pl.DataFrame) -> list[int]:
    return sorted(frame["id"].to_list())


def test_numeric_literals_select_what_polars_selects(lh) -> None:
    for text, expression in CASES.items():
        want = ids(DATA.filter(expression))
        assert ids(lh.read(T, ref="dev", filter=text)) == want, text
        assert ids(lh.scan(T, ref="dev", filter=text).collect()) == want, text
        assert ids(pl.from_arrow(lh.read_arrow(T, ref="dev", filter=text))) == want, text


def test_a_where_replace_in_scientific_notation_replaces_those_rows(lh) -> None:
    rows = DATA.filter(pl.col("i") > 1000).with_columns(f=pl.lit(-1.0), d=pl.lit(Decimal("-1")).cast(pl.Decimal(18, 3)))
    lh.write(T, rows, branch="dev", where="i > 1e3")
    table = lh.read(T, ref="dev")
    assert table.height == DATA.height
    assert ids(table.filter(pl.col("f") == -1.0)) == ids(DATA.filter(pl.col("i") > 1000))
    # the filter is recorded as text and read back by merges: a branch replacing other rows merges
    lh.create_branch("side", from_ref="dev")
    lh.write(T, DATA.filter(pl.col("i") < -1e2), branch="side", where="i < -1e2")
    lh.write(T, DATA.filter(pl.col("f") == 1.5e0), branch="dev", where="f = 1.5e0")
    lh.merge("side", "dev")
    assert lh.read(T, ref="dev").height == DATA.height


@pytest.mark.parametrize(
    ("text", "position", "bad"),
    [
        ("i > 1e", 5, "1e"),
        ("i > 1e+", 5, "1e+"),
        ("i > 1.2.3", 5, "1.2.3"),
        ("i > 1e3.5", 5, "1e3.5"),
        ("i > 1ee3", 5, "1ee3"),
        ("i in (1e3, 2e)", 12, "2e"),
        ("f > 1e3 and i > --1", 17, "--1"),
        ("i > 0x10", 5, "0x10"),
    ],
)
def test_a_malformed_number_is_refused_at_its_position(lh, unchanged, text, position, bad) -> None:
    match = rf"cannot parse filter .* at character {position}: malformed number {re.escape(repr(bad))}"
    refused(lh, unchanged, lambda lh: lh.read(T, ref="dev", filter=text), InvalidFilter, match)
    refused(lh, unchanged, lambda lh: lh.write(T, DATA, branch="dev", where=text), InvalidFilter, match)


def test_other_parse_errors_keep_their_position_past_rewritten_numbers(lh, unchanged) -> None:
    match = r"at character 13: unexpected 'i >> 2'"
    refused(lh, unchanged, lambda lh: lh.read(T, ref="dev", filter="f > 1e3 and i >> 2"), InvalidFilter, match)


def test_a_number_beyond_every_type_is_refused_naming_it(lh, unchanged) -> None:
    match = r"at character 5: number 1e400 is beyond the range of every column type"
    refused(lh, unchanged, lambda lh: lh.write(T, DATA, branch="dev", where="f < 1e400"), InvalidFilter, match)


def test_quoted_strings_and_identifiers_keep_their_text(lh) -> None:
    lh.write("n.labels", pl.DataFrame({"1e3": ["1e3", "x"], "col1e3": [1, 2000]}), branch="dev")
    assert lh.read("n.labels", ref="dev", filter="\"1e3\" = '1e3'")["col1e3"].to_list() == [1]
    assert lh.read("n.labels", ref="dev", filter="col1e3 > 1e3")["1e3"].to_list() == ["x"]
