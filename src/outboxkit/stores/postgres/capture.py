"""PostgreSQL: change capture by a row trigger (see ``outboxkit.stores.capture``).

One plpgsql function and one ``AFTER ... FOR EACH ROW`` trigger per captured table. The function
runs inside the writer's transaction, so the outbox row commits or rolls back with the change; rows
of one statement (a multi-row UPDATE) get their seqs in the order the statement changed them, and
each transaction's rows commit together, so a key's events follow its commit order (G5).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from outboxkit.errors import ConfigurationError
from outboxkit.stores.base import SyncConnection, TableRef
from outboxkit.stores.capture import TRIGGER_VERSION, CaptureSpec, literal, registry_values

# A UUIDv7 in SQL: 48 bits of Unix milliseconds over a random UUID, version bits set to 7 (the
# variant bits of gen_random_uuid() are already right). Time-ordered, like emit()'s ids.
_UUID7 = (
    "encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid()) placing"
    " substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)"
    " FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid"
)


def _name(target: TableRef, suffix: str = "") -> str:
    return f"outboxkit_capture_{target.table}{suffix}"


def _row_json(row: str, columns: Sequence[str] | None) -> str:
    """The row as jsonb: every column (``to_jsonb``, follows later ALTER TABLEs), or the listed ones."""
    if columns is None:
        return f"to_jsonb({row})"
    return "jsonb_build_object(" + ", ".join(f'{literal(c)}, {row}."{c}"' for c in columns) + ")"


class PostgresCapture:
    """:class:`~outboxkit.stores.capture.TriggerCapture` for PostgreSQL."""

    def registry_ddl(self, outbox: TableRef) -> list[str]:
        return [
            f"""CREATE TABLE IF NOT EXISTS {outbox.derived("captures")} (
    table_schema text NOT NULL,
    table_name   text NOT NULL,
    topic        text NOT NULL,
    key_column   text,
    operations   text NOT NULL,
    columns      text,
    version      integer NOT NULL,
    installed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_schema, table_name)
)"""
        ]

    def table_columns(self, conn: SyncConnection, target: TableRef) -> list[str]:
        rows = conn.execute(
            "SELECT a.attname FROM pg_attribute a WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0"
            " AND NOT a.attisdropped ORDER BY a.attnum",
            (target.qualified,),
        ).fetchall()
        if not rows:
            raise ConfigurationError(f"table {target.qualified} not found")
        return [str(r[0]) for r in rows]

    def install(self, outbox: TableRef, spec: CaptureSpec, columns: Sequence[str]) -> list[str]:
        target, fn = spec.target, TableRef(_name(spec.target), spec.target.schema).qualified
        chosen = None if spec.columns is None else columns
        key = f'{{row}}."{spec.key}"::text' if spec.key else "NULL"
        events = " OR ".join(op.upper() for op in spec.on)
        return [
            *self.remove(outbox, target),
            f"""CREATE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $capture$
-- outboxkit capture v{TRIGGER_VERSION}: {target.qualified} -> {outbox.qualified}, topic {spec.topic}
DECLARE
    op      text := lower(TG_OP);
    body    jsonb := jsonb_build_object('op', op);
    row_key text;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        body := body || jsonb_build_object('before', {_row_json("OLD", chosen)});
        row_key := {key.format(row="OLD")};
    END IF;
    IF TG_OP <> 'DELETE' THEN
        body := body || jsonb_build_object('after', {_row_json("NEW", chosen)});
        row_key := {key.format(row="NEW")};
    END IF;
    INSERT INTO {outbox.qualified} (id, topic, key, payload, content_type, headers)
    VALUES ({_UUID7}, {literal(spec.topic)}, row_key, convert_to(body::text, 'UTF8'), 'application/json',
            jsonb_build_object('operation', op));
    RETURN NULL;
END
$capture$""",
            f'CREATE TRIGGER "{_name(target)}" AFTER {events} ON {target.qualified}'
            f" FOR EACH ROW EXECUTE FUNCTION {fn}()",
        ]

    def remove(self, outbox: TableRef, target: TableRef) -> list[str]:
        fn = TableRef(_name(target), target.schema).qualified
        return [
            f'DROP TRIGGER IF EXISTS "{_name(target)}" ON {target.qualified}',
            f"DROP FUNCTION IF EXISTS {fn}()",
        ]

    def save(self, outbox: TableRef, spec: CaptureSpec) -> tuple[str, Sequence[Any]]:
        return (
            f"INSERT INTO {outbox.derived('captures')}"
            " (table_schema, table_name, topic, key_column, operations, columns, version)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (table_schema, table_name) DO UPDATE SET"
            " topic = EXCLUDED.topic, key_column = EXCLUDED.key_column, operations = EXCLUDED.operations,"
            " columns = EXCLUDED.columns, version = EXCLUDED.version, installed_at = now()",
            registry_values(spec),
        )

    def forget(self, outbox: TableRef, target: TableRef) -> tuple[str, Sequence[Any]]:
        return (
            f"DELETE FROM {outbox.derived('captures')} WHERE table_schema = %s AND table_name = %s",
            (target.schema or "", target.table),
        )

    def listing(self, outbox: TableRef) -> str:
        return (
            "SELECT table_schema, table_name, topic, key_column, operations, columns, version"
            f" FROM {outbox.derived('captures')} ORDER BY table_schema, table_name"
        )
