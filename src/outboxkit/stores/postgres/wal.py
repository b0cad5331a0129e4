"""PostgreSQL logical decoding for the relay (``--capture wal``): the slot, the publication, the reader.

Why the SQL interface and not the streaming replication protocol: psycopg 3 has no public API for
it (no replication connection, no standby status updates), and psycopg2's
``LogicalReplicationConnection`` would add a second driver with its own threads-or-select loop. The
SQL functions ``pg_logical_slot_peek_binary_changes`` and ``pg_replication_slot_advance`` run on
the psycopg 3 connection the relay already has, and they give the rule G3 asks for for free: a
peek never moves the slot, so the slot's confirmed position moves only when the relay calls
``advance`` after the broker confirmed every event before that position (docs/log-tailing.md has
the measurements).

Rules kept here (each has a test):

* one reader per slot: the reader holds a session advisory lock on the slot's name, and its
  session has ``idle_session_timeout`` = the takeover time, so a relay that is paused (SIGSTOP, a
  frozen VM) loses its session, its lock and its right to advance, and a standby takes over; the
  relay trusts its lock only until half that time after its last round trip (``last_ok``);
* order is the commit order: a peek returns whole committed transactions in the order they
  committed, so a transaction that took its sequence number first and committed last comes last;
* heartbeat without writes (H4): a peek is bounded by the WAL flush position read just before it;
  when it came back whole, every transaction committed before that position was seen, so the slot
  can be advanced there even when nothing of the outbox was in it, and an idle outbox next to busy
  tables retains no WAL.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from outboxkit.core.storable import storable
from outboxkit.core.urls import redact_url
from outboxkit.errors import ConfigurationError, PositionLostError
from outboxkit.stores.base import TableRef
from outboxkit.stores.postgres.connection import libpq_url
from outboxkit.stores.postgres.pgoutput import Begin, decode, format_lsn, parse_lsn
from outboxkit.stores.postgres.store import translate
from outboxkit.stores.postgres.walddl import SLOTS_OF, candidates, legacy_slot_name, slot_name, wal_ddl

__all__ = ["legacy_slot_name", "make_wal_reader", "migrate_wal", "resolve_slot", "slot_name", "wal_ddl"]

#: ``sql`` picks the reader by SQL functions (``PostgresWalReader``) over the streaming one; for a
#: server or a pooler that refuses replication connections.
READER_ENV = "OUTBOXKIT_WAL_READER"


def make_wal_reader(url: str, ref: TableRef, *, slot: str | None = None, takeover: float = 6.0) -> PostgresWalReader:
    """The relay's reader of this outbox's slot: the streaming one (``walstream``), or the SQL one
    when ``OUTBOXKIT_WAL_READER=sql`` (docs/log-tailing.md compares them). The one place the
    choice is made."""
    import os

    choice = os.environ.get(READER_ENV, "stream").strip().lower()
    if choice == "sql":
        return PostgresWalReader(url, ref, slot=slot, takeover=takeover)
    if choice not in ("stream", ""):
        raise ConfigurationError(f"{READER_ENV}={choice!r}: expected stream or sql")
    from outboxkit.stores.postgres.walstream import PostgresWalStream

    return PostgresWalStream(url, ref, slot=slot, takeover=takeover)


def migrate_wal(url: str, ref: TableRef, slot: str | None = None) -> str:
    """Create the publication and the slot (autocommit: a slot cannot be made in a writing
    transaction); returns the slot's name (an old-named slot of this database is adopted)."""
    try:
        with psycopg.connect(libpq_url(url), autocommit=True, connect_timeout=5) as conn:
            database = current_database(conn)
            for stmt in wal_ddl(ref, database, slot):
                conn.execute(stmt.encode())
            return pick_slot(conn, ref, database, slot)[0]
    except psycopg.Error as exc:
        raise translate(url, exc) from None


