"""Unmanaged models over the outbox table, for the admin (read-only: outboxkit owns the table).

The table's name comes from ``OUTBOXKIT["TABLE"]`` / ``["SCHEMA"]`` when the app loads. A
schema is written the way Django's quoting leaves alone (``schema"."table``), so the ORM reads
``"schema"."table"`` on PostgreSQL (backticks on MariaDB/MySQL)."""

from __future__ import annotations

from typing import Any

from django.db import models

from outboxkit.contrib.django.conf import alias, outbox_ref


def outbox_db_table() -> str:
    """The outbox table as the ORM names it (also in the migration state, so `makemigrations`
    sees no change whatever OUTBOXKIT["TABLE"] says)."""
    ref = outbox_ref()
    if not ref.schema:
        return ref.table
    from django.db import connections

    quote = "`" if connections[alias()].vendor == "mysql" else '"'
    return f"{ref.schema}{quote}.{quote}{ref.table}"


class EventIdField(models.CharField):
    """The event id as text on every database (PostgreSQL's uuid column reads as ``uuid.UUID``),
    compared as text too: SQLite and MariaDB keep it as the hyphenated string."""

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> str | None:
        return None if value is None else str(value)


class OutboxEvent(models.Model):
    """One row of the outbox: pending, delivered or dead (docs/schema.md)."""

    seq = models.BigAutoField(primary_key=True)
    event_id = EventIdField(db_column="id", max_length=36)
    topic = models.TextField()
    key = models.TextField(null=True)
    type = models.TextField(null=True)
    source = models.TextField(null=True)
    payload = models.BinaryField()
    content_type = models.TextField()
    headers = models.JSONField()
    created_at = models.DateTimeField()
    attempts = models.IntegerField()
    last_error = models.TextField(null=True)
    delivered_at = models.DateTimeField(null=True)
    dead_at = models.DateTimeField(null=True)

    class Meta:
        managed = False
        db_table = outbox_db_table()
        ordering = ["-seq"]
        verbose_name = "outbox event"

    def __str__(self) -> str:
        return f"{self.topic} #{self.seq}"

    @property
    def state(self) -> str:
        if self.dead_at is not None:
            return "dead"
        return "pending" if self.delivered_at is None else "delivered"


class DeadLetterManager(models.Manager["DeadLetter"]):
    def get_queryset(self) -> Any:
        return super().get_queryset().filter(dead_at__isnull=False)


class DeadLetter(OutboxEvent):
    """The outbox's dead letters: rows the relay gave up on, holding their key (H5)."""

    objects = DeadLetterManager()

    class Meta:
        proxy = True
        verbose_name = "dead letter"
