"""The table-less event format: one ``pg_logical_emit_message`` per event (a stable, public contract).

An event written with ``pg_logical_emit_message(true, prefix, content)`` lives only in the
write-ahead log: no row, no index, no vacuum (H3, queue-table bloat). Being transactional (``true``),
it is decoded only if the writer's transaction commits (G2), at that transaction's place in commit
order. ``prefix`` names the outbox (:func:`prefix_for`: ``outboxkit`` for the default one), and
``content`` is::

    <attributes as one line of UTF-8 JSON> 0x0A <payload bytes>

The attributes object holds ``v`` (format version, 1), ``id`` (required, a UUID or any printable
text), ``topic`` (required), and optionally ``key``, ``type``, ``source``, ``content_type`` (default
``application/json``), ``headers`` (an object of text values) and ``time`` (ISO 8601). Compact JSON
never holds a raw newline, so the first ``\\n`` ends the attributes; everything after it, raw, is the
payload. Another language emits with plain SQL::

    SELECT pg_logical_emit_message(true, 'outboxkit',
        convert_to('{"v":1,"id":"0190...","topic":"orders.created","key":"c-7"}', 'UTF8')
        || '\\x0a'::bytea || convert_to('{"order":1}', 'UTF8'));

Pure: no I/O. The relay checks decoded attributes with the rules of ``core.rows`` (H11), so a
malformed message becomes a dead letter, never a stopped relay.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime

from outboxkit.core.envelope import JSON, OutboxEvent
from outboxkit.core.rows import event_from_row
from outboxkit.core.tailing import unreadable

PREFIX = "outboxkit"
VERSION = 1


def prefix_for(table: str = "outbox", schema: str | None = None) -> str:
    """The message prefix of one outbox. Logical messages are database-wide (every slot of the
    database sees them all), so the prefix names the outbox: ``outboxkit`` for the default table
    ``outbox`` without a schema, else ``outboxkit:<schema>.<table>`` (``outboxkit:<table>``
    without a schema). A relay publishes only its own outbox's messages."""
    if table == "outbox" and schema is None:
        return PREFIX
    return f"{PREFIX}:{schema + '.' if schema else ''}{table}"


def encode(
    *,
    id: str,
    topic: str,
    payload: bytes,
    key: str | None = None,
    type: str | None = None,
    source: str | None = None,
    content_type: str = JSON,
    headers: Mapping[str, str] | None = None,
    time: datetime | None = None,
) -> bytes:
    """The message content for one event (attributes already validated by the caller)."""
    attrs: dict[str, object] = {"v": VERSION, "id": id, "topic": topic}
    if key is not None:
        attrs["key"] = key
    if type is not None:
        attrs["type"] = type
    if source is not None:
        attrs["source"] = source
    if content_type != JSON:
        attrs["content_type"] = content_type
    if headers:
        attrs["headers"] = dict(headers)
    if time is not None:
        attrs["time"] = time.isoformat()
    return json.dumps(attrs, separators=(",", ":"), ensure_ascii=False).encode() + b"\n" + payload


def decode(seq: int, content: bytes, committed_at: datetime | None = None) -> OutboxEvent:
    """The event of one message, or an event with a ``defect`` saying why it cannot be published.

    Never raises, whatever ``content`` holds (H13): JSON nested deeper than the parser's recursion
    limit, bytes that are not UTF-8, a key or topic with lone surrogates or NUL all become a
    defect, so the message is a dead letter and the relay moves past it."""
    try:
        return _decode(seq, content, committed_at)
    except Exception as exc:  # RecursionError and the like: the message's fault only
        return unreadable(seq, "message", exc)


def _decode(seq: int, content: bytes, committed_at: datetime | None) -> OutboxEvent:
    head, sep, payload = content.partition(b"\n")
    try:
        if not sep:
            raise ValueError("no newline after the attributes")
        attrs = json.loads(head)
        if not isinstance(attrs, dict):
            raise ValueError(f"attributes must be a JSON object, got {type(attrs).__name__}")
        if attrs.get("v", VERSION) != VERSION:
            raise ValueError(f"unknown format version {attrs.get('v')!r:.20}")
    except ValueError as exc:
        return OutboxEvent(
            seq=seq, id=f"message-{seq}", topic="?", payload=b"", defect=f"message cannot be published: {exc}"
        )
    headers = attrs.get("headers")
    event = event_from_row(
        seq,
        attrs.get("id"),
        attrs.get("topic"),
        attrs.get("key"),
        attrs.get("type"),
        attrs.get("source"),
        payload,
        attrs.get("content_type"),
        json.dumps(headers) if headers is not None else None,
        attrs.get("time") or committed_at,
        0,
    )
    if event.defect is not None:
        return replace(event, defect=event.defect.replace(f"row {seq}", "message", 1))
    return event
