"""SQLite: everything outboxkit knows about this database lives in this package.

``store`` (schema and relay store), ``ops`` (operator SQL), ``inbox``, ``capture`` (triggers) and
``database`` (connections, migrations, emit driver, error translation), handed out by
:data:`DATABASE`.
"""

from __future__ import annotations

from outboxkit.stores.sqlite.database import DATABASE
from outboxkit.stores.sqlite.store import SqliteOutboxStore, SqliteSchema, connect, sqlite_path, translate

__all__ = ["DATABASE", "SqliteOutboxStore", "SqliteSchema", "connect", "sqlite_path", "translate"]
