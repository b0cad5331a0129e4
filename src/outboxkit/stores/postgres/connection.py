"""PostgreSQL connections for outboxkit's own sync work (operator commands, migrations, the inbox,
tests): psycopg in autocommit mode, labelled with ``application_name``. The bottom of the package:
``ops`` and ``database`` build on it; psycopg is imported only when a connection is made.
"""

from __future__ import annotations

from outboxkit.core.urls import redact_url
from outboxkit.errors import UnavailableError
from outboxkit.stores.base import SyncConnection


def libpq_url(url: str) -> str:
    """SQLAlchemy-style ``postgresql+psycopg://`` is accepted for convenience; libpq wants the plain form."""
    return "postgresql://" + url.split("://", 1)[1]


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def connect_sync(url: str, *, label: str = "outboxkit") -> SyncConnection:
    """An autocommit psycopg connection (transactions are explicit BEGIN/COMMIT)."""
    import psycopg

    try:
        conn: SyncConnection = psycopg.connect(
            libpq_url(url), autocommit=True, connect_timeout=5, application_name=label
        )
    except psycopg.Error as exc:
        raise UnavailableError(f"PostgreSQL at {redact_url(url)} is unavailable: {first_line(exc)}") from None
    return conn
