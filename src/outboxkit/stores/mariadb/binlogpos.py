"""The binlog relay's position: the one-row table beside the outbox, what ``migrate --capture
binlog`` and ``status`` do with it, and the steps of ``--resume-from-now`` (``relay/resume.py``).

The reader (``binlog.py``) reads and saves the position; see there for the rules it serves."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from outboxkit.core.urls import redact_url
from outboxkit.errors import ConfigurationError, SchemaError
from outboxkit.stores.base import TableRef
from outboxkit.stores.mariadb.driver import MySqlConnection, connect_sync, error_code, parse_url, translate
from outboxkit.stores.mariadb.schema import quoted


@dataclass(frozen=True)
class Position:
    """Where the relay resumes: after the transaction that ended at ``log_file``:``log_pos``."""

    log_file: str
    log_pos: int
    gtid: str | None = None  # MariaDB's GTID state there (domain-server-seq, comma-separated)


def position_table(ref: TableRef) -> str:
    return quoted(ref, "binlog")


def binlog_ddl(ref: TableRef) -> list[str]:
    """The position table (idempotent). ``migrate_binlog`` then stores the server's position."""
    return [
        f"""CREATE TABLE IF NOT EXISTS {position_table(ref)} (
    singleton  TINYINT NOT NULL PRIMARY KEY CHECK (singleton = 1),
    -- The end of the last transaction whose outbox events the broker all confirmed (G3).
    log_file   VARCHAR(255) NOT NULL,
    log_pos    BIGINT NOT NULL,
    -- MariaDB: the GTID state at that point; the relay resumes by it when set (else by file, pos).
    gtid       VARCHAR(4096),
    updated_at DATETIME(6) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"""
    ]


def binlog_sql_note(ref: TableRef) -> str:
    """What ``migrate --sql --capture binlog`` prints after the DDL: the row to add by hand."""
    return (
        "-- then one row with the server's position now (SHOW MASTER STATUS gives log_file and log_pos;\n"
        "-- on MariaDB, gtid = @@gtid_binlog_pos; MySQL: NULL). The relay tails what commits after it:\n"
        f"-- INSERT INTO {position_table(ref)} (singleton, log_file, log_pos, gtid, updated_at)\n"
        "--     VALUES (1, 'mariadb-bin.000001', 4, '0-1-100', UTC_TIMESTAMP(6));"
    )


def _server_position(conn: MySqlConnection) -> Position:
    """The server's position now. GTID first: a GTID read before the file position can only be
    older, and resuming from an older point repeats (never skips) transactions."""
    version = str(conn.execute("SELECT VERSION()").fetchone()[0])
    gtid = None
    if "mariadb" in version.lower():
        gtid = str(conn.execute("SELECT @@GLOBAL.gtid_binlog_pos").fetchone()[0]) or None
    try:
        row = conn.execute("SHOW MASTER STATUS").fetchone()
    except Exception as exc:
        if error_code(exc) != 1064:
            raise
        row = conn.execute("SHOW BINARY LOG STATUS").fetchone()  # MySQL 8.4 removed the old name
    if row is None:
        raise ConfigurationError("the binary log is off on this server: start it with log_bin (docs/log-tailing.md)")
    return Position(str(row[0]), int(row[1]), gtid)


def store_position(conn: MySqlConnection, ref: TableRef, position: Position, *, replace: bool) -> None:
    verb = "REPLACE" if replace else "INSERT IGNORE"
    conn.execute(
        f"{verb} INTO {position_table(ref)} (singleton, log_file, log_pos, gtid, updated_at)"
        " VALUES (1, %s, %s, %s, UTC_TIMESTAMP(6))",
        (position.log_file, position.log_pos, position.gtid),
    )


def migrate_binlog(url: str, ref: TableRef) -> Position:
    """Create the position table and, if it has no row yet, store the server's position now."""
    conn = connect_sync(url, label="outboxkit-migrate")
    try:
        for stmt in binlog_ddl(ref):
            conn.execute(stmt)
        store_position(conn, ref, _server_position(conn), replace=False)
        return read_position(conn, ref)
    except Exception as exc:
        raise (translate(exc, redact_url(url)) or exc) from None
    finally:
        conn.close()


def read_position(conn: MySqlConnection, ref: TableRef) -> Position:
    try:
        row = conn.execute(f"SELECT log_file, log_pos, gtid FROM {position_table(ref)} WHERE singleton = 1").fetchone()
    except Exception as exc:
        if error_code(exc) == 1146:
            row = None
        else:
            raise
    if row is None:
        raise SchemaError(
            f"no binlog position for {ref.qualified} (table {position_table(ref)}): "
            "run `outboxkit migrate --capture binlog`"
        )
    return Position(str(row[0]), int(row[1]), row[2] or None)


def lock_name(ref: TableRef, database: str) -> str:
    name = f"outboxkit-binlog:{ref.schema or database}.{ref.table}"
    # MySQL refuses lock names over 64 characters.
    return name if len(name) <= 64 else "outboxkit-binlog:" + hashlib.sha256(name.encode()).hexdigest()[:40]


