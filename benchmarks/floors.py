"""The physical write floor every write benchmark is compared to, shared so no benchmark keeps its own copy.

The floor of writing an event is a plain INSERT of a row of the same width (the outbox's own columns,
its primary key, none of its other indexes, NO trigger), one per transaction, with the same number of
writer processes. A floor that runs ``emit()`` into an outbox carrying the NOTIFY trigger is not a
floor: the trigger serialises every commit on PostgreSQL's notify lock, so it measures the trigger.
:func:`insert_floor` checks the table has no trigger before it measures, and is meant to be called in
the same run (and the same repetition) as the figure it is compared to.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from typing import Any

import uuid_utils

from benchmarks.common import key_for, payload, rep_load
from outboxkit.stores.base import TableRef
from outboxkit.stores.registry import database_for

FLOOR_TABLE = "floor_row"


def floor_ddl(db: str, schema: str | None) -> str:
    """The outbox's own CREATE TABLE, renamed: the same row width, with none of its indexes or triggers."""
    database = database_for(db)
    outbox, floor = TableRef("outbox", schema), TableRef(FLOOR_TABLE, schema)
    create = next(d for d in database.schema().ddl(outbox, notify=False) if d.lstrip().startswith("CREATE TABLE"))
    quote = database.quote
    return create.replace(outbox.quoted(quote), floor.quoted(quote), 1)


def floor_row(schema: str | None, topic: str, i: int) -> tuple[Any, ...]:
    """What emit() writes for event ``i``: id, topic, key, type, source, payload, content type, headers."""
    body = json.dumps(payload(i), separators=(",", ":")).encode()
    return (str(uuid_utils.uuid7()), topic, key_for(i, 1000), None, None, body, "application/json", "{}")


def triggers_on(conn: Any, schema: str, table: str) -> int:
    """Triggers on a table, PostgreSQL or MariaDB (both have ``information_schema.triggers``;
    ``conn``: a sync connection of ``Database.connect``, format paramstyle)."""
    row = conn.execute(
        "SELECT count(*) FROM information_schema.triggers WHERE event_object_schema = %s AND event_object_table = %s",
        (schema, table),
    ).fetchone()
    return int(row[0])


def create_floor_table(db: str, schema: str) -> None:
    """The floor table in ``schema`` (a PostgreSQL schema or a MariaDB database, created when missing)."""
    database = database_for(db)
    conn = database.connect(db, label="outboxkit-bench")
    try:
        database.create_namespace(conn, schema)
        conn.execute(floor_ddl(db, schema))  # DDL: committed on its own on both databases
    finally:
        conn.close()


def floor_insert_sql(db: str, schema: str | None) -> str:
    """The INSERT of :func:`floor_row` into the floor table, in the database's own paramstyle."""
    database = database_for(db)
    return database.schema().insert_sql(TableRef(FLOOR_TABLE, schema), database.paramstyle)


def _floor_writer(db: str, schema: str, ready: Any, duration: float, seed: int, out: Any) -> None:
    database = database_for(db)
    conn = database.connect(db, label="outboxkit-bench")
    insert = floor_insert_sql(db, schema)
    topic = f"{schema}.orders.created"
    done = 0
    ready.wait()  # every writer imported and connected before the clock starts
    stop_at = time.time() + duration
    while time.time() < stop_at:
        conn.execute(database.begin_sql)
        conn.execute(insert, floor_row(schema, topic, seed * 1_000_000 + done))
        conn.execute("COMMIT")
        done += 1
    conn.close()
    out.put(done)


def insert_floor(db: str, schema: str, writers: int, duration: float) -> dict[str, Any]:
    """Transactions/s of ``writers`` processes each committing one plain INSERT of the outbox row's
    width into the trigger-less floor table, with the load before and after; raises if the floor
    table has a trigger (then it would not be the floor)."""
    database = database_for(db)
    conn = database.connect(db, label="outboxkit-bench")
    try:
        triggers = triggers_on(conn, schema, FLOOR_TABLE)
    finally:
        conn.close()
    if triggers:
        raise RuntimeError(f"{schema}.{FLOOR_TABLE} has {triggers} trigger(s): it is not the physical floor")
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    ready = ctx.Barrier(writers)
    procs = [ctx.Process(target=_floor_writer, args=(db, schema, ready, duration, w, out)) for w in range(writers)]
    record: dict[str, Any] = {"writers": writers, "table": f"{schema}.{FLOOR_TABLE}", "triggers": triggers}
    with rep_load(record):
        for p in procs:
            p.start()
        counts = [out.get(timeout=duration + 120) for _ in procs]
        for p in procs:
            p.join()
    record["transactions"] = sum(counts)
    record["tx_per_s"] = sum(counts) / duration
    return record


def every_insert_trigger(ref: TableRef) -> list[str]:
    """PostgreSQL: the wake-up trigger outboxkit installed before issue 19 (NOTIFY at the end of every
    inserting statement, so every emitting commit took the notify lock), to compare the default with."""
    fn, trigger, t = ref.derived("notify"), ref.index_name("notify"), ref.qualified
    return [
        f"DROP TRIGGER IF EXISTS {trigger} ON {t}",
        f"""CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{ref.channel}', '');
    RETURN NULL;
END
$$""",
        f"CREATE TRIGGER {trigger} AFTER INSERT ON {t} FOR EACH STATEMENT EXECUTE FUNCTION {fn}()",
    ]


def install_wakeup(db: str, ref: TableRef, wakeup: str) -> None:
    """Give the outbox one of the wake-ups the benchmarks compare: ``wake`` (the default trigger:
    notify only while a relay sleeps), ``notify-every`` (the trigger before issue 19), ``none``."""
    import psycopg

    from outboxkit import migrate

    migrate(db, ref, notify=wakeup != "none")
    if wakeup == "notify-every":
        with psycopg.connect(db, autocommit=True) as conn:
            for stmt in every_insert_trigger(ref):
                conn.execute(stmt.encode())
