"""Turning an outbox row into an event, whoever wrote the row (H11).

The outbox table is a public contract: services in other languages, psql sessions and migration
scripts insert into it too. ``emit()`` refuses bad input before writing, but nothing stops a plain
``INSERT``. So the relay checks every row it reads with the same rules ``emit()`` applies, and a row
that cannot become a message comes back as an event carrying a ``defect`` (the reason) instead of
raising: the relay dead-letters it, holding its key per the policy, and everything else flows. A
fetch must never fail because of what one row contains, or the relay (and the next relay that
takes over the bucket) would stop.

Pure: no I/O; every store calls :func:`event_from_row` on the columns it read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime

from outboxkit.core.envelope import JSON, OutboxEvent, validate_headers, validate_key, validate_topic
from outboxkit.core.storable import storable
from outboxkit.errors import EmitError

# type/subtype with optional parameters, as RFC 9110 writes a media type; no control characters.
_MEDIA_TYPE = re.compile(r"[A-Za-z0-9!#$&^_.+\-]+/[A-Za-z0-9!#$&^_.+\-]+(?:\s*;[^\x00-\x1f\x7f]*)?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_ATTRIBUTE_LENGTH = 1024


def _text_attribute(name: str, value: object) -> str | None:
    """``type`` and ``source``: optional, a printable str that fits a header."""
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty text or NULL, got {value!r:.80}")
    if len(value) > MAX_ATTRIBUTE_LENGTH or _CONTROL.search(value):
        raise ValueError(f"{name} {value!r:.80} is longer than {MAX_ATTRIBUTE_LENGTH} or has control characters")
    return value


def _headers(raw: object) -> dict[str, str]:
    if raw is None or raw == "" or raw == "{}":
        return {}
    if isinstance(raw, str | bytes | bytearray):
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise ValueError(f"headers are not JSON ({exc})") from None
    if not isinstance(raw, Mapping):
        raise ValueError(f"headers must be a JSON object of text values, got {type(raw).__name__} {raw!r:.80}")
    try:
        headers = validate_headers(raw)
    except EmitError as exc:
        raise ValueError(str(exc)) from None
    for name, value in headers.items():
        # JSON can spell a lone surrogate (\ud800) that no client can encode into a message.
        try:
            value.encode()
        except UnicodeEncodeError:
            raise ValueError(f"header {name!r} holds a lone surrogate, which no bus can carry") from None
    return headers


def _payload(raw: object) -> bytes:
    if isinstance(raw, bytes):
        return raw
    if isinstance(raw, bytearray | memoryview):
        return bytes(raw)
    if isinstance(raw, str):  # SQLite stores text where a program inserted a str
        return raw.encode()
    raise ValueError(f"payload must be bytes, got {type(raw).__name__}")


# Topics and content types repeat across rows: remember the ones already checked (bounded).
_checked_topics: set[str] = set()
_checked_types: set[str] = {JSON}


def _remember(checked: set[str], value: str) -> None:
    if len(checked) > 10_000:
        checked.clear()
    checked.add(value)


def _topic(raw: object) -> None:
    if isinstance(raw, str) and raw in _checked_topics:
        return
    try:
        validate_topic(raw)
    except EmitError as exc:
        raise ValueError(str(exc)) from None
    _remember(_checked_topics, raw)  # type: ignore[arg-type]  # validated: a str


def _content_type(raw: object) -> str:
    if raw is None:
        return JSON
    if isinstance(raw, str) and raw in _checked_types:
        return raw
    if not isinstance(raw, str) or not _MEDIA_TYPE.fullmatch(raw):
        raise ValueError(f"content_type {raw!r:.80} is not a media type such as application/json")
    _remember(_checked_types, raw)
    return raw


def _time(raw: object) -> datetime | None:
    if raw is None or isinstance(raw, datetime):
        return raw
    if isinstance(raw, str):
        try:
            return datetime.fromisoformat(raw.replace("Z", "+00:00")).astimezone(UTC)
        except ValueError:
            pass
    raise ValueError(f"created_at {raw!r:.80} is not an ISO 8601 time")


def _shown(value: object, limit: int) -> str:
    """``value`` as storable text for a dead letter, even if showing it raises."""
    try:
        return storable(value if isinstance(value, str) else str(value), limit)
    except Exception:
        return f"<unprintable {value.__class__.__name__}>"


def event_from_row(
    seq: int,
    id: object,
    topic: object,
    key: object,
    type: object,
    source: object,
    payload: object,
    content_type: object,
    headers: object,
    created_at: object,
    attempts: object,
    bucket: int | None = None,
) -> OutboxEvent:
    """The event of one row, or, if the row breaks a rule of the contract, an event whose
    ``defect`` says which (its other fields then hold what could be read, for the dead letter)."""
    safe_id = id if isinstance(id, str) and id else _shown(id, 256)
    # The key of a defective row only serves to hold its later events (G5) and to name it in logs;
    # one that no driver could send back as a parameter (a lone surrogate) is not kept.
    safe_key = key if isinstance(key, str) and key and storable(key, len(key)) == key else None
    tries = attempts if isinstance(attempts, int) else 0
    try:
        if not isinstance(id, str) or not id or len(id) > 256 or _CONTROL.search(id):
            raise ValueError(f"id {id!r:.80} is not a printable text of 1-256 characters")
        _topic(topic)
        if key is not None:
            try:
                validate_key(key)
            except EmitError as exc:
                raise ValueError(str(exc)) from None
        return OutboxEvent(
            seq=seq,
            id=id,
            topic=topic,  # type: ignore[arg-type]  # validated above
            key=key,  # type: ignore[arg-type]
            type=_text_attribute("type", type),
            source=_text_attribute("source", source),
            payload=_payload(payload),
            content_type=_content_type(content_type),
            headers=_headers(headers),
            created_at=_time(created_at),
            attempts=tries,
            bucket=bucket,
        )
    except Exception as exc:
        # Not only ValueError (H13): JSON nested deep enough raises RecursionError, and a check
        # may meet a type nobody expected. Whatever it is, it is this row's defect, never the
        # fetch's: a fetch that raised would be read again, and fail again, forever. (`type` is a
        # column here, hence __class__.)
        reason = str(exc) if isinstance(exc, ValueError) else f"{exc.__class__.__name__}: {exc}"
        return OutboxEvent(
            seq=seq,
            id=storable(safe_id, 256),
            topic=storable(topic if isinstance(topic, str) else _shown(topic, 1024), 1024),
            key=safe_key,
            payload=b"",
            attempts=tries,
            bucket=bucket,
            defect=storable(f"row {seq} cannot be published: {reason}"),
        )
