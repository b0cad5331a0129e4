"""The event store on real PostgreSQL and SQLite: appends with optimistic concurrency in the caller's
transaction, reading streams forward and backward, and the drivers emit accepts."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import psycopg
import pytest

from outboxkit.errors import ConcurrencyError, EmitError, NoTransactionError
from outboxkit.eventstore import ANY, NO_STREAM, EventStore, NewEvent, event_store_sql_text, migrate_event_store
from outboxkit.stores.base import TableRef
from tests.conftest import PG_URL, require, unique
from tests.integration.eventstore_support import Db, db_fixture, read_all_settled  # noqa: F401 - the fixture


def _append(db: Db, stream: str, events: list[NewEvent], expected: Any) -> int:
    conn = db.connect()
    try:
        db.begin(conn)
        result = db.store.append(conn, stream, events, expected=expected)
        conn.execute("COMMIT")
        return result.version
    finally:
        conn.close()


def test_append_and_read_forward_backward(db: Db) -> None:
    events = [NewEvent("OrderPlaced", {"n": i}) for i in range(5)]
    assert _append(db, "order-1", events[:3], NO_STREAM) == 3
    assert _append(db, "order-1", events[3:], 3) == 5
    assert _append(db, "order-2", [NewEvent("OrderPlaced", {"n": 9})], ANY) == 1
    conn = db.connect()
    try:
        whole = db.store.read_stream(conn, "order-1")
        assert [(e.version, e.json()["n"]) for e in whole] == [(v, v - 1) for v in range(1, 6)]
        assert {e.stream_id for e in whole} == {"order-1"}
        assert whole[0].type == "OrderPlaced" and whole[0].topic == "events"
        assert whole[2].headers["streamid"] == "order-1" and whole[2].headers["streamversion"] == "3"
        assert [e.version for e in db.store.read_stream(conn, "order-1", start=2, limit=2)] == [2, 3]
        assert [e.version for e in db.store.read_stream(conn, "order-1", backward=True)] == [5, 4, 3, 2, 1]
        assert [e.version for e in db.store.read_stream(conn, "order-1", start=3, limit=2, backward=True)] == [3, 2]
        assert db.store.read_stream(conn, "nobody") == []
        assert db.store.stream_version(conn, "order-1") == 5
        assert db.store.stream_version(conn, "nobody") == 0
        every = read_all_settled(db.store, conn, 6)
        assert len(every) == 6 and [e.position for e in every] == sorted(e.position for e in every)
        after = db.store.read_all(conn, every[2].position)
        assert [e.id for e in after] == [e.id for e in every[3:]]
    finally:
        conn.close()


def test_wrong_expected_version_names_stream_and_versions_and_writes_nothing(db: Db) -> None:
    _append(db, "cart-7", [NewEvent("Added", {"sku": "a"}), NewEvent("Added", {"sku": "b"})], NO_STREAM)
    conn = db.connect()
    try:
        db.begin(conn)
        with pytest.raises(ConcurrencyError) as info:
            db.store.append(conn, "cart-7", [NewEvent("Added", {})], expected=1)
        assert (info.value.stream_id, info.value.expected, info.value.actual) == ("cart-7", 1, 2)
        assert str(info.value) == "stream 'cart-7': expected version 1, found version 2"
        with pytest.raises(ConcurrencyError, match="expected version no_stream, found version 2"):
            db.store.append(conn, "cart-7", [NewEvent("Added", {})], expected=NO_STREAM)
        with pytest.raises(ConcurrencyError, match="expected version 4, found no stream") as missing:
            db.store.append(conn, "cart-8", [NewEvent("Added", {})], expected=4)
        assert missing.value.actual is None
        # The transaction is still usable: nothing was written, nothing aborted.
        assert db.store.append(conn, "cart-7", [NewEvent("Added", {"sku": "c"})], expected=2).version == 3
        conn.execute("COMMIT")
        assert [e.json() for e in db.store.read_stream(conn, "cart-7")] == [{"sku": "a"}, {"sku": "b"}, {"sku": "c"}]
        assert db.store.read_stream(conn, "cart-8") == []
    finally:
        conn.close()


def test_refusals_write_nothing(db: Db) -> None:
    conn = db.connect()
    try:
        with pytest.raises(NoTransactionError):
            db.store.append(conn, "s-1", [NewEvent("A", {})], expected=ANY)
        db.begin(conn)
        with pytest.raises(ValueError, match="expected must be"):
            db.store.append(conn, "s-1", [NewEvent("A", {})], expected=-1)
        with pytest.raises(EmitError, match="at least one event"):
            db.store.append(conn, "s-1", [], expected=ANY)
        with pytest.raises(EmitError, match="stream_id"):
            db.store.append(conn, "", [NewEvent("A", {})], expected=ANY)
        with pytest.raises(EmitError, match="cannot be encoded as JSON"):
            db.store.append(conn, "s-1", [NewEvent("A", {}), NewEvent("B", object())], expected=ANY)
        conn.execute("COMMIT")
        assert db.store.stream_version(conn, "s-1") == 0
    finally:
        conn.close()


@pytest.mark.xdist_group("eventstore-writers")
def test_sixteen_writers_one_stream_exactly_one_wins_each_version(db: Db) -> None:
    """16 writers race on one stream, each appending at the version it read: every version is won
    by exactly one writer, the others get ConcurrencyError, and the stream has no gap or duplicate."""
    target, writers = 60, 16
    wins: list[tuple[int, int]] = []  # (expected version, writer)
    conflicts: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(writers)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        conn = db.connect()
        try:
            start.wait()
            while True:
                version = db.store.stream_version(conn, "hot")
                if db.name == "postgres":
                    conn.execute("COMMIT")  # end the implicit read transaction before the next one
                if version >= target:
                    return
                db.begin(conn)
                try:
                    db.store.append(conn, "hot", [NewEvent("Tick", {"writer": n, "at": version})], expected=version)
                except ConcurrencyError as exc:
                    conn.execute("ROLLBACK")
                    assert exc.expected == version and exc.actual is not None and exc.actual > version
                    with lock:
                        conflicts.append(n)
                    continue
                conn.execute("COMMIT")
                with lock:
                    wins.append((version, n))
        except BaseException as exc:
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert sorted(v for v, _ in wins) == list(range(target)), "each version won exactly once"
    assert conflicts, "16 writers at one stream must conflict"
    conn = db.connect()
    try:
        events = db.store.read_stream(conn, "hot")
    finally:
        conn.close()
    assert [e.version for e in events] == list(range(1, target + 1)), "no gap, no duplicate"
    # Each stored event is the winner's: the writer that won version v wrote event v + 1.
    assert {(e.json()["at"], e.json()["writer"]) for e in events} == set(wins)


def test_migration_is_idempotent_and_printable(db: Db) -> None:
    ref = db.store.ref
    assert migrate_event_store(db.url, ref) == len(event_store_sql_text(db.url, ref))
    assert _append(db, "again", [NewEvent("A", {})], NO_STREAM) == 1
    text = "\n".join(event_store_sql_text("postgresql", TableRef("events")))
    assert "UNIQUE INDEX" in text and "stream_id" in text and "pg_current_xact_id" in text


# -- every connection emit accepts ---------------------------------------------------------------


def test_sqlalchemy_sync_connection_and_session(db: Db) -> None:
    from sqlalchemy import NullPool, create_engine, text
    from sqlalchemy.orm import Session

    url = db.url if db.name == "sqlite" else "postgresql+psycopg://" + db.url.split("://", 1)[1]
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(text("SELECT 1"))
            assert db.store.append(conn, "sa-1", [NewEvent("A", {"i": 1})], expected=NO_STREAM).version == 1
        with Session(engine) as session, session.begin():
            assert db.store.append(session, "sa-1", [NewEvent("B", {"i": 2})], expected=1).version == 2
            with pytest.raises(ConcurrencyError):
                db.store.append(session, "sa-1", [NewEvent("C", {})], expected=1)
        with engine.begin() as conn:
            conn.execute(text("SELECT 1"))
            db.store.append(conn, "sa-1", [NewEvent("rolled-back", {})], expected=2)
            conn.rollback()
        with engine.connect() as conn:
            assert [e.type for e in db.store.read_stream(conn, "sa-1")] == ["A", "B"]
        with Session(engine) as session, pytest.raises(NoTransactionError):
            db.store.append(session, "sa-1", [NewEvent("C", {})], expected=ANY)
    finally:
        engine.dispose()


async def test_psycopg_async_and_sqlalchemy_async(tmp_path: object) -> None:
    require("PostgreSQL", "127.0.0.1", 5432)
    from sqlalchemy import NullPool
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    ref = TableRef("events", unique("oke"))
    migrate_event_store(PG_URL, ref)
    store = EventStore(schema=ref.schema, topic=lambda stream: "orders." + stream.split("-")[0])
    engine = create_async_engine("postgresql+psycopg://" + PG_URL.split("://", 1)[1], poolclass=NullPool)
    try:
        async with await psycopg.AsyncConnection.connect(PG_URL) as conn:
            async with conn.transaction():
                result = await store.append_async(conn, "eu-1", [NewEvent("A", {}), NewEvent("B", {})], expected=0)
            assert (result.version, result.first_version, len(result.ids)) == (2, 1, 2)
            async with conn.transaction():
                with pytest.raises(ConcurrencyError):
                    await store.append_async(conn, "eu-1", [NewEvent("C", {})], expected=NO_STREAM)
        async with engine.begin() as aconn:
            await store.append_async(aconn, "eu-1", [NewEvent("C", {})], expected=2)
        async with AsyncSession(engine) as session, session.begin():
            await store.append_async(session, "eu-1", [NewEvent("D", {})], expected=3)
        async with engine.connect() as aconn:
            events = await store.read_stream_async(aconn, "eu-1")
            assert [e.type for e in events] == ["A", "B", "C", "D"]
            assert {e.topic for e in events} == {"orders.eu"}
            assert await store.stream_version_async(aconn, "eu-1") == 4
            for _ in range(400):  # another session's open transaction holds the readers' bound (H1)
                every = await store.read_all_async(aconn)
                if len(every) == 4:
                    break
                await asyncio.sleep(0.05)
            assert [e.type for e in every] == ["A", "B", "C", "D"]
    finally:
        await engine.dispose()
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{ref.schema}" CASCADE'.encode())
