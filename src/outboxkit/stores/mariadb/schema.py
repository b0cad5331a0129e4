"""MariaDB 10.6+ / MySQL 8.0+: the outbox's DDL and the INSERT of ``emit()``.

Same columns and meaning as PostgreSQL's (docs/schema.md), in this database's types:

* ``seq`` is ``AUTO_INCREMENT``: InnoDB hands values out at insert and transactions commit in
  another order (H1), exactly like a PostgreSQL sequence, so the relay never pages with a cursor.
* ``headers`` is ``JSON``: a ``LONGTEXT`` with a ``JSON_VALID`` check on MariaDB, a binary JSON
  column on MySQL; ``payload`` is ``LONGBLOB`` (the limit is the server's ``max_allowed_packet``).
* times are ``DATETIME(6)`` holding UTC (``UTC_TIMESTAMP(6)``), never the session's time zone.
* ``bucket`` is a stored generated column (the key's CRC32 modulo 64, the id for keyless rows): a
  row inserted by plain SQL from any program gets it too, and leases and fenced marks join on it.
* no partial indexes: the relay's scan uses ``(delivered_at, dead_at, seq)``, whose leading
  ``NULL, NULL`` range is exactly the pending rows, already in seq order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from outboxkit.errors import ConfigurationError
from outboxkit.stores.base import BUCKETS, SCHEMA_VERSION, TableRef

Q = "`"

#: The same bucket function for every relay, stored with the row. Keys longer than the index prefix
#: still hash whole. CRC32 is not a strong hash, but 64 buckets only need an even spread.
BUCKET_SQL = f"CRC32(COALESCE(`key`, id)) % {BUCKETS}"


def bind_list(name: str, values: Sequence[Any]) -> tuple[str, dict[str, Any]]:
    """``%(name_0)s, %(name_1)s, ...`` for an IN list, and the parameters to bind (PyMySQL binds
    scalars only). The statements keep a ``{name}`` slot for it; the values are never in the text."""
    keys = [f"{name}_{i}" for i in range(len(values))]
    return ", ".join(f"%({k})s" for k in keys), dict(zip(keys, values, strict=True))


def bind_pairs(name: str, pairs: Sequence[tuple[int, int]]) -> tuple[str, dict[str, Any]]:
    """``(%(name_0a)s, %(name_0b)s), ...`` for a row-constructor IN list."""
    text = ", ".join(f"(%({name}_{i}a)s, %({name}_{i}b)s)" for i in range(len(pairs)))
    params = {f"{name}_{i}{side}": v for i, pair in enumerate(pairs) for side, v in zip("ab", pair, strict=True)}
    return text, params


def quoted(ref: TableRef, suffix: str | None = None) -> str:
    return ref.derived(suffix, Q) if suffix else ref.quoted(Q)


class MariaDbSchema:
    """DDL and INSERT text for MariaDB 10.6+ and MySQL 8.0.13+ (expression defaults)."""

    def ddl(self, ref: TableRef, *, notify: bool = True) -> list[str]:
        # `notify` is accepted and ignored: this database has no notifications (the relay polls a
        # cheap fingerprint of the pending rows, stores/mariadb/store.py).
        t = quoted(ref)
        stmts = [f"CREATE DATABASE IF NOT EXISTS {Q}{ref.schema}{Q}"] if ref.schema else []
        stmts += [
            f"""CREATE TABLE IF NOT EXISTS {t} (
    -- Relay order, taken at insert. Transactions commit out of seq order (H1).
    seq          BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    -- varchar, not char: a char column cannot feed the generated bucket (padding rules).
    id           VARCHAR(36) NOT NULL DEFAULT (UUID()),
    topic        VARCHAR(255) NOT NULL,
    `key`        VARCHAR(1024),
    type         TEXT,
    source       TEXT,
    payload      LONGBLOB NOT NULL,
    content_type VARCHAR(255) NOT NULL DEFAULT 'application/json',
    headers      JSON NOT NULL DEFAULT ('{{}}'),
    created_at   DATETIME(6) NOT NULL DEFAULT (UTC_TIMESTAMP(6)),
    attempts     INT NOT NULL DEFAULT 0,
    last_error   TEXT,
    delivered_at DATETIME(6),
    dead_at      DATETIME(6),
    bucket       SMALLINT AS ({BUCKET_SQL}) STORED,
    -- The relay's only scan: the (NULL, NULL) prefix is the pending rows, in seq order.
    KEY {ref.index_name("pending", Q)} (delivered_at, dead_at, seq),
    -- Keys held behind a dead letter (H5), and same-key lookups of inline publishing (G5).
    KEY {ref.index_name("keys", Q)} (`key`(191), dead_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
            f"""CREATE TABLE IF NOT EXISTS {quoted(ref, "meta")} (
    singleton      TINYINT NOT NULL PRIMARY KEY CHECK (singleton = 1),
    schema_version INT NOT NULL
) ENGINE=InnoDB""",
            f"INSERT INTO {quoted(ref, 'meta')} (singleton, schema_version) VALUES (1, {SCHEMA_VERSION})"
            f" ON DUPLICATE KEY UPDATE schema_version = GREATEST(schema_version, {SCHEMA_VERSION})",
            # Many relays share the outbox by leasing buckets of keys; expiry on the database's clock.
            f"""CREATE TABLE IF NOT EXISTS {quoted(ref, "leases")} (
    bucket     SMALLINT NOT NULL PRIMARY KEY,
    owner      VARCHAR(255),
    epoch      BIGINT NOT NULL DEFAULT 0,
    expires_at DATETIME(6)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
            f"INSERT IGNORE INTO {quoted(ref, 'leases')} (bucket)"
            f" WITH RECURSIVE b (n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM b WHERE n < {BUCKETS - 1})"
            " SELECT n FROM b",
            f"""CREATE TABLE IF NOT EXISTS {quoted(ref, "relays")} (
    owner        VARCHAR(255) NOT NULL PRIMARY KEY,
    heartbeat_at DATETIME(6) NOT NULL,
    started_at   DATETIME(6) NOT NULL,
    info         JSON NOT NULL DEFAULT ('{{}}')
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
        ]
        return stmts

    def insert_sql(self, ref: TableRef, paramstyle: str) -> str:
        cols = "id, topic, `key`, type, source, payload, content_type, headers"
        if paramstyle == "named":
            values = ":id, :topic, :key, :type, :source, :payload, :content_type, :headers"
        elif paramstyle == "format":
            values = ", ".join(["%s"] * 8)
        else:
            raise ConfigurationError(f"MariaDB drivers use the format or named paramstyle, not {paramstyle}")
        return f"INSERT INTO {quoted(ref)} ({cols}) VALUES ({values})"
