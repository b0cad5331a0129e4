"""Run plans on the connections ``emit()`` accepts: sqlite3, psycopg (sync and async) and SQLAlchemy
(sync and async, unwrapped to the driver connection underneath, in the same transaction).

The connection's own row factory is left alone: each query runs on a cursor that returns tuples.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from outboxkit.emit import _check_sqlalchemy, _driver, _is
from outboxkit.errors import EmitError, NoTransactionError
from outboxkit.eventstore.plans import Plan, Query, Rows

T = TypeVar("T")

SyncRun = Callable[[Query], Rows]
AsyncRun = Callable[[Query], Awaitable[Rows]]


def sync_runner(conn: Any, *, write: bool) -> tuple[str, SyncRun]:
    """(dialect, run) for a sync connection; ``write`` refuses a connection with no transaction."""
    driver, dialect = _driver(conn)
    if driver is not None and not driver.is_async:
        if write:
            driver.check(conn)
        return dialect, _raw_sync(conn, dialect)
    if _is(conn, "sqlalchemy.orm", "Session"):
        if write and not conn.in_transaction():
            raise NoTransactionError("SQLAlchemy Session has no open transaction: use `with session.begin():`")
        conn = conn.connection()
    if _is(conn, "sqlalchemy.engine", "Connection"):
        if write:
            _check_sqlalchemy(conn)
        raw = conn.connection.driver_connection
        return conn.dialect.name, _raw_sync(raw, conn.dialect.name)
    raise EmitError(f"the event store does not support {type(conn).__module__}.{type(conn).__qualname__} here")


async def async_runner(conn: Any, *, write: bool) -> tuple[str, AsyncRun]:
    """(dialect, run) for an async connection (psycopg AsyncConnection, SQLAlchemy async)."""
    driver, dialect = _driver(conn)
    if driver is not None and driver.is_async:
        if write:
            driver.check(conn)
        return dialect, _raw_async(conn, dialect)
    if _is(conn, "sqlalchemy.ext.asyncio", "AsyncSession"):
        if write and not conn.in_transaction():
            raise NoTransactionError(
                "SQLAlchemy AsyncSession has no open transaction: use `async with session.begin():`"
            )
        conn = await conn.connection()
    if _is(conn, "sqlalchemy.ext.asyncio", "AsyncConnection"):
        if write:
            _check_sqlalchemy(conn)
        raw = (await conn.get_raw_connection()).driver_connection
        return conn.dialect.name, _raw_async(raw, conn.dialect.name)
    raise EmitError(f"the event store does not support {type(conn).__module__}.{type(conn).__qualname__} here")


def _raw_sync(conn: Any, dialect: str) -> SyncRun:
    if dialect == "sqlite":

        def run_sqlite(q: Query) -> Rows:
            cur = conn.cursor()
            cur.row_factory = None
            try:
                if q.many:
                    cur.executemany(q.sql, q.params)
                    return []
                return list(cur.execute(q.sql, q.params).fetchall())
            finally:
                cur.close()

        return run_sqlite
    if _is(conn, "psycopg", "Connection"):
        from psycopg.rows import tuple_row

        def run_psycopg(q: Query) -> Rows:
            with conn.cursor(row_factory=tuple_row) as cur:
                if q.many:
                    cur.executemany(q.sql, q.params)
                    return []
                cur.execute(q.sql, q.params)
                return list(cur.fetchall()) if cur.description else []

        return run_psycopg
    raise EmitError(f"the event store does not support {type(conn).__module__}.{type(conn).__qualname__} yet")


def _raw_async(conn: Any, dialect: str) -> AsyncRun:
    if _is(conn, "psycopg", "AsyncConnection"):
        from psycopg.rows import tuple_row

        async def run(q: Query) -> Rows:
            async with conn.cursor(row_factory=tuple_row) as cur:
                if q.many:
                    await cur.executemany(q.sql, q.params)
                    return []
                await cur.execute(q.sql, q.params)
                return list(await cur.fetchall()) if cur.description else []

        return run
    raise EmitError(f"the event store does not support {type(conn).__module__}.{type(conn).__qualname__} yet")


def run_sync(plan: Plan[T], run: SyncRun) -> T:
    try:
        query = next(plan)
        while True:
            query = plan.send(run(query))
    except StopIteration as done:
        result: T = done.value
        return result


async def run_async(plan: Plan[T], run: AsyncRun) -> T:
    try:
        query = next(plan)
        while True:
            query = plan.send(await run(query))
    except StopIteration as done:
        result: T = done.value
        return result
