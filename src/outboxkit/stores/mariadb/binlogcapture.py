"""MariaDB/MySQL's log capture, ``binlog``: the relay registers as a replica and keeps its position
in a one-row table beside the outbox (:class:`~outboxkit.stores.logcapture.LogCapture`). The reader
is ``binlog.py``, the decoder ``binlogevents.py``, the position table and the recovery's database
side ``binlogpos.py``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from outboxkit.errors import ConfigurationError
from outboxkit.stores.base import TableRef
from outboxkit.stores.logcapture import CaptureSql, LogStatus, ResumePlan

if TYPE_CHECKING:
    from outboxkit.stores.mariadb.binlog import MariaDbBinlogReader
    from outboxkit.stores.mariadb.binlogevents import BinlogDecoder
    from outboxkit.stores.mariadb.binlogpos import BinlogInfo


class MariaDbBinlogCapture:
    name = "binlog"
    needs = "MariaDB or MySQL (a mysql:// or mariadb:// database)"

    def sql(self, url: str | None, ref: TableRef) -> CaptureSql:
        from outboxkit.stores.mariadb.binlogpos import binlog_ddl, binlog_sql_note

        return CaptureSql(
            "-- binlog tailing (outboxkit relay --capture binlog): the relay's position",
            binlog_ddl(ref),
            binlog_sql_note(ref),
        )

    def migrate(self, url: str, ref: TableRef) -> str:
        from outboxkit.stores.mariadb.binlogpos import migrate_binlog

        at = migrate_binlog(url, ref)
        return f"binlog position table in place; the relay tails from {at.log_file}:{at.log_pos}"

    def reader(self, url: str, ref: TableRef, *, takeover: float, slot: str | None = None) -> MariaDbBinlogReader:
        from outboxkit.stores.mariadb.binlog import MariaDbBinlogReader

        if slot is not None:
            raise ConfigurationError("the binlog has one position per outbox (its table): it takes no slot name")
        return MariaDbBinlogReader(url, ref, takeover=takeover)

    def decoder(self, ref: TableRef) -> BinlogDecoder:
        from outboxkit.stores.mariadb.binlogevents import BinlogDecoder

        return BinlogDecoder()

    def status(self, url: str, ref: TableRef) -> LogStatus:
        from outboxkit.stores.mariadb.binlogpos import binlog_info, position_table

        info = binlog_info(url, ref)
        if info is None:
            missing = f"binlog position {position_table(ref)}: missing (run `outboxkit migrate --capture binlog`)"
            return LogStatus("binlog", False, detail=missing)
        return LogStatus("binlog", True, dict(info.__dict__), _line(info), _line(info).split(": ", 1)[1])

    def drop(self, url: str, ref: TableRef) -> tuple[str, bool]:
        from outboxkit.stores.mariadb.binlogpos import drop_position, position_table

        return f"binlog position table {position_table(ref)}", drop_position(url, ref)

    def resume_plan(self, url: str, ref: TableRef) -> ResumePlan:
        from outboxkit.stores.mariadb.binlogpos import server_position, store_resume_position

        # The server's position first, then the highest seq: every row committed before the
        # position has a seq at most that (relay/resume.py drains them, then the position is stored).
        position, upto = server_position(url, ref)
        at = f"{position.log_file}:{position.log_pos}"
        return ResumePlan(
            upto,
            f"binlog {at}",
            f"the binlog from {at}",
            finish=lambda: store_resume_position(url, ref, position),
        )

    def log_only_backlog(self, url: str, ref: TableRef) -> int | None:
        return 0  # every event the binlog carries has its row in the outbox table


def _line(info: BinlogInfo) -> str:
    lag = (
        "binlog file gone: recover with --resume-from-now"
        if info.lag_bytes is None
        else f"lag {info.lag_bytes:,} bytes"
    )
    reader = f"read by connection {info.reader}" if info.reader else "no reader attached right now"
    return (
        f"log tailing (relay --capture binlog): position {info.log_file}:{info.log_pos}"
        + (f" (GTID {info.gtid})" if info.gtid else "")
        + f", saved {_age(info.saved_age_s)} ago, {lag}, {reader}"
    )


def _age(seconds: float) -> str:
    """As ``outboxkit status`` writes ages (``ops/cli.py``)."""
    for limit, unit, size in ((120, "s", 1), (7200, "m", 60), (172800, "h", 3600)):
        if seconds < limit:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds / 86400:.1f}d"
