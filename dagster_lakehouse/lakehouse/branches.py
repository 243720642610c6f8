"""Branches and tags of a `Lakehouse`: creating one copies the catalog's pointer rows, never a file."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, delete, insert, literal, select
from sqlalchemy.exc import IntegrityError

from dagster_lakehouse.lakehouse import refs as refstore
from dagster_lakehouse.lakehouse.catalog import IcebergNamespaceProperties, IcebergTables, RefCatalog
from dagster_lakehouse.lakehouse.errors import PinnedRefError, ProtectedBranchError, RefAlreadyExists, RefNotFound
from dagster_lakehouse.lakehouse.merge import State
from dagster_lakehouse.lakehouse.names import MAIN, validate_ref_name
from dagster_lakehouse.lakehouse.refs import Ref
from dagster_lakehouse.lakehouse.refspec import RefView, is_pinned
from dagster_lakehouse.lakehouse.storage_full import names_storage_full


class BranchOps:
    """The ref half of `Lakehouse`: list, create, tag, delete and protect branches (mixed into `Lakehouse`)."""

    engine: Engine
    _lock: threading.Lock
    _catalogs: dict[str, RefCatalog]

    if TYPE_CHECKING:

        def _view(self, conn: Any, spec: str) -> RefView: ...  # defined by `timeline.Timeline`

    def _ensure_main(self) -> None:
        with self.engine.begin() as conn:
            if refstore.get_ref(conn, MAIN) is None:
                try:
                    with conn.begin_nested():
                        refstore.insert_ref(conn, MAIN, "branch", None, None, {})
                        refstore.add_commit(conn, MAIN, "create", "created main", [], changes={})
                except IntegrityError:
                    pass

    @staticmethod
    def _check_storable(name: Any) -> None:
        """`RefNotFound` for a name no ref can have, before a query: PostgreSQL refuses NUL characters in parameters."""
        if not isinstance(name, str) or any(ord(c) < 32 or ord(c) == 127 for c in name):
            raise RefNotFound(f"branch or tag {name!r:.80} does not exist: ref names are strings without control characters")

    def _get_ref(self, conn: Any, name: str) -> Ref:
        self._check_storable(name)
        ref = refstore.get_ref(conn, name)
        if ref is None and is_pinned(name):
            raise PinnedRefError(
                f"'{name}' names a past commit, which is read-only: write, merge or reset a branch instead, or start one "
                f"there with create_branch('fix', from_ref='{name}')"
            )
        if ref is None:
            known = ", ".join(r.name for r in refstore.list_refs(conn)) or "none"
            raise RefNotFound(f"branch or tag '{name}' does not exist (known: {known})")
        return ref

    def _state(self, conn: Any, ref: str) -> State:
        rows = conn.execute(
            select(IcebergTables.table_namespace, IcebergTables.table_name, IcebergTables.metadata_location).where(
                IcebergTables.catalog_name == ref
            )
        )
        return {f"{ns}.{name}": location for ns, name, location in rows}

    def branches(self) -> list[str]:
        """Names of all branches, `main` included."""
        with self.engine.connect() as conn:
            return [r.name for r in refstore.list_refs(conn, "branch")]

    def tags(self) -> list[str]:
        """Names of all tags."""
        with self.engine.connect() as conn:
            return [r.name for r in refstore.list_refs(conn, "tag")]

    def ref(self, name: str) -> Ref:
        """Details of a branch or tag: kind, parent, branch point."""
        with self.engine.connect() as conn:
            return self._get_ref(conn, name)

    def has_branch(self, name: str) -> bool:
        """Whether a branch (not a tag) of that name exists."""
        with self.engine.connect() as conn:
            ref = refstore.get_ref(conn, name)
        return ref is not None and not ref.is_tag

    @names_storage_full("creating branch '{name}' from '{from_ref}'")
    def create_branch(self, name: str, from_ref: str = MAIN, *, exist_ok: bool = False) -> Ref:
        """Fork `from_ref` (a ref, or a past commit: `main@<commit>`, `main~2`) in one transaction: copies one catalog
        row per table, never a data file."""
        return self._create_ref(name, from_ref, "branch", exist_ok=exist_ok)

    @names_storage_full("creating tag '{name}' of '{ref}'")
    def tag(self, name: str, ref: str = MAIN) -> Ref:
        """Freeze the state of `ref` (now, or at a past commit: `main@<commit>`) under an immutable tag name."""
        return self._create_ref(name, ref, "tag", exist_ok=False)

    def _create_ref(self, name: str, from_ref: str, kind: str, *, exist_ok: bool) -> Ref:
        validate_ref_name(name)
        try:
            return self._insert_ref(name, from_ref, kind, exist_ok=exist_ok)
        except IntegrityError:  # another process created the same ref between our check and insert
            with self.engine.connect() as conn:
                existing = refstore.get_ref(conn, name)
            if existing is not None and exist_ok and existing.kind == kind:
                return existing
            raise RefAlreadyExists(f"a branch or tag named '{name}' exists already") from None

    def _insert_ref(self, name: str, from_ref: str, kind: str, *, exist_ok: bool) -> Ref:
        with self.engine.begin() as conn:
            existing = refstore.get_ref(conn, name)
            if existing is not None:
                if exist_ok and existing.kind == kind:
                    return existing
                raise RefAlreadyExists(f"a {existing.kind} named '{name}' exists already")
            view = self._view(conn, from_ref)
            parent, base = view.ref.name, view.state
            tables = IcebergTables.__table__
            if view.commit is None:
                fork_seq = refstore.last_seq(conn)
                columns = [c.name for c in tables.columns if c.name != "catalog_name"]
                conn.execute(
                    insert(tables).from_select(
                        ["catalog_name", *columns],
                        select(literal(name), *[tables.c[c] for c in columns]).where(tables.c.catalog_name == parent),
                    )
                )
            else:  # a past commit: its pointers, rebuilt from the log, forked from the ref that made the commit
                parent, fork_seq = view.commit.ref, view.commit.seq
                if base:
                    conn.execute(
                        insert(tables),
                        [
                            {"catalog_name": name, "table_namespace": t.split(".")[0], "table_name": t.split(".")[1],
                             "metadata_location": location, "previous_metadata_location": None}
                            for t, location in sorted(base.items())
                        ],
                    )
            props = IcebergNamespaceProperties.__table__
            pcols = [c.name for c in props.columns if c.name != "catalog_name"]
            conn.execute(
                insert(props).from_select(
                    ["catalog_name", *pcols],
                    select(literal(name), *[props.c[c] for c in pcols]).where(props.c.catalog_name == view.ref.name),
                )
            )
            refstore.insert_ref(conn, name, kind, parent, fork_seq, base)
            refstore.set_merge_base(conn, name, parent, base)
            refstore.add_commit(
                conn,
                name,
                "create",
                f"{kind} '{name}' created from '{from_ref}'",
                sorted(base),
                changes={table: (None, location) for table, location in base.items()},
            )
            return self._get_ref(conn, name)

    @names_storage_full("deleting branch '{name}'")
    def delete_branch(self, name: str) -> None:
        """Delete a branch's pointers (never its files: other refs may share them; `gc()` reclaims)."""
        if name == MAIN:
            raise ProtectedBranchError("branch 'main' cannot be deleted")
        self._delete_ref(name, "branch")

    @names_storage_full("deleting tag '{name}'")
    def delete_tag(self, name: str) -> None:
        """Delete a tag; its files become collectable by `gc()` unless another ref reaches them."""
        self._delete_ref(name, "tag")

    def _delete_ref(self, name: str, kind: str) -> None:
        with self.engine.begin() as conn:
            ref = self._get_ref(conn, name)
            if ref.kind != kind:
                raise RefNotFound(f"'{name}' is a {ref.kind}, not a {kind}")
            refstore.delete_ref(conn, name)  # first: waits for writes that hold the ref (`_check_writable`)
            conn.execute(delete(IcebergTables).where(IcebergTables.catalog_name == name))
            conn.execute(delete(IcebergNamespaceProperties).where(IcebergNamespaceProperties.catalog_name == name))
            refstore.forget_merge_bases(conn, name)
        with self._lock:
            self._catalogs.pop(name, None)

    def _check_writable(self, conn: Any, branch: str, allow_main: bool) -> Ref:
        """The branch `branch` if this write may change it; share-locks its row (PostgreSQL) until `conn` commits, so
        a concurrent `delete_branch` either went first (`RefNotFound` naming the branch) or waits for this write."""
        ref = self._get_ref(conn, branch)
        refs = refstore.refs_table
        if conn.execute(select(refs.c.name).where(refs.c.name == branch).with_for_update(read=True)).first() is None:
            raise RefNotFound(f"branch '{branch}' was deleted while writing to it; nothing was written")
        if ref.is_tag:
            raise ProtectedBranchError(f"'{branch}' is a tag; tags are immutable, write to a branch instead")
        if branch == MAIN and not allow_main:
            raise ProtectedBranchError(
                "branch 'main' is protected: write to a branch (lh.create_branch('dev')) and merge it, "
                "or pass allow_main=True"
            )
        return ref

    def _merge_namespaces(self, conn: Any, source: str, target: str) -> None:
        props = IcebergNamespaceProperties
        existing = {
            (ns, key)
            for ns, key in conn.execute(select(props.namespace, props.property_key).where(props.catalog_name == target))
        }
        rows = conn.execute(
            select(props.namespace, props.property_key, props.property_value).where(props.catalog_name == source)
        ).all()
        for ns, key, value in rows:
            if (ns, key) not in existing:
                conn.execute(
                    insert(props.__table__).values(catalog_name=target, namespace=ns, property_key=key, property_value=value)
                )
