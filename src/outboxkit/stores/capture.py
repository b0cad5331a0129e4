"""The trigger-capture role: a trigger on a business table writes an outbox row in the same
transaction as each change, for writes by any program (psql included), with no application change.

What every database's trigger writes (docs/capture.md):

* ``payload``: JSON built by the database itself, ``{"op": "insert"|"update"|"delete", "before":
  {...}, "after": {...}}`` (``before`` for update and delete, ``after`` for insert and update), with
  the captured columns;
* ``id``: a UUIDv7 made in SQL (time-ordered like emit's), ``key``: the ``--key`` column's value as
  text (NULL without one), ``type`` NULL (the topic, as for emit), ``created_at`` the database's time;
* ``headers``: ``{"operation": "<op>"}``, which the buses carry as the CloudEvents extension attribute
  ``operation``: consumers see the operation without parsing the body.

Captures are recorded in ``<outbox>_captures`` so that ``capture list`` can show them and
``outboxkit migrate`` can re-create every installed trigger when the outbox schema changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from outboxkit.core.envelope import validate_topic
from outboxkit.errors import ConfigurationError
from outboxkit.stores.base import SyncConnection, TableRef, validate_identifier

OPERATIONS = ("insert", "update", "delete")

#: Bumped when the trigger body changes; ``migrate`` re-creates triggers of an older version.
TRIGGER_VERSION = 1


@dataclass(frozen=True)
class CaptureSpec:
    """One captured business table. Identifiers are validated here, once; SQL quotes them."""

    target: TableRef  # the business table (schema optional)
    topic: str
    key: str | None = None
    on: tuple[str, ...] = OPERATIONS
    columns: tuple[str, ...] | None = None  # None: every column of the table

    def __post_init__(self) -> None:
        validate_topic(self.topic)
        if self.key is not None:
            validate_identifier(self.key, "key column")
        if not self.on or any(op not in OPERATIONS for op in self.on) or len(set(self.on)) != len(self.on):
            raise ConfigurationError(f"--on takes insert, update and/or delete, got {','.join(self.on)!r}")
        for column in self.columns or ():
            validate_identifier(column, "column")

    def resolved(self, table_columns: Sequence[str]) -> tuple[str, ...]:
        """The captured columns, checked against the table's (``ConfigurationError`` names a missing one)."""
        known = list(table_columns)
        wanted = list(self.columns) if self.columns is not None else known
        missing = [c for c in [*wanted, *([self.key] if self.key else [])] if c not in known]
        if missing:
            raise ConfigurationError(
                f"table {self.target.table} has no column {', '.join(missing)} (it has {', '.join(known)})"
            )
        for column in wanted:
            validate_identifier(column, "column")  # a name we cannot quote safely is refused, not mangled
        return tuple(wanted)


def literal(text: str) -> str:
    """A SQL string literal. Only for values validated before (topic, operation names)."""
    return "'" + text.replace("'", "''") + "'"


def registry_values(spec: CaptureSpec) -> tuple[Any, ...]:
    """(table_schema, table_name, topic, key_column, operations, columns, version) of the registry."""
    return (
        spec.target.schema or "",
        spec.target.table,
        spec.topic,
        spec.key,
        ",".join(spec.on),
        None if spec.columns is None else ",".join(spec.columns),
        TRIGGER_VERSION,
    )


def spec_from_registry(row: Sequence[Any]) -> tuple[CaptureSpec, int]:
    """The spec and trigger version of one ``listing`` row."""
    schema, table, topic, key, operations, columns, version = row
    spec = CaptureSpec(
        TableRef(str(table), str(schema) or None),
        str(topic),
        key or None,
        tuple(str(operations).split(",")),
        tuple(str(columns).split(",")) if columns else None,
    )
    return spec, int(version)


class TriggerCapture(Protocol):
    """One database's trigger SQL. Statements are DDL with validated, quoted identifiers; registry
    statements bind their values."""

    def registry_ddl(self, outbox: TableRef) -> list[str]:
        """Create ``<outbox>_captures`` idempotently."""
        ...

    def table_columns(self, conn: SyncConnection, target: TableRef) -> list[str]:
        """The business table's columns in order (``ConfigurationError`` if the table is missing)."""
        ...

    def install(self, outbox: TableRef, spec: CaptureSpec, columns: Sequence[str]) -> list[str]:
        """Drop and create the trigger(s) (and function) capturing ``columns`` of ``spec.target``."""
        ...

    def remove(self, outbox: TableRef, target: TableRef) -> list[str]:
        """Drop the trigger(s) (and function) of ``target``."""
        ...

    def save(self, outbox: TableRef, spec: CaptureSpec) -> tuple[str, Sequence[Any]]:
        """Record (or replace) ``spec`` in the registry."""
        ...

    def forget(self, outbox: TableRef, target: TableRef) -> tuple[str, Sequence[Any]]: ...

    def listing(self, outbox: TableRef) -> str:
        """SELECT table_schema, table_name, topic, key_column, operations, columns, version."""
        ...
