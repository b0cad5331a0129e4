"""emit(): write an event into the outbox on the caller's own connection, inside its transaction.

It never commits, never opens a transaction and never touches the connection's state beyond one
INSERT. Every refusal happens before that INSERT, so a refused emit writes nothing and leaves the
caller's transaction as it was.

Supported connections, detected by type (optional libraries are only imported if already loaded):
each database package lists its drivers (:class:`~outboxkit.stores.base.Driver`: ``sqlite3``,
psycopg sync and async, PyMySQL, asyncmy, ...); SQLAlchemy ``Connection``/``Session`` and
``AsyncConnection``/``AsyncSession`` work on any of those databases through their dialect name.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from outboxkit.core.envelope import (
    DEFAULT_MAX_PAYLOAD,
    Encoder,
    encode_payload,
    json_encoder,
    new_event_id,
    validate_headers,
    validate_key,
    validate_topic,
)
from outboxkit.errors import EmitError, NoTransactionError
from outboxkit.stores.base import Driver, TableRef
from outboxkit.stores.registry import drivers, schema_for


def _trace_headers() -> dict[str, str]:
    """The W3C trace context of the emitting code, when OpenTelemetry is installed and active."""
    if "opentelemetry" not in sys.modules:
        return {}
    try:
        from opentelemetry.propagate import inject  # type: ignore[import-not-found,unused-ignore]
    except ImportError:  # pragma: no cover - partial installs
        return {}
    carrier: dict[str, str] = {}
    inject(carrier)
    return {k: v for k, v in carrier.items() if k in ("traceparent", "tracestate")}


@dataclass(frozen=True)
class _Row:
    id: str
    params: dict[str, Any]

    def ordered(self) -> tuple[Any, ...]:
        p = self.params
        return (p["id"], p["topic"], p["key"], p["type"], p["source"], p["payload"], p["content_type"], p["headers"])


class Outbox:
    """Configuration for emit: where the table is, how payloads are encoded, the size limit.

    >>> outbox = Outbox(table="outbox", schema=None, source="/orders-service")
    >>> # with conn.transaction(): outbox.emit(conn, "orders.created", {"id": 1}, key="customer-7")
    """

    def __init__(
        self,
        *,
        table: str = "outbox",
        schema: str | None = None,
        encoder: Encoder = json_encoder,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        source: str | None = None,
    ) -> None:
        self.ref = TableRef(table, schema)
        self.encoder = encoder
        self.max_payload = max_payload
        self.source = source
        self._sql: dict[tuple[str, str], str] = {}
        self._topics: set[str] = set()  # topics already validated (an app emits a handful, again and again)

    # -- building the row (pure) ---------------------------------------------------------------
    def _row(
        self, topic: str, payload: Any, key: str | None, headers: Mapping[str, str] | None, type: str | None
    ) -> _Row:
        if topic not in self._topics:
            validate_topic(topic)
            if len(self._topics) < 10_000:
                self._topics.add(topic)
        key = validate_key(key)
        user_headers = validate_headers(headers)
        data, content_type = encode_payload(payload, self.encoder, max_bytes=self.max_payload)
        if type is not None and (not isinstance(type, str) or not type):
            raise EmitError("type must be a non-empty str")
        all_headers = {**_trace_headers(), **user_headers}
        event_id = new_event_id()
        return _Row(
            event_id,
            {
                "id": event_id,
                "topic": topic,
                "key": key,
                "type": type,
                "source": self.source,
                "payload": data,
                "content_type": content_type,
                "headers": json.dumps(all_headers, separators=(",", ":")) if all_headers else "{}",
            },
        )

    def _insert_sql(self, dialect: str, paramstyle: str) -> str:
        sql = self._sql.get((dialect, paramstyle))
        if sql is None:
            sql = schema_for(dialect).insert_sql(self.ref, paramstyle)
            self._sql[(dialect, paramstyle)] = sql
        return sql

    # -- sync ------------------------------------------------------------------------------------
    def emit(
        self,
        conn: Any,
        topic: str,
        payload: Any,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        type: str | None = None,
    ) -> str:
        """Write one event in ``conn``'s open transaction and return its id (a UUIDv7 string).

        Raises :class:`~outboxkit.errors.NoTransactionError`, ``EncodingError`` or
        ``InvalidTopicError`` before writing anything.
        """
        driver, dialect = _driver(conn)
        if driver is not None and not driver.is_async:
            driver.check(conn)
            row = self._row(topic, payload, key, headers, type)
            driver.execute(conn, self._insert_sql(dialect, driver.paramstyle), row.ordered())
            return row.id
        if _is(conn, "sqlalchemy.orm", "Session"):
            if not conn.in_transaction():
                raise NoTransactionError(
                    "SQLAlchemy Session has no open transaction: use `with session.begin():` "
                    "or run your own statement first"
                )
            return self.emit(conn.connection(), topic, payload, key=key, headers=headers, type=type)
        if _is(conn, "sqlalchemy.engine", "Connection"):
            _check_sqlalchemy(conn)
            row = self._row(topic, payload, key, headers, type)
            from sqlalchemy import text

            conn.execute(text(self._insert_sql(conn.dialect.name, "named")), row.params)
            return row.id
        raise EmitError(_unsupported(conn, async_=False))

    # -- async -----------------------------------------------------------------------------------
    async def emit_async(
        self,
        conn: Any,
        topic: str,
        payload: Any,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        type: str | None = None,
    ) -> str:
        """The awaitable twin of :meth:`emit` for async drivers (psycopg ``AsyncConnection``,
        asyncmy) and SQLAlchemy ``AsyncConnection`` / ``AsyncSession``."""
        driver, dialect = _driver(conn)
        if driver is not None and driver.is_async:
            driver.check(conn)
            row = self._row(topic, payload, key, headers, type)
            pending = driver.execute(conn, self._insert_sql(dialect, driver.paramstyle), row.ordered())
            if pending is not None:
                await pending
            return row.id
        if _is(conn, "sqlalchemy.ext.asyncio", "AsyncSession"):
            if not conn.in_transaction():
                raise NoTransactionError(
                    "SQLAlchemy AsyncSession has no open transaction: use `async with session.begin():`"
                )
            return await self.emit_async(await conn.connection(), topic, payload, key=key, headers=headers, type=type)
        if _is(conn, "sqlalchemy.ext.asyncio", "AsyncConnection"):
            _check_sqlalchemy(conn)
            row = self._row(topic, payload, key, headers, type)
            from sqlalchemy import text

            await conn.execute(text(self._insert_sql(conn.dialect.name, "named")), row.params)
            return row.id
        raise EmitError(_unsupported(conn, async_=True))


def _is(obj: Any, module: str, name: str) -> bool:
    """isinstance against an optional library's class, without importing the library."""
    mod = sys.modules.get(module)
    cls = getattr(mod, name, None) if mod is not None else None
    return cls is not None and isinstance(obj, cls)


