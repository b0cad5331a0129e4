"""SQLite: everything outboxkit knows about this database lives in this package."""

from __future__ import annotations

from outboxkit.stores.sqlite.store import SqliteOutboxStore, SqliteSchema, connect, sqlite_path

__all__ = ["SqliteOutboxStore", "SqliteSchema", "connect", "sqlite_path"]
