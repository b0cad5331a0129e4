"""The floors and ceilings the issue 12 benchmarks compare against measure what they claim to.

Timings are never asserted here (benchmarks/ measures speed); these tests check the shape of what is
measured: the write-overhead floor row has the outbox row's width without its indexes or trigger, the
database ceiling really fetches and marks every row with the store's own code, and the CPU profile
puts a function's time in the right area.
"""

from __future__ import annotations

import sqlite3

import psycopg
import pytest
from benchmarks.buses import db_ceiling
from benchmarks.common import Env
from benchmarks.cpu_profile import area_of
from benchmarks.throughput import prewrite
from benchmarks.write_overhead import floor_ddl, floor_row

from outboxkit.stores.base import TableRef
from outboxkit.stores.postgres import PostgresSchema
from outboxkit.stores.registry import store_for
from outboxkit.stores.sqlite.database import SqliteSchema


def test_sqlite_floor_row_has_the_outbox_columns_and_no_index(sqlite_url: str) -> None:
    path = sqlite_url.removeprefix("sqlite:///")
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(floor_ddl(sqlite_url, None))
        columns = {t: [r[1:] for r in conn.execute(f"PRAGMA table_info({t})")] for t in ("outbox", "floor_row")}
        assert columns["floor_row"] == columns["outbox"]
        assert conn.execute("PRAGMA index_list(outbox)").fetchall()  # the outbox has indexes ...
        assert conn.execute("PRAGMA index_list(floor_row)").fetchall() == []  # ... the floor none
        conn.execute(SqliteSchema().insert_sql(TableRef("floor_row"), "qmark"), floor_row(None, "a.b", 7))
        payload = conn.execute("SELECT payload FROM floor_row").fetchone()[0]
        assert b'"order_id":7' in payload
    finally:
        conn.close()


def test_postgres_floor_row_has_the_outbox_columns_one_index_no_trigger(pg_url: str, pg_ref: TableRef) -> None:
    schema = pg_ref.schema
    assert schema is not None
    columns = """SELECT column_name, data_type, is_nullable FROM information_schema.columns
                 WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position"""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(floor_ddl(pg_url, schema))
        outbox = conn.execute(columns, [schema, "outbox"]).fetchall()
        floor = conn.execute(columns, [schema, "floor_row"]).fetchall()
        assert floor == outbox
        indexes = "SELECT count(*) FROM pg_indexes WHERE schemaname = %s AND tablename = %s"
        assert conn.execute(indexes, [schema, "outbox"]).fetchone()[0] > 1  # type: ignore[index]
        assert conn.execute(indexes, [schema, "floor_row"]).fetchone()[0] == 1  # type: ignore[index]
        triggers = """SELECT count(*) FROM information_schema.triggers
                      WHERE event_object_schema = %s AND event_object_table = %s"""
        assert conn.execute(triggers, [schema, "outbox"]).fetchone()[0] >= 1  # type: ignore[index]
        assert conn.execute(triggers, [schema, "floor_row"]).fetchone()[0] == 0  # type: ignore[index]
        conn.execute(PostgresSchema().insert_sql(TableRef("floor_row", schema), "format"), floor_row(schema, "a.b", 1))
        assert conn.execute(f'SELECT count(*) FROM "{schema}".floor_row').fetchone()[0] == 1  # type: ignore[index]


async def test_database_ceiling_fetches_and_marks_every_row(pg_url: str, pg_ref: TableRef) -> None:
    assert pg_ref.schema is not None
    env = Env(tag=pg_ref.schema, ref=pg_ref, db=pg_url, broker="nats://unused")
    prewrite(env, 1_234, 10, "executemany")  # 3 transactions of up to 500 rows
    result = await db_ceiling(env, 1_234, batch_size=500)
    assert result["events"] == 1_234
    store = store_for(pg_url, pg_ref)
    await store.open()
    try:
        assert await store.pending_count() == 0
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("filename", "name", "area"),
    [
        ("/x/src/outboxkit/relay/pipeline.py", "_publish", "outboxkit relay"),
        ("/x/src/outboxkit/brokers/nats/publisher.py", "publish", "outboxkit broker adapter"),
        ("/x/src/outboxkit/core/rows.py", "event_from_row", "outboxkit core"),
        ("/v/site-packages/nats/aio/client.py", "_send_publish", "nats-py"),
        ("~", "<method 'produce' of 'cimpl.Producer' objects>", "confluent-kafka"),
        ("/v/site-packages/psycopg/cursor_async.py", "execute", "psycopg"),
        ("/py/lib/python3.11/asyncio/base_events.py", "create_future", "asyncio + selectors"),
        ("/tmp/elsewhere.py", "f", "rest (benchmark, stdlib, builtins)"),
    ],
)
def test_profile_areas(filename: str, name: str, area: str) -> None:
    assert area_of(filename, name) == area
