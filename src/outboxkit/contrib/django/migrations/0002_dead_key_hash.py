"""Runs outboxkit's DDL again (idempotent): on PostgreSQL it replaces the btree index of dead keys,
which refused the dead letter of a key over about 2,700 bytes, with a hash index (H13)."""

from __future__ import annotations

from django.db import migrations

from outboxkit.contrib.django.schema import create_tables


class Migration(migrations.Migration):
    dependencies = [("outboxkit", "0001_initial")]

    operations = [migrations.RunPython(create_tables, migrations.RunPython.noop)]
