"""A stream entry: CloudEvents attributes as fields, ``data``, ``h-`` headers; RESP packing; reply parsing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from redis.asyncio import Redis

from outboxkit.brokers.base import Delivered
from outboxkit.brokers.redis.client import _call, _text
from outboxkit.core.envelope import OutboxEvent, cloudevent_attributes

HEADER_PREFIX = "h-"


DATA_FIELD = "data"


def entry_fields(event: OutboxEvent, default_source: str) -> list[str | bytes]:
    """The XADD field/value list of ``event``: CloudEvents attributes by name, ``data``, ``h-`` headers."""
    fields: list[str | bytes] = []
    for name, value in cloudevent_attributes(event, default_source).items():
        fields += (name, value)
    if "traceparent" in event.headers:
        # The CloudEvents distributed-tracing extension attribute, next to the user header.
        fields += ("traceparent", event.headers["traceparent"])
    for name, value in event.headers.items():
        fields += (HEADER_PREFIX + name, value)
    fields += (DATA_FIELD, event.payload)
    return fields


def delivered_from(topic: str, fields: Mapping[bytes, bytes] | Mapping[str, Any]) -> Delivered:
    """Decode one stream entry's fields back into a :class:`Delivered`.

    ``headers`` holds the user headers (``h-`` removed), the attributes as ``ce-<name>`` and
    ``content-type``, the way the NATS adapter presents them."""
    payload = b""
    attrs: dict[str, str] = {}
    headers: dict[str, str] = {}
    for raw_name, raw_value in fields.items():
        name = _text(raw_name)
        if name == DATA_FIELD:
            payload = raw_value if isinstance(raw_value, bytes) else str(raw_value).encode()
        elif name.startswith(HEADER_PREFIX):
            headers[name[len(HEADER_PREFIX) :]] = _text(raw_value)
        else:
            attrs[name] = _text(raw_value)
    for name, value in attrs.items():
        headers["content-type" if name == "datacontenttype" else f"ce-{name}"] = value
    return Delivered(
        event_id=attrs.get("id", ""), topic=topic, key=attrs.get("subject"), payload=payload, headers=headers
    )


def _pack(args: Sequence[str | bytes]) -> bytes:
    """RESP encoding of one command. redis-py's generic packer costs more than the rest of a publish."""
    data = [a.encode() if isinstance(a, str) else a for a in args]
    return b"*%d\r\n" % len(data) + b"".join([b"$%d\r\n%b\r\n" % (len(d), d) for d in data])


def _entries(raw: Any) -> list[tuple[str, Any]]:
    """``[[id, [f, v, ...]], ...]`` (or ``[id, None]`` for a deleted entry) -> ``[(id, {f: v})]``."""
    out: list[tuple[str, Any]] = []
    for item in raw or []:
        entry_id, fields = item[0], item[1]
        if entry_id is None:
            continue
        if not fields:
            out.append((_text(entry_id), None))
        elif isinstance(fields, Mapping):
            out.append((_text(entry_id), dict(fields)))
        else:
            out.append((_text(entry_id), dict(zip(fields[::2], fields[1::2], strict=True))))
    return out


def _stream_entries(reply: Any) -> dict[str, list[tuple[str, Any]]]:
    """An XREAD(GROUP) reply (list of [stream, entries], or a dict in RESP3) by stream name."""
    if not reply:
        return {}
    items = reply.items() if isinstance(reply, Mapping) else reply
    return {_text(stream): _entries(entries) for stream, entries in items}


async def read_stream(client: Redis, stream: str) -> list[Delivered]:
    """Every entry of ``stream`` in stream order (XRANGE, in pages)."""
    out: list[Delivered] = []
    start = "-"
    while True:
        page = _entries(await _call(client, "XRANGE", stream, start, "+", "COUNT", 1000))
        out += [delivered_from(stream, fields) for _, fields in page if fields]
        if len(page) < 1000:
            return out
        start = "(" + page[-1][0]
