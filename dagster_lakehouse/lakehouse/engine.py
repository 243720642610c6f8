"""The SQLAlchemy engine of the catalog database, on its own: commands that only read refs need no PyIceberg."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event

__all__ = ["make_engine"]


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
