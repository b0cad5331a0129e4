"""The event envelope: topic rules, payload encoding, header rules, ids and CloudEvents attributes."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from outboxkit.core.envelope import (
    JSON,
    MAX_TOPIC_LENGTH,
    OCTET_STREAM,
    OutboxEvent,
    binary_headers,
    encode_payload,
    format_time,
    json_encoder,
    new_event_id,
    validate_headers,
    validate_key,
    validate_topic,
)
from outboxkit.errors import EmitError, EncodingError, InvalidTopicError

# -- topics ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "topic",
    ["orders", "orders.created", "a.b.c.d", "Orders_v2.created-at", "x", "0.1", "a" * MAX_TOPIC_LENGTH],
)
def test_valid_topics_are_returned_unchanged(topic: str) -> None:
    assert validate_topic(topic) == topic


@pytest.mark.parametrize(
    "topic",
    [
        "",
        ".",
        "a..b",
        ".orders",
        "orders.",
        "orders.*",
        "orders.>",
        "*",
        ">",
        "has space",
        "tab\there",
        "line\nbreak",
        "orders\n",
        "ordérs",
        "a/b",
        "a:b",
        "a" * (MAX_TOPIC_LENGTH + 1),
        "a" * 300,
    ],
)
def test_unroutable_topics_are_refused(topic: str) -> None:
    with pytest.raises(InvalidTopicError):
        validate_topic(topic)


@pytest.mark.parametrize("topic", [None, 1, b"orders", ["orders"]])
def test_non_str_topics_are_refused(topic: object) -> None:
    with pytest.raises(InvalidTopicError, match="str"):
        validate_topic(topic)


def test_topic_length_limit_is_kafkas() -> None:
    assert MAX_TOPIC_LENGTH == 249
    dotted = ".".join(["ab"] * 83)  # 83*2 + 82 dots = 248 characters
    assert validate_topic(dotted + "c") == dotted + "c"
    with pytest.raises(InvalidTopicError, match="249"):
        validate_topic(dotted + "cd")


def test_invalid_topic_error_is_an_emit_error() -> None:
    with pytest.raises(EmitError):
        validate_topic("a..b")


# -- keys --------------------------------------------------------------------------------------


def test_keys() -> None:
    assert validate_key(None) is None
    assert validate_key("customer-7") == "customer-7"
    assert validate_key("k" * 1024) == "k" * 1024
    for bad in ["", 7, b"k", "k" * 1025, "é" * 513]:
        with pytest.raises(EncodingError):
            validate_key(bad)


# -- payloads ----------------------------------------------------------------------------------


def test_json_encoder_is_compact_and_keeps_unicode() -> None:
    assert json_encoder({"a": 1, "b": [1, 2], "c": "é"}) == '{"a":1,"b":[1,2],"c":"é"}'.encode()


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), {"x": [float("nan")]}])
def test_json_encoder_refuses_non_json_numbers(value: object) -> None:
    with pytest.raises(ValueError):
        json_encoder(value)


@pytest.mark.parametrize("payload", [object(), {1, 2}, float("nan"), {"x": float("inf")}, {("a",): 1}])
def test_unencodable_payloads_raise_encoding_error(payload: object) -> None:
    with pytest.raises(EncodingError, match="cannot be encoded"):
        encode_payload(payload)


def test_recursive_payload_raises_encoding_error() -> None:
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(EncodingError):
        encode_payload(loop)


def test_json_payload() -> None:
    assert encode_payload({"id": 1}) == (b'{"id":1}', JSON)
    assert encode_payload(None) == (b"null", JSON)


@pytest.mark.parametrize("payload", [b"\x00\xffraw", bytearray(b"\x00\xffraw"), memoryview(b"\x00\xffraw")])
def test_binary_payload_passes_through(payload: bytes | bytearray | memoryview) -> None:
    data, content_type = encode_payload(payload)
    assert data == b"\x00\xffraw"
    assert type(data) is bytes
    assert content_type == OCTET_STREAM


def test_size_limit_is_inclusive() -> None:
    assert encode_payload(b"x" * 100, max_bytes=100) == (b"x" * 100, OCTET_STREAM)
    with pytest.raises(EncodingError, match="101 bytes"):
        encode_payload(b"x" * 101, max_bytes=100)
    with pytest.raises(EncodingError, match="limit is 100"):
        encode_payload("x" * 100, max_bytes=100)  # 102 bytes with the quotes


def test_custom_encoder() -> None:
    assert encode_payload(5, lambda v: str(v).encode()) == (b"5", JSON)
    with pytest.raises(EncodingError, match="not bytes"):
        encode_payload(5, lambda v: str(v))  # type: ignore[arg-type,return-value]

    def refuse(value: object) -> bytes:
        raise TypeError("nope")

    with pytest.raises(EncodingError, match="nope"):
        encode_payload(5, refuse)


# -- headers -----------------------------------------------------------------------------------


def test_user_headers_are_kept() -> None:
    headers = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "x-tenant": "t1"}
    assert validate_headers(headers) == headers
    assert validate_headers(None) == {}
    assert validate_headers({}) == {}


@pytest.mark.parametrize(
    "headers",
    [
        {"ce-id": "x"},
        {"CE-Type": "x"},
        {"ce-source": "x"},
        {"content-type": "text/plain"},
        {"Content-Type": "text/plain"},
        {"Nats-Msg-Id": "x"},
        {"nats-msg-id": "x"},
    ],
)
def test_reserved_headers_are_refused(headers: dict[str, str]) -> None:
    with pytest.raises(EncodingError, match="set by outboxkit"):
        validate_headers(headers)


@pytest.mark.parametrize(
    "headers",
    [{"has space": "x"}, {"": "x"}, {"a:b": "x"}, {1: "x"}, {"x": 1}, {"x": "a\nb"}, {"x": "a\rb"}, {"x": None}],
)
def test_malformed_headers_are_refused(headers: dict[object, object]) -> None:
    with pytest.raises(EncodingError):
        validate_headers(headers)  # type: ignore[arg-type]


# -- ids ---------------------------------------------------------------------------------------


def test_event_ids_are_uuid7_strings() -> None:
    event_id = new_event_id()
    parsed = uuid.UUID(event_id)
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert str(parsed) == event_id  # canonical lowercase form


def test_event_ids_carry_the_current_time() -> None:
    before = int(time.time() * 1000)
    millis = uuid.UUID(new_event_id()).int >> 80
    after = int(time.time() * 1000)
    assert before <= millis <= after


def test_event_ids_are_unique_and_time_ordered() -> None:
    ids = [new_event_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert [uuid.UUID(i) for i in ids] == sorted(uuid.UUID(i) for i in ids)


# -- CloudEvents attributes ----------------------------------------------------------------------


def _event(**fields: object) -> OutboxEvent:
    defaults: dict[str, object] = {
        "seq": 1,
        "id": "01890a5d-ac96-774b-bcce-b302099a8057",
        "topic": "orders.created",
        "payload": b"{}",
        "created_at": datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC),
    }
    return OutboxEvent(**{**defaults, **fields})  # type: ignore[arg-type]


def test_binary_headers_defaults() -> None:
    headers = binary_headers(_event(), "/svc")
    assert headers == {
        "ce-specversion": "1.0",
        "ce-id": "01890a5d-ac96-774b-bcce-b302099a8057",
        "ce-source": "/svc",
        "ce-type": "orders.created",
        "ce-time": "2024-01-02T03:04:05.123456Z",
        "ce-sequence": "00000000000000000001",
        "content-type": JSON,
    }


def test_binary_headers_with_key_type_source_and_user_headers() -> None:
    event = _event(
        key="customer-7",
        type="com.example.order.created",
        source="/orders-service",
        content_type=OCTET_STREAM,
        headers={"x-tenant": "t1"},
    )
    headers = binary_headers(event, "/default")
    assert headers["ce-subject"] == "customer-7"
    assert headers["ce-type"] == "com.example.order.created"
    assert headers["ce-source"] == "/orders-service"
    assert headers["content-type"] == OCTET_STREAM
    assert headers["x-tenant"] == "t1"
    assert "datacontenttype" not in json.dumps(headers)


def test_subject_only_when_key_is_set() -> None:
    assert "ce-subject" not in binary_headers(_event(key=None), "/svc")
    assert binary_headers(_event(key="k"), "/svc")["ce-subject"] == "k"


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        (datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), "2024-01-02T03:04:05Z"),
        (datetime(2024, 1, 2, 3, 4, 5), "2024-01-02T03:04:05Z"),  # naive: taken as UTC
        (datetime(2024, 1, 2, 5, 4, 5, 7, tzinfo=timezone(timedelta(hours=2))), "2024-01-02T03:04:05.000007Z"),
    ],
)
def test_time_is_rfc3339_utc(when: datetime, expected: str) -> None:
    assert format_time(when) == expected


def test_time_defaults_to_now() -> None:
    before = datetime.now(UTC)
    stamp = format_time(None)
    assert stamp.endswith("Z")
    parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert before - timedelta(seconds=1) <= parsed <= datetime.now(UTC) + timedelta(seconds=1)
