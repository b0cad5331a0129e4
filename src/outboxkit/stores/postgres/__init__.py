"""PostgreSQL: everything outboxkit knows about this database lives in this package.

``store`` (schema and relay store), ``ops`` (operator SQL), ``inbox``, ``capture`` (triggers),
``partitions`` (day-partitioned outbox recipe) and ``database`` (connections, migrations, emit
drivers, error translation), handed out by :data:`DATABASE`.
"""

from __future__ import annotations

from typing import Any

from outboxkit.stores.postgres.database import DATABASE

_STORE_NAMES = ("PostgresOutboxStore", "PostgresSchema", "bucket_sql", "storable", "translate")
__all__ = ["DATABASE", *_STORE_NAMES]


def __getattr__(name: str) -> Any:
    # Lazy: importing the package (the registry does) must not import psycopg.
    if name == "PostgresSchema":  # the DDL needs no driver
        from outboxkit.stores.postgres.schema import PostgresSchema

        return PostgresSchema
    if name in _STORE_NAMES:
        from outboxkit.stores.postgres import store

        return getattr(store, name)
    raise AttributeError(name)
