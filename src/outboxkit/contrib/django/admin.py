"""The admin: outbox rows (read-only) and dead letters, with retry and discard.

Retry and discard run :func:`outboxkit.ops.retry_dead` / :func:`outboxkit.ops.discard_dead` on a
connection of their own (autocommit, like ``outboxkit dead-letters retry|discard``), by event id:
the same statements, so the same meaning (retry: pending again with ``attempts`` 0; discard:
marked delivered with ``last_error`` prefixed ``discarded:``, kept until cleanup). Rows are never
edited, added or deleted through the ORM: outboxkit owns the table.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages

from outboxkit.contrib.django.conf import alias, db_url, outbox_ref
from outboxkit.contrib.django.models import DeadLetter, OutboxEvent
from outboxkit.errors import OutboxkitError
from outboxkit.ops import Selector, discard_dead, open_db, retry_dead

_PREVIEW = 200


class _ReadOnly(admin.ModelAdmin):
    list_display: tuple[str, ...] = (
        "seq",
        "topic",
        "key",
        "state",
        "attempts",
        "created_at",
        "delivered_at",
        "dead_at",
    )
    list_filter = ("topic",)
    search_fields = ("=event_id", "=key", "topic")
    readonly_fields = (
        "seq",
        "event_id",
        "topic",
        "key",
        "type",
        "source",
        "payload_preview",
        "content_type",
        "headers",
        "created_at",
        "attempts",
        "last_error",
        "delivered_at",
        "dead_at",
    )
    exclude = ("payload",)
    list_per_page = 50

    def get_queryset(self, request: Any) -> Any:
        return super().get_queryset(request).using(alias())

    def has_add_permission(self, request: Any) -> bool:
        return False

    def has_delete_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    @admin.display(description="payload")
    def payload_preview(self, obj: OutboxEvent) -> str:
        data = bytes(obj.payload)
        try:
            text = data.decode()
        except UnicodeDecodeError:
            return f"{len(data)} bytes (binary)"
        return text if len(text) <= _PREVIEW else text[:_PREVIEW] + f"... ({len(data)} bytes)"


@admin.register(OutboxEvent)
class OutboxEventAdmin(_ReadOnly):
    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False  # view only: nothing of a row is edited here


def _selected(queryset: Any) -> Selector:
    return Selector(ids=tuple(str(i) for i in queryset.values_list("event_id", flat=True)))


@admin.register(DeadLetter)
class DeadLetterAdmin(_ReadOnly):
    list_display = ("seq", "topic", "key", "attempts", "last_error", "created_at", "dead_at")
    actions = ("retry", "discard")

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        # The change permission guards the actions (asked with obj=None); a row's own page is
        # view-only, or saving it would write every column back through the ORM.
        return obj is None and bool(super().has_change_permission(request, obj))

    def _run(self, request: Any, queryset: Any, verb: str, fn: Any) -> None:
        selector = _selected(queryset)
        if not selector.ids:
            return
        try:
            with open_db(db_url(), outbox_ref()) as db:
                count = fn(db, selector)
        except OutboxkitError as exc:
            self.message_user(request, f"{verb} failed: {exc}", messages.ERROR)
            return
        self.message_user(request, f"{verb} {count} dead letter{'s' if count != 1 else ''}", messages.SUCCESS)

    @admin.action(description="Retry selected dead letters (pending again)", permissions=["change"])
    def retry(self, request: Any, queryset: Any) -> None:
        self._run(request, queryset, "retried", retry_dead)

    @admin.action(description="Discard selected dead letters (release their keys)", permissions=["change"])
    def discard(self, request: Any, queryset: Any) -> None:
        self._run(request, queryset, "discarded", discard_dead)
