"""Handlers used by inbox tests, including the `outboxkit consume` subprocess in the E2E tests."""

from __future__ import annotations

from typing import Any

from outboxkit.inbox import Event


def _ph(conn: Any) -> str:
    return "?" if type(conn).__module__ == "sqlite3" else "%s"


def record(conn: Any, event: Event) -> None:
    """The side effect: one row per call. No unique constraint: the table must show duplicates if the
    inbox ever lets one through."""
    p = _ph(conn)
    conn.execute(f"INSERT INTO side_effects (event_id, key) VALUES ({p}, {p})", (event.id, event.key))


async def record_async(conn: Any, event: Event) -> None:
    record(conn, event)


def setup_side_effects(conn: Any) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS side_effects (event_id text NOT NULL, key text)")
