"""The floors and ceilings the issue 12 benchmarks compare against measure what they claim to.

Timings are never asserted here (benchmarks/ measures speed); these tests check the shape of what is
measured: the write-overhead floor row has the outbox row's width without its indexes or trigger, the
database ceiling really fetches and marks every row with the store's own code, and the CPU profile
puts a function's time in the right area. Issue 19: the shared INSERT floor (benchmarks/floors.py)
refuses a table with a trigger, and the event store's appends are compared to a floor measured in the
same run, into a trigger-less table, with the load recorded before and after each repetition (before,
its "raw INSERT" floor was emit() into an outbox carrying the NOTIFY trigger: half the physical floor).
"""

from __future__ import annotations

import sqlite3

import psycopg
import pytest
from benchmarks.buses import db_ceiling
from benchmarks.common import Env, reps_summary
from benchmarks.cpu_profile import area_of
from benchmarks.eventstore import appends_vs_floor
from benchmarks.floors import (
    FLOOR_TABLE,
    create_floor_table,
    floor_ddl,
    floor_insert_sql,
    floor_row,
    insert_floor,
    triggers_on,
)
from benchmarks.throughput import prewrite

from outboxkit.eventstore import migrate_event_store
from outboxkit.stores.base import TableRef
from outboxkit.stores.postgres import PostgresSchema
from outboxkit.stores.registry import database_for, store_for
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


def _count(url: str, schema: str, table: str) -> int:
    database = database_for(url)
    conn = database.connect(url, label="outboxkit-test")
    try:
        return int(conn.execute(f"SELECT count(*) FROM {TableRef(table, schema).quoted(database.quote)}").fetchone()[0])
    finally:
        conn.close()


def test_eventstore_appends_are_compared_to_a_trigger_less_floor_of_the_same_run(pg_url: str, pg_ref: TableRef) -> None:
    schema = pg_ref.schema
    assert schema is not None
    migrate_event_store(pg_url, TableRef("events", schema))
    result = appends_vs_floor(pg_url, schema, [1, 2], duration=0.5, reps=1)
    conn = database_for(pg_url).connect(pg_url, label="outboxkit-test")
    try:
        assert triggers_on(conn, schema, "outbox") >= 1  # the outbox of this schema has NOTIFY ...
        assert triggers_on(conn, schema, FLOOR_TABLE) == 0  # ... the floor table none
    finally:
        conn.close()
    # Every floor figure came from INSERTs into that table, in this run, next to its appends.
    runs = result["runs"]
    assert [(r["rep"], r["writers"]) for r in runs] == [(1, 1), (1, 2)]
    assert _count(pg_url, schema, FLOOR_TABLE) == sum(r["floor"]["transactions"] for r in runs)
    for r in runs:
        assert r["floor"]["table"] == f"{schema}.{FLOOR_TABLE}"
        assert r["floor"]["triggers"] == 0
        for part in (r["floor"], r["append"]):
            assert {"load_before", "load_after"} <= part.keys()
    for s in result["summary"]:
        mine = [r for r in runs if r["writers"] == s["writers"]]
        assert s["floor"]["each"] == [r["floor"]["tx_per_s"] for r in mine]
        assert s["ratio"] == s["append"]["median"] / s["floor"]["median"]


def test_insert_floor_refuses_a_table_with_a_trigger(pg_url: str, pg_ref: TableRef) -> None:
    schema = pg_ref.schema
    assert schema is not None
    create_floor_table(pg_url, schema)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"""CREATE FUNCTION "{schema}".noop() RETURNS trigger LANGUAGE plpgsql
                         AS $$ BEGIN RETURN NEW; END $$""")
        conn.execute(f"""CREATE TRIGGER noop AFTER INSERT ON "{schema}".{FLOOR_TABLE}
                         FOR EACH ROW EXECUTE FUNCTION "{schema}".noop()""")
    with pytest.raises(RuntimeError, match="not the physical floor"):
        insert_floor(pg_url, schema, 1, 0.1)
    assert _count(pg_url, schema, FLOOR_TABLE) == 0


def test_mariadb_floor_table_has_the_outbox_columns_and_no_trigger(mariadb_url: str, mariadb_ref: TableRef) -> None:
    schema = mariadb_ref.schema
    assert schema is not None
    create_floor_table(mariadb_url, schema)
    database = database_for(mariadb_url)
    conn = database.connect(mariadb_url, label="outboxkit-test")
    try:
        columns = """SELECT column_name, data_type, is_nullable FROM information_schema.columns
                     WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position"""
        assert (
            conn.execute(columns, (schema, FLOOR_TABLE)).fetchall()
            == conn.execute(columns, (schema, "outbox")).fetchall()
        )
        assert triggers_on(conn, schema, FLOOR_TABLE) == 0
        conn.execute(floor_insert_sql(mariadb_url, schema), floor_row(schema, "a.b", 3))
    finally:
        conn.close()
    assert _count(mariadb_url, schema, FLOOR_TABLE) == 1


def test_reps_summary_lists_every_rep_and_flags_fewer_than_three() -> None:
    loads = [
        {"load_before": 0.2, "load_after": 0.3, "foreign_cpu": 0.01},
        {"load_before": 0.3, "load_after": 0.4, "foreign_cpu": 0.2},
    ]
    one = reps_summary([5.0, 7.0], loads)
    assert one == {
        "median": 6.0,
        "reps": 2,
        "each": [5.0, 7.0],
        "loads": [(0.2, 0.3), (0.3, 0.4)],
        "foreign_cpu": [0.01, 0.2],
        "enough_reps": False,
    }
    assert reps_summary([3.0, 1.0, 2.0])["enough_reps"] is True
