"""MariaDB/MySQL: change capture by row triggers (see ``outboxkit.stores.capture``).

One ``AFTER <op> ... FOR EACH ROW`` trigger per captured operation (this database allows one event
per trigger). Each runs inside the writer's transaction, so the outbox row commits or rolls back
with the change; a multi-row UPDATE inserts its outbox rows in the order it changed the rows, and
``AUTO_INCREMENT`` hands out their seqs in that order, so a key's events follow commit order (G5).

There is no row-to-JSON function here: the captured columns are listed in the trigger when it is
created. After ``ALTER TABLE``, run ``outboxkit migrate`` (or ``capture add`` again) to pick up new
columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from outboxkit.errors import ConfigurationError
from outboxkit.stores.base import SyncConnection, TableRef
from outboxkit.stores.capture import OPERATIONS, TRIGGER_VERSION, CaptureSpec, literal, registry_values
from outboxkit.stores.mariadb.schema import Q, quoted

# A UUIDv7 in SQL (MariaDB before 11.7 has no UUID_v7()): 48 bits of Unix milliseconds, version 7,
# the RFC 4122 variant, and 74 random bits from hashes of UUID() and RAND().
_UUID7 = """LOWER(CONCAT(
        LPAD(HEX(ms >> 16), 8, '0'), '-', LPAD(HEX(ms & 65535), 4, '0'), '-7',
        SUBSTR(MD5(CONCAT(UUID(), RAND())), 1, 3), '-',
        SUBSTR('89ab', 1 + FLOOR(RAND() * 4), 1), SUBSTR(MD5(CONCAT(RAND(), UUID())), 1, 3), '-',
        SUBSTR(MD5(CONCAT(UUID(), RAND(), '#')), 1, 12)))"""


def _trigger(target: TableRef, op: str) -> str:
    name = f"{Q}okc_{target.table}_{op}{Q}"
    return f"{Q}{target.schema}{Q}.{name}" if target.schema else name


def _row_json(row: str, columns: Sequence[str]) -> str:
    return "JSON_OBJECT(" + ", ".join(f"{literal(c)}, {row}.{Q}{c}{Q}" for c in columns) + ")"


class MariaDbCapture:
    """:class:`~outboxkit.stores.capture.TriggerCapture` for MariaDB/MySQL."""

    def registry_ddl(self, outbox: TableRef) -> list[str]:
        return [
            f"""CREATE TABLE IF NOT EXISTS {quoted(outbox, "captures")} (
    table_schema VARCHAR(64) NOT NULL,
    table_name   VARCHAR(64) NOT NULL,
    topic        VARCHAR(255) NOT NULL,
    key_column   VARCHAR(64),
    operations   VARCHAR(32) NOT NULL,
    columns      TEXT,
    version      INT NOT NULL,
    installed_at DATETIME(6) NOT NULL DEFAULT (UTC_TIMESTAMP(6)),
    PRIMARY KEY (table_schema, table_name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"""
        ]

    def table_columns(self, conn: SyncConnection, target: TableRef) -> list[str]:
        rows = conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = COALESCE(%s, DATABASE())"
            " AND table_name = %s ORDER BY ordinal_position",
            (target.schema, target.table),
        ).fetchall()
        if not rows:
            raise ConfigurationError(f"table {target.quoted(Q)} not found")
        return [str(r[0]) for r in rows]

    def install(self, outbox: TableRef, spec: CaptureSpec, columns: Sequence[str]) -> list[str]:
        target = spec.target
        statements = self.remove(outbox, target)
        for op in spec.on:
            parts = [f"'op', {literal(op)}"]
            if op != "insert":
                parts.append(f"'before', {_row_json('OLD', columns)}")
            if op != "delete":
                parts.append(f"'after', {_row_json('NEW', columns)}")
            row = "OLD" if op == "delete" else "NEW"
            key = f"CAST({row}.{Q}{spec.key}{Q} AS CHAR)" if spec.key else "NULL"
            statements.append(
                f"""CREATE TRIGGER {_trigger(target, op)} AFTER {op.upper()} ON {target.quoted(Q)} FOR EACH ROW
BEGIN
    -- outboxkit capture v{TRIGGER_VERSION}: {op} on {target.quoted(Q)} -> {quoted(outbox)}, topic {spec.topic}
    DECLARE ms BIGINT DEFAULT FLOOR(UNIX_TIMESTAMP(SYSDATE(6)) * 1000);
    INSERT INTO {quoted(outbox)} (id, topic, `key`, payload, content_type, headers)
    VALUES ({_UUID7}, {literal(spec.topic)}, {key},
        CONVERT(JSON_OBJECT({", ".join(parts)}) USING utf8mb4), 'application/json',
        JSON_OBJECT('operation', {literal(op)}));
END"""
            )
        return statements

    def remove(self, outbox: TableRef, target: TableRef) -> list[str]:
        return [f"DROP TRIGGER IF EXISTS {_trigger(target, op)}" for op in OPERATIONS]

    def save(self, outbox: TableRef, spec: CaptureSpec) -> tuple[str, Sequence[Any]]:
        return (
            f"INSERT INTO {quoted(outbox, 'captures')}"
            " (table_schema, table_name, topic, key_column, operations, columns, version)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s) ON DUPLICATE KEY UPDATE topic = VALUES(topic),"
            " key_column = VALUES(key_column), operations = VALUES(operations), columns = VALUES(columns),"
            " version = VALUES(version), installed_at = UTC_TIMESTAMP(6)",
            registry_values(spec),
        )

    def forget(self, outbox: TableRef, target: TableRef) -> tuple[str, Sequence[Any]]:
        return (
            f"DELETE FROM {quoted(outbox, 'captures')} WHERE table_schema = %s AND table_name = %s",
            (target.schema or "", target.table),
        )

    def listing(self, outbox: TableRef) -> str:
        return (
            "SELECT table_schema, table_name, topic, key_column, operations, columns, version"
            f" FROM {quoted(outbox, 'captures')} ORDER BY table_schema, table_name"
        )
