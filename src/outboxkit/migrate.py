"""``outboxkit migrate``: create or upgrade the outbox schema, idempotently."""

from __future__ import annotations

from outboxkit.core.urls import redact_url, scheme_of
from outboxkit.errors import ConfigurationError, UnavailableError
from outboxkit.stores.base import TableRef
from outboxkit.stores.registry import schema_for


def migration_sql(url_or_dialect: str, ref: TableRef, *, notify: bool = True) -> list[str]:
    """The DDL that :func:`migrate` runs, for people who run their own migrations."""
    dialect = scheme_of(url_or_dialect) if "://" in url_or_dialect else url_or_dialect
    return schema_for(dialect).ddl(ref, notify=notify)


def migrate(url: str, ref: TableRef | None = None, *, notify: bool = True) -> int:
    """Run the DDL in one transaction; returns the number of statements run."""
    ref = ref or TableRef()
    statements = migration_sql(url, ref, notify=notify)
    scheme = scheme_of(url)
    if scheme == "sqlite":
        from outboxkit.stores.sqlite import connect, sqlite_path

        lite = connect(sqlite_path(url))
        try:
            lite.execute("BEGIN IMMEDIATE")
            for stmt in statements:
                lite.execute(stmt)
            lite.execute("COMMIT")
        finally:
            lite.close()
        return len(statements)
    if scheme.startswith("postgres"):
        import psycopg

        libpq = "postgresql://" + url.split("://", 1)[1]
        try:
            with psycopg.connect(libpq, connect_timeout=5) as conn, conn.transaction():
                # Serialise concurrent migrations of the same outbox (two deploys at once).
                conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 1))", [ref.lock_name])
                for stmt in statements:
                    conn.execute(stmt.encode())  # bytes: DDL text with validated, quoted identifiers
        except psycopg.OperationalError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UnavailableError(f"PostgreSQL at {redact_url(url)} is unavailable: {first}") from None
        return len(statements)
    raise ConfigurationError(f"unsupported database URL {redact_url(url)!r}")
