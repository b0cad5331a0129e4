"""``manage.py outbox_status``: ``outboxkit status`` on the Django project's outbox."""

from __future__ import annotations

from outboxkit.contrib.django.management.commands._cli import OutboxkitCommand, base_flags


class Command(OutboxkitCommand):
    help = "Backlog, dead letters and relays of the outbox (outboxkit status; --json for JSON)."
    outboxkit_command = "status"

    def flags(self) -> list[str]:
        return base_flags(broker=False)
