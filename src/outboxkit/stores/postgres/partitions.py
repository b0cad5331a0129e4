"""PostgreSQL: a time-partitioned outbox (documented recipe; ``outboxkit migrate`` does not create it)."""

from __future__ import annotations

from outboxkit.stores.base import TableRef


def partitioning_recipe(ref: TableRef) -> list[str]:
    """DDL for an outbox partitioned by day on ``created_at`` whose old days are dropped whole.

    Run it *before* ``outboxkit migrate``: migrate's ``CREATE TABLE IF NOT EXISTS`` then keeps
    this table and adds the indexes (as partitioned indexes), the meta and lease tables and the
    NOTIFY trigger. Then call ``SELECT * FROM <table>_partitions('7 days')`` daily (pg_cron,
    a Kubernetes CronJob): it creates the next days' partitions and drops the old days whose rows
    are all delivered.
    """
    t, name = ref.qualified, ref.table
    schema_stmt = [f'CREATE SCHEMA IF NOT EXISTS "{ref.schema}"'] if ref.schema else []
    return [
        *schema_stmt,
        f"""-- The columns of docs/schema.md. The primary key must contain the partition key, hence
-- (seq, created_at); seq stays unique because the identity sequence is shared by all partitions.
CREATE TABLE IF NOT EXISTS {t} (
    seq          bigint GENERATED ALWAYS AS IDENTITY,
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
    dead_at      timestamptz,
    PRIMARY KEY (seq, created_at)
) PARTITION BY RANGE (created_at)""",
        f"""-- Safety net: a row whose day has no partition yet lands here instead of failing the
-- writer's transaction. Keep it empty (create days ahead): a new partition must scan it.
CREATE TABLE IF NOT EXISTS {ref.derived("pdefault")} PARTITION OF {t} DEFAULT""",
        f"""-- Creates the partitions of today and the next `ahead` days (UTC), and drops each day older
-- than `keep` whose rows are all delivered: a day with a pending row or a dead letter is kept
-- (retry or discard the dead letters first). Returns what it did.
CREATE OR REPLACE FUNCTION {ref.derived("partitions")}(keep interval, ahead integer DEFAULT 3)
RETURNS SETOF text LANGUAGE plpgsql AS $fn$
DECLARE
    parent regclass := '{t}'::regclass;
    nsp    text := (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE c.oid = parent);
    day    date;
    part   record;
    busy   boolean;
    -- Both partial indexes of `outboxkit migrate` answer this without reading the day's rows.
    busy_sql text := 'SELECT EXISTS (SELECT 1 FROM %I.%I WHERE delivered_at IS NULL AND dead_at IS NULL)'
                     ' OR EXISTS (SELECT 1 FROM %I.%I WHERE dead_at IS NOT NULL)';
BEGIN
    FOR i IN 0..ahead LOOP
        day := (now() AT TIME ZONE 'UTC')::date + i;
        IF to_regclass(format('%I.%I', nsp, '{name}_p' || to_char(day, 'YYYYMMDD'))) IS NULL THEN
            EXECUTE format('CREATE TABLE %I.%I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
                nsp, '{name}_p' || to_char(day, 'YYYYMMDD'), parent,
                day::timestamp AT TIME ZONE 'UTC', (day + 1)::timestamp AT TIME ZONE 'UTC');
            RETURN NEXT 'created ' || '{name}_p' || to_char(day, 'YYYYMMDD');
        END IF;
    END LOOP;
    -- Dropping a partition locks the parent; do not queue behind a long query (and block writers
    -- queued behind us): give up after 5 s and try again on the next run.
    PERFORM set_config('lock_timeout', '5s', true);
    FOR part IN
        SELECT c.relname, to_date(substr(c.relname, length('{name}_p') + 1), 'YYYYMMDD') AS day
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = parent AND c.relname ~ '^{name}_p[0-9]{{8}}$'
        ORDER BY c.relname
    LOOP
        CONTINUE WHEN ((part.day + 1)::timestamp AT TIME ZONE 'UTC') > now() - keep;
        EXECUTE format(busy_sql, nsp, part.relname, nsp, part.relname) INTO busy;
        IF NOT busy THEN
            -- Lock the parent first (the order the relay's statements take), then look again:
            -- nothing can replay or dead-letter a row of this day between the check and the drop.
            EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', parent);
            EXECUTE format(busy_sql, nsp, part.relname, nsp, part.relname) INTO busy;
        END IF;
        IF busy THEN
            RETURN NEXT 'kept ' || part.relname || ' (pending or dead rows)';
        ELSE
            EXECUTE format('DROP TABLE %I.%I', nsp, part.relname);
            RETURN NEXT 'dropped ' || part.relname;
        END IF;
    END LOOP;
END
$fn$""",
        f"SELECT * FROM {ref.derived('partitions')}('7 days')",
    ]
