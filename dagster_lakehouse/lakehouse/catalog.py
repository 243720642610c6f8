"""One Iceberg SQL catalog per ref: a branch or tag is a catalog name inside one shared database.

PyIceberg's `SqlCatalog(name)` sees only the rows of `iceberg_tables` whose `catalog_name` is `name`,
so a branch is a set of (table -> metadata file) pointers and creating one copies pointers, never data.
"""

from __future__ import annotations

import threading
from typing import Any, NoReturn

from pyiceberg.catalog import Catalog, MetastoreCatalog
from pyiceberg.catalog.sql import IcebergNamespaceProperties, IcebergTables, SqlCatalog
from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError
from pyiceberg.io import FileIO, load_file_io
from pyiceberg.table import Table
from pyiceberg.typedef import EMPTY_DICT, Properties
from sqlalchemy import Engine, select

from dagster_lakehouse.lakehouse import corruption, read_cache
from dagster_lakehouse.lakehouse.engine import make_engine
from dagster_lakehouse.lakehouse.errors import ReadOnlyError
from dagster_lakehouse.lakehouse.written_files import tracked

__all__ = [
    "IcebergNamespaceProperties",
    "IcebergTables",
    "PinnedCatalog",
    "ReadOnlyCatalog",
    "ReadOnlyTable",
    "RefCatalog",
    "make_engine",
    "open_catalog_schema",
    "read_only",
]


def open_catalog_schema(catalog_uri: str, properties: dict[str, str]) -> str:
    """Create PyIceberg's catalog tables if absent and return the schema version PyIceberg detected."""
    bootstrap = SqlCatalog("main", **{**properties, "uri": catalog_uri, "init_catalog_tables": "true"})
    try:
        return bootstrap._schema_version
    finally:
        bootstrap.close()


class RefCatalog(SqlCatalog):
    """A `SqlCatalog` for one ref that reuses the lakehouse's engine instead of opening its own.

    Loading a table reads its pointer from the catalog every time (never stale) and parses the metadata file it names
    once per process (`read_cache`: a metadata file is never rewritten), so a commit that lost a race reloads fast.
    """

    table_class: type[Table] = Table

    def __init__(self, name: str, engine: Engine, schema_version: str, **properties: str):
        MetastoreCatalog.__init__(self, name, **properties)
        self.engine = engine
        self._schema_version = schema_version

    def close(self) -> None:
        """The engine belongs to the lakehouse; closing one ref's catalog must not dispose it."""

    def load_table(self, identifier: Any) -> Table:
        parts = Catalog.identifier_to_tuple(identifier)
        namespace, table_name = Catalog.namespace_to_string(Catalog.namespace_from(parts)), Catalog.table_name_from(parts)
        rows = IcebergTables.__table__
        query = select(rows.c.metadata_location).where(
            rows.c.catalog_name == self.name, rows.c.table_namespace == namespace, rows.c.table_name == table_name
        )
        if (type_filter := self._iceberg_type_filter()) is not None:
            query = query.where(type_filter)
        with self.engine.connect() as conn:
            location = conn.execute(query).scalar()
        if not location:
            raise NoSuchTableError(f"Table does not exist: {namespace}.{table_name}")
        return self.table_at(parts, location)

    def table_at(self, identifier: tuple[str, ...], location: str) -> Table:
        """The table (a `table_class`) whose metadata file is `location`."""
        with corruption.metadata_file(".".join(identifier), self.name, location):
            metadata = read_cache.table_metadata(shared_file_io(self.properties, location), location)
        return self.table_class(
            identifier=identifier,
            metadata=metadata,
            metadata_location=location,
            io=tracked(shared_file_io({**self.properties, **metadata.properties}, location)),
            catalog=self,
        )

    def _load_file_io(self, properties: Properties = EMPTY_DICT, location: str | None = None) -> FileIO:
        """PyIceberg's FileIO, `tracked` inside a commit so the files the commit writes are known (`written_files`)."""
        return tracked(super()._load_file_io(properties, location))


def _refuse(what: str, ref: str, action: str) -> NoReturn:
    raise ReadOnlyError(
        f"{what} on '{ref}' is read-only: {action} through a catalog or table handed out by Lakehouse.catalog()/"
        "table() would bypass branch protection and the commit log; write with Lakehouse.write(name, data, "
        "branch=...), or Lakehouse.drop_table/create_branch/tag"
    )


_FILE_IOS: dict[tuple[Any, ...], FileIO] = {}
_FILE_IOS_LOCK = threading.Lock()
_MAX_FILE_IOS = 64


