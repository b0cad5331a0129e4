"""PostgreSQL: the outbox's DDL and INSERT text. No driver here: ``outboxkit migrate --sql`` prints
it on a machine without psycopg (a DBA's laptop, a CI job that only renders the migration)."""

from __future__ import annotations

from outboxkit.stores.base import BUCKETS, SCHEMA_VERSION, TableRef
from outboxkit.stores.postgres.wake import trigger_ddl


class PostgresSchema:
    """DDL and INSERT text for PostgreSQL 13+."""

    def ddl(self, ref: TableRef, *, notify: bool = True) -> list[str]:
        t = ref.qualified
        stmts = []
        if ref.schema:
            stmts.append(f'CREATE SCHEMA IF NOT EXISTS "{ref.schema}"')
        stmts += [
            f"""CREATE TABLE IF NOT EXISTS {t} (
    -- Relay order. GENERATED ALWAYS: writers cannot choose it.
    seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id           uuid NOT NULL DEFAULT gen_random_uuid(),
    topic        text NOT NULL,
    key          text,
    type         text,
    source       text,
    payload      bytea NOT NULL,
    content_type text NOT NULL DEFAULT 'application/json',
    headers      jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    attempts     integer NOT NULL DEFAULT 0,
    last_error   text,
    delivered_at timestamptz,
    dead_at      timestamptz
)""",
            # The relay's only scan. Partial, so delivered rows (kept for replay) cost it nothing.
            f"CREATE INDEX IF NOT EXISTS {ref.index_name('pending')} ON {t} (seq) "
            "WHERE delivered_at IS NULL AND dead_at IS NULL",
            # Keys held behind a dead letter (H5); empty in normal operation, so free to keep. A
            # hash index: it holds a key's hash, not the key, so it takes a key of any length (a
            # btree refuses index rows over about 2,700 bytes, and the dead letter of a row with a
            # long key would fail forever, H13). Equality is all the hold needs. Earlier versions
            # made a btree under the old name: dropped here (idempotent), the hash one built anew.
            f"DROP INDEX IF EXISTS {ref.derived('dead_keys')}",
            f"CREATE INDEX IF NOT EXISTS {ref.index_name('dead_key_hash')} ON {t} USING hash (key)"
            " WHERE dead_at IS NOT NULL",
            f"""CREATE TABLE IF NOT EXISTS {ref.derived("meta")} (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    schema_version integer NOT NULL
)""",
            f"INSERT INTO {ref.derived('meta')} (schema_version) VALUES ({SCHEMA_VERSION}) "
            f"ON CONFLICT (singleton) DO UPDATE SET schema_version = EXCLUDED.schema_version",
            # Many relays share the outbox by leasing buckets of keys (schema version 2).
            f"""CREATE TABLE IF NOT EXISTS {ref.derived("leases")} (
    bucket     smallint PRIMARY KEY,
    owner      text,
    epoch      bigint NOT NULL DEFAULT 0,
    expires_at timestamptz
)""",
            f"INSERT INTO {ref.derived('leases')} (bucket) SELECT generate_series(0, {BUCKETS - 1}) "
            "ON CONFLICT (bucket) DO NOTHING",
            f"""CREATE TABLE IF NOT EXISTS {ref.derived("relays")} (
    owner        text PRIMARY KEY,
    heartbeat_at timestamptz NOT NULL,
    started_at   timestamptz NOT NULL,
    info         jsonb NOT NULL DEFAULT '{{}}'::jsonb
)""",
        ]
        # The wake-up trigger (hazard H2): it notifies only while a relay sleeps (see wake.py).
        # Dropped and re-created by every migrate, which upgrades the trigger of earlier versions
        # (it notified on every insert); without it (notify=False) relays poll.
        stmts.append(f"DROP TRIGGER IF EXISTS {ref.index_name('notify')} ON {t}")
        if notify:
            stmts += trigger_ddl(ref)
        return stmts

    def insert_sql(self, ref: TableRef, paramstyle: str) -> str:
        cols = "id, topic, key, type, source, payload, content_type, headers"
        if paramstyle == "named":
            values = ":id, :topic, :key, :type, :source, :payload, :content_type, CAST(:headers AS jsonb)"
        else:
            values = "%s, %s, %s, %s, %s, %s, %s, %s::jsonb"
        return f"INSERT INTO {ref.qualified} ({cols}) VALUES ({values})"
