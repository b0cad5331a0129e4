"""The inbox's transaction on the consumer's database: claim, run the handler, prove the transaction
is still ours, finish, commit (G7, H14).

A handler may end the transaction it was given: DDL commits implicitly on MariaDB/MySQL, and any
handler can run COMMIT or ROLLBACK. Its later statements then run in autocommit (or in a new
transaction), and a COMMIT at the end would report success for work that was not atomic with the
inbox row. Two measures make that a plain handler failure:

* a savepoint taken right after the claim. Savepoints belong to one transaction on every database
  we support: when the handler ended that transaction, ``RELEASE SAVEPOINT`` fails ("does not exist"
  on MariaDB and SQLite, "only in transaction blocks" on PostgreSQL), on every database, without
  privileges or a second connection. It also catches a PostgreSQL transaction the handler left
  aborted after swallowing an error (where COMMIT would silently roll back);
* a claim marked unfinished until the last statement. The handler's implicit commit may make the
  claim durable before the handler ran to its end; the row then still says "unfinished", and the
  retry takes it over instead of counting a duplicate. This also covers a crash right after the
  implicit commit, which no cleanup step could.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, NoReturn

from outboxkit.core.storable import storable
from outboxkit.errors import SchemaError, UnavailableError
from outboxkit.inbox.schema import connect_sync
from outboxkit.stores.base import TableRef
from outboxkit.stores.registry import database_for, translate_db_error

#: our savepoint; a handler has no reason to use this name
SAVEPOINT = "outboxkit_inbox"

ENDED = (
    "the handler ended the inbox's transaction (a COMMIT or ROLLBACK of its own, DDL that commits"
    " implicitly on MariaDB/MySQL, or an error it caught that aborted the transaction), so its work"
    " was not atomic with the inbox record; run DDL in migrations, never in a handler"
)


class TransactionEnded(Exception):
    """The handler committed or rolled back the transaction the inbox gave it (H14)."""


class HandlerFailed(Exception):
    """The handler raised, or its transaction cannot be committed as the inbox's: a retry."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


class InboxTransactions:
    """The SQL side of one inbox runner: one sync connection, used by one thread at a time."""

    def __init__(self, db: str, name: str, ref: TableRef) -> None:
        self.db, self.name = db, name
        sql = database_for(db).inbox()
        self.max_event_id = sql.max_event_id
        self._start_sql = sql.start_sql(ref)
        self._unfinished_sql = sql.unfinished_sql(ref)
        self._finish_sql = sql.finish_sql(ref)
        self._claim_sql = sql.claim_sql(ref)
        self._dead_sql = sql.dead_sql(ref)
        self.conn: Any = None

    def connection(self) -> Any:
        if self.conn is None:
            self.conn = connect_sync(self.db)
        return self.conn

    def drop(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # a dead connection may refuse to close; it is dropped either way
                return

    def begin(self, event_id: str) -> Any:
        """BEGIN and claim ``event_id``; the open connection, or None for a duplicate (rolled back)."""
        conn = self.connection()
        key = (self.name, event_id)
        try:
            conn.execute("BEGIN")
            claimed = conn.execute(self._start_sql, key).rowcount == 1
            if not claimed and not conn.execute(self._unfinished_sql, key).fetchall():
                conn.execute("ROLLBACK")
                return None
            # A row that is there but unfinished: an earlier attempt's handler committed it too
            # early (H14) and never finished. We hold its lock now; process the event again.
            conn.execute(f"SAVEPOINT {SAVEPOINT}")
        except Exception as exc:
            self.reset()
            raise self.db_error(exc) from None
        return conn

    def commit(self, conn: Any, event_id: str) -> None:
        """Prove the transaction is still the one ``begin`` opened, mark the claim finished, COMMIT.

        A connection that is gone is an outage (the message comes back, and the inbox row says
        whether the commit had landed); any other error (the savepoint is gone, a deferred foreign
        key, a serialization failure at COMMIT) is the handler's failure."""
        try:
            conn.execute(f"RELEASE SAVEPOINT {SAVEPOINT}")
        except Exception as exc:
            self._failed_at(exc, f"{ENDED}: {type(exc).__name__}: {exc}")
        try:
            conn.execute(self._finish_sql, (self.name, event_id))
            conn.execute("COMMIT")
        except Exception as exc:
            self._failed_at(exc, f"COMMIT failed: {type(exc).__name__}: {exc}")

    def _failed_at(self, exc: Exception, message: str) -> NoReturn:
        self.reset()
        error = self.db_error(exc)
        if isinstance(error, UnavailableError | SchemaError):
            raise error from None
        raise HandlerFailed(message) from None

    def dead_letter(self, event: Any, error: str, attempts: int) -> None:
        conn = self.connection()
        key = (self.name, event.id)
        try:
            conn.execute("BEGIN")
            conn.execute(self._claim_sql, key)
            conn.execute(self._finish_sql, key)  # an unfinished claim left by a handler's implicit commit
            conn.execute(self._dead_sql, (*key, *dead_letter_fields(event), storable(error), attempts))
            conn.execute("COMMIT")
        except Exception as exc:
            self.reset()
            raise self.db_error(exc) from None

    def park(self, event: Any, reason: str) -> str:
        """A message the inbox cannot identify, into the dead letters under an id of its own (a
        redelivery of it is parked again: better twice than never). Nothing is claimed."""
        parked_id = f"unidentified:{uuid.uuid4()}"
        conn = self.connection()
        try:
            conn.execute(self._dead_sql, (self.name, parked_id, *dead_letter_fields(event), storable(reason), 0))
        except Exception as exc:
            self.reset()
            raise self.db_error(exc) from None
        return parked_id

    def db_error(self, exc: Exception) -> Exception:
        error = translate_db_error(self.db, exc)
        return error if isinstance(error, Exception) else exc

    def reset(self) -> None:
        conn = self.conn
        if conn is None:
            return
        try:
            conn.execute("ROLLBACK")
        except Exception:
            # The connection is broken: drop it, the next message reconnects.
            self.drop()


def dead_letter_fields(event: Any) -> tuple[str, str | None, bytes, str]:
    """Topic, key, payload and headers of a dead letter as every database stores them (H13): a bus
    hands the consumer whatever a producer wrote — a lone surrogate, NUL — and a dead letter that
    cannot be stored would send the message back to fail again forever. The payload is bytes, kept
    as it is; text is escaped visibly (``core.storable``)."""
    headers = {storable(k, 256): storable(v, 8192) for k, v in dict(event.headers).items()}
    key = None if event.key is None else storable(event.key, 1024)
    return storable(event.topic, 1024), key, bytes(event.payload), json.dumps(headers)
