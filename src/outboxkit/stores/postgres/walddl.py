"""PostgreSQL logical decoding: the slot's name and the DDL of the slot and publication. No driver
here: ``outboxkit migrate --sql --capture wal`` prints it on a machine without psycopg.

Slot names are global to a PostgreSQL server (publications belong to one database), so the name
includes the database: two databases on one server (two services, a test database beside
production) with an outbox of the same name get two slots. A name that had to be changed to be
valid (a-z, 0-9, _) or shortened to 63 characters ends in a hash of the original, so two such names
do not collide either.

Slots made by earlier versions were named after the table alone (``outboxkit_<schema>_<table>``):
such a slot, when it belongs to this database, is adopted (the DDL below creates nothing new, the
reader and the CLI use it), so an upgrade needs no step and loses nothing.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import unquote, urlsplit

from outboxkit.errors import ConfigurationError
from outboxkit.stores.base import TableRef

PLUGIN = "pgoutput"
_MAX = 63  # NAMEDATALEN - 1


def slot_name(ref: TableRef, database: str) -> str:
    """The slot and publication name of an outbox: ``outboxkit_<database>_<schema>_<table>``,
    lowercase, with a hash of the original when it had to be changed or shortened."""
    raw = "_".join(p for p in (database, ref.schema, ref.table) if p)
    clean = re.sub(r"[^a-z0-9_]", "_", raw.lower())
    name = "outboxkit_" + clean
    if clean != raw or len(name) > _MAX:
        digest = hashlib.sha256("\0".join((database, ref.schema or "", ref.table)).encode()).hexdigest()[:8]
        name = name[: _MAX - 9] + "_" + digest
    return name


def legacy_slot_name(ref: TableRef) -> str | None:
    """The name earlier versions gave (the table alone); None when it could not have been valid."""
    name = ("outboxkit_" + (f"{ref.schema}_" if ref.schema else "") + ref.table).lower()
    if len(name) > _MAX or not name.isascii() or not name.replace("_", "").isalnum():
        return None
    return name


def database_of(url: str) -> str:
    """The database a ``postgresql://`` URL names (the slot's name needs it)."""
    parts = urlsplit(url)
    name = unquote(parts.path.lstrip("/"))
    if not name:
        raise ConfigurationError(
            "the URL names no database: log tailing names its slot after the database, add /DBNAME to --db"
        )
    return name


def _check(name: str) -> str:
    if len(name) > _MAX or not re.fullmatch(r"[a-z0-9_]+", name):
        raise ConfigurationError(f"slot name {name!r} is not a valid replication slot name (a-z, 0-9, _, 63 at most)")
    return name


def wal_ddl(ref: TableRef, database: str, slot: str | None = None) -> list[str]:
    """The name check, the publication, then the slot (a slot must not be created in a transaction
    that wrote, so these run one by one, after the outbox schema). Idempotent; a slot of the old
    name in this database is adopted (nothing is created); a slot of this name in another database
    stops it loudly."""
    name = _check(slot or slot_name(ref, database))
    legacy = None if slot else legacy_slot_name(ref)
    adopted = (
        f"EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = '{legacy}' AND database = current_database())"
        if legacy and legacy != name
        else "false"
    )
    return [
        f"""DO $$ BEGIN
    IF EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = '{name}'
               AND database IS DISTINCT FROM current_database()) THEN
        RAISE EXCEPTION 'replication slot {name} belongs to another database on this server: choose another slot name'
            USING ERRCODE = '42710';
    END IF;
END $$""",
        # Inserts only: the relay's own marks (UPDATE delivered_at) and retention (DELETE) stay out.
        f"""DO $$ BEGIN
    IF NOT {adopted} AND NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = '{name}') THEN
        CREATE PUBLICATION "{name}" FOR TABLE {ref.qualified} WITH (publish = 'insert');
    END IF;
END $$""",
        f"SELECT pg_create_logical_replication_slot('{name}', '{PLUGIN}') "
        f"WHERE NOT {adopted} AND NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = '{name}')",
    ]


# Which of the candidate names is this database's slot (the reader, `slot status`, `slot drop`).
SLOTS_OF = (
    "SELECT slot_name, database = current_database(), confirmed_flush_lsn::text, wal_status "
    "FROM pg_replication_slots WHERE slot_name = ANY(%s)"
)


def candidates(ref: TableRef, database: str, slot: str | None = None) -> list[str]:
    """The names to look for, the adopted old one first."""
    if slot:
        return [_check(slot)]
    name, legacy = slot_name(ref, database), legacy_slot_name(ref)
    return [legacy, name] if legacy and legacy != name else [name]