def shared_file_io(properties: dict[str, str], location: str) -> FileIO:
    """One FileIO per set of properties and URL scheme, reused by every read (and the object-store client it holds)."""
    key = (tuple(sorted(properties.items())), location.split("://", 1)[0] if "://" in location else "")
    with _FILE_IOS_LOCK:
        found = _FILE_IOS.get(key)
        if found is None:
            if len(_FILE_IOS) >= _MAX_FILE_IOS:
                _FILE_IOS.clear()
            found = _FILE_IOS[key] = load_file_io(properties, location)
        return found


class ReadOnlyCatalog(RefCatalog):
    """The catalog `Lakehouse.catalog(ref)` hands out: it lists and loads tables of `ref` (as `ReadOnlyTable`s, set
    below), and refuses every change."""

    def _refuse(self, action: str) -> NoReturn:
        _refuse("the catalog", self.name, action)

    def create_table(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._refuse("create_table")

    def create_table_transaction(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._refuse("create_table_transaction")

    def create_table_if_not_exists(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._refuse("create_table_if_not_exists")

    def register_table(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._refuse("register_table")

    def drop_table(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._refuse("drop_table")

    def purge_table(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._refuse("purge_table")

    def rename_table(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._refuse("rename_table")

    def commit_table(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._refuse("a commit")

    def create_namespace(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._refuse("create_namespace")

    def create_namespace_if_not_exists(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._refuse("create_namespace_if_not_exists")

    def drop_namespace(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._refuse("drop_namespace")

    def update_namespace_properties(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._refuse("update_namespace_properties")

    def create_view(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._refuse("create_view")

    def register_view(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._refuse("register_view")

    def drop_view(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._refuse("drop_view")

    def create_tables(self) -> NoReturn:
        self._refuse("create_tables")

    def destroy_tables(self) -> NoReturn:
        self._refuse("destroy_tables")


class PinnedCatalog(ReadOnlyCatalog):
    """The read-only catalog of a past state (`main@<commit>`, `dev~2`): its tables are the pointers the ref had then,
    rebuilt from the commit log (`refspec.state_at`), not the ref's current rows."""

    def __init__(self, name: str, engine: Engine, schema_version: str, state: dict[str, str], **properties: str):
        super().__init__(name, engine, schema_version, **properties)
        self.state = dict(state)

    def load_table(self, identifier: Any) -> Table:
        name = ".".join(Catalog.identifier_to_tuple(identifier))
        location = self.state.get(name)
        if location is None:
            raise NoSuchTableError(f"table '{name}' does not exist on '{self.name}'")
        return self.table_at(Catalog.identifier_to_tuple(name), location)

    def table_exists(self, identifier: Any) -> bool:
        return ".".join(Catalog.identifier_to_tuple(identifier)) in self.state

    def list_tables(self, namespace: Any) -> list[tuple[str, ...]]:
        wanted = ".".join(Catalog.identifier_to_tuple(namespace))
        tables = [tuple(name.split(".")) for name in sorted(self.state) if name.split(".")[0] == wanted]
        if not tables:
            raise NoSuchNamespaceError(f"namespace '{wanted}' does not exist on '{self.name}'")
        return tables

    def list_namespaces(self, namespace: Any = ()) -> list[tuple[str, ...]]:
        if Catalog.identifier_to_tuple(namespace):
            return []
        return sorted({(name.split(".")[0],) for name in self.state})


class ReadOnlyTable(Table):
    """A table handed out by `Lakehouse.table()`: scans and metadata work; a change is refused before a file is written."""

    def _refuse(self, action: str) -> NoReturn:
        _refuse(f"table '{'.'.join(self._identifier)}'", self.catalog.name, action)

    def transaction(self) -> NoReturn:  # append, overwrite, delete, upsert, add_files all start one
        self._refuse("a write")

    def update_schema(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._refuse("update_schema")

    def update_spec(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._refuse("update_spec")

    def update_sort_order(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._refuse("update_sort_order")

    def manage_snapshots(self) -> NoReturn:
        self._refuse("manage_snapshots")

    def update_statistics(self) -> NoReturn:
        self._refuse("update_statistics")

    @property
    def maintenance(self) -> NoReturn:
        self._refuse("maintenance")

    def _do_commit(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._refuse("a commit")


ReadOnlyCatalog.table_class = ReadOnlyTable


def read_only(table: Table, catalog: ReadOnlyCatalog) -> ReadOnlyTable:
    """`table` as a `ReadOnlyTable` bound to the read-only `catalog` of its ref."""
    return ReadOnlyTable(
        identifier=table._identifier,
        metadata=table.metadata,
        metadata_location=table.metadata_location,
        io=table.io,
        catalog=catalog,
        config=table.config,
    )
