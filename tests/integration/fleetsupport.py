"""Support for the relay fleet's tests: fleet files, outboxes on every database, a fleet running in
the test's event loop, and waiting for conditions (never for time)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import psycopg

from outboxkit import migrate
from outboxkit.fleet.runner import Fleet
from outboxkit.stores.base import TableRef
from outboxkit.stores.registry import database_for
from tests.conftest import MARIADB_URL, PG_URL, unique
from tests.helpers import db_connect, table

_stamp = [time.time_ns()]


def write_fleet(path: Path, outboxes: list[dict[str, Any]], *, extra: str = "", **fleet: Any) -> None:
    """Write a fleet file (``extra``: raw text at its end); its mtime always moves forward, so a
    reload is never missed."""
    lines = ["[fleet]"] + [f"{k} = {json.dumps(v)}" for k, v in fleet.items()]
    for entry in outboxes:
        lines.append("\n[[outbox]]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in entry.items()]
    if extra:
        lines.append("\n" + extra)
    path.write_text("\n".join(lines) + "\n")
    _stamp[0] = max(_stamp[0] + 1_000_000, time.time_ns())
    os.utime(path, ns=(_stamp[0], _stamp[0]))


def pg_outbox(tenant: str, prefix: str) -> dict[str, Any]:
    """An outbox in a PostgreSQL schema of its own (schema-per-tenant)."""
    ref = TableRef("outbox", unique("okf"))
    migrate(PG_URL, ref)
    return {"tenant": tenant, "db": PG_URL, "schema": ref.schema, "topic_prefix": f"{prefix}.{tenant}."}


def mariadb_outbox(tenant: str, prefix: str) -> dict[str, Any]:
    """An outbox in a MariaDB database of its own (one server, many databases)."""
    ref = TableRef("outbox", unique("okf"))
    migrate(MARIADB_URL, ref)
    return {"tenant": tenant, "db": MARIADB_URL, "schema": ref.schema, "topic_prefix": f"{prefix}.{tenant}."}


def sqlite_outbox(tenant: str, prefix: str, tmp: Path) -> dict[str, Any]:
    url = f"sqlite:///{tmp}/{tenant}.db"
    migrate(url)
    return {"tenant": tenant, "db": url, "topic_prefix": f"{prefix}.{tenant}."}


def pg_database_outbox(tenant: str, prefix: str) -> dict[str, Any]:
    """An outbox in a PostgreSQL database of its own (database-per-tenant)."""
    name = unique("okfdb")
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"'.encode())
    url = PG_URL.rsplit("/", 1)[0] + "/" + name
    migrate(url, TableRef())
    return {"tenant": tenant, "db": url, "topic_prefix": f"{prefix}.{tenant}.", "_database": name}


def ref_of(entry: dict[str, Any]) -> TableRef:
    return TableRef(entry.get("table", "outbox"), entry.get("schema"))


def drop(entry: dict[str, Any]) -> None:
    """Remove what an outbox entry made (schema, database, file)."""
    db = entry["db"]
    if "_database" in entry:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{entry["_database"]}" WITH (FORCE)'.encode())
    elif entry.get("schema"):
        database = database_for(db)
        conn = database.connect(db)
        try:
            database.drop_namespace(conn, entry["schema"])
        finally:
            conn.close()


@contextmanager
def outboxes_made(entries: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    try:
        yield entries
    finally:
        for entry in entries:
            drop(entry)


def public(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Entries as the fleet file holds them (without the test's own notes)."""
    return [{k: v for k, v in e.items() if not k.startswith("_")} for e in entries]


def insert_rows(entry: dict[str, Any], count: int, topic: str = "orders.created", keys: int = 50) -> None:
    """``count`` rows in one transaction, written by SQL as any program may (PostgreSQL)."""
    ref = ref_of(entry)
    with psycopg.connect(entry["db"], autocommit=True) as conn:
        conn.execute(
            f"INSERT INTO {ref.qualified} (topic, key, payload) "
            "SELECT %s, 'k' || (i %% %s), convert_to('{\"n\":' || i || '}', 'UTF8') FROM generate_series(1, %s) i",
            [topic, keys, count],
        )


def pending_of(entry: dict[str, Any]) -> int:
    db = entry["db"]
    conn = db_connect(db)
    try:
        row = conn.execute(
            f"SELECT count(*) FROM {table(db, ref_of(entry))} WHERE delivered_at IS NULL AND dead_at IS NULL"
        ).fetchone()
    finally:
        conn.close()
    return int(row[0])


async def wait_until(what: str, check: Callable[[], Any], timeout: float = 60.0) -> None:
    """Poll ``check`` (sync, run in a thread if it does I/O) until true; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        if await asyncio.to_thread(check):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@asynccontextmanager
async def running_fleet(path: Path, **kwargs: Any) -> AsyncIterator[Fleet]:
    fleet = Fleet(str(path), **kwargs)
    stop = asyncio.Event()
    task = asyncio.create_task(fleet.run(stop))
    try:
        started = asyncio.ensure_future(fleet.started.wait())
        await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
        if task.done():
            task.result()
        yield fleet
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
