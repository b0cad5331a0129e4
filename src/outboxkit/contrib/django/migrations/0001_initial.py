"""Creates the outbox and inbox tables with outboxkit's own DDL (see ``schema.py``), and records
the unmanaged models the admin reads them through. Reversing it leaves the tables: an outbox may
hold events not yet published; drop them by hand once it is empty."""

from __future__ import annotations

from django.db import migrations, models

import outboxkit.contrib.django.models
from outboxkit.contrib.django.schema import create_tables


class Migration(migrations.Migration):
    initial = True
    dependencies: list[tuple[str, str]] = []

    operations = [
        migrations.RunPython(create_tables, migrations.RunPython.noop),
        migrations.CreateModel(
            name="OutboxEvent",
            fields=[
                ("seq", models.BigAutoField(primary_key=True, serialize=False)),
                ("event_id", outboxkit.contrib.django.models.EventIdField(db_column="id", max_length=36)),
                ("topic", models.TextField()),
                ("key", models.TextField(null=True)),
                ("type", models.TextField(null=True)),
                ("source", models.TextField(null=True)),
                ("payload", models.BinaryField()),
                ("content_type", models.TextField()),
                ("headers", models.JSONField()),
                ("created_at", models.DateTimeField()),
                ("attempts", models.IntegerField()),
                ("last_error", models.TextField(null=True)),
                ("delivered_at", models.DateTimeField(null=True)),
                ("dead_at", models.DateTimeField(null=True)),
            ],
            options={
                "managed": False,
                "db_table": outboxkit.contrib.django.models.outbox_db_table(),
                "ordering": ["-seq"],
                "verbose_name": "outbox event",
            },
        ),
        migrations.CreateModel(
            name="DeadLetter",
            fields=[],
            options={"proxy": True, "indexes": [], "constraints": [], "verbose_name": "dead letter"},
            bases=("outboxkit.outboxevent",),
        ),
    ]
