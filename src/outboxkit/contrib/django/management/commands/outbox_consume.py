"""``manage.py outbox_consume --handler mod:fn --group G --topic T``: ``outboxkit consume`` with
the inbox in the Django project's database (``OUTBOXKIT["INBOX_TABLE"]``)."""

from __future__ import annotations

from outboxkit.contrib.django.conf import inbox_ref
from outboxkit.contrib.django.management.commands._cli import OutboxkitCommand, base_flags


class Command(OutboxkitCommand):
    help = (
        "Consume effectively once into the inbox (outboxkit consume): pass --handler module:function, "
        "--group NAME and --topic PATTERN; the handler gets (conn, event) on its own connection."
    )
    outboxkit_command = "consume"

    def flags(self) -> list[str]:
        return [*base_flags(broker=True, table=False), "--inbox-table", inbox_ref().table]
