"""Helpers for tests: write rows, relay until drained, read the stream back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import psycopg

from outboxkit import Outbox
from outboxkit.brokers.base import Delivered
from outboxkit.brokers.nats import connect, delivered_from
from outboxkit.relay import Relay, RelayConfig
from outboxkit.relay.process import build_relay
from outboxkit.stores.base import TableRef
from outboxkit.stores.registry import database_for, store_for


def db_connect(db: str) -> Any:
    """A sync connection to the test database, in autocommit mode (use BEGIN/COMMIT)."""
    if db.startswith("postgres"):
        return psycopg.connect(db, autocommit=True)
    return database_for(db).connect(db, label="outboxkit-test")


def table(db: str, ref: TableRef) -> str:
    """The outbox table quoted for this database (backticks on MariaDB)."""
    return ref.quoted(database_for(db).quote)


def key_column(db: str) -> str:
    """``key`` is a reserved word on MariaDB/MySQL."""
    return "`key`" if database_for(db).quote == "`" else "key"


def ph(db: str) -> str:
    """The placeholder of ``db_connect`` connections."""
    return "%s" if database_for(db).paramstyle == "format" else "?"


def emit_many(
    db: str, ref: TableRef, topic: str, payloads: list[Any], *, key: Callable[[int], str | None] | None = None
) -> list[str]:
    """Each payload in its own committed transaction; returns ids in commit order."""
    outbox = Outbox(table=ref.table, schema=ref.schema)
    conn = db_connect(db)
    ids = []
    try:
        for i, payload in enumerate(payloads):
            conn.execute("BEGIN")
            ids.append(outbox.emit(conn, topic, payload, key=key(i) if key else None))
            conn.execute("COMMIT")
    finally:
        conn.close()
    return ids


def pending(db: str, ref: TableRef) -> int:
    conn = db_connect(db)
    try:
        row = conn.execute(
            f"SELECT count(*) FROM {table(db, ref)} WHERE delivered_at IS NULL AND dead_at IS NULL"
        ).fetchone()
    finally:
        conn.close()
    return int(row[0])


def relay_for(db: str, broker: str, ref: TableRef, **config: Any) -> Relay:
    return build_relay(db, broker, ref=ref, config=RelayConfig(**{"poll_interval": 0.05, **config}))


class running_relay(AbstractAsyncContextManager["running_relay"]):
    """Run a relay in this event loop for the duration of an ``async with``."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> running_relay:
        self.task = asyncio.create_task(self.relay.run(self.stop))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, 30)


async def wait_drained(db: str, ref: TableRef, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await asyncio.to_thread(pending, db, ref) == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"outbox not drained after {timeout}s: {pending(db, ref)} pending")


async def read_all(
    url: str, stream: str, *, expect: int | None = None, idle: float = 1.0, timeout: float = 60.0
) -> list[Delivered]:
    """All messages of a stream, in stream order. Stops at ``expect`` messages (plus ``idle`` seconds
    to catch extra copies) or after ``idle`` seconds without a message."""
    nc = await connect(url)
    out: list[Delivered] = []
    try:
        sub = await nc.jetstream().subscribe(">", stream=stream, ordered_consumer=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            wait = idle if expect is None or len(out) >= expect else min(5.0, deadline - time.monotonic())
            try:
                msg = await sub.next_msg(timeout=max(wait, 0.01))
            except Exception:
                if expect is None or len(out) >= expect:
                    break
                continue
            out.append(delivered_from(msg))
        await sub.unsubscribe()
    finally:
        await nc.close()
    return out


async def open_store(db: str, ref: TableRef) -> Any:
    store = store_for(db, ref)
    await store.open()
    return store


__all__ = [
    "db_connect",
    "emit_many",
    "key_column",
    "open_store",
    "pending",
    "ph",
    "read_all",
    "relay_for",
    "running_relay",
    "table",
    "wait_drained",
]
