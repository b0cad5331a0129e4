"""emit() on every supported connection kind, against the real PostgreSQL, SQLite and MariaDB.

Every kind is driven through the same small async ``Handle`` (begin / statement / emit / commit /
rollback), so each contract below runs once per kind: sqlite3; psycopg sync and async; PyMySQL and
asyncmy; SQLAlchemy ``Connection`` and ``Session`` on PostgreSQL, SQLite and MariaDB (PyMySQL);
SQLAlchemy ``AsyncConnection`` and ``AsyncSession`` on PostgreSQL (psycopg), SQLite (aiosqlite) and
MariaDB (asyncmy).
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import asyncmy
import psycopg
import pymysql
import pytest
from sqlalchemy import NullPool, create_engine, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from outboxkit import (
    EmitError,
    EncodingError,
    InvalidTopicError,
    NoTransactionError,
    Outbox,
    emit,
    emit_async,
    migrate,
)
from outboxkit.stores.base import TableRef
from outboxkit.stores.mariadb.driver import parse_url
from outboxkit.stores.sqlite import sqlite_path

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@dataclass(frozen=True)
class Target:
    dialect: str  # "postgresql", "sqlite" or "mariadb"
    url: str  # postgresql://..., sqlite:///... or mysql://...
    ref: TableRef

    def sqlalchemy_url(self, *, async_: bool) -> str:
        if self.dialect == "postgresql":
            return "postgresql+psycopg://" + self.url.split("://", 1)[1]
        if self.dialect == "mariadb":
            return ("mysql+asyncmy://" if async_ else "mysql+pymysql://") + self.url.split("://", 1)[1]
        return ("sqlite+aiosqlite:///" if async_ else "sqlite:///") + sqlite_path(self.url)

    def outbox(self, **options: Any) -> Outbox:
        return Outbox(table=self.ref.table, schema=self.ref.schema, **options)

    def rows(self, ref: TableRef | None = None) -> list[dict[str, Any]]:
        """Committed rows of the outbox, in seq order, read on a connection of our own."""
        ref = ref or self.ref
        sql = f"SELECT id, topic, key, type, source, payload, content_type, headers FROM {ref.qualified} ORDER BY seq"
        names = ["id", "topic", "key", "type", "source", "payload", "content_type", "headers"]
        if self.dialect == "postgresql":
            with psycopg.connect(self.url, autocommit=True) as conn:
                found = conn.execute(sql.replace("SELECT id,", "SELECT id::text,").encode()).fetchall()
            return [dict(zip(names, row, strict=True)) for row in found]
        if self.dialect == "mariadb":
            conn = pymysql.connect(**parse_url(self.url).kwargs(), autocommit=True)
            try:
                with conn.cursor() as cur:
                    cur.execute(sql.replace(" key,", " `key`,").replace(ref.qualified, ref.quoted("`")))
                    found = cur.fetchall()
            finally:
                conn.close()
        else:
            lite = sqlite3.connect(sqlite_path(self.url))
            try:
                found = lite.execute(sql).fetchall()
            finally:
                lite.close()
        out = [dict(zip(names, row, strict=True)) for row in found]
        for row in out:
            row["headers"] = json.loads(row["headers"])
        return out


class Handle:
    """One connection of one kind; every step is awaitable so sync and async kinds read alike."""

    is_async = False

    def __init__(self, target: Target) -> None:
        self.target = target
        self.conn: Any = None

    async def open(self) -> None:
        raise NotImplementedError

    async def begin(self) -> None:
        raise NotImplementedError

    async def execute(self, sql: str) -> None:
        """A statement of the caller's own, in the current transaction."""
        raise NotImplementedError

    async def commit(self) -> None:
        raise NotImplementedError

    async def rollback(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def emit(self, outbox: Outbox, topic: Any, payload: Any, **kw: Any) -> str:
        if self.is_async:
            return await outbox.emit_async(self.conn, topic, payload, **kw)
        return outbox.emit(self.conn, topic, payload, **kw)

    async def emit_with_the_wrong_twin(self, outbox: Outbox) -> str:
        if self.is_async:
            return outbox.emit(self.conn, "orders.created", {"id": 1})
        return await outbox.emit_async(self.conn, "orders.created", {"id": 1})


class Sqlite3Handle(Handle):
    async def open(self) -> None:
        self.conn = sqlite3.connect(sqlite_path(self.target.url), isolation_level=None, timeout=10)

    async def begin(self) -> None:
        self.conn.execute("BEGIN")

    async def execute(self, sql: str) -> None:
        self.conn.execute(sql).fetchall()

    async def commit(self) -> None:
        self.conn.execute("COMMIT")

    async def rollback(self) -> None:
        self.conn.execute("ROLLBACK")

    async def close(self) -> None:
        self.conn.close()


class PsycopgHandle(Handle):
    """Autocommit connection with explicit BEGIN/COMMIT (non-autocommit is covered separately)."""

    async def open(self) -> None:
        self.conn = psycopg.connect(self.target.url, autocommit=True)

    async def begin(self) -> None:
        self.conn.execute("BEGIN")

    async def execute(self, sql: str) -> None:
        self.conn.execute(sql.encode())

    async def commit(self) -> None:
        self.conn.execute("COMMIT")

    async def rollback(self) -> None:
        self.conn.execute("ROLLBACK")

    async def close(self) -> None:
        self.conn.close()


class AsyncPsycopgHandle(Handle):
    is_async = True

    async def open(self) -> None:
        self.conn = await psycopg.AsyncConnection.connect(self.target.url, autocommit=True)

    async def begin(self) -> None:
        await self.conn.execute("BEGIN")

    async def execute(self, sql: str) -> None:
        await self.conn.execute(sql.encode())

    async def commit(self) -> None:
        await self.conn.execute("COMMIT")

    async def rollback(self) -> None:
        await self.conn.execute("ROLLBACK")

    async def close(self) -> None:
        await self.conn.close()


class PyMySqlHandle(Handle):
    """PyMySQL in autocommit mode with explicit BEGIN (non-autocommit is covered separately)."""

    async def open(self) -> None:
        self.conn = pymysql.connect(**parse_url(self.target.url).kwargs(), autocommit=True)

    def _run(self, sql: str) -> None:
        with self.conn.cursor() as cur:
            cur.execute(sql)

    async def begin(self) -> None:
        self._run("BEGIN")

    async def execute(self, sql: str) -> None:
        self._run(sql)

    async def commit(self) -> None:
        self._run("COMMIT")

    async def rollback(self) -> None:
        self._run("ROLLBACK")

    async def close(self) -> None:
        self.conn.close()


class AsyncMyHandle(Handle):
    is_async = True

    async def open(self) -> None:
        self.conn = await asyncmy.connect(**parse_url(self.target.url).kwargs(), autocommit=True)

    async def _run(self, sql: str) -> None:
        async with self.conn.cursor() as cur:
            await cur.execute(sql)

    async def begin(self) -> None:
        await self._run("BEGIN")

    async def execute(self, sql: str) -> None:
        await self._run(sql)

    async def commit(self) -> None:
        await self._run("COMMIT")

    async def rollback(self) -> None:
        await self._run("ROLLBACK")

    async def close(self) -> None:
        self.conn.close()


class SaConnectionHandle(Handle):
    async def open(self) -> None:
        self.engine = create_engine(self.target.sqlalchemy_url(async_=False), poolclass=NullPool)
        self.conn = self.engine.connect()

    async def begin(self) -> None:
        self.tx = self.conn.begin()

    async def execute(self, sql: str) -> None:
        self.conn.execute(text(sql))

    async def commit(self) -> None:
        self.tx.commit()

    async def rollback(self) -> None:
        self.tx.rollback()

    async def close(self) -> None:
        self.conn.close()
        self.engine.dispose()


class SaSessionHandle(SaConnectionHandle):
    async def open(self) -> None:
        self.engine = create_engine(self.target.sqlalchemy_url(async_=False), poolclass=NullPool)
        self.conn = Session(self.engine)


class SaAsyncConnectionHandle(Handle):
    is_async = True

    async def open(self) -> None:
        self.engine = create_async_engine(self.target.sqlalchemy_url(async_=True), poolclass=NullPool)
        self.conn = await self.engine.connect()

    async def begin(self) -> None:
        self.tx = await self.conn.begin()

    async def execute(self, sql: str) -> None:
        await self.conn.execute(text(sql))

    async def commit(self) -> None:
        await self.tx.commit()

    async def rollback(self) -> None:
        await self.tx.rollback()

    async def close(self) -> None:
        await self.conn.close()
        await self.engine.dispose()


class SaAsyncSessionHandle(SaAsyncConnectionHandle):
    async def open(self) -> None:
        self.engine = create_async_engine(self.target.sqlalchemy_url(async_=True), poolclass=NullPool)
        self.conn = AsyncSession(self.engine)


@dataclass(frozen=True)
class Kind:
    name: str
    dialect: str
    make: Callable[[Target], Handle]


KINDS = [
    Kind("sqlite3", "sqlite", Sqlite3Handle),
    Kind("psycopg", "postgresql", PsycopgHandle),
    Kind("psycopg-async", "postgresql", AsyncPsycopgHandle),
    Kind("sa-connection-postgresql", "postgresql", SaConnectionHandle),
    Kind("sa-session-postgresql", "postgresql", SaSessionHandle),
    Kind("sa-connection-sqlite", "sqlite", SaConnectionHandle),
    Kind("sa-session-sqlite", "sqlite", SaSessionHandle),
    Kind("sa-async-connection-postgresql", "postgresql", SaAsyncConnectionHandle),
    Kind("sa-async-session-postgresql", "postgresql", SaAsyncSessionHandle),
    Kind("sa-async-connection-sqlite", "sqlite", SaAsyncConnectionHandle),
    Kind("sa-async-session-sqlite", "sqlite", SaAsyncSessionHandle),
    Kind("pymysql", "mariadb", PyMySqlHandle),
    Kind("asyncmy", "mariadb", AsyncMyHandle),
    Kind("sa-connection-mariadb", "mariadb", SaConnectionHandle),
    Kind("sa-session-mariadb", "mariadb", SaSessionHandle),
    Kind("sa-async-connection-mariadb", "mariadb", SaAsyncConnectionHandle),
    Kind("sa-async-session-mariadb", "mariadb", SaAsyncSessionHandle),
]


@pytest.fixture(params=KINDS, ids=[k.name for k in KINDS])
def kind(request: pytest.FixtureRequest) -> Kind:
    return request.param  # type: ignore[no-any-return]


def _target(dialect: str, request: pytest.FixtureRequest) -> Target:
    if dialect == "postgresql":
        return Target("postgresql", request.getfixturevalue("pg_url"), request.getfixturevalue("pg_ref"))
    if dialect == "mariadb":
        return Target("mariadb", request.getfixturevalue("mariadb_url"), request.getfixturevalue("mariadb_ref"))
    return Target("sqlite", request.getfixturevalue("sqlite_url"), TableRef())


@pytest.fixture
def target(kind: Kind, request: pytest.FixtureRequest) -> Target:
    return _target(kind.dialect, request)


@pytest.fixture
def pg_target(request: pytest.FixtureRequest) -> Target:
    return _target("postgresql", request)


@pytest.fixture
def mariadb_target(request: pytest.FixtureRequest) -> Target:
    return _target("mariadb", request)


@pytest.fixture
def sqlite_target(request: pytest.FixtureRequest) -> Target:
    return _target("sqlite", request)


@pytest.fixture
async def handle(kind: Kind, target: Target) -> AsyncIterator[Handle]:
    h = kind.make(target)
    await h.open()
    try:
        yield h
    finally:
        await h.close()


def _is_uuid7(value: str) -> bool:
    parsed = uuid.UUID(value)
    return parsed.version == 7 and str(parsed) == value


# -- (a) happy path --------------------------------------------------------------------------------


async def test_emit_writes_in_the_callers_transaction(handle: Handle, target: Target) -> None:
    outbox = target.outbox(source="/orders-service")
    await handle.begin()
    await handle.execute("SELECT 1")
    first = await handle.emit(
        outbox,
        "orders.created",
        {"order": 42, "note": "café"},
        key="customer-7",
        headers={"traceparent": TRACEPARENT, "x-tenant": "t1"},
        type="com.example.order.created",
    )
    second = await handle.emit(outbox, "orders.paid", [1, 2.5, None])
    assert _is_uuid7(first)
    assert _is_uuid7(second)
    assert first != second
    assert target.rows() == [], "emit must not commit"
    await handle.commit()

    rows = target.rows()
    assert rows == [
        {
            "id": first,
            "topic": "orders.created",
            "key": "customer-7",
            "type": "com.example.order.created",
            "source": "/orders-service",
            "payload": '{"order":42,"note":"café"}'.encode(),
            "content_type": "application/json",
            "headers": {"traceparent": TRACEPARENT, "x-tenant": "t1"},
        },
        {
            "id": second,
            "topic": "orders.paid",
            "key": None,
            "type": None,
            "source": "/orders-service",
            "payload": b"[1,2.5,null]",
            "content_type": "application/json",
            "headers": {},
        },
    ], "rows in emit order (G5 within one transaction)"


async def test_rollback_after_emit_leaves_no_row(handle: Handle, target: Target) -> None:
    outbox = target.outbox()
    await handle.begin()
    await handle.emit(outbox, "orders.created", {"id": 1}, key="k")
    await handle.rollback()
    assert target.rows() == []
    # the connection is fine afterwards
    await handle.begin()
    kept = await handle.emit(outbox, "orders.created", {"id": 2}, key="k")
    await handle.commit()
    assert [r["id"] for r in target.rows()] == [kept]


async def test_bytes_pass_through(handle: Handle, target: Target) -> None:
    await handle.begin()
    await handle.emit(target.outbox(), "blobs.raw", b"\x00\xff\x80raw")
    await handle.emit(target.outbox(), "blobs.raw", bytearray(b"\x01"))
    await handle.commit()
    rows = target.rows()
    assert [bytes(r["payload"]) for r in rows] == [b"\x00\xff\x80raw", b"\x01"]
    assert {r["content_type"] for r in rows} == {"application/octet-stream"}


async def test_custom_table_and_schema(handle: Handle, target: Target) -> None:
    custom = TableRef("custom_events", target.ref.schema)
    migrate(target.url, custom)
    await handle.begin()
    event_id = await handle.emit(Outbox(table=custom.table, schema=custom.schema), "orders.created", {"id": 1})
    await handle.commit()
    assert [r["id"] for r in target.rows(custom)] == [event_id]
    assert target.rows() == []


# -- (b) no transaction ----------------------------------------------------------------------------


async def test_refused_without_a_transaction(handle: Handle, target: Target) -> None:
    with pytest.raises(NoTransactionError, match="transaction"):
        await handle.emit(target.outbox(), "orders.created", {"id": 1})
    assert target.rows() == []


async def test_refused_after_commit(handle: Handle, target: Target) -> None:
    await handle.begin()
    await handle.execute("SELECT 1")
    await handle.commit()
    with pytest.raises(NoTransactionError):
        await handle.emit(target.outbox(), "orders.created", {"id": 1})
    assert target.rows() == []


def test_psycopg_non_autocommit_before_any_statement(pg_target: Target) -> None:
    outbox = pg_target.outbox()
    with psycopg.connect(pg_target.url) as conn:
        with pytest.raises(NoTransactionError):
            outbox.emit(conn, "orders.created", {"id": 1})
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE, "emit must not begin"
        # the idioms that do work: transaction() block, or after a statement of one's own
        with conn.transaction():
            a = outbox.emit(conn, "orders.created", {"id": 1})
        conn.execute("SELECT 1")
        b = outbox.emit(conn, "orders.created", {"id": 2})
        conn.commit()
    assert [r["id"] for r in pg_target.rows()] == [a, b]


def test_psycopg_autocommit_needs_begin(pg_target: Target) -> None:
    outbox = pg_target.outbox()
    with psycopg.connect(pg_target.url, autocommit=True) as conn:
        conn.execute("SELECT 1")
        with pytest.raises(NoTransactionError, match="autocommit"):
            outbox.emit(conn, "orders.created", {"id": 1})
        with conn.transaction():
            kept = outbox.emit(conn, "orders.created", {"id": 2})
    assert [r["id"] for r in pg_target.rows()] == [kept]


def test_pymysql_non_autocommit_joins_the_implicit_transaction(mariadb_target: Target) -> None:
    """PyMySQL's default (autocommit off): every statement is in a transaction only the caller's
    commit or rollback ends, so emit is accepted and follows the caller's outcome."""
    outbox = mariadb_target.outbox()
    conn = pymysql.connect(**parse_url(mariadb_target.url).kwargs())
    try:
        gone = outbox.emit(conn, "orders.created", {"id": 0})
        assert mariadb_target.rows() == [], "emit must not commit"
        conn.rollback()
        a = outbox.emit(conn, "orders.created", {"id": 1})
        conn.commit()
        conn.begin()
        b = outbox.emit(conn, "orders.created", {"id": 2})
        conn.commit()
    finally:
        conn.close()
    assert [r["id"] for r in mariadb_target.rows()] == [a, b]
    assert gone not in {a, b}


def test_pymysql_autocommit_needs_begin(mariadb_target: Target) -> None:
    outbox = mariadb_target.outbox()
    conn = pymysql.connect(**parse_url(mariadb_target.url).kwargs(), autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
        with pytest.raises(NoTransactionError, match="autocommit"):
            outbox.emit(conn, "orders.created", {"id": 1})
        conn.begin()
        kept = outbox.emit(conn, "orders.created", {"id": 2})
        conn.commit()
    finally:
        conn.close()
    assert [r["id"] for r in mariadb_target.rows()] == [kept]


def test_outboxkit_mariadb_connection_is_accepted(mariadb_target: Target) -> None:
    """The connection outboxkit's own tools use on MariaDB (``Database.connect``) works with emit."""
    from outboxkit.stores.mariadb import DATABASE

    conn = DATABASE.connect(mariadb_target.url)
    try:
        conn.execute("BEGIN")
        kept = mariadb_target.outbox().emit(conn, "orders.created", {"id": 1})
        conn.execute("COMMIT")
    finally:
        conn.close()
    assert [r["id"] for r in mariadb_target.rows()] == [kept]


def test_psycopg_aborted_transaction_is_refused(pg_target: Target) -> None:
    outbox = pg_target.outbox()
    with psycopg.connect(pg_target.url) as conn:
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1/0")
        with pytest.raises(NoTransactionError, match="aborted"):
            outbox.emit(conn, "orders.created", {"id": 1})
        conn.rollback()
    assert pg_target.rows() == []


async def test_async_psycopg_non_autocommit(pg_target: Target) -> None:
    outbox = pg_target.outbox()
    async with await psycopg.AsyncConnection.connect(pg_target.url) as conn:
        with pytest.raises(NoTransactionError):
            await outbox.emit_async(conn, "orders.created", {"id": 1})
        async with conn.transaction():
            kept = await outbox.emit_async(conn, "orders.created", {"id": 2})
    async with await psycopg.AsyncConnection.connect(pg_target.url, autocommit=True) as conn:
        with pytest.raises(NoTransactionError, match="autocommit"):
            await outbox.emit_async(conn, "orders.created", {"id": 3})
    assert [r["id"] for r in pg_target.rows()] == [kept]


def test_sqlite3_default_mode_after_own_statement(sqlite_target: Target) -> None:
    """Python's default sqlite3 mode begins implicitly at the caller's first write."""
    path = sqlite_path(sqlite_target.url)
    setup = sqlite3.connect(path, isolation_level=None)
    setup.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, status TEXT)")
    setup.close()
    outbox = sqlite_target.outbox()
    conn = sqlite3.connect(path, timeout=10)
    try:
        with pytest.raises(NoTransactionError, match="BEGIN"):
            outbox.emit(conn, "orders.created", {"id": 1})
        conn.execute("INSERT INTO orders (id, status) VALUES (1, 'new')")
        rolled_back = outbox.emit(conn, "orders.created", {"id": 1})
        conn.rollback()
        conn.execute("INSERT INTO orders (id, status) VALUES (2, 'new')")
        kept = outbox.emit(conn, "orders.created", {"id": 2})
        conn.commit()
    finally:
        conn.close()
    assert [r["id"] for r in sqlite_target.rows()] == [kept]
    assert rolled_back != kept


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite", "mariadb"])
def test_sqlalchemy_autocommit_is_refused(dialect: str, request: pytest.FixtureRequest) -> None:
    target = _target(dialect, request)
    engine = create_engine(target.sqlalchemy_url(async_=False), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            with conn.begin(), pytest.raises(NoTransactionError, match="AUTOCOMMIT"):
                target.outbox().emit(conn, "orders.created", {"id": 1})
    finally:
        engine.dispose()
    assert target.rows() == []


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite", "mariadb"])
async def test_sqlalchemy_async_autocommit_is_refused(dialect: str, request: pytest.FixtureRequest) -> None:
    target = _target(dialect, request)
    engine = create_async_engine(target.sqlalchemy_url(async_=True), poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            async with conn.begin():
                with pytest.raises(NoTransactionError, match="AUTOCOMMIT"):
                    await target.outbox().emit_async(conn, "orders.created", {"id": 1})
    finally:
        await engine.dispose()
    assert target.rows() == []


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite", "mariadb"])
def test_sqlalchemy_idioms(dialect: str, request: pytest.FixtureRequest) -> None:
    target = _target(dialect, request)
    outbox = target.outbox()
    engine = create_engine(target.sqlalchemy_url(async_=False), poolclass=NullPool)
    try:
        with engine.begin() as conn:
            a = outbox.emit(conn, "orders.created", {"id": 1})
        with Session(engine) as session, session.begin():
            b = outbox.emit(session, "orders.created", {"id": 2})
        with Session(engine) as session:
            session.execute(text("SELECT 1"))  # autobegin
            c = outbox.emit(session, "orders.created", {"id": 3})
            session.commit()
    finally:
        engine.dispose()
    assert [r["id"] for r in target.rows()] == [a, b, c]


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite", "mariadb"])
async def test_sqlalchemy_async_idioms(dialect: str, request: pytest.FixtureRequest) -> None:
    target = _target(dialect, request)
    outbox = target.outbox()
    engine = create_async_engine(target.sqlalchemy_url(async_=True), poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            a = await outbox.emit_async(conn, "orders.created", {"id": 1})
        async with AsyncSession(engine) as session, session.begin():
            b = await outbox.emit_async(session, "orders.created", {"id": 2})
        async with AsyncSession(engine) as session:
            await session.execute(text("SELECT 1"))  # autobegin
            c = await outbox.emit_async(session, "orders.created", {"id": 3})
            await session.commit()
    finally:
        await engine.dispose()
    assert [r["id"] for r in target.rows()] == [a, b, c]


# -- (c) bad input is refused before anything is written --------------------------------------------

BAD_INPUT: list[tuple[str, dict[str, Any], type[EmitError]]] = [
    ("empty topic", {"topic": ""}, InvalidTopicError),
    ("empty token", {"topic": "a..b"}, InvalidTopicError),
    ("wildcard", {"topic": "orders.*"}, InvalidTopicError),
    ("full wildcard", {"topic": "orders.>"}, InvalidTopicError),
    ("space", {"topic": "has space"}, InvalidTopicError),
    ("long topic", {"topic": "a" * 300}, InvalidTopicError),
    ("int topic", {"topic": 42}, InvalidTopicError),
    ("None topic", {"topic": None}, InvalidTopicError),
    ("bytes topic", {"topic": b"orders"}, InvalidTopicError),
    ("object payload", {"payload": object()}, EncodingError),
    ("set payload", {"payload": {1, 2}}, EncodingError),
    ("nan payload", {"payload": float("nan")}, EncodingError),
    ("inf in payload", {"payload": {"x": float("inf")}}, EncodingError),
    ("too large", {"payload": "x" * 200}, EncodingError),
    ("too large bytes", {"payload": b"x" * 101}, EncodingError),
    ("ce-id header", {"headers": {"ce-id": "mine"}}, EncodingError),
    ("content-type header", {"headers": {"content-type": "text/plain"}}, EncodingError),
    ("Nats-Msg-Id header", {"headers": {"Nats-Msg-Id": "dedupe"}}, EncodingError),
    ("bad header name", {"headers": {"has space": "x"}}, EncodingError),
    ("header line break", {"headers": {"x": "a\r\nInjected: 1"}}, EncodingError),
    ("empty key", {"key": ""}, EncodingError),
    ("int key", {"key": 7}, EncodingError),
    ("empty type", {"type": ""}, EmitError),
]


async def test_bad_input_is_refused_before_writing(handle: Handle, target: Target) -> None:
    """All refusals in one open transaction: on PostgreSQL a failed INSERT would abort it, so a good
    emit and a commit afterwards prove that every refusal happened before any statement ran."""
    outbox = target.outbox(max_payload=100)
    await handle.begin()
    await handle.execute("SELECT 1")
    for label, override, error in BAD_INPUT:
        args: dict[str, Any] = {"topic": "orders.created", "payload": {"id": 1}, **override}
        topic, payload = args.pop("topic"), args.pop("payload")
        with pytest.raises(error) as excinfo:
            await handle.emit(outbox, topic, payload, **args)
        assert str(excinfo.value), label
        await handle.execute("SELECT 1")
    kept = await handle.emit(outbox, "orders.created", {"id": 2}, headers={"x-ok": "1"})
    await handle.commit()
    assert [r["id"] for r in target.rows()] == [kept]


# -- wrong connection objects ----------------------------------------------------------------------


async def test_sync_and_async_twins_are_not_interchangeable(handle: Handle, target: Target) -> None:
    await handle.begin()
    with pytest.raises(EmitError) as excinfo:
        await handle.emit_with_the_wrong_twin(target.outbox())
    message = str(excinfo.value)
    assert "does not support" in message
    assert ("emit_async" if handle.is_async else "emit()") in message
    kept = await handle.emit(target.outbox(), "orders.created", {"id": 1})
    await handle.commit()
    assert [r["id"] for r in target.rows()] == [kept]


@pytest.mark.parametrize("conn", [object(), "postgresql://h/db", None, 42])
async def test_unsupported_connection(conn: object) -> None:
    with pytest.raises(EmitError, match="does not support") as excinfo:
        emit(conn, "orders.created", {"id": 1})
    assert type(conn).__qualname__ in str(excinfo.value)
    assert "sqlite3" in str(excinfo.value)
    with pytest.raises(EmitError, match="does not support") as excinfo:
        await emit_async(conn, "orders.created", {"id": 1})
    assert "AsyncConnection" in str(excinfo.value)


def test_engine_and_cursor_are_not_connections(pg_target: Target) -> None:
    engine = create_engine(pg_target.sqlalchemy_url(async_=False), poolclass=NullPool)
    try:
        with pytest.raises(EmitError, match=r"does not support .*Engine"):
            pg_target.outbox().emit(engine, "orders.created", {"id": 1})
    finally:
        engine.dispose()
    with psycopg.connect(pg_target.url) as conn, conn.transaction(), conn.cursor() as cur:
        with pytest.raises(EmitError, match=r"does not support .*Cursor"):
            pg_target.outbox().emit(cur, "orders.created", {"id": 1})
        cur.execute("SELECT 1")  # transaction still usable
    assert pg_target.rows() == []


# -- module-level shortcuts use the default outbox ---------------------------------------------------


async def test_module_level_emit_uses_the_default_table(sqlite_target: Target) -> None:
    conn = sqlite3.connect(sqlite_path(sqlite_target.url), isolation_level=None)
    try:
        conn.execute("BEGIN")
        a = emit(conn, "orders.created", {"id": 1}, key="k")
        conn.execute("COMMIT")
    finally:
        conn.close()
    engine = create_async_engine(sqlite_target.sqlalchemy_url(async_=True), poolclass=NullPool)
    try:
        async with engine.begin() as aconn:
            b = await emit_async(aconn, "orders.created", {"id": 2}, key="k")
    finally:
        await engine.dispose()
    assert [r["id"] for r in sqlite_target.rows(TableRef())] == [a, b]
