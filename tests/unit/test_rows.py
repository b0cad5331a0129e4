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


# -- H13: whatever a row holds, reading it never raises ------------------------------------------------


def test_headers_nested_past_the_parsers_recursion_limit_are_a_defect_not_a_raise() -> None:
    deep = '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}"
    event = event_from_row(**row(headers=deep))  # type: ignore[arg-type]
    assert event.defect is not None and "RecursionError" in event.defect


def test_a_header_with_a_lone_surrogate_is_a_defect() -> None:
    event = event_from_row(**row(headers='{"h": "\\ud800"}'))  # type: ignore[arg-type]
    assert event.defect is not None and "surrogate" in event.defect


@pytest.mark.parametrize("field", ["key", "topic", "id"])
@pytest.mark.parametrize("value", ["a\ud800b", "a\x00b", "x" * 10_000, "", "\x1b[31m"])
def test_any_key_topic_or_id_gives_a_defect_whose_text_is_storable(field: str, value: str) -> None:
    event = event_from_row(**row(**{field: value}))  # type: ignore[arg-type]
    if event.defect is None:
        return  # a legal value (a long key is refused, a long id too; some are fine)
    for text in (event.defect, event.topic, event.id):
        text.encode()  # no lone surrogate left
        assert "\x00" not in text
    assert len(event.defect) <= 2000
    if event.key is not None:
        event.key.encode()


def test_a_column_of_a_type_nobody_expected_is_a_defect() -> None:
    class Weird:
        def __str__(self) -> str:
            raise RuntimeError("cannot show myself")

        __repr__ = __str__

    for field in ("headers", "topic", "id", "key", "created_at"):
        event = event_from_row(**row(**{field: Weird()}))  # type: ignore[arg-type]
        assert event.defect is not None, field
