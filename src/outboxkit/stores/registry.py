"""URL scheme / dialect name -> store adapter. The one place that knows every database module."""

from __future__ import annotations

from outboxkit.core.urls import redact_url, scheme_of
from outboxkit.errors import ConfigurationError
from outboxkit.stores.base import OutboxSchema, OutboxStore, TableRef

_POSTGRES = ("postgresql", "postgres", "postgresql+psycopg")


def schema_for(dialect: str) -> OutboxSchema:
    """SQL text for a dialect name (``postgresql``, ``sqlite``) or a URL scheme."""
    if dialect in _POSTGRES:
        from outboxkit.stores.postgres.store import PostgresSchema

        return PostgresSchema()
    if dialect == "sqlite":
        from outboxkit.stores.sqlite.store import SqliteSchema

        return SqliteSchema()
    if dialect in ("mysql", "mariadb"):
        raise ConfigurationError("MariaDB/MySQL support is planned but not in this release")
    raise ConfigurationError(f"unsupported database {dialect!r}: use postgresql:// or sqlite:///")


def store_for(url: str, ref: TableRef | None = None, *, hold_dead_keys: bool = True) -> OutboxStore:
    scheme = scheme_of(url)
    if scheme in _POSTGRES:
        from outboxkit.stores.postgres.store import PostgresOutboxStore

        return PostgresOutboxStore(_libpq_url(url), ref, hold_dead_keys=hold_dead_keys)
    if scheme == "sqlite":
        from outboxkit.stores.sqlite.store import SqliteOutboxStore

        return SqliteOutboxStore(url, ref, hold_dead_keys=hold_dead_keys)
    raise ConfigurationError(f"unsupported database URL {redact_url(url)!r}: use postgresql://... or sqlite:///path.db")


def _libpq_url(url: str) -> str:
    # SQLAlchemy-style "postgresql+psycopg://" is accepted for convenience; libpq wants the plain form.
    return "postgresql://" + url.split("://", 1)[1] if url.startswith("postgresql+") else url