_DRIVERS: dict[type, tuple[Driver, str]] = {}


def _driver(conn: Any) -> tuple[Driver | None, str]:
    """The driver of ``conn``, remembered by connection class (this runs on every emit)."""
    known = _DRIVERS.get(type(conn))
    if known is not None:
        return known
    for database, driver in drivers():
        if _is(conn, driver.module, driver.name):
            _DRIVERS[type(conn)] = (driver, database.name)
            return driver, database.name
    return None, ""


def _check_sqlalchemy(conn: Any) -> None:
    # AsyncConnection has no get_execution_options(); its sync_connection does.
    sync = getattr(conn, "sync_connection", None) or conn
    if sync.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
        raise NoTransactionError("SQLAlchemy connection is in AUTOCOMMIT mode: emit inside `with engine.begin():`")
    if not conn.in_transaction():
        raise NoTransactionError(
            "SQLAlchemy Connection has no open transaction: emit inside `with engine.begin() as conn:` "
            "or after your own statement"
        )


def _unsupported(conn: Any, *, async_: bool) -> str:
    kind = f"{type(conn).__module__}.{type(conn).__qualname__}"
    names = sorted({f"{d.module}.{d.name}" for _, d in drivers() if d.is_async == async_})
    if async_:
        return (
            f"emit_async() does not support {kind}: pass one of {', '.join(names)} or a SQLAlchemy "
            "AsyncConnection/AsyncSession (use emit() for sync connections)"
        )
    return (
        f"emit() does not support {kind}: pass one of {', '.join(names)} or a SQLAlchemy "
        "Connection/Session (use `await emit_async()` for async ones)"
    )


_default = Outbox()


def emit(
    conn: Any,
    topic: str,
    payload: Any,
    *,
    key: str | None = None,
    headers: Mapping[str, str] | None = None,
    type: str | None = None,
) -> str:
    """Write one event into the default outbox (table ``outbox``) in ``conn``'s open transaction.

    >>> with psycopg.connect(url) as conn, conn.transaction():          # doctest: +SKIP
    ...     conn.execute("UPDATE orders SET status = 'paid' WHERE id = %s", [42])
    ...     event_id = emit(conn, "orders.paid", {"order": 42}, key="order-42")
    """
    return _default.emit(conn, topic, payload, key=key, headers=headers, type=type)


async def emit_async(
    conn: Any,
    topic: str,
    payload: Any,
    *,
    key: str | None = None,
    headers: Mapping[str, str] | None = None,
    type: str | None = None,
) -> str:
    """Awaitable :func:`emit` for psycopg ``AsyncConnection`` and SQLAlchemy async connections/sessions."""
    return await _default.emit_async(conn, topic, payload, key=key, headers=headers, type=type)
