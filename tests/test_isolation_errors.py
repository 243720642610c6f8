"""A lakehouse error raised in an isolated model's process reaches the Dagster step as the same class, with its message
and its fields, whatever its constructor takes: a model losing a write race is a `WriteConflict` naming the table,
branch and reason (it was a `TypeError` about `WriteConflict.__init__`), and others keep their class too."""

from __future__ import annotations

import dagster as dg
import polars as pl
import pytest
from test_notebook_isolation import home, io_manager_for, notebook, seeded  # noqa: F401  (fixtures)

from dagster_lakehouse import Lakehouse
from dagster_lakehouse.lakehouse.error_copies import error_record, named, rebuilt
from dagster_lakehouse.lakehouse.errors import (
    InvalidData,
    LakehouseError,
    MergeConflict,
    StorageUnavailable,
    TableConflict,
    WriteConflict,
)
from dagster_lakehouse.notebook import load_notebook_assets

MODELS = '''
@app.function
@model
def racer(trips=Input("raw.trips")) -> pl.DataFrame:
    """Loses its write: a concurrent replace of the same table commits while this write is staged."""
    fired = []
    original = commits.checkpoint

    def hooked(step):
        if step == "staged" and not fired:
            fired.append(step)
            Lakehouse.local(os.environ["RACE_LAKEHOUSE"]).write("race.racer", trips.head(1), branch="dev")
        original(step)

    commits.checkpoint = hooked
    return trips


@app.function
@model
def unreachable(trips=Input("raw.trips")) -> pl.DataFrame:
    raise StorageUnavailable("reading zones", "s3://zones", 12.0, 4, OSError("connection refused"))


@app.function
@model
def clashing(trips=Input("raw.trips")) -> pl.DataFrame:
    raise MergeConflict("side", "dev", [TableConflict("race.zones", "both replaced all rows")])


@app.function
@model
def columnless(trips=Input("raw.trips")) -> pl.DataFrame:
    return pl.DataFrame()
'''

SETUP = """
import os

from dagster_lakehouse import Lakehouse
from dagster_lakehouse.lakehouse import commits
from dagster_lakehouse.lakehouse.errors import MergeConflict, StorageUnavailable, TableConflict
"""


def raised(assets, name: str, seeded) -> BaseException:  # noqa: F811
    """The exception `dg.materialize` raises for asset `name` (the step's own, found along the cause chain)."""
    selected = [a for a in assets if a.key.path[-1] == name]
    with pytest.raises(Exception) as info:
        dg.materialize(selected, resources={"io_manager": io_manager_for(seeded)})
    error: BaseException | None = info.value
    while error is not None and not isinstance(error, LakehouseError):
        error = error.__cause__
    assert error is not None, f"no lakehouse error in {info.value!r}"
    return error


def test_isolated_models_raise_lakehouse_errors_with_their_class_message_and_fields(tmp_path, home, seeded, monkeypatch):  # noqa: F811
    monkeypatch.setenv("RACE_LAKEHOUSE", str(seeded))
    lakehouse = Lakehouse.local(seeded)
    lakehouse.create_branch("dev")
    lakehouse.write("race.racer", pl.DataFrame({"trip_miles": [9.0], "fare": [1.0], "vendor": ["z"]}), branch="dev")
    path = notebook(tmp_path, "race", MODELS, header=["polars"], setup=SETUP)
    assets = load_notebook_assets(path, isolated=True)

    conflict = raised(assets, "racer", seeded)
    assert type(conflict) is WriteConflict
    assert (conflict.table, conflict.branch) == ("race.racer", "dev")
    assert conflict.reason.startswith("it replaces all rows, and a concurrent write")
    assert "cannot write table 'race.racer' on branch 'dev': it replaces all rows" in str(conflict)
    assert "TypeError" not in str(conflict)
    assert lakehouse.read("race.racer", ref="dev").height == 1  # the winner's rows; the loser wrote nothing

    outage = raised(assets, "unreachable", seeded)
    assert type(outage) is StorageUnavailable
    assert (outage.what, outage.location, outage.seconds, outage.attempts) == ("reading zones", "s3://zones", 12.0, 4)
    assert "the object store at s3://zones is unavailable" in str(outage)

    clash = raised(assets, "clashing", seeded)
    assert type(clash) is MergeConflict
    assert (clash.source, clash.target, clash.tables) == ("side", "dev", ["race.zones"])
    assert clash.conflicts == [TableConflict("race.zones", "both replaced all rows")]

    empty = raised(assets, "columnless", seeded)
    assert type(empty) is InvalidData
    assert "model 'columnless'" in str(empty) and "the data has no columns" in str(empty)

    result = dg.materialize(
        [a for a in assets if a.key.path[-1] == "racer"], resources={"io_manager": io_manager_for(seeded)},
        raise_on_error=False,
    )  # fmt: skip
    (failure,) = [e.event_specific_data.error for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.cause.cls_name == "WriteConflict"  # what the run's page shows
    assert "cannot write table 'race.racer' on branch 'dev': it replaces all rows" in failure.cause.message


@pytest.mark.parametrize(
    "error",
    [
        WriteConflict("a.b", "dev", "a concurrent write added rows"),
        MergeConflict("side", "main", [TableConflict("a.b", "both replaced all rows")]),
        StorageUnavailable("writing a.b", "s3://bucket", 30.0, 5, TimeoutError("slow")),
        InvalidData("table 'a.b' on branch 'dev': no columns"),
    ],
)
def test_errors_are_named_and_rebuilt_without_their_constructors(error) -> None:
    import json

    copy = rebuilt(json.loads(json.dumps(error_record(error))), f"in the model: {error}")
    assert type(copy) is type(error) and str(copy) == f"in the model: {error}"
    assert vars(copy) == vars(error)
    renamed = named(error, "asset 'x'")
    assert type(renamed) is type(error) and vars(renamed) == vars(error)
    assert str(renamed) == (str(error) if isinstance(error, (WriteConflict, MergeConflict)) else f"asset 'x': {error}")
