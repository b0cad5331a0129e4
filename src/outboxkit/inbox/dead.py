"""The consumer's dead letters (``<inbox>_dead``): list, show, retry through the handler, discard.

A dead letter was acknowledged on the bus and its id recorded in the inbox when it died, so the
bus will never bring it back and a redelivered copy is a duplicate. That fixes both actions:

* **retry** runs the handler here, on the stored message, in one transaction that also deletes
  the dead letter: the handler's effects and the removal commit together or not at all, and the
  inbox row (already there) keeps every later copy a duplicate: still effectively once (G7, each
  event's effects applied once per consumer). A failure rolls back, adds one to ``attempts`` and
  stores the new error;
* **discard** deletes the dead letter: the event is never processed by that consumer.

Every statement is its own short transaction (the connection is in autocommit), so a prompt or a
slow handler on one letter never holds locks on the others. Used by ``outboxkit inbox
dead-letters``; plain functions, usable from your own scripts.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import traceback
from dataclasses import dataclass
from typing import Any

from outboxkit.inbox.runner import Event, Handler
from outboxkit.inbox.schema import connect_sync
from outboxkit.stores.base import SyncConnection, TableRef
from outboxkit.stores.database import Database, placeholders
from outboxkit.stores.registry import database_for, translate_db_error


@dataclass(frozen=True)
class InboxDeadLetter:
    consumer: str
    event_id: str
    topic: str
    key: str | None
    attempts: int
    failed_at: Any  # datetime (PostgreSQL, MariaDB) or the text SQLite stores
    error: str
    payload: bytes
    headers: dict[str, str]

    def summary(self) -> dict[str, Any]:
        """What ``list --json`` shows: everything but the payload and headers."""
        return {k: getattr(self, k) for k in ("consumer", "event_id", "topic", "key", "attempts", "failed_at", "error")}

    def to_json(self) -> dict[str, Any]:
        """What ``show --json`` shows: the payload as text when it is UTF-8 (else hex), headers."""
        try:
            payload, encoding = self.payload.decode(), "utf-8"
        except UnicodeDecodeError:
            payload, encoding = self.payload.hex(), "hex"
        return {**self.summary(), "headers": self.headers, "payload": payload, "payload_encoding": encoding}


@dataclass(frozen=True)
class Filter:
    """Which dead letters: every field given must match (``ids`` any of them)."""

    consumer: str | None = None
    ids: tuple[str, ...] = ()
    topic: str | None = None


class InboxDead:
    """The dead letters of the inbox ``ref`` on database ``url``, on one autocommit connection."""

    def __init__(self, url: str, ref: TableRef) -> None:
        self.url, self.ref = url, ref
        self.database: Database = database_for(url)
        q = self.database.quote
        self._table = ref.derived("dead", q)
        self._key = f"{q}key{q}"  # a reserved word on MariaDB
        self._conn: SyncConnection = connect_sync(url)

    def close(self) -> None:
        self._conn.close()

    def _where(self, f: Filter) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if f.consumer is not None:
            clauses.append("consumer = ?")
            params.append(f.consumer)
        if f.ids:
            clauses.append(f"event_id IN ({', '.join('?' for _ in f.ids)})")
            params.extend(f.ids)
        if f.topic is not None:
            clauses.append("topic = ?")
            params.append(f.topic)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params

    def _execute(self, sql: str, params: list[Any] | tuple[Any, ...] = ()) -> Any:
        try:
            return self._conn.execute(placeholders(self.database, sql), tuple(params))
        except Exception as exc:
            error = translate_db_error(self.url, exc)
            raise (error if isinstance(error, Exception) else exc) from None

    def count(self, f: Filter) -> int:
        where, params = self._where(f)
        return int(self._execute(f"SELECT COUNT(*) FROM {self._table}{where}", params).fetchone()[0])

    def select(self, f: Filter, limit: int | None = None) -> list[InboxDeadLetter]:
        """Oldest failure first (then consumer and id, so the order is stable)."""
        where, params = self._where(f)
        sql = (
            f"SELECT consumer, event_id, topic, {self._key}, attempts, failed_at, error, payload, headers"
            f" FROM {self._table}{where} ORDER BY failed_at, consumer, event_id"
        )
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [_letter(row) for row in self._execute(sql, params).fetchall()]

    def discard(self, f: Filter) -> int:
        where, params = self._where(f)
        return int(self._execute(f"DELETE FROM {self._table}{where}", params).rowcount)

    def retry(self, letter: InboxDeadLetter, handler: Handler) -> str | None:
        """Run ``handler`` on ``letter`` in one transaction with its removal. ``None`` when it
        committed (the letter is gone), else the error (the letter stays, one attempt more)."""
        event = Event(letter.event_id, letter.topic, letter.key, letter.payload, letter.headers, letter.attempts + 1)
        conn = self._conn
        pk = "consumer = ? AND event_id = ?"
        self._execute(self.database.begin_sql)
        try:
            # Deleting first locks the row: a second retry of the same letter at the same time
            # waits here and then deletes nothing, so the handler runs once.
            gone = self._execute(f"DELETE FROM {self._table} WHERE {pk}", (letter.consumer, letter.event_id))
            if int(gone.rowcount) != 1:
                self._execute("ROLLBACK")
                return "already retried or discarded by someone else"
            result = handler(conn, event)
            if inspect.isawaitable(result):
                asyncio.run(_awaited(result))
            self._execute("COMMIT")
            return None
        except Exception:
            error = traceback.format_exc(limit=5)
            # A broken connection cannot roll back; the UPDATE after it then reports the outage.
            with contextlib.suppress(Exception):
                self._execute("ROLLBACK")
        self._execute(
            f"UPDATE {self._table} SET attempts = attempts + 1, error = ? WHERE {pk}",
            (error, letter.consumer, letter.event_id),
        )
        return error


def _letter(row: Any) -> InboxDeadLetter:
    consumer, event_id, topic, key, attempts, failed_at, error, payload, headers = row
    try:
        parsed = json.loads(headers) if headers else {}
    except ValueError:
        parsed = {}
    return InboxDeadLetter(
        str(consumer),
        str(event_id),
        str(topic),
        key,
        int(attempts),
        failed_at,
        str(error),
        bytes(payload),
        {str(k): str(v) for k, v in parsed.items()} if isinstance(parsed, dict) else {},
    )


async def _awaited(awaitable: Any) -> Any:
    return await awaitable
