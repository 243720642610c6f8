"""What a Dagster step sends to an isolated model's process, and what the process sends back (Pipes extras and
custom messages, as JSON): everything the step resolved (branch, inputs, strategy), so the process decides nothing."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

PLAN_EXTRA = "lakehouse/model_run"
WRITE_MESSAGE = "lakehouse/write"
INPUTS_MESSAGE = "lakehouse/inputs_read"
ERROR_MESSAGE = "lakehouse/error"


@dataclass(frozen=True)
class InputRead:
    """One parameter of the model: the table it reads, with the input's columns, filter and `load_as`; `ref` when
    it is read elsewhere than the run's branch head (at the commit this run wrote it: `<branch>@<commit>`)."""

    parameter: str
    table: str
    columns: list[str] | None = None
    filter: str | None = None
    load_as: str | None = None
    where: str = ""
    ref: str | None = None


@dataclass(frozen=True)
class ModelRun:
    """One run of one model: where the notebook is, the lakehouse to open, the branch the step resolved (read and
    written), what each parameter reads, and how the output is written (the IO manager's strategy)."""

    notebook: str
    model: str
    table: str
    where: str
    lakehouse: dict[str, Any]
    branch: str
    inputs: list[InputRead]
    mode: str = "replace"
    key: list[str] = field(default_factory=list)
    overwrite_filter: str | None = None
    message: str = ""
    run_id: str | None = None
    snapshot_properties: dict[str, str] = field(default_factory=dict)
    allow_main: bool = False

    def to_extras(self) -> dict[str, Any]:
        return {PLAN_EXTRA: asdict(self)}

    @classmethod
    def from_extras(cls, extras: dict[str, Any]) -> ModelRun:
        fields = dict(extras[PLAN_EXTRA])
        fields["inputs"] = [InputRead(**i) for i in fields["inputs"]]
        return cls(**fields)
