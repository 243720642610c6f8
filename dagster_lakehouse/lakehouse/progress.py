"""The progress callback that long operations of the core (`Lakehouse.gc`, `Lakehouse.merge`) accept.

`progress(what, done, total)` is called as work advances: `what` names the step ("merging tables", "deleting files",
...), `done` how many of its items are done, `total` how many there are (None while unknown). The core only calls it; how
progress is shown (the CLI's status line, a log, nothing) is the caller's business.
"""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str, int, "int | None"], None]
