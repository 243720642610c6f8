"""Commit turns: the commits of one ref that would race take turns at preparing their metadata, instead of all
preparing at once and all but one losing (every lost prepare costs object-store requests and slows the winner).

A turn is a PostgreSQL session advisory lock (`refs.wait_commit_turn`) held on a connection of its own with no
transaction open, so it may span object-store calls; a process lets one of its threads at a time wait for it, so
waiting holds at most one connection per process. SQLite has no such lock (and serialises writers anyway): there a
lost race sleeps a short `backoff` instead. Correctness never depends on turns: pointers are still compare-and-swapped.
"""

from __future__ import annotations

import random
import threading
import time
from typing import TYPE_CHECKING

from sqlalchemy.exc import SQLAlchemyError

from dagster_lakehouse.lakehouse import refs as refstore

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

TURN_WAIT = 30.0
"""Longest wait for a ref's commit turn; past it the commit goes on without turns, so a stuck holder slows the ref's
other commits by this much at most, never stalls them."""

BACKOFF_CAP = 0.2
"""Longest sleep after a lost race where no commit turn can be had (SQLite): about a few prepares' time, enough to
spread the losers out; a longer one only idles the ref."""

_local_lock = threading.Lock()
_local_turns: dict[tuple[int, str], threading.Lock] = {}


def backoff(attempt: int) -> float:
    """Seconds to sleep after lost race number `attempt` without a commit turn: 10 ms doubling up to `BACKOFF_CAP`,
    drawn at random below that (full jitter), so losers do not prepare again in step."""
    return random.uniform(0.0, min(BACKOFF_CAP, 0.01 * 2 ** min(attempt, 10)))


def _in_process(engine: Engine, ref: str) -> threading.Lock:
    """The lock the threads of this process take before waiting for `ref`'s turn on the database of `engine`."""
    with _local_lock:
        return _local_turns.setdefault((id(engine), ref), threading.Lock())


class CommitTurn:
    """One commit's hold on its ref's turn: `take` waits for it (PostgreSQL), `release` hands it to the next waiter."""

    def __init__(self, engine: Engine, ref: str):
        self.engine = engine
        self.ref = ref
        self._conn: Connection | None = None
        self._local: threading.Lock | None = None
        self._usable = engine.dialect.name == "postgresql"

    @property
    def held(self) -> bool:
        return self._conn is not None

    def take(self, deadline: float) -> bool:
        """Hold the turn, waiting for it until `deadline` (at most `TURN_WAIT` s); False if it cannot be had."""
        if self._conn is not None:
            return True
        started = time.monotonic()
        wait = min(TURN_WAIT, deadline - started)
        if not self._usable or wait <= 0:
            return False
        local = _in_process(self.engine, self.ref)
        if not local.acquire(timeout=wait):
            self._usable = wait < TURN_WAIT  # a holder kept it for TURN_WAIT seconds: go on without turns
            return False
        conn = None
        try:
            conn = self.engine.connect()
            left = wait - (time.monotonic() - started)
            if left > 0 and refstore.wait_commit_turn(conn, self.ref, left):
                self._conn, self._local, conn, local = conn, local, None, None
                return True
            self._usable = wait < TURN_WAIT
        except SQLAlchemyError:
            pass  # the catalog is unreachable: the attempt that follows meets the same error and retries it
        finally:
            if conn is not None:
                conn.close()
            if local is not None:
                local.release()
        return False

    def release(self) -> None:
        """Give the turn to the next commit waiting; a session that cannot say so is closed, which releases it too."""
        conn, local, self._conn, self._local = self._conn, self._local, None, None
        if conn is None:
            return
        try:
            refstore.end_commit_turn(conn, self.ref)
        except SQLAlchemyError:
            conn.invalidate()
        finally:
            conn.close()
            if local is not None:
                local.release()
