"""The streaming reader of a replication slot (``relay --capture wal``, the default).

The relay reads the slot through PostgreSQL's streaming replication protocol instead of polling it
with SQL functions (``wal.PostgresWalReader``, the fallback): a ``replication=database``
connection runs ``START_REPLICATION SLOT ... LOGICAL`` with pgoutput, and the server pushes each
transaction the moment it commits (no round of peeks, no re-decoding of the WAL a peek did not
consume). The stream is read on the event loop at the libpq level (psycopg 3's ``pgconn``:
``get_copy_data``/``put_copy_data`` on a non-blocking socket watched by ``loop.add_reader``), so
reading goes on while the relay publishes the previous round: the next round is waiting when it
is done. No second driver (psycopg2's ``LogicalReplicationConnection``): docs/log-tailing.md has
the measurement behind the choice.

How the protocol maps to the relay's reader (``relay.tailbase.TailReader``):

* ``peek(limit)`` hands out the whole units received since the previous one (``walframe``: a
  round never ends inside a transaction); while none has come, it waits for one up to ``wait``
  seconds (``waits_in_peek``: the relay does not pause between peeks, the wait is the latency);
* ``upto`` is the end of the last unit handed out, or, with nothing pending and no transaction
  open, the WAL end of the server's latest keepalive (the H4 heartbeat: an outbox with no traffic
  retains no WAL, ``walframe`` explains why that is safe);
* ``advance(lsn)`` sends a standby status update reporting ``lsn`` as flushed: the relay calls it
  only once every event before ``lsn`` was confirmed by the broker and marked (G3). Nothing else
  ever reports a higher position: a keepalive the server asks a reply to, and the periodic status
  update that keeps the walsender from timing out, repeat the last confirmed one;
* a failed round closes the reader; the next one starts again at the slot's confirmed position
  (``START_REPLICATION ... 0/0`` starts there), which is what narrowing (``core.narrowing``)
  relies on: the same round is read again.

Why the advisory-lock session stays beside the stream. A slot serves one walsender at a time,
which alone would keep two relays from streaming together; but three guarantees need a plain SQL
session next to it, so the reader keeps the fallback reader's session (its lock, its
``idle_session_timeout``, its marks and dead letters) and adds the stream:

* marks, dead letters and held keys are SQL, and a replication connection in COPY mode runs none;
* trust (H6): the relay must stop publishing as soon as it cannot be sure it still holds the slot.
  That takes a round trip that proves the session alive *now*. The stream cannot give one: after
  a pause (SIGSTOP), the socket still holds what the server sent before it, and a keepalive that
  answers "reply requested" cannot be told from one sent unasked before the pause. A ``SELECT 1``
  on the locked session can: ``trusted()`` is the fallback reader's rule, unchanged;
* ``relay --resume-from-now`` and a standby wait on the same lock as before, so they keep working
  against either reader.

The stream follows the lock: ``try_lock`` takes the lock, then starts the stream. A standby that
got the lock while the old walsender still holds the slot (its relay paused: the lock's session
ended first) stands by until the walsender goes; it goes within the takeover time, because this
reader sets ``wal_sender_timeout`` (a per-connection setting) to it, and answers keepalives while
it runs.

What the stream changes, known and documented: the server keeps a slot's confirmed position from
status updates in memory and writes it at its next checkpoint of the slot; after a crash or an
immediate shutdown of the database, the slot may restart a little earlier than the relay had
confirmed, so events since then are published again (at-least-once, G6: duplicates, never a loss).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import struct
import time
from typing import Any

import psycopg
from psycopg import pq
from psycopg.pq.abc import PGconn, PGresult

from outboxkit.errors import UnavailableError
from outboxkit.stores.base import TableRef
from outboxkit.stores.postgres.connection import libpq_url
from outboxkit.stores.postgres.pgoutput import parse_lsn
from outboxkit.stores.postgres.store import translate
from outboxkit.stores.postgres.wal import _CONFIRMED, _SLOT_GONE_CODES, PostgresWalReader
from outboxkit.stores.postgres.walframe import Framer

# Seconds between the Unix epoch and PostgreSQL's (2000-01-01): status updates carry PG time.
_PG_EPOCH_OFFSET = 946_684_800
# 'w' XLogData: kind, data start, WAL end, send time, then the pgoutput message.
_XLOG_HEADER = 25
_IN_USE = "55006"  # object_in_use: the slot is active for another walsender


def _status(lsn: int, *, reply: bool) -> bytes:
    """A standby status update: written, flushed and applied all ``lsn`` (0 reports nothing)."""
    now = int((time.time() - _PG_EPOCH_OFFSET) * 1_000_000)
    return b"r" + struct.pack("!QQQqB", lsn, lsn, lsn, now, 1 if reply else 0)


class PostgresWalStream(PostgresWalReader):
    """The relay's reader of a slot by streaming replication (see the module docstring): the
    fallback reader's locked SQL session for the lock, trust, marks and dead letters, plus a
    replication connection for the changes. Not thread-safe: one event loop."""

    #: ``peek`` waits for the first change itself: the relay need not pause between peeks.
    waits_in_peek = True

    def __init__(
        self,
        url: str,
        ref: TableRef,
        *,
        slot: str | None = None,
        takeover: float = 6.0,
        binary: bool = True,
        wait: float = 0.2,
        buffered: int = 100_000,
    ) -> None:
        super().__init__(url, ref, slot=slot, takeover=takeover)
        self.binary = binary  # ask for binary column values where the server can (14+)
        self.wait = wait  # the longest a peek waits for a first change
        self.buffered = buffered  # messages held before reading pauses (the server then waits)
        self._stream: psycopg.AsyncConnection[Any] | None = None
        self._pg: PGconn | None = None
        self._fd = -1
        self._framer = Framer(0)
        self._failure: BaseException | None = None
        self._wake = asyncio.Event()
        self._reading = False
        self._writing = False
        self._timer: asyncio.TimerHandle | None = None
        self._reported = 0  # 0 until the confirmed position was read under the slot: report nothing

    # -- the lock, then the stream -----------------------------------------------------------------
    async def try_lock(self) -> bool:
        if self._pg is not None:
            return True
        if not await super().try_lock():
            return False
        # Made before the stream starts: what the server sends at once goes into it.
        self._framer = Framer(self.confirmed)
        if not await self._start():
            return False  # the slot's previous walsender is still going: stand by
        # Under the slot now: nobody else can move its position; read it once more (the previous
        # holder's last status update may have landed after the read under the lock). The stream
        # starts there, so nothing received is before it.
        rows = await self._query(_CONFIRMED, [self.slot])
        if rows and rows[0][0] is not None:
            self.confirmed = max(self.confirmed, parse_lsn(rows[0][0]))
        self._framer.rebase(self.confirmed)
        self._reported = self.confirmed
        return True

    async def _start(self) -> bool:
        if not re.fullmatch(r"[a-z0-9_]+", self.slot):
            raise UnavailableError(f"replication slot name {self.slot!r} is not a plain slot name")
        ms = max(1000, int(self.takeover * 1000))
        try:
            conn = await psycopg.AsyncConnection.connect(
                libpq_url(self.url),
                autocommit=True,
                connect_timeout=5,
                application_name="outboxkit-wal",
                replication="database",
                # Per connection (a user setting): a walsender whose relay stopped answering ends
                # after the takeover time, freeing the slot for the standby that holds the lock.
                options=f"-c wal_sender_timeout={ms}",
            )
        except psycopg.Error as exc:
            raise translate(self.url, exc) from None
        self._stream = conn
        pg = conn.pgconn
        options = ["proto_version '1'", f"publication_names '{self.slot}'", "messages 'true'"]
        if self.binary and pg.server_version >= 140000:
            options.append("binary 'true'")
        # 0/0: the server starts at the slot's confirmed position (never before it).
        command = f'START_REPLICATION SLOT "{self.slot}" LOGICAL 0/0 ({", ".join(options)})'
        try:
            result = await _execute(pg, command.encode())
        except psycopg.Error as exc:
            await self._close_stream()
            raise translate(self.url, exc) from None
        if result.status != pq.ExecStatus.COPY_BOTH:
            error = psycopg.errors.error_from_result(result, encoding="utf-8")
            await self._close_stream()
            if error.sqlstate == _IN_USE:
                return False
            if error.sqlstate in _SLOT_GONE_CODES:
                await self._raise_if_slot_gone()
            raise translate(self.url, error)
        pg.nonblocking = 1
        self._pg = pg
        self._fd = pg.socket  # kept: libpq refuses to tell it once the connection is lost
        self._failure = None
        loop = asyncio.get_running_loop()
        self._resume_reading()
        self._timer = loop.call_later(self._status_every, self._periodic)
        return True

    @property
    def _status_every(self) -> float:
        # Well inside wal_sender_timeout (= takeover): the walsender stays while the relay runs,
        # even while reading pauses (the server reads status updates while it waits to send).
        return max(0.1, self.takeover / 4)

    # -- the relay's reads -------------------------------------------------------------------------
    async def peek(self, limit: int) -> tuple[list[bytes], int]:
        """The whole units received since the last peek (at least ``limit`` messages if that many
        are waiting, never cutting a unit), and the position all of them are before."""
        await self._check()
        if time.monotonic() - self.last_ok > self.takeover / 8:
            await self.ping()  # the locked session's proof (trusted()), and it never goes idle
        if not self._framer.fresh():
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.wait)
            await self._check()
        messages, upto = self._framer.take(limit)
        if not self._reading and self._framer.count < self.buffered // 2:
            self._resume_reading()
        return messages, upto

    async def advance(self, lsn: int) -> None:
        """Report ``lsn`` as flushed (never back): every event before it is done (G3)."""
        if lsn <= self.confirmed:
            return
        await self._check()
        self.confirmed = lsn
        self._reported = lsn
        self._send(_status(lsn, reply=False))
        await self._check()

    async def ping(self) -> None:
        await super().ping()
        await self._check()

    async def close(self) -> None:
        await self._close_stream()
        await super().close()

    # -- the stream, on the event loop ---------------------------------------------------------------
    def _readable(self) -> None:
        pg = self._pg
        if pg is None:
            return
        woke = False
        framer = self._framer
        try:
            pg.consume_input()
            while True:
                n, buffer = pg.get_copy_data(1)
                if n > 0:
                    kind = buffer[0]
                    if kind == 0x77:  # 'w' XLogData
                        woke = framer.data(bytes(buffer[_XLOG_HEADER:])) or woke
                    elif kind == 0x6B:  # 'k' primary keepalive: WAL end, send time, reply requested
                        woke = framer.keepalive(int.from_bytes(buffer[1:9])) or woke
                        if buffer[17]:
                            self._send(_status(self._reported, reply=False))
                elif n == 0:
                    break
                else:
                    self._fail(self._ended(pg))
                    return
        except psycopg.Error as exc:
            self._fail(exc)
            return
        if woke:
            self._wake.set()
        if framer.count >= self.buffered:
            self._pause_reading()

    def _ended(self, pg: PGconn) -> BaseException:
        """The server ended the stream: its error if it sent one."""
        result = pg.get_result()
        if result is not None and result.status == pq.ExecStatus.FATAL_ERROR:
            return psycopg.errors.error_from_result(result, encoding="utf-8")
        return psycopg.OperationalError("the server ended the replication stream")

    def _send(self, message: bytes) -> None:
        pg = self._pg
        if pg is None or self._failure is not None:
            return
        try:
            if pg.put_copy_data(message) != 1:
                raise psycopg.OperationalError(f"sending a status update failed: {pg.get_error_message()}")
            self._flush()
        except psycopg.Error as exc:
            self._fail(exc)

    def _flush(self) -> None:
        pg = self._pg
        if pg is None:
            return
        try:
            pending = pg.flush()
        except psycopg.Error as exc:
            self._fail(exc)
            return
        loop = asyncio.get_running_loop()
        if pending and not self._writing:
            loop.add_writer(self._fd, self._flush)
            self._writing = True
        elif not pending and self._writing:
            loop.remove_writer(self._fd)
            self._writing = False

    def _periodic(self) -> None:
        self._send(_status(self._reported, reply=False))
        if self._pg is not None and self._failure is None:
            self._timer = asyncio.get_running_loop().call_later(self._status_every, self._periodic)

    def _pause_reading(self) -> None:
        if self._reading and self._pg is not None:
            asyncio.get_running_loop().remove_reader(self._fd)
            self._reading = False

    def _resume_reading(self) -> None:
        if not self._reading and self._pg is not None and self._failure is None:
            asyncio.get_running_loop().add_reader(self._fd, self._readable)
            self._reading = True
            self._readable()  # what libpq already holds (it came with the start's reply, or before)

    def _fail(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc
        self._pause_reading()
        self._stop_writing()
        self._wake.set()

    def _stop_writing(self) -> None:
        if self._writing and self._pg is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_writer(self._fd)
        self._writing = False

    async def _check(self) -> None:
        """Raise what ended the stream: a slot that is gone (``PositionLostError``), else an outage
        to reconnect from."""
        failure = self._failure
        if failure is None:
            if self._pg is None:
                raise UnavailableError(f"slot {self.slot}: the replication stream is not started")
            return
        if isinstance(failure, psycopg.Error):
            if failure.sqlstate in _SLOT_GONE_CODES:
                await self._raise_if_slot_gone()
            raise translate(self.url, failure) from None
        raise UnavailableError(f"slot {self.slot}: the replication stream failed: {failure}")

    async def _close_stream(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pause_reading()
        self._stop_writing()
        if self._pg is not None and self._failure is None:
            with contextlib.suppress(psycopg.Error, OSError, TimeoutError):
                async with asyncio.timeout(1.0):
                    await _end_copy(self._pg, self._fd)
        self._pg = None
        if self._stream is not None:
            conn, self._stream = self._stream, None
            with contextlib.suppress(Exception):
                await conn.close()


async def _execute(pg: PGconn, command: bytes) -> PGresult:
    """Send one simple-protocol command and wait for its first result, on the event loop."""
    pg.nonblocking = 1
    pg.send_query(command)
    loop = asyncio.get_running_loop()
    while pg.flush():
        await _ready(loop, pg.socket, write=True)
    while True:
        pg.consume_input()
        if not pg.is_busy():
            break
        await _ready(loop, pg.socket, write=False)
    result = pg.get_result()
    if result is None:
        raise psycopg.OperationalError("no reply to START_REPLICATION")
    if result.status != pq.ExecStatus.COPY_BOTH:
        while pg.get_result() is not None:  # drain to the end of the command
            pass
    return result


async def _end_copy(pg: PGconn, fd: int) -> None:
    """End the stream the way the protocol has it (CopyDone, then the command's end): the server
    releases the slot before it completes the command, so whoever reads the slot next (a standby,
    ``slot drop``) finds it free at once instead of after the walsender's exit. What the server
    still sends meanwhile is dropped: it is after the confirmed position, read again next time."""
    loop = asyncio.get_running_loop()
    pg.put_copy_end()
    while pg.flush():
        await _ready(loop, fd, write=True)
    while True:
        pg.consume_input()
        n, _ = pg.get_copy_data(1)
        if n == -1:
            break
        if n == 0:
            await _ready(loop, fd, write=False)
    while True:
        pg.consume_input()
        if pg.is_busy():
            await _ready(loop, fd, write=False)
        elif pg.get_result() is None:
            return


async def _ready(loop: asyncio.AbstractEventLoop, fd: int, *, write: bool) -> None:
    future: asyncio.Future[None] = loop.create_future()

    def done() -> None:
        if not future.done():
            future.set_result(None)

    (loop.add_writer if write else loop.add_reader)(fd, done)
    try:
        await asyncio.wait_for(future, 10)
    finally:
        (loop.remove_writer if write else loop.remove_reader)(fd)
