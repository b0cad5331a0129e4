"""The database side of ``relay --capture wal --resume-from-now`` (``relay/resume.py``): make a
new slot when this outbox's slot is missing or invalidated, and count what the drain has to publish."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from outboxkit.errors import ConfigurationError
from outboxkit.stores.base import TableRef
from outboxkit.stores.postgres.connection import libpq_url
from outboxkit.stores.postgres.store import translate
from outboxkit.stores.postgres.wal import current_database, pick_slot
from outboxkit.stores.postgres.walddl import slot_name, wal_ddl


@dataclass(frozen=True)
class Recreated:
    slot: str
    healthy: bool  # the slot was there and readable: nothing was changed
    lost_from: str | None  # the old slot's confirmed position, when it was still listed (invalidated)
    start: str | None  # the new slot's position: every commit after it is in the slot
    upto: int  # the highest outbox seq read after the new slot was made


def recreate_slot(url: str, ref: TableRef, slot: str | None = None) -> Recreated:
    """Drop an invalidated slot, make a new one (publication too, if gone), then read the highest
    seq. Under the readers' lock: refused while a wal relay of this outbox holds it."""
    try:
        with psycopg.connect(libpq_url(url), autocommit=True, connect_timeout=5) as conn:
            database = current_database(conn)
            name, row = pick_slot(conn, ref, database, slot)
            lock = conn.execute(
                b"SELECT pg_try_advisory_lock(hashtextextended(%s, 7))", [f"outboxkit-slot:{name}"]
            ).fetchone()
            if not lock or not lock[0]:
                raise ConfigurationError(f"a wal relay holds slot {name}: stop it before --resume-from-now")
            if row is not None and row[3] != "lost":
                return Recreated(name, True, None, row[2], 0)
            lost_from = row[2] if row is not None else None
            if row is not None:
                conn.execute(b"SELECT pg_drop_replication_slot(%s)", [name])
                if name != (slot or slot_name(ref, database)):
                    # An adopted old-named slot is replaced by one of the new name: its publication goes too.
                    conn.execute(f'DROP PUBLICATION IF EXISTS "{name}"'.encode())
            for stmt in wal_ddl(ref, database, slot):
                conn.execute(stmt.encode())
            name, row = pick_slot(conn, ref, database, slot)
            start = row[2] if row is not None else None
            # Read after the slot exists: a row committed before the slot's start has a seq at most this.
            top = conn.execute(f"SELECT COALESCE(MAX(seq), 0) FROM {ref.qualified}".encode()).fetchone()
            return Recreated(name, False, lost_from, start, int(top[0]) if top else 0)
    except psycopg.Error as exc:
        raise translate(url, exc) from None


def pending_up_to(url: str, ref: TableRef, seq: int) -> int:
    """Pending outbox rows with a seq at most ``seq`` (what the drain still has to publish)."""
    sql = f"SELECT count(*) FROM {ref.qualified} WHERE delivered_at IS NULL AND dead_at IS NULL AND seq <= %s"
    try:
        with psycopg.connect(libpq_url(url), autocommit=True, connect_timeout=5) as conn:
            row = conn.execute(sql.encode(), [seq]).fetchone()
    except psycopg.Error as exc:
        raise translate(url, exc) from None
    return int(row[0]) if row else 0
