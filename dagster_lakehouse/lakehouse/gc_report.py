"""What `gc` returns: the files it deleted (or would), and the damaged or missing table files it met on the way.

A collection that meets a file a ref reaches but cannot read (truncated metadata JSON, a damaged manifest list or
manifest, a metadata file a ref points at that is gone) cannot know what that file reaches, so it keeps every file
of the table and goes on with the others; a data file that a ref's manifests list but the warehouse does not hold is
reported too. Each is a `GCProblem` naming table, ref and file, on the result's `problems`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GCProblem:
    """A file `gc` found missing or unreadable: the table and ref(s) that reach it, the file, and what is wrong."""

    table: str
    refs: tuple[str, ...]
    """The refs whose metadata reaches the file (for a data file: those pointing at the table)."""
    path: str
    kind: str
    """`metadata file`, `manifest list`, `manifest` or `data file`."""
    problem: str
    """`is missing`, or `is unreadable (<error>)`."""
    kept_table: bool
    """Whether gc kept every file of the table because it could not tell what the file reaches."""

    @property
    def ref(self) -> str:
        """The first of `refs`."""
        return self.refs[0] if self.refs else ""

    def __str__(self) -> str:
        kept = "; gc kept every file of the table" if self.kept_table else ""
        refs = ", ".join(f"'{r}'" for r in self.refs)
        return f"table '{self.table}' on {refs}: {self.kind} {self.path} {self.problem}{kept}"

    def as_dict(self) -> dict[str, object]:
        """The problem for JSON output."""
        return {
            "table": self.table,
            "refs": list(self.refs),
            "file": self.path,
            "kind": self.kind,
            "problem": self.problem,
            "kept_table": self.kept_table,
        }


class GCResult(list[str]):
    """The URIs `gc` deleted (or, in a dry run, would delete), sorted; `problems` lists the damaged or missing files
    it met (empty when every file a ref reaches read)."""

    def __init__(self, uris: list[str], problems: list[GCProblem] | None = None):
        super().__init__(sorted(uris))
        self.problems: list[GCProblem] = sorted(problems or [], key=lambda p: (p.table, p.path))
