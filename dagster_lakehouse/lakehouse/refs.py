"""The lakehouse's own bookkeeping tables: refs (branches, tags, branch points) and the commit log."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.exc import OperationalError

metadata = MetaData()

refs_table = Table(
    "lakehouse_refs",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("parent", String(255), nullable=True),
    Column("fork_seq", BigInteger, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("base", Text, nullable=False, default="{}"),
)

commits_table = Table(
    "lakehouse_commits",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(32), nullable=False, unique=True),
    Column("ref", String(255), nullable=False, index=True),
    Column("kind", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("message", Text, nullable=False, default=""),
    Column("tables", Text, nullable=False, default="[]"),
    Column("snapshots", Text, nullable=False, default="{}"),
    Column("run_id", String(255), nullable=True),
    Column("changes", Text, nullable=True),
)
"""One row per commit of a ref, written in the transaction that moves its pointers. `changes` holds, per table the
commit changed, its pointer before and after (`[from, to]`, null = absent); a ref's first commit (`create`) holds
every pointer it started with, so the ref's pointers at any commit can be rebuilt from its log."""


merge_bases_table = Table(
    "lakehouse_merge_bases",
    metadata,
    Column("first", String(255), primary_key=True),
    Column("second", String(255), primary_key=True),
    Column("base", Text, nullable=False),
)
"""The common ancestor state of two refs (`first` < `second`): set at a fork, moved by every merge between them."""

