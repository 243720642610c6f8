"""One Iceberg SQL catalog per ref: a branch or tag is a catalog name inside one shared database.

PyIceberg's `SqlCatalog(name)` sees only the rows of `iceberg_tables` whose `catalog_name` is `name`,
so a branch is a set of (table -> metadata file) pointers and creating one copies pointers, never data.
"""

from __future__ import annotations

from typing import Any

from pyiceberg.catalog import MetastoreCatalog
from pyiceberg.catalog.sql import IcebergNamespaceProperties, IcebergTables, SqlCatalog
from sqlalchemy import Engine, create_engine, event

__all__ = ["IcebergNamespaceProperties", "IcebergTables", "RefCatalog", "make_engine", "open_catalog_schema"]


def make_engine(catalog_uri: str) -> Engine:
    """Create the SQLAlchemy engine shared by every ref's catalog (SQLite waits on locks instead of failing)."""
    if catalog_uri.startswith("sqlite"):
        engine = create_engine(catalog_uri, connect_args={"timeout": 60, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=60000")
            cursor.close()

        return engine
    return create_engine(catalog_uri, pool_pre_ping=True)


def open_catalog_schema(catalog_uri: str, properties: dict[str, str]) -> str:
    """Create PyIceberg's catalog tables if absent and return the schema version PyIceberg detected."""
    bootstrap = SqlCatalog("main", **{**properties, "uri": catalog_uri, "init_catalog_tables": "true"})
    try:
        return bootstrap._schema_version
    finally:
        bootstrap.close()


class RefCatalog(SqlCatalog):
    """A `SqlCatalog` for one ref that reuses the lakehouse's engine instead of opening its own."""

    def __init__(self, name: str, engine: Engine, schema_version: str, **properties: str):
        MetastoreCatalog.__init__(self, name, **properties)
        self.engine = engine
        self._schema_version = schema_version

    def close(self) -> None:
        """The engine belongs to the lakehouse; closing one ref's catalog must not dispose it."""
