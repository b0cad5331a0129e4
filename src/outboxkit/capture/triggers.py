"""Install, list, remove and upgrade capture triggers, on any database (the SQL is the store's).

Each change runs as one migration of the database (``Database.migrate``: one transaction where DDL
is transactional, serialised against concurrent migrations), so a trigger and its registry row
appear or vanish together.
"""

from __future__ import annotations

from outboxkit.errors import ConfigurationError, SchemaError
from outboxkit.stores.base import Statement, TableRef
from outboxkit.stores.capture import TRIGGER_VERSION, CaptureSpec, spec_from_registry
from outboxkit.stores.database import Database
from outboxkit.stores.registry import database_for


def _columns(database: Database, url: str, spec: CaptureSpec) -> tuple[str, ...]:
    conn = database.connect(url, label="outboxkit-capture")
    try:
        return spec.resolved(database.capture().table_columns(conn, spec.target))
    finally:
        conn.close()


def add_capture(url: str, spec: CaptureSpec, outbox: TableRef | None = None) -> list[Statement]:
    """Install (or replace) the trigger(s) of ``spec``; returns the statements run."""
    outbox = outbox or TableRef()
    database = database_for(url)
    capture = database.capture()
    columns = _columns(database, url, spec)
    sql, params = capture.save(outbox, spec)
    statements: list[Statement] = [
        *capture.registry_ddl(outbox),
        *capture.install(outbox, spec, columns),
        (sql, params),
    ]
    database.migrate(url, outbox, statements)
    return statements


def list_captures(url: str, outbox: TableRef | None = None) -> list[tuple[CaptureSpec, int]]:
    """Installed captures with their trigger version (empty when none was ever added)."""
    outbox = outbox or TableRef()
    database = database_for(url)
    conn = database.connect(url, label="outboxkit-capture")
    try:
        try:
            rows = conn.execute(database.capture().listing(outbox)).fetchall()
        except Exception as exc:
            ours = database.translate(exc, f"{outbox.table}_captures")
            if isinstance(ours, SchemaError):
                return []
            raise
    finally:
        conn.close()
    return [spec_from_registry(r) for r in rows]


def remove_capture(url: str, target: TableRef, outbox: TableRef | None = None) -> bool:
    """Drop the trigger(s) of ``target``; False when it was not captured."""
    outbox = outbox or TableRef()
    if not any(spec.target == target for spec, _ in list_captures(url, outbox)):
        return False
    database = database_for(url)
    capture = database.capture()
    sql, params = capture.forget(outbox, target)
    database.migrate(url, outbox, [*capture.remove(outbox, target), (sql, params)])
    return True


def reinstall_captures(url: str, outbox: TableRef | None = None) -> int:
    """Re-create every installed trigger with this version's SQL (``outboxkit migrate`` calls it):
    the outbox schema or the trigger body may have changed. Returns how many were re-created."""
    outbox = outbox or TableRef()
    count = 0
    for spec, version in list_captures(url, outbox):
        if version > TRIGGER_VERSION:
            raise ConfigurationError(
                f"capture of {spec.target.table} was installed by a newer outboxkit (trigger v{version})"
            )
        add_capture(url, spec, outbox)
        count += 1
    return count