def resolve_slot(url: str, ref: TableRef, slot: str | None = None) -> str:
    """This outbox's slot name on ``url``: the adopted old name if that slot is here, else the new one."""
    try:
        with psycopg.connect(libpq_url(url), autocommit=True, connect_timeout=5) as conn:
            return pick_slot(conn, ref, current_database(conn), slot)[0]
    except psycopg.Error as exc:
        raise translate(url, exc) from None


def current_database(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute(b"SELECT current_database()").fetchone()
    return str(row[0]) if row else ""


def pick_slot(
    conn: psycopg.Connection[Any], ref: TableRef, database: str, slot: str | None
) -> tuple[str, tuple[Any, ...] | None]:
    """(name, its pg_replication_slots row or None when this database has no slot of the outbox)."""
    names = candidates(ref, database, slot)
    rows = {r[0]: r for r in conn.execute(SLOTS_OF.encode(), [names]).fetchall()}
    for name in names:
        row = rows.get(name)
        if row is not None and row[1]:
            return name, row
    return names[-1], None


def lost_message(slot: str, url: str, why: str) -> str:
    """The one line a relay stops with when its slot cannot be read any more."""
    return (
        f"replication slot {slot} on {redact_url(url)} {why}: the log since its position is gone; recover with "
        "`outboxkit relay --capture wal --resume-from-now` (drains pending rows through the table relay, "
        "recreates the slot, tails from now; docs/log-tailing.md)"
    )


@dataclass(frozen=True)
class SlotInfo:
    name: str
    exists: bool
    active_pid: int | None = None
    confirmed_lsn: str | None = None
    lag_bytes: int | None = None
    wal_status: str | None = None  # reserved, extended, unreserved, lost
    safe_wal_size: int | None = None  # bytes left before the slot is invalidated; None = unlimited
    max_slot_wal_keep_size_mb: int = -1  # -1: unlimited (a stalled slot can fill the disk, H4)
    lag_seconds: float | None = None  # age of the oldest committed outbox transaction not yet done


# -- the reader's SQL ----------------------------------------------------------------------------
# Bounded by the flush position read first (the heartbeat: see the module docstring). A peek never
# moves the slot; text output of pgoutput protocol 1, logical messages included.
_FLUSH = "SELECT pg_current_wal_flush_lsn()::text"
_PEEK = (
    "SELECT data FROM pg_logical_slot_peek_binary_changes(%s, %s::pg_lsn, %s, "
    "'proto_version', '1', 'publication_names', %s, 'messages', 'true')"
)
_ADVANCE = "SELECT pg_replication_slot_advance(%s, %s::pg_lsn)"
_CONFIRMED = "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s"
_LAG = "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint FROM pg_replication_slots WHERE slot_name = %s"
# undefined_object (the slot was dropped) and object_not_in_prerequisite_state (it was invalidated).
_SLOT_GONE_CODES = frozenset({"42704", "55000"})
_WAL_STATUS = b"SELECT wal_status FROM pg_replication_slots WHERE slot_name = %s"
_SLOT_INFO = """SELECT s.active_pid, s.confirmed_flush_lsn::text,
       (pg_current_wal_lsn() - s.confirmed_flush_lsn)::bigint, s.wal_status, s.safe_wal_size,
       current_setting('max_slot_wal_keep_size')
FROM pg_replication_slots s WHERE s.slot_name = %s"""


class PostgresWalReader:
    """The relay's one connection for a slot: lock, peek, mark, dead letters, advance. Not thread-safe."""

    def __init__(self, url: str, ref: TableRef, *, slot: str | None = None, takeover: float = 6.0) -> None:
        self.url = url
        self.ref = ref
        self._explicit = slot
        self.slot = slot or ""  # resolved at connect(): the new name, or an adopted old one
        self.takeover = takeover
        self.confirmed = 0  # the slot's confirmed position as this reader last saw or set it
        self.last_ok = 0.0  # monotonic time of the last round trip that proved the session alive
        self._conn: psycopg.AsyncConnection[Any] | None = None
        t = ref.qualified
        self._mark = f"UPDATE {t} SET delivered_at = now() WHERE seq = ANY(%s) AND delivered_at IS NULL"
        self._dead_row = (
            f"UPDATE {t} SET dead_at = now(), last_error = %s, attempts = attempts + %s WHERE seq = %s RETURNING seq"
        )
        # A key no index takes (btree rows hold about 2.7 kB) cannot be a dead letter's key (H13).
        self._dead_row_keyless = self._dead_row.replace("SET dead_at", "SET key = NULL, dead_at")
        # A table-less event that became a dead letter gets a row, so `dead-letters` lists it; the
        # publication ignores it (dead_at is set, and the relay skips such inserts).
        self._dead_message = (
            f"INSERT INTO {t} (id, topic, key, type, source, payload, content_type, headers, attempts, "
            "last_error, dead_at) VALUES (coalesce(%s::uuid, gen_random_uuid()), %s, %s, %s, %s, %s, %s, "
            "%s::jsonb, %s, %s, now())"
        )
        self._held = f"SELECT DISTINCT key FROM {t} WHERE dead_at IS NOT NULL AND key = ANY(%s)"

    async def connect(self) -> None:
        try:
            self._conn = await psycopg.AsyncConnection.connect(
                libpq_url(self.url), autocommit=True, connect_timeout=5, application_name="outboxkit-wal"
            )
            # A paused relay's session ends after the takeover time, releasing its lock (see above).
            ms = max(1000, int(self.takeover * 1000))
            await self._conn.execute(f"SET idle_session_timeout = {ms}".encode())
            cur = await self._conn.execute(b"SELECT current_database()")
            database = str((await cur.fetchone() or ("",))[0])
            names = candidates(self.ref, database, self._explicit)
            rows = await (await self._conn.execute(SLOTS_OF.encode(), [names])).fetchall()
        except psycopg.Error as exc:
            raise translate(self.url, exc) from None
        found = {r[0]: r for r in rows}
        mine = [found[n] for n in names if n in found and found[n][1]]
        if not mine:
            self.slot = names[-1]
            if self.slot in found:
                # Only with --slot: the default names include the database and cannot meet.
                raise ConfigurationError(f"replication slot {self.slot} belongs to another database on this server")
            raise PositionLostError(
                lost_message(
                    self.slot,
                    self.url,
                    "does not exist (dropped, lost in a fail-over, or never made: "
                    "a new outbox runs `outboxkit migrate --capture wal`)",
                )
            )
        row = mine[0]
        self.slot = row[0]
        if row[3] == "lost":
            raise PositionLostError(lost_message(self.slot, self.url, "was invalidated (max_slot_wal_keep_size)"))
        self.confirmed = parse_lsn(row[2])
        self.last_ok = time.monotonic()

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()

    def resume_point(self) -> int:
        return self.confirmed

    def trusted(self) -> bool:
        """Whether the lock can still be ours: half the takeover time after the last round trip."""
        return time.monotonic() - self.last_ok < self.takeover / 2

    async def _query(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        if self._conn is None:
            raise RuntimeError("reader is not connected")
        started = time.monotonic()
        try:
            cur = await self._conn.execute(sql.encode(), params)
            rows = await cur.fetchall() if cur.description else []
        except psycopg.Error as exc:
            if exc.sqlstate in _SLOT_GONE_CODES:
                await self._raise_if_slot_gone()
            raise translate(self.url, exc) from None
        self.last_ok = started  # the server was alive when this query began
        return rows

    async def _raise_if_slot_gone(self) -> None:
        """After an error a missing or invalidated slot gives: stop for good if that is the cause
        (retrying cannot bring the log back), else let the error be classed as usual."""
        if self._conn is None:
            return
        try:
            cur = await self._conn.execute(
                b"SELECT wal_status FROM pg_replication_slots WHERE slot_name = %s", [self.slot]
            )
            row = await cur.fetchone()
        except psycopg.Error:
            return  # the connection is down: an outage, classed by the caller
        if row is None:
            raise PositionLostError(lost_message(self.slot, self.url, "was dropped"))
        if row[0] == "lost":
            raise PositionLostError(lost_message(self.slot, self.url, "was invalidated (max_slot_wal_keep_size)"))

    async def try_lock(self) -> bool:
        lock = f"outboxkit-slot:{self.slot}"
        rows = await self._query("SELECT pg_try_advisory_lock(hashtextextended(%s, 7))", [lock])
        if rows[0][0]:
            # Re-read under the lock: the previous holder may have advanced since connect().
            confirmed = await self._query(_CONFIRMED, [self.slot])
            if not confirmed or confirmed[0][0] is None:
                await self._raise_if_slot_gone()
            self.confirmed = parse_lsn(confirmed[0][0])
        return bool(rows[0][0])

    async def ping(self) -> None:
        await self._query("SELECT 1")

    async def peek(self, limit: int) -> tuple[list[bytes], int]:
        """Up to about ``limit`` changes (whole transactions) and the flush position bounding them."""
        upto = (await self._query(_FLUSH))[0][0]
        rows = await self._query(_PEEK, [self.slot, upto, limit, self.slot])
        return [bytes(r[0]) for r in rows], parse_lsn(upto)

    async def advance(self, lsn: int) -> None:
        """Move the slot's confirmed position to ``lsn`` (never back): everything before is done."""
        if lsn <= self.confirmed:
            return
        await self._query(_ADVANCE, [self.slot, format_lsn(lsn)])
        self.confirmed = lsn

    async def lag_bytes(self) -> int | None:
        rows = await self._query(_LAG, [self.slot])
        return int(rows[0][0]) if rows and rows[0][0] is not None else None

    async def wal_keep_unlimited(self) -> bool:
        rows = await self._query("SELECT current_setting('max_slot_wal_keep_size')")
        return _megabytes(str(rows[0][0])) < 0

    async def retention_warning(self) -> str | None:
        if not await self.wal_keep_unlimited():
            return None
        return (
            f"max_slot_wal_keep_size is unlimited (-1): if this relay stalls, PostgreSQL keeps WAL for slot "
            f"{self.slot} until the disk is full (H4); set a limit, see docs/log-tailing.md"
        )

    async def mark_delivered(self, seqs: Sequence[int]) -> None:
        if seqs:
            await self._query(self._mark, [list(seqs)])

    async def held_keys(self, keys: Sequence[str]) -> set[str]:
        """The keys among ``keys`` held behind a dead letter (H5: the dead_keys index, empty normally)."""
        if not keys:
            return set()
        return {r[0] for r in await self._query(self._held, [list(keys)])}

    async def dead_row(self, seq: int, error: str, attempts: int, *, keep_key: bool = True) -> bool:
        """Mark the row dead; False when the row is gone (its writer deleted it in its transaction)."""
        sql = self._dead_row if keep_key else self._dead_row_keyless
        return bool(await self._query(sql, [storable(error), attempts, seq]))

    async def dead_message(
        self,
        *,
        id: str | None,
        topic: str,
        key: str | None,
        type: str | None,
        source: str | None,
        payload: bytes,
        content_type: str,
        headers: str,
        attempts: int,
        error: str,
    ) -> None:
        uuid_or_none = id if id is not None and _is_uuid(id) else None
        if id is not None and uuid_or_none is None:
            error = f"{error} (event id {id!r:.80})"
        params = [uuid_or_none, topic, key, type, source, payload, content_type, headers, attempts, storable(error)]
        await self._query(self._dead_message, params)


def _is_uuid(text: str) -> bool:
    import uuid

    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def slot_info(url: str, slot: str) -> SlotInfo:
    """What ``outboxkit slot status`` and ``status`` show (H4: lag, retention, the unlimited warning)."""
    try:
        with psycopg.connect(libpq_url(url), autocommit=True, connect_timeout=5) as conn:
            row = conn.execute(_SLOT_INFO.encode(), [slot]).fetchone()
            keep = conn.execute(b"SELECT current_setting('max_slot_wal_keep_size')").fetchone()
    except psycopg.Error as exc:
        raise translate(url, exc) from None
    keep_mb = _megabytes(keep[0] if keep else "-1")
    if row is None:
        return SlotInfo(slot, False, max_slot_wal_keep_size_mb=keep_mb)
    return SlotInfo(slot, True, row[0], row[1], row[2], row[3], row[4], keep_mb, _lag_seconds(url, slot))


def _lag_seconds(url: str, slot: str) -> float | None:
    """Age of the first transaction the slot still holds for the relay (0 when none); None when the
    relay is reading the slot at this instant (a slot serves one reader at a time)."""
    try:
        with psycopg.connect(libpq_url(url), autocommit=True, connect_timeout=5) as conn:
            rows = conn.execute(_PEEK.encode(), [slot, None, 1, slot]).fetchall()
            now = conn.execute(b"SELECT now()").fetchone()
    except psycopg.Error:
        return None
    for (data,) in rows:
        record = decode(bytes(data))
        if isinstance(record, Begin) and now is not None:
            return max(0.0, float((now[0] - record.committed_at).total_seconds()))
    return 0.0


def wal_flush_position(url: str) -> int:
    """The server's WAL flush position now: every transaction committed so far ends before it."""
    try:
        with psycopg.connect(libpq_url(url), autocommit=True, connect_timeout=5) as conn:
            row = conn.execute(_FLUSH.encode()).fetchone()
    except psycopg.Error as exc:
        raise translate(url, exc) from None
    return parse_lsn(row[0]) if row else 0


def slot_passed(url: str, slot: str, lsn: int) -> bool:
    """Whether the slot's confirmed position is at ``lsn`` or past it: a relay published every
    transaction committed before it. Works while a streaming relay holds the slot (a peek does not)."""
    try:
        with psycopg.connect(libpq_url(url), autocommit=True, connect_timeout=5) as conn:
            row = conn.execute(_CONFIRMED.encode(), [slot]).fetchone()
    except psycopg.Error as exc:
        raise translate(url, exc) from None
    return row is not None and row[0] is not None and parse_lsn(row[0]) >= lsn


def drop_slot(url: str, ref: TableRef, slot: str, *, wait: float = 15.0) -> bool:
    """Drop the slot and the publication; False if there was no slot. Fails if a reader is still
    active after ``wait`` seconds: a reader that just stopped (or was killed) keeps its walsender,
    and the slot, until the server notices the connection is gone (at most its
    ``wal_sender_timeout``, which the streaming reader sets to its takeover time)."""
    deadline = time.monotonic() + wait
    try:
        with psycopg.connect(libpq_url(url), autocommit=True, connect_timeout=5) as conn:
            while True:
                row = conn.execute(
                    b"SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", [slot]
                ).fetchone()
                if row is None or row[0] is None or time.monotonic() >= deadline:
                    break
                time.sleep(0.1)
            if row is not None:
                conn.execute(b"SELECT pg_drop_replication_slot(%s)", [slot])
            conn.execute(f'DROP PUBLICATION IF EXISTS "{slot}"'.encode())
    except psycopg.Error as exc:
        raise translate(url, exc) from None
    return row is not None


def _megabytes(setting: str) -> int:
    """``max_slot_wal_keep_size`` as shown (``-1``, ``1024MB``, ``10GB``) in MB."""
    text = setting.strip()
    if text.startswith("-"):
        return -1
    units = {"kB": 1 / 1024, "MB": 1, "GB": 1024, "TB": 1024 * 1024}
    for unit, factor in units.items():
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(text)
