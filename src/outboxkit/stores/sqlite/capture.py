"""SQLite: change capture by row triggers (see ``outboxkit.stores.capture``).

One ``AFTER <op> ... FOR EACH ROW`` trigger per captured operation. SQLite runs one writer at a
time and the trigger runs inside the writer's transaction, so outbox rows follow commit order.
The captured columns are listed in the trigger (there is no row-to-JSON function): after ``ALTER
TABLE``, run ``outboxkit migrate`` (or ``capture add`` again) to pick up new columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from outboxkit.errors import ConfigurationError
from outboxkit.stores.base import SyncConnection, TableRef
from outboxkit.stores.capture import OPERATIONS, TRIGGER_VERSION, CaptureSpec, literal, registry_values

# A UUIDv7 in SQL: 48 bits of Unix milliseconds (julianday has sub-millisecond resolution), version
# 7, the RFC 4122 variant, random bits from randomblob().
_MS = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"
_UUID7 = (
    "(SELECT lower(printf('%08x-%04x-7', ms >> 16, ms & 65535) || substr(hex(randomblob(2)), 2) || '-'"
    " || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(hex(randomblob(2)), 2) || '-'"
    f" || hex(randomblob(6))) FROM (SELECT {_MS} AS ms))"
)


def _trigger(target: TableRef, op: str) -> str:
    return f'"okc_{target.table}_{op}"'


def _row_json(row: str, columns: Sequence[str]) -> str:
    return "json_object(" + ", ".join(f'{literal(c)}, {row}."{c}"' for c in columns) + ")"


class SqliteCapture:
    """:class:`~outboxkit.stores.capture.TriggerCapture` for SQLite."""

    def registry_ddl(self, outbox: TableRef) -> list[str]:
        return [
            f"""CREATE TABLE IF NOT EXISTS {outbox.derived("captures")} (
    table_schema TEXT NOT NULL,
    table_name   TEXT NOT NULL,
    topic        TEXT NOT NULL,
    key_column   TEXT,
    operations   TEXT NOT NULL,
    columns      TEXT,
    version      INTEGER NOT NULL,
    installed_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (table_schema, table_name)
)"""
        ]

    def table_columns(self, conn: SyncConnection, target: TableRef) -> list[str]:
        if target.schema:
            raise ConfigurationError("SQLite has no schemas; leave the table's schema unset")
        rows = conn.execute("SELECT name FROM pragma_table_info(?) ORDER BY cid", (target.table,)).fetchall()
        if not rows:
            raise ConfigurationError(f"table {target.qualified} not found")
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
            key = f'CAST({row}."{spec.key}" AS TEXT)' if spec.key else "NULL"
            statements.append(
                f"""CREATE TRIGGER {_trigger(target, op)} AFTER {op.upper()} ON {target.qualified} FOR EACH ROW
BEGIN
    -- outboxkit capture v{TRIGGER_VERSION}: {op} on {target.qualified} -> {outbox.qualified}, topic {spec.topic}
    INSERT INTO {outbox.qualified} (id, topic, key, payload, content_type, headers)
    VALUES ({_UUID7}, {literal(spec.topic)}, {key}, CAST(json_object({", ".join(parts)}) AS BLOB),
        'application/json', json_object('operation', {literal(op)}));
END"""
            )
        return statements

    def remove(self, outbox: TableRef, target: TableRef) -> list[str]:
        return [f"DROP TRIGGER IF EXISTS {_trigger(target, op)}" for op in OPERATIONS]

    def save(self, outbox: TableRef, spec: CaptureSpec) -> tuple[str, Sequence[Any]]:
        return (
            f"INSERT INTO {outbox.derived('captures')}"
            " (table_schema, table_name, topic, key_column, operations, columns, version)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (table_schema, table_name) DO UPDATE SET"
            " topic = excluded.topic, key_column = excluded.key_column, operations = excluded.operations,"
            " columns = excluded.columns, version = excluded.version,"
            " installed_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
            registry_values(spec),
        )

    def forget(self, outbox: TableRef, target: TableRef) -> tuple[str, Sequence[Any]]:
        return (
            f"DELETE FROM {outbox.derived('captures')} WHERE table_schema = ? AND table_name = ?",
            (target.schema or "", target.table),
        )

    def listing(self, outbox: TableRef) -> str:
        return (
            "SELECT table_schema, table_name, topic, key_column, operations, columns, version"
            f" FROM {outbox.derived('captures')} ORDER BY table_schema, table_name"
        )
