"""Reading and settling one FastStream message for the inbox middleware: its event id, key,
topic and delivery count across brokers; acks and nacks that never raise; one-line errors."""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
from collections.abc import Awaitable, Sequence
from typing import Any

from faststream.message import StreamMessage
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from outboxkit.inbox.runner import Event

log = logging.getLogger("outboxkit.inbox")

# Where the event id is found: the CloudEvents id as the relay publishes it on each binding (NATS
# ``ce-``, AMQP ``cloudEvents:``, Kafka ``ce_``), then the broker-native ids (JetStream's
# ``Nats-Msg-Id``, FastStream's own ``message_id`` header on NATS, the AMQP ``message_id`` property).
_ID_HEADERS = ("ce-id", "cloudEvents:id", "cloudEvents_id", "ce_id", "Nats-Msg-Id", "message_id")
_KEY_HEADERS = ("ce-subject", "cloudEvents:subject", "cloudEvents_subject", "ce_subject")


# -- reading a FastStream message --------------------------------------------------------------------
def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes | bytearray) else str(value)


def _topic_of(msg: StreamMessage[Any]) -> str:
    raw = msg.raw_message
    return str(getattr(raw, "subject", None) or getattr(raw, "routing_key", None) or getattr(raw, "topic", None) or "")


def _delivery_count(msg: StreamMessage[Any]) -> int:
    """The broker's count of this delivery, 1-based (JetStream metadata, a quorum queue's header)."""
    try:
        delivered = msg.raw_message.metadata.num_delivered
    except Exception:  # not a JetStream message: no metadata
        delivered = None
    if isinstance(delivered, int):
        return delivered
    count = msg.headers.get("x-delivery-count")
    return count + 1 if isinstance(count, int) else 1


def _event_of(msg: StreamMessage[Any]) -> Event | None:
    headers = {str(k): _text(v) for k, v in (msg.headers or {}).items() if v is not None}
    event_id = next((headers[h] for h in _ID_HEADERS if headers.get(h, "").strip()), None)
    if event_id is None:
        native = getattr(msg.raw_message, "message_id", None)  # the AMQP message_id property
        event_id = _text(native) if native else None
    if event_id is None:
        return None
    key = next((headers[h] for h in _KEY_HEADERS if headers.get(h)), None)
    body = msg.body if isinstance(msg.body, bytes) else bytes(msg.body)
    return Event(event_id, _topic_of(msg), key, body, headers, _delivery_count(msg))


# -- settling -----------------------------------------------------------------------------------------
async def _settle(call: Awaitable[None]) -> None:
    """An ack that cannot reach the broker is not an error: the message comes back as a duplicate."""
    try:
        await call
    except Exception as exc:
        log.info("ack not possible (%s); the message will be redelivered as a duplicate", _line(exc))


async def _nack_later(msg: StreamMessage[Any], delay: float) -> None:
    """Requeue after ``delay``: JetStream delays the redelivery itself; other brokers requeue at
    once, so the wait happens here (the subscriber holds the message meanwhile)."""
    if "delay" in inspect.signature(msg.nack).parameters:
        await _settle(msg.nack(delay=delay))  # type: ignore[call-arg]
        return
    await asyncio.sleep(delay)
    await _settle(msg.nack())


async def _rollback(session: AsyncSession) -> None:
    try:
        await session.rollback()
    except Exception as exc:  # a lost connection cannot roll back; closing the session discards it
        log.debug("rollback failed: %s", _line(exc))


def _line(exc: BaseException) -> str:
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        exc = exc.orig
    first = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {first[0]}" if first else type(exc).__name__


def _named(sql: str, names: Sequence[str]) -> str:
    """The inbox statements use the driver's positional marks (``%s`` or ``?``); SQLAlchemy's
    ``text()`` wants ``:name`` on every driver. Safe to rewrite: the statements hold only validated
    identifiers and no literals, so every mark is a parameter."""
    parts = re.split(r"%s|\?", sql)
    if len(parts) != len(names) + 1:
        raise AssertionError(f"expected {len(names)} parameters in {sql!r}")
    return parts[0] + "".join(f":{name}{part}" for name, part in zip(names, parts[1:], strict=True))
