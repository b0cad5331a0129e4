"""H11: a row another program wrote never makes a fetch fail; it comes back with a defect instead."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from outboxkit.core.rows import event_from_row


def row(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "seq": 7,
        "id": "0190a3d4-0000-7000-8000-000000000001",
        "topic": "orders.created",
        "key": "k",
        "type": None,
        "source": None,
        "payload": b"{}",
        "content_type": "application/json",
        "headers": "{}",
        "created_at": datetime(2026, 11, 30, tzinfo=UTC),
        "attempts": 0,
    }
    base.update(overrides)
    return base


def test_a_good_row_becomes_an_event() -> None:
    event = event_from_row(**row(headers='{"traceparent": "00-abc"}', payload=memoryview(b"x"), bucket=3))  # type: ignore[arg-type]
    assert event.defect is None and event.headers == {"traceparent": "00-abc"} and event.payload == b"x"
    assert event.bucket == 3


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"headers": '["a"]'}, "JSON object"),
        ({"headers": '"text"'}, "JSON object"),
        ({"headers": "not json"}, "not JSON"),
        ({"headers": '{"n": 1}'}, "must be a str"),
        ({"headers": '{"bad name": "v"}'}, "invalid header name"),
        ({"headers": '{"ce-id": "x"}'}, "set by outboxkit"),
        ({"headers": '{"h": "a\\nb"}'}, "line breaks"),
        ({"topic": "orders created"}, "invalid topic"),
        ({"topic": ""}, "invalid topic"),
        ({"topic": "orders.>"}, "invalid topic"),
        ({"topic": 42}, "topic must be a str"),
        ({"topic": "x" * 300}, "limit is 249"),
        ({"key": "a\nb"}, "control characters"),
        ({"key": ""}, "non-empty"),
        ({"type": "a\rb"}, "control characters"),
        ({"source": ""}, "non-empty"),
        ({"content_type": "garbage"}, "media type"),
        ({"content_type": "text/plain\r\nX: y"}, "media type"),
        ({"payload": 12}, "payload must be bytes"),
        ({"created_at": "yesterday"}, "ISO 8601"),
        ({"id": ""}, "id"),
        ({"id": 5}, "id"),
    ],
)
def test_a_row_breaking_the_contract_comes_back_with_its_reason(overrides: dict[str, object], words: str) -> None:
    event = event_from_row(**row(**overrides))  # type: ignore[arg-type]
    assert event.defect is not None and words in event.defect, event.defect
    assert event.seq == 7 and event.defect.startswith("row 7 cannot be published")


def test_accepted_variants() -> None:
    for overrides in (
        {"headers": None},
        {"headers": ""},
        {"headers": {"a": "b"}},
        {"content_type": "text/plain; charset=utf-8"},
        {"content_type": "application/cloudevents+json"},
        {"payload": "text stored by SQLite"},
        {"created_at": "2026-11-30T10:00:00.123Z"},
        {"key": None},
    ):
        assert event_from_row(**row(**overrides)).defect is None, overrides  # type: ignore[arg-type]
