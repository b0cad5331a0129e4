"""PostgreSQL: everything outboxkit knows about this database lives in this package."""

from __future__ import annotations

from typing import Any

__all__ = ["PostgresOutboxStore", "PostgresSchema", "bucket_sql"]


def __getattr__(name: str) -> Any:
    # Lazy: importing the package (the registry does) must not import psycopg.
    if name in __all__:
        from outboxkit.stores.postgres import store

        return getattr(store, name)
    raise AttributeError(name)
