"""The inbox: effectively-once processing for at-least-once delivery (G7).

For each message the runner opens a transaction on the consumer's own database, records
``(consumer, event id)`` in the inbox table, runs the handler on that same transaction, commits,
and only then acknowledges the broker. A duplicate finds its id already recorded and is acked
without calling the handler.
"""

from outboxkit.inbox.runner import Event, InboxRunner, InboxStats
from outboxkit.inbox.schema import cleanup_inbox, inbox_sql, migrate_inbox

__all__ = ["Event", "InboxRunner", "InboxStats", "cleanup_inbox", "inbox_sql", "migrate_inbox"]
