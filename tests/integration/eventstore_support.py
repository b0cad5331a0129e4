"""The event store tests' database fixture: PostgreSQL (a schema of its own) or SQLite (a file)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from outboxkit.eventstore import EventStore, migrate_event_store
from outboxkit.stores.base import TableRef
from tests.conftest import PG_URL, require, unique


@dataclass
class Db:
    name: str
    url: str
    store: EventStore

    def connect(self) -> Any:
        if self.name == "sqlite":
            # isolation_level=None: transactions are explicit, as the 16 writers need them to be.
            return sqlite3.connect(self.url.removeprefix("sqlite:///"), timeout=30, isolation_level=None)
        return psycopg.connect(self.url)

    def begin(self, conn: Any) -> None:
        conn.execute("BEGIN IMMEDIATE" if self.name == "sqlite" else "BEGIN")


@pytest.fixture(name="db", params=["postgres", "sqlite"])
def db_fixture(request: pytest.FixtureRequest, tmp_path: object) -> Iterator[Db]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/events.db"
        migrate_event_store(url)
        yield Db("sqlite", url, EventStore())
        return
    require("PostgreSQL", "127.0.0.1", 5432)
    ref = TableRef("events", unique("oke"))
    migrate_event_store(PG_URL, ref)
    try:
        yield Db("postgres", PG_URL, EventStore(schema=ref.schema))
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{ref.schema}" CASCADE'.encode())


def read_all_settled(store: EventStore, conn: Any, expect: int, timeout: float = 20.0) -> list[Any]:
    """read_all once ``expect`` events are readable: on a shared PostgreSQL, another session's open
    writing transaction holds the readers' bound (H1) below our last commit for a while."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        got = store.read_all(conn, limit=10_000)
        if len(got) >= expect or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


class Counts:
    """A projection for tests: per stream, how many events and the last version. It refuses an
    event out of stream order or twice (version must be last + 1), so a duplicate or a skip in the
    runner stops it with an error instead of passing unnoticed."""

    def __init__(self, name: str, db_name: str, schema: str | None) -> None:
        self.name = name
        self.table = f'"{schema}"."{name}_counts"' if schema else f'"{name}_counts"'
        self.p = "?" if db_name == "sqlite" else "%s"
        self.seen: list[str] = []  # event ids, in handling order (committed or not)

    def create(self, conn: Any) -> None:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {self.table} (stream_id TEXT PRIMARY KEY, events INTEGER NOT NULL, "
            "last_version INTEGER NOT NULL)"
        )

    def handle(self, conn: Any, event: Any) -> None:
        p = self.p
        row = conn.execute(f"SELECT last_version FROM {self.table} WHERE stream_id = {p}", [event.stream_id]).fetchone()
        last = row[0] if row else 0
        if event.version != last + 1:
            raise AssertionError(f"{event.stream_id}: got version {event.version} after {last}")
        conn.execute(
            f"INSERT INTO {self.table} (stream_id, events, last_version) VALUES ({p}, 1, {p}) "
            f"ON CONFLICT (stream_id) DO UPDATE SET events = {self.table}.events + 1, "
            "last_version = excluded.last_version",
            [event.stream_id, event.version],
        )
        self.seen.append(event.id)

    def reset(self, conn: Any) -> None:
        conn.execute(f"DELETE FROM {self.table}")

    def state(self, conn: Any) -> dict[str, tuple[int, int]]:
        rows = conn.execute(f"SELECT stream_id, events, last_version FROM {self.table}").fetchall()
        return {r[0]: (r[1], r[2]) for r in rows}
