"""``manage.py outbox_relay``: ``outboxkit relay`` on the Django project's outbox."""

from __future__ import annotations

from outboxkit.contrib.django.management.commands._cli import OutboxkitCommand, base_flags, relay_flags


class Command(OutboxkitCommand):
    help = "Publish committed outbox rows to OUTBOXKIT['BROKER'] until SIGTERM/SIGINT (outboxkit relay)."
    outboxkit_command = "relay"

    def flags(self) -> list[str]:
        return [*base_flags(broker=True), *relay_flags()]
