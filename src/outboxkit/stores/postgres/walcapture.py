"""PostgreSQL's log capture, ``wal``: a logical replication slot and its publication per outbox
(:class:`~outboxkit.stores.logcapture.LogCapture`). The reader is ``wal.py``, the decoder
``walevents.py``, the slot's DDL ``walddl.py``, the recovery's database side ``walrecover.py``.

psycopg is imported only when a method connects: ``migrate --sql --capture wal`` prints the DDL on a
machine without it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from outboxkit.errors import ConfigurationError
from outboxkit.stores.base import TableRef
from outboxkit.stores.logcapture import CaptureSql, LogStatus, ResumePlan

if TYPE_CHECKING:
    from outboxkit.stores.postgres.wal import PostgresWalReader, SlotInfo
    from outboxkit.stores.postgres.walevents import Decoder


class PostgresWalCapture:
    name = "wal"
    needs = "PostgreSQL (a postgresql:// database)"

    def sql(self, url: str | None, ref: TableRef) -> CaptureSql:
        from outboxkit.stores.postgres.walddl import database_of, wal_ddl

        if not url:
            raise ConfigurationError("--sql --capture wal needs --db URL: the slot's name includes the database")
        return CaptureSql(
            "-- logical decoding (outboxkit relay --capture wal); run outside a transaction",
            wal_ddl(ref, database_of(url)),
        )

    def migrate(self, url: str, ref: TableRef) -> str:
        from outboxkit.stores.postgres.wal import migrate_wal

        return f"replication slot and publication {migrate_wal(url, ref)} are in place"

    def reader(self, url: str, ref: TableRef, *, takeover: float, slot: str | None = None) -> PostgresWalReader:
        from outboxkit.stores.postgres.wal import make_wal_reader

        return make_wal_reader(url, ref, slot=slot, takeover=takeover)

    def decoder(self, ref: TableRef) -> Decoder:
        from outboxkit.stores.postgres.walevents import Decoder

        return Decoder(ref)

    def status(self, url: str, ref: TableRef) -> LogStatus:
        from outboxkit.stores.postgres.wal import resolve_slot, slot_info

        info = slot_info(url, resolve_slot(url, ref))
        return LogStatus(
            "slot",
            info.exists,
            dict(info.__dict__),
            _line(info),
            _detail(info),
            (
                "warning: max_slot_wal_keep_size is unlimited (-1): a stalled relay makes PostgreSQL keep WAL "
                "until the disk is full; set it (e.g. ALTER SYSTEM SET max_slot_wal_keep_size = '10GB')"
            )
            if info.exists and info.max_slot_wal_keep_size_mb < 0
            else None,
        )

    def drop(self, url: str, ref: TableRef) -> tuple[str, bool]:
        from outboxkit.stores.postgres.wal import drop_slot, resolve_slot

        name = resolve_slot(url, ref)
        return f"slot {name}", drop_slot(url, ref, name)

    def resume_plan(self, url: str, ref: TableRef) -> ResumePlan:
        from outboxkit.stores.postgres.walrecover import recreate_slot

        made = recreate_slot(url, ref)
        tail_from = f"slot {made.slot} from {made.start}"
        if made.healthy:
            return ResumePlan(None, f"slot {made.slot} is healthy at {made.start}", tail_from)
        lost_from = made.lost_from or "the old slot's last confirmed position (unknown: the slot was dropped)"
        return ResumePlan(
            made.upto,
            f"new slot {made.slot} starts at {made.start}",
            tail_from,
            f"table-less events (MessageOutbox) committed between {lost_from} and {made.start} were only in "
            "the lost log and are not recoverable",
        )

    def log_only_backlog(self, url: str, ref: TableRef) -> int | None:
        """This outbox's table-less events (``MessageOutbox``) still in the slot."""
        import psycopg

        from outboxkit.core.walmessage import prefix_for
        from outboxkit.stores.postgres.connection import libpq_url
        from outboxkit.stores.postgres.pgoutput import Message, decode
        from outboxkit.stores.postgres.wal import resolve_slot

        name, prefix = resolve_slot(url, ref), prefix_for(ref.table, ref.schema)
        # Messages only ('M' records): the rows of the outbox table are counted by the table.
        sql = (
            "SELECT data FROM pg_logical_slot_peek_binary_changes(%s, NULL, NULL, 'proto_version', '1',"
            " 'publication_names', %s, 'messages', 'true') WHERE substr(data, 1, 1) = 'M'::bytea"
        )
        try:
            with psycopg.connect(libpq_url(url), autocommit=True, connect_timeout=5) as conn:
                rows = conn.execute(sql.encode(), [name, name]).fetchall()
        except psycopg.Error:
            return _streamed(url, name)  # a slot serves one reader at a time: a relay holds it
        _TARGETS.pop((url, name), None)
        return sum(
            1 for (data,) in rows if (m := decode(bytes(data))) and isinstance(m, Message) and m.prefix == prefix
        )


#: (url, slot) -> the WAL flush position taken at the first :func:`_streamed` call of a wait.
_TARGETS: dict[tuple[str, str], int] = {}


def _streamed(url: str, slot: str) -> int | None:
    """The backlog while a relay holds the slot (a streaming relay always does), which no peek can
    read: 1 until the slot's confirmed position passes the WAL flush position taken at the first
    such call of a wait (every event committed before it is then published), then 0; None when the
    database cannot say. Callers poll it until 0 (the lab's settle), hence the remembered target:
    the flush position itself moves with every other writer on the server."""
    from outboxkit.errors import OutboxkitError
    from outboxkit.stores.postgres.wal import slot_passed, wal_flush_position

    try:
        if (url, slot) not in _TARGETS:
            _TARGETS[(url, slot)] = wal_flush_position(url)
        if not slot_passed(url, slot, _TARGETS[(url, slot)]):
            return 1
    except OutboxkitError:
        return None  # the database is down: the wait goes on
    del _TARGETS[(url, slot)]
    return 0


def _line(info: SlotInfo) -> str:
    seconds = "-" if info.lag_seconds is None else f"{info.lag_seconds:.1f}s"
    reader = f"read by pid {info.active_pid}" if info.active_pid else "no reader attached right now"
    return (
        f"log tailing (relay --capture wal): slot {info.name} lag {info.lag_bytes or 0:,} bytes / {seconds}, "
        f"wal_status {info.wal_status}, {reader}"
        + ("; max_slot_wal_keep_size is unlimited (H4)" if info.max_slot_wal_keep_size_mb < 0 else "")
        + ("; invalidated: recover with relay --capture wal --resume-from-now" if info.wal_status == "lost" else "")
    )


def _detail(info: SlotInfo) -> str:
    if not info.exists:
        return f"slot {info.name}: missing (run `outboxkit migrate --capture wal`)"
    reader = f"read by pid {info.active_pid}" if info.active_pid else "no reader attached right now"
    seconds = "-" if info.lag_seconds is None else f"{info.lag_seconds:.1f}s"
    return (
        f"slot {info.name}: confirmed {info.confirmed_lsn}, lag {info.lag_bytes} bytes / {seconds}, "
        f"wal_status {info.wal_status}, {reader}"
        + (
            "; invalidated: recover with `outboxkit relay --capture wal --resume-from-now`"
            if info.wal_status == "lost"
            else ""
        )
    )