def lag_bytes_after(logs: Sequence[Sequence[Any]], position: Position) -> int | None:
    """Bytes of binlog after ``position``, from ``SHOW BINARY LOGS`` (None: its file is gone)."""
    names = [str(r[0]) for r in logs]
    if position.log_file not in names:
        return None
    after = names.index(position.log_file)
    return max(0, sum(int(r[1]) for r in logs[after:]) - position.log_pos)


@dataclass(frozen=True)
class BinlogInfo:
    """What ``outboxkit status`` shows of a binlog relay's position."""

    log_file: str
    log_pos: int
    gtid: str | None
    saved_age_s: float  # since the relay last saved the position (about 1 s while it runs)
    lag_bytes: int | None  # binlog written since; None when the file is gone (purged)
    reader: int | None  # connection id of the relay holding the lock, None if none


def binlog_info(url: str, ref: TableRef) -> BinlogInfo | None:
    """The binlog position of the outbox, or None when it has none (no ``migrate --capture binlog``)."""
    conn = connect_sync(url, label="outboxkit-status")
    try:
        try:
            position = read_position(conn, ref)
        except SchemaError:
            return None
        age = conn.execute(
            f"SELECT TIMESTAMPDIFF(MICROSECOND, updated_at, UTC_TIMESTAMP(6)) FROM {position_table(ref)}"
        ).fetchone()
        logs = conn.execute("SHOW BINARY LOGS").fetchall()
        reader = conn.execute("SELECT IS_USED_LOCK(%s)", (lock_name(ref, parse_url(url).database),)).fetchone()
    except Exception as exc:
        raise (translate(exc, redact_url(url)) or exc) from None
    finally:
        conn.close()
    return BinlogInfo(
        position.log_file,
        position.log_pos,
        position.gtid,
        int(age[0] or 0) / 1e6,
        lag_bytes_after(logs, position),
        int(reader[0]) if reader and reader[0] is not None else None,
    )


def server_position(url: str, ref: TableRef) -> tuple[Position, int]:
    """The server's position now, and the outbox's highest seq read after it: every row committed
    before that position has a seq at most that high (``relay/resume.py`` drains those
    through the table relay, then stores the position with :func:`store_resume_position`)."""
    conn = connect_sync(url, label="outboxkit-binlog")
    try:
        position = _server_position(conn)
        row = conn.execute(f"SELECT COALESCE(MAX(seq), 0) FROM {quoted(ref)}").fetchone()
        return position, int(row[0])
    except Exception as exc:
        raise (translate(exc, redact_url(url)) or exc) from None
    finally:
        conn.close()


def pending_up_to(url: str, ref: TableRef, seq: int) -> int:
    """Pending outbox rows with a seq at most ``seq`` (what the drain still has to publish)."""
    conn = connect_sync(url, label="outboxkit-binlog")
    try:
        row = conn.execute(
            f"SELECT COUNT(*) FROM {quoted(ref)} WHERE delivered_at IS NULL AND dead_at IS NULL AND seq <= %s", (seq,)
        ).fetchone()
        return int(row[0])
    except Exception as exc:
        raise (translate(exc, redact_url(url)) or exc) from None
    finally:
        conn.close()


def store_resume_position(url: str, ref: TableRef, position: Position) -> None:
    """Replace the stored position, under the readers' lock (refused while a binlog relay runs)."""
    conn = connect_sync(url, label="outboxkit-binlog")
    try:
        lock = lock_name(ref, parse_url(url).database)
        if conn.execute("SELECT GET_LOCK(%s, 0)", (lock,)).fetchone()[0] != 1:
            raise ConfigurationError(
                f"a binlog relay of {ref.qualified} is running (it holds {lock}): stop it before --resume-from-now"
            )
        for stmt in binlog_ddl(ref):
            conn.execute(stmt)
        store_position(conn, ref, position, replace=True)
    except ConfigurationError:
        raise
    except Exception as exc:
        raise (translate(exc, redact_url(url)) or exc) from None
    finally:
        conn.close()


def drop_position(url: str, ref: TableRef) -> bool:
    """Drop the position table, under the readers' lock (refused while a binlog relay runs); False
    when there was none."""
    conn = connect_sync(url, label="outboxkit-binlog")
    try:
        lock = lock_name(ref, parse_url(url).database)
        if conn.execute("SELECT GET_LOCK(%s, 0)", (lock,)).fetchone()[0] != 1:
            raise ConfigurationError(f"a binlog relay of {ref.qualified} is running (it holds {lock}): stop it first")
        try:
            read_position(conn, ref)
        except SchemaError:
            return False
        conn.execute(f"DROP TABLE IF EXISTS {position_table(ref)}")
        return True
    except ConfigurationError:
        raise
    except Exception as exc:
        raise (translate(exc, redact_url(url)) or exc) from None
    finally:
        conn.close()