write_leases_table = Table(
    "lakehouse_write_leases",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("what", Text, nullable=False, default=""),
    Column("started_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("revoked", Boolean, nullable=False, default=False),
)
"""One row per commit in flight (`commits.WriteLease`): `gc` keeps every file written since the oldest live lease
started, and revokes the leases it saw, so a commit whose reads a collection may have outdated prepares again."""


@dataclass(frozen=True)
class Ref:
    """A branch or tag: its parent ref, where it forked, and its branch point for three-way merges."""

    name: str
    kind: str
    parent: str | None
    fork_seq: int | None
    created_at: datetime
    base: dict[str, str] = field(default_factory=dict)

    @property
    def is_tag(self) -> bool:
        return self.kind == "tag"


@dataclass(frozen=True)
class Commit:
    """One entry of a ref's log: a write, merge, branch creation or tag."""

    id: str
    ref: str
    kind: str
    time: datetime
    message: str
    tables: list[str]
    snapshots: dict[str, int | None]
    run_id: str | None
    seq: int
    changes: dict[str, tuple[str | None, str | None]] | None = None
    """Per table the commit changed: its metadata file before and after (None = absent); None for commits logged
    before the log kept pointers."""

    @property
    def short_id(self) -> str:
        return self.id[:10]


def _ref_from_row(row) -> Ref:
    return Ref(
        name=row.name,
        kind=row.kind,
        parent=row.parent,
        fork_seq=row.fork_seq,
        created_at=datetime.fromtimestamp(row.created_at, tz=UTC),
        base=json.loads(row.base or "{}"),
    )


def _commit_from_row(row) -> Commit:
    return Commit(
        id=row.id,
        ref=row.ref,
        kind=row.kind,
        time=datetime.fromtimestamp(row.created_at, tz=UTC),
        message=row.message,
        tables=json.loads(row.tables),
        snapshots=json.loads(row.snapshots),
        run_id=row.run_id,
        seq=row.seq,
        changes=_changes(row.changes),
    )


def _changes(raw: str | None) -> dict[str, tuple[str | None, str | None]] | None:
    if raw is None:
        return None
    return {table: (pair[0], pair[1]) for table, pair in json.loads(raw).items()}


def upgrade(conn: Connection) -> None:
    """Add the columns later versions of this package log to a catalog created by an earlier one."""
    columns = {c["name"] for c in inspect(conn).get_columns(commits_table.name)}
    if "changes" not in columns:
        conn.execute(text(f"ALTER TABLE {commits_table.name} ADD COLUMN changes TEXT"))


def lock_ref(conn: Connection, name: str) -> bool:
    """Take the row lock of ref `name` until `conn` commits (PostgreSQL; SQLite serialises writers anyway), so the
    commits of one ref take effect in the order of their log sequence numbers. False if there is no such ref."""
    return conn.execute(select(refs_table.c.name).where(refs_table.c.name == name).with_for_update()).first() is not None


LOCK_NOT_AVAILABLE = "55P03"
"""PostgreSQL's SQLSTATE for a lock wait that ran past `lock_timeout`."""


def commit_turn_key(name: str) -> int:
    """The PostgreSQL advisory-lock key of ref `name`'s commit turn: a stable signed 64-bit hash of the name."""
    digest = hashlib.blake2b(f"lakehouse commit turn:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def wait_commit_turn(conn: Connection, name: str, seconds: float) -> bool:
    """Wait up to `seconds` for ref `name`'s commit turn, a PostgreSQL session advisory lock held until
    `end_commit_turn` (or the session ends); the wait's transaction is committed, so the session is not left idle
    in one. False if the wait timed out, or on a database without advisory locks (SQLite serialises writers)."""
    if conn.dialect.name != "postgresql":
        return False
    try:
        conn.execute(select(func.set_config("lock_timeout", f"{max(1, round(seconds * 1000))}ms", True)))
        conn.execute(select(func.pg_advisory_lock(commit_turn_key(name))))
    except OperationalError as exc:
        conn.rollback()
        if getattr(exc.orig, "sqlstate", None) == LOCK_NOT_AVAILABLE:
            return False
        raise
    conn.commit()
    return True


def end_commit_turn(conn: Connection, name: str) -> None:
    """Give up ref `name`'s commit turn taken on `conn` by `wait_commit_turn`."""
    conn.execute(select(func.pg_advisory_unlock(commit_turn_key(name))))
    conn.commit()


def get_ref(conn: Connection, name: str) -> Ref | None:
    """The ref called `name`, or None."""
    row = conn.execute(select(refs_table).where(refs_table.c.name == name)).first()
    return _ref_from_row(row) if row else None


def list_refs(conn: Connection, kind: str | None = None) -> list[Ref]:
    """All refs (or those of one kind), by name."""
    query = select(refs_table).order_by(refs_table.c.name)
    if kind:
        query = query.where(refs_table.c.kind == kind)
    return [_ref_from_row(row) for row in conn.execute(query)]


def table_counts(conn: Connection) -> dict[str, int]:
    """How many tables each ref lists, by ref name (rows of the SQL catalog's `iceberg_tables`; no PyIceberg needed)."""
    rows = conn.execute(text("SELECT catalog_name, COUNT(*) FROM iceberg_tables GROUP BY catalog_name"))
    return {name: count for name, count in rows}


def insert_ref(
    conn: Connection, name: str, kind: str, parent: str | None, fork_seq: int | None, base: dict[str, str]
) -> None:
    """Record a new branch or tag forked from `parent` in state `base`."""
    conn.execute(
        insert(refs_table).values(
            name=name,
            kind=kind,
            parent=parent,
            fork_seq=fork_seq,
            created_at=datetime.now(UTC).timestamp(),
            base=json.dumps(base, sort_keys=True),
        )
    )


def _pair(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a < b else (b, a)


def get_merge_base(conn: Connection, a: str, b: str) -> dict[str, str] | None:
    """The state both refs last agreed on (their fork, or their latest merge); None if they never met."""
    first, second = _pair(a, b)
    row = conn.execute(
        select(merge_bases_table.c.base).where(
            merge_bases_table.c.first == first, merge_bases_table.c.second == second
        )
    ).first()
    return json.loads(row.base) if row else None


def set_merge_base(conn: Connection, a: str, b: str, base: dict[str, str]) -> None:
    """Record `base` as the common ancestor of refs `a` and `b`."""
    first, second = _pair(a, b)
    where = (merge_bases_table.c.first == first) & (merge_bases_table.c.second == second)
    encoded = json.dumps(base, sort_keys=True)
    if conn.execute(merge_bases_table.update().where(where).values(base=encoded)).rowcount == 0:
        conn.execute(insert(merge_bases_table).values(first=first, second=second, base=encoded))


def merge_bases_of(conn: Connection, name: str) -> dict[str, dict[str, str]]:
    """Every merge base of ref `name`, by the other ref of the pair."""
    table = merge_bases_table
    rows = conn.execute(select(table).where((table.c.first == name) | (table.c.second == name)))
    return {(row.second if row.first == name else row.first): json.loads(row.base) for row in rows}


def forget_merge_bases(conn: Connection, name: str) -> None:
    """Drop the merge bases of a deleted ref."""
    conn.execute(
        merge_bases_table.delete().where((merge_bases_table.c.first == name) | (merge_bases_table.c.second == name))
    )


def delete_ref(conn: Connection, name: str) -> None:
    """Forget a ref (its catalog rows are removed by the caller)."""
    conn.execute(refs_table.delete().where(refs_table.c.name == name))


def last_seq(conn: Connection) -> int:
    """The sequence number of the newest commit (0 when there is none)."""
    value = conn.execute(select(commits_table.c.seq).order_by(commits_table.c.seq.desc()).limit(1)).scalar()
    return int(value or 0)


def add_commit(
    conn: Connection,
    ref: str,
    kind: str,
    message: str,
    tables: list[str],
    snapshots: dict[str, int | None] | None = None,
    run_id: str | None = None,
    changes: dict[str, tuple[str | None, str | None]] | None = None,
) -> str:
    """Append a commit to `ref`'s log and return its id; `changes` maps each table changed to its pointer
    `(before, after)`."""
    commit_id = uuid.uuid4().hex
    conn.execute(
        insert(commits_table).values(
            id=commit_id,
            ref=ref,
            kind=kind,
            created_at=datetime.now(UTC).timestamp(),
            message=message,
            tables=json.dumps(sorted(tables)),
            snapshots=json.dumps(snapshots or {}, sort_keys=True),
            run_id=run_id,
            changes=json.dumps({t: list(pair) for t, pair in (changes or {}).items()}, sort_keys=True),
        )
    )
    return commit_id


def commits_of(conn: Connection, ref: str, up_to_seq: int | None = None) -> list[Commit]:
    """`ref`'s own commits, newest first, optionally only those up to sequence number `up_to_seq`."""
    query = select(commits_table).where(commits_table.c.ref == ref)
    if up_to_seq is not None:
        query = query.where(commits_table.c.seq <= up_to_seq)
    return [_commit_from_row(row) for row in conn.execute(query.order_by(commits_table.c.seq.desc()))]


def commits_after(conn: Connection, ref: str, seq: int) -> list[Commit]:
    """`ref`'s own commits after sequence number `seq`, newest first."""
    query = select(commits_table).where(commits_table.c.ref == ref, commits_table.c.seq > seq)
    return [_commit_from_row(row) for row in conn.execute(query.order_by(commits_table.c.seq.desc()))]


def commits_by_prefix(conn: Connection, prefix: str, limit: int = 5) -> list[Commit]:
    """Commits of any ref whose id starts with `prefix` (at most `limit`)."""
    query = select(commits_table).where(commits_table.c.id.startswith(prefix, autoescape=True)).limit(limit)
    return [_commit_from_row(row) for row in conn.execute(query)]
