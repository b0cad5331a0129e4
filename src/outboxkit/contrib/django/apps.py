"""The Django app configuration: label ``outboxkit`` (migrations, admin, permissions)."""

from __future__ import annotations

from django.apps import AppConfig


class OutboxkitConfig(AppConfig):
    name = "outboxkit.contrib.django"
    label = "outboxkit"
    verbose_name = "Outbox"
    default_auto_field = "django.db.models.BigAutoField"
