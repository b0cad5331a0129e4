"""outboxkit for Django: an installable app (``"outboxkit.contrib.django"`` in ``INSTALLED_APPS``).

* :func:`emit` writes an event on Django's own connection, inside the caller's
  ``transaction.atomic()`` block: the event commits or rolls back with the model changes (no
  ``on_commit``, nothing to lose between the commit and a callback);
* migrations create the outbox and inbox tables with the very SQL ``outboxkit migrate`` runs;
* ``manage.py outbox_relay | outbox_consume | outbox_status`` run the ``outboxkit`` commands with
  the database taken from ``DATABASES`` and the rest from the ``OUTBOXKIT`` setting;
* the admin lists outbox rows and dead letters, and retries or discards dead letters.

See docs/django.md.
"""

from __future__ import annotations

from outboxkit.contrib.django.emit import emit

__all__ = ["emit"]
