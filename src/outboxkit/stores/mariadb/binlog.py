"""MariaDB/MySQL binlog tailing for the relay (``--capture binlog``): the reader (its position table is
``binlogpos.py``).

The binlog is read with ``mysql-replication`` (pymysqlreplication), the maintained pure-Python
client of the replication protocol: the relay registers as a replica and the server streams
its row events. Rules kept here (each has a test):

* **the position moves only after the broker confirmed (G3).** The end of the last transaction
  whose every outbox event was confirmed or dead-lettered is stored in a one-row table beside the
  outbox (``<table>_binlog``, made by ``outboxkit migrate --capture binlog``): the binlog file and
  offset, and on MariaDB the GTID state. A relay (re)starts from it: after a SIGKILL nothing is
  lost (G1) and the duplicates are what was confirmed after the last save (G6). MariaDB resumes by
  GTID (``@slave_connect_state``), MySQL by file and offset;
* **commit order.** The binlog holds transactions in commit order, and a rolled-back
  transaction is never written to it (G2);
* **one reader at a time.** The reader holds ``GET_LOCK`` on the outbox's name on its control
  session, whose ``wait_timeout`` is the takeover time: a paused relay (SIGSTOP, a frozen VM)
  loses its session, its lock and its right to save the position, and a standby takes over. It
  trusts its lock only until half that time after its last round trip (``last_ok``), as the
  PostgreSQL reader does;
* **heartbeat.** Every commit of the server (any table) ends with an event the stream sees, so
  the stored position follows the server even when the outbox is idle (the relay saves it at
  most once a second then);
* **a purged binlog is reported, not retried.** When the server no longer has the file or GTID
  the stored position needs (``binlog_expire_logs_seconds``, ``PURGE BINARY LOGS``), the reader
  raises :class:`~outboxkit.errors.PositionLostError`; recovery: ``relay --capture binlog
  --resume-from-now`` (``relay/resume.py``).
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
import uuid
import zlib
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from outboxkit.core.storable import storable
from outboxkit.core.urls import redact_url
from outboxkit.errors import ConfigurationError, PositionLostError, UnavailableError
from outboxkit.stores.base import TableRef
from outboxkit.stores.mariadb.binlogevents import RawTransaction
from outboxkit.stores.mariadb.binlogpos import (
    Position,
    lag_bytes_after,
    lock_name,
    position_table,
    read_position,
)
from outboxkit.stores.mariadb.driver import (
    MySqlConnection,
    connect_sync,
    error_code,
    first_line,
    parse_url,
    translate,
)
from outboxkit.stores.mariadb.schema import bind_list, quoted

_LOST = 1236  # ER_MASTER_FATAL_ERROR_READING_BINLOG: the file or GTID asked for is not in the binlog
_QUEUE = 20_000  # decoded transactions the stream thread may hold ahead of the relay


class StreamLostError(Exception):
    """The replication connection dropped (the server restarted, or killed this dump)."""


@functools.cache
def _connection_class() -> Any:
    """PyMySQL's connection, except that a dropped connection raises :class:`StreamLostError`.

    mysql-replication reconnects by itself on "server gone" (2006, 2013), from the position it
    was *started* at when it follows a GTID: it would send transactions again under new tokens
    and could save an older position. The reader is rebuilt from the stored position instead."""
    import pymysql

    class Connection(pymysql.connections.Connection):  # type: ignore[misc]
        def _read_packet(self, *args: Any, **kwargs: Any) -> Any:
            try:
                return super()._read_packet(*args, **kwargs)
            except pymysql.err.OperationalError as exc:
                if error_code(exc) in (2006, 2013):
                    raise StreamLostError(f"the binlog stream was cut: {first_line(exc)}") from None
                raise

    return Connection


def _pymysql_connect(**kwargs: Any) -> Any:
    """The replication client's connections (``pymysql_wrapper``); it still names two arguments
    the way PyMySQL 1.2 deprecates (``db``, ``passwd``)."""
    for old, new in (("db", "database"), ("passwd", "password")):
        if old in kwargs:
            kwargs[new] = kwargs.pop(old)
    return _connection_class()(**kwargs)


class _StreamOnce:
    """``pymysql_wrapper`` for one stream reader: its replication connection is opened once.

    mysql-replication opens it again by itself when a read fails with "server gone" (2006, 2013).
    :func:`_connection_class` turns those into :class:`StreamLostError` where PyMySQL raises them,
    but a loaded test run still saw the library reconnect (and send a GTID stream again from its
    start: duplicates, outages not seen), and a chaos run saw two streams of one server id take
    the dump from each other 199 times. Refusing the second stream connection ends the thread
    whatever made the library try: the relay then rebuilds the reader from the stored position.
    The control connection (``information_schema``, a dict cursor) may reconnect as it likes."""

    def __init__(self) -> None:
        self.streams = 0

    def __call__(self, **kwargs: Any) -> Any:
        if kwargs.get("db", kwargs.get("database")) != "information_schema":
            self.streams += 1
            if self.streams > 1:
                raise StreamLostError("the binlog stream was cut; the reader is rebuilt from the stored position")
        return _pymysql_connect(**kwargs)


def _gtid_state(text: str | None) -> dict[str, str]:
    return {g.split("-")[0]: g for g in (text or "").replace(" ", "").split(",") if g.count("-") == 2}


class MariaDbBinlogReader:
    """The relay's view of the binlog: a control session (lock, position, marks, dead letters) and a
    replication stream read by a thread of its own. Not thread-safe: one relay task uses it."""

    def __init__(self, url: str, ref: TableRef, *, takeover: float = 6.0, heartbeat: float = 0.5) -> None:
        self.url = url
        self.ref = ref
        self.params = parse_url(url)
        self.schema = ref.schema or self.params.database
        self.lock = lock_name(ref, self.params.database)
        self.slot = f"binlog {self.schema}.{ref.table}"
        # Each replica needs its own server id; the same outbox always gets the same one, so a new
        # holder's stream replaces a dead holder's (the server drops the older dump of an id).
        self.server_id = 0x40000000 | (zlib.crc32(self.lock.encode()) & 0x3FFFFFFF)
        self.takeover = takeover
        self.heartbeat = heartbeat
        self.confirmed = 0
        self.last_ok = 0.0
        self.position: Position | None = None
        self.mariadb = True
        self._conn: MySqlConnection | None = None
        self._cond = threading.Condition()
        self._queue: deque[RawTransaction] = deque()
        self._marks: dict[int, Position] = {}
        self._latest = 0  # token of the last transaction end the stream saw (any table)
        self._latest_pos: Position | None = None
        self._started = False
        self._error: BaseException | None = None
        self._halt = False
        self._thread: threading.Thread | None = None
        t = quoted(ref)
        self._mark = f"UPDATE {t} SET delivered_at = UTC_TIMESTAMP(6) WHERE seq IN ({{seqs}}) AND delivered_at IS NULL"
        self._dead_row = (
            f"UPDATE {t} SET dead_at = UTC_TIMESTAMP(6), last_error = %s, attempts = attempts + %s WHERE seq = %s"
        )
        # A dead letter whose row is gone gets a row of its own (dead_at set: the decoder skips it).
        self._dead_message = (
            f"INSERT INTO {t} (id, topic, `key`, type, source, payload, content_type, headers, attempts, "
            "last_error, dead_at) VALUES (COALESCE(%s, UUID()), %s, %s, %s, %s, %s, %s, %s, %s, %s, UTC_TIMESTAMP(6))"
        )
        self._held = f"SELECT DISTINCT `key` FROM {t} WHERE dead_at IS NOT NULL AND `key` IN ({{keys}})"
        self._save = (
            f"UPDATE {position_table(ref)} SET log_file = %s, log_pos = %s, gtid = %s, updated_at = UTC_TIMESTAMP(6)"
        )

    # -- the control session -----------------------------------------------------------------------
    def _sync(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        if self._conn is None:
            raise RuntimeError("reader is not connected")
        cur = self._conn.execute(sql, params)
        return list(cur.fetchall()) if cur.description else [(cur.rowcount,)]

    async def _query(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        started = time.monotonic()
        try:
            rows = await asyncio.to_thread(self._sync, sql, params)
        except Exception as exc:
            raise (translate(exc, redact_url(self.url)) or exc) from None
        self.last_ok = started  # the server was alive when this statement began
        return rows

    async def connect(self) -> None:
        import pymysqlreplication  # noqa: F401  (here, not in the stream thread: a missing extra says so)

        self._conn = await asyncio.to_thread(connect_sync, self.url, label="outboxkit-binlog")
        # A paused relay's session ends after the takeover time, releasing its lock (see above).
        await self._query(f"SET SESSION wait_timeout = {max(1, round(self.takeover))}")
        settings = dict(
            (str(k).lower(), str(v).upper())
            for k, v in await self._query(
                "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('log_bin', 'binlog_format', 'binlog_row_metadata')"
            )
        )
        where = redact_url(self.url)
        if settings.get("log_bin") != "ON":
            raise ConfigurationError(f"{where}: the binary log is off; start the server with log_bin")
        if settings.get("binlog_format") != "ROW":
            raise ConfigurationError(f"{where}: binlog_format must be ROW (it is {settings.get('binlog_format')})")
        if settings.get("binlog_row_metadata") != "FULL":
            raise ConfigurationError(
                f"{where}: binlog_row_metadata must be FULL (the relay reads column names from the binlog)"
            )
        version = (await self._query("SELECT VERSION()"))[0][0]
        self.mariadb = "mariadb" in str(version).lower()
        self.position = await asyncio.to_thread(read_position, self._require(), self.ref)

    def _require(self) -> MySqlConnection:
        if self._conn is None:
            raise RuntimeError("reader is not connected")
        return self._conn

    async def close(self) -> None:
        with self._cond:
            self._halt = True
            self._cond.notify_all()
        thread, self._thread = self._thread, None
        if thread is not None:
            # The stream wakes up at the next event or heartbeat; the thread is a daemon anyway.
            await asyncio.to_thread(thread.join, 2 * self.heartbeat + 1)
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await asyncio.to_thread(conn.close)

    def resume_point(self) -> Position | None:
        return self.position

    def trusted(self) -> bool:
        return time.monotonic() - self.last_ok < self.takeover / 2

    async def ping(self) -> None:
        await self._query("SELECT 1")

    async def try_lock(self) -> bool:
        rows = await self._query("SELECT GET_LOCK(%s, 0)", (self.lock,))
        if rows[0][0] != 1:
            return False
        # Re-read under the lock: the previous holder may have saved a later position.
        self.position = await asyncio.to_thread(read_position, self._require(), self.ref)
        self._start_stream(self.position)
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            with self._cond:
                if self._error is not None or self._started:
                    break
            await asyncio.sleep(0.01)
        self._raise_stream_error()
        return True

    # -- the stream --------------------------------------------------------------------------------
    def _start_stream(self, start: Position) -> None:
        self._thread = threading.Thread(target=self._read, args=(start,), name="outboxkit-binlog", daemon=True)
        self._thread.start()

    def _read(self, start: Position) -> None:
        from pymysqlreplication import BinLogStreamReader
        from pymysqlreplication.event import GtidEvent, HeartbeatLogEvent, MariadbGtidEvent, RotateEvent, XidEvent
        from pymysqlreplication.row_event import WriteRowsEvent

        p = self.params
        settings: dict[str, Any] = {"user": p.user, "password": p.password}
        if p.unix_socket:
            settings["unix_socket"] = p.unix_socket
        else:
            settings.update(host=p.host, port=p.port)
        where: dict[str, Any]
        if self.mariadb and start.gtid:
            where = {"is_mariadb": True, "auto_position": start.gtid}
        else:
            where = {"log_file": start.log_file, "log_pos": start.log_pos, "resume_stream": True}
        stream = BinLogStreamReader(
            settings,
            server_id=self.server_id,
            blocking=True,
            slave_heartbeat=self.heartbeat,
            only_events=[WriteRowsEvent, XidEvent, MariadbGtidEvent, GtidEvent, HeartbeatLogEvent, RotateEvent],
            only_schemas=[self.schema],
            only_tables=[self.ref.table],
            enable_logging=False,
            # A table map is decoded once per table id, not once per statement: 2.3x the rows/s
            # with one-row INSERTs (docs/performance.md). An ALTER TABLE gives the table a new id
            # (a new table definition), so the new columns are still read.
            freeze_schema=True,
            pymysql_wrapper=_StreamOnce(),
            **where,
        )
        gtids = _gtid_state(start.gtid)
        gtid: str | None = None
        rows: list[dict[str, Any]] = []
        try:
            while not self._halt:
                event = stream.fetchone()
                if event is None:
                    raise UnavailableError("the binlog stream ended")
                if not self._started:
                    with self._cond:
                        self._started = True
                if isinstance(event, WriteRowsEvent):
                    rows.extend(r["values"] for r in event.rows)
                elif isinstance(event, MariadbGtidEvent | GtidEvent):
                    # A transaction begins; rows of one that never reached its commit are dropped.
                    gtid, rows = (event.gtid if isinstance(event, MariadbGtidEvent) else None), []
                elif isinstance(event, RotateEvent):
                    # A new binlog file: a rotation, or a server (re)start — and after a restart
                    # the server numbers table ids anew, so an id cached under ``freeze_schema``
                    # may now name another table (the position table, written every second):
                    # its rows would be decoded with the outbox's columns and fail ("Result length
                    # not requested length") at the same event on every relay, forever. Table maps
                    # are decoded again from here (one per table per file).
                    stream.table_map.clear()
                elif isinstance(event, XidEvent):
                    if gtid is not None:
                        gtids[gtid.split("-")[0]] = gtid
                    state = ",".join(gtids[d] for d in sorted(gtids, key=int)) if self.mariadb and gtids else None
                    self._committed(Position(stream.log_file, stream.log_pos, state), event.timestamp, rows)
                    gtid, rows = None, []
        except BaseException as exc:
            with self._cond:
                self._error = exc
                self._cond.notify_all()
        finally:
            stream.close()

    def _committed(self, position: Position, timestamp: int, rows: list[dict[str, Any]]) -> None:
        with self._cond:
            self._latest += 1
            self._latest_pos = position
            if rows:
                committed_at = datetime.fromtimestamp(timestamp, UTC)
                self._queue.append(RawTransaction(self._latest, committed_at, rows))
                self._marks[self._latest] = position
                # Back-pressure: the relay is behind; the server keeps the binlog meanwhile.
                while len(self._queue) >= _QUEUE and not self._halt:
                    self._cond.wait(0.5)

    def _raise_stream_error(self) -> None:
        exc = self._error
        if exc is None:
            return
        if error_code(exc) == _LOST:
            start = self.position
            at = (
                f"GTID {start.gtid}"
                if start and self.mariadb and start.gtid
                else (f"{start.log_file}:{start.log_pos}" if start else "?")
            )
            raise PositionLostError(
                f"the binlog at the stored position ({at}) is no longer on the server ({first_line(exc)}); "
                "recover with `outboxkit relay --capture binlog --resume-from-now` (docs/log-tailing.md)"
            )
        raise translate(exc, redact_url(self.url)) or UnavailableError(f"binlog stream: {first_line(exc)}")

    async def peek(self, limit: int) -> tuple[list[Any], int]:
        """Up to ``limit`` transactions with outbox rows, and the token every one of them is before."""
        if time.monotonic() - self.last_ok > self.takeover / 4:
            await self.ping()  # the stream needs no round trip; the lock does
        with self._cond:
            self._raise_stream_error()
            taken: list[RawTransaction] = []
            while self._queue and len(taken) < limit:
                taken.append(self._queue.popleft())
            if self._queue:
                upto = taken[-1].lsn
            else:
                upto = self._latest
                if self._latest_pos is not None:
                    self._marks[upto] = self._latest_pos
            self._cond.notify_all()
        return list(taken), upto

    async def advance(self, lsn: int) -> None:
        """Save the position of token ``lsn`` (never back): every transaction before it is done."""
        if lsn <= self.confirmed:
            return
        with self._cond:
            position = self._marks.get(lsn)
            for token in [t for t in self._marks if t <= lsn]:
                del self._marks[token]
        if position is None:
            return
        await self._query(self._save, (position.log_file, position.log_pos, position.gtid))
        self.confirmed, self.position = lsn, position

    async def lag_bytes(self) -> int | None:
        """Binlog bytes written after the stored position (all of the server's traffic, H4)."""
        if self.position is None:
            return None
        return lag_bytes_after(await self._query("SHOW BINARY LOGS"), self.position)

    async def retention_warning(self) -> str | None:
        rows = await self._query("SELECT @@GLOBAL.binlog_expire_logs_seconds")
        seconds = int(rows[0][0] or 0)
        if 0 < seconds < 86_400:
            return (
                f"binlog_expire_logs_seconds is {seconds}: a relay stopped longer than that finds its binlog "
                "purged and must be recovered by hand (--resume-from-now); keep at least a day"
            )
        return None

    # -- the outbox rows ---------------------------------------------------------------------------
    async def mark_delivered(self, seqs: Sequence[int]) -> None:
        for i in range(0, len(seqs), 1000):
            text, params = bind_list("s", list(seqs[i : i + 1000]))
            await self._query(self._mark.format(seqs=text), params)

    async def held_keys(self, keys: Sequence[str]) -> set[str]:
        if not keys:
            return set()
        text, params = bind_list("k", list(keys))
        return {str(r[0]) for r in await self._query(self._held.format(keys=text), params)}

    async def dead_row(self, seq: int, error: str, attempts: int, *, keep_key: bool = True) -> bool:
        sql = self._dead_row if keep_key else self._dead_row.replace("SET dead_at", "SET `key` = NULL, dead_at")
        rows = await self._query(sql, (storable(error), attempts, seq))
        return bool(rows and rows[0][0])

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
        try:
            uuid_or_none = str(uuid.UUID(id)) if id is not None else None
        except ValueError:
            uuid_or_none, error = None, f"{error} (event id {id!r:.80})"
        params = (
            uuid_or_none,
            storable(topic, 255),
            key,
            type,
            source,
            payload,
            storable(content_type, 255),
            headers,
            attempts,
            storable(error),
        )
        await self._query(self._dead_message, params)
