"""pgoutput decoding and the table-less message format (pure, no service)."""

from __future__ import annotations

import struct
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from outboxkit.core import walmessage
from outboxkit.stores.base import TableRef
from outboxkit.stores.postgres.pgoutput import Begin, Commit, Insert, Message, Relation, decode, format_lsn, parse_lsn
from outboxkit.stores.postgres.walevents import Decoder

COLUMNS = ("seq", "id", "topic", "key", "type", "source", "payload", "content_type", "headers", "created_at")
COLUMNS += ("attempts", "last_error", "delivered_at", "dead_at")


def begin(xid: int, micros: int = 0) -> bytes:
    return b"B" + struct.pack("!qqI", 100, micros, xid)


def commit(end: int) -> bytes:
    return b"C" + struct.pack("!bqqq", 0, end - 8, end, 0)


def relation(relid: int, namespace: str, name: str, columns: tuple[str, ...] = COLUMNS) -> bytes:
    out = b"R" + struct.pack("!I", relid) + namespace.encode() + b"\0" + name.encode() + b"\0d"
    out += struct.pack("!h", len(columns))
    for column in columns:
        out += b"\0" + column.encode() + b"\0" + struct.pack("!Ii", 25, -1)
    return out


def insert(relid: int, values: tuple[str | None, ...]) -> bytes:
    out = b"I" + struct.pack("!I", relid) + b"N" + struct.pack("!h", len(values))
    for value in values:
        if value is None:
            out += b"n"
        else:
            raw = value.encode()
            out += b"t" + struct.pack("!i", len(raw)) + raw
    return out


def message(content: bytes, prefix: str = "outboxkit:s.outbox", transactional: bool = True, lsn: int = 5) -> bytes:
    return (
        b"M"
        + struct.pack("!bq", int(transactional), lsn)
        + prefix.encode()
        + b"\0"
        + struct.pack("!i", len(content))
        + content
    )


def row(
    seq: int, key: str | None = "k", topic: str = "orders.created", dead: str | None = None
) -> tuple[str | None, ...]:
    uid = f"0190a000-0000-7000-8000-{seq:012d}"
    return (str(seq), uid, topic, key, None, None, "\\x7b7d", "application/json", '{"h": "v"}',
            "2026-12-07 02:30:00.5+00", "0", None, None, dead)  # fmt: skip


def test_records_decode() -> None:
    assert decode(begin(7, 1_000_000)) == Begin(100, datetime(2000, 1, 1, 0, 0, 1, tzinfo=UTC), 7)
    assert decode(commit(64)) == Commit(56, 64)
    assert decode(relation(1, "s", "outbox", ("a", "b"))) == Relation(1, "s", "outbox", ("a", "b"))
    assert decode(insert(1, ("x", None))) == Insert(1, ("x", None))
    assert decode(message(b"abc", "p", False)) == Message(False, 5, "p", b"abc")
    assert decode(b"Y\0\0") is None


@given(st.integers(min_value=0, max_value=2**63 - 1))
def test_lsn_text_round_trip(lsn: int) -> None:
    assert parse_lsn(format_lsn(lsn)) == lsn


def test_transactions_in_log_order_rows_and_messages() -> None:
    decoder = Decoder(TableRef("outbox", "s"))
    content = walmessage.encode(id="m-1", topic="orders.created", payload=b"{}", key="k", headers={"a": "b"})
    stream = [
        begin(1), relation(9, "s", "outbox"), insert(9, row(2)), message(content), commit(200),
        begin(2), relation(8, "s", "other"), insert(8, row(3)), message(content, prefix="outboxkit"), commit(300),
        begin(3), insert(9, row(1)), insert(9, row(4, dead="2026-12-07")), commit(400),
    ]  # fmt: skip
    txs = decoder.transactions(stream)
    assert [t.end_lsn for t in txs] == [200, 300, 400]
    assert [(i.row_seq, i.event.id) for i in txs[0].items] == [(2, row(2)[1]), (None, "m-1")]
    assert txs[1].items == []  # another table; another outbox's messages (the default one's prefix)
    assert [i.row_seq for i in txs[2].items] == [1]  # a dead letter the relay wrote is skipped
    first = txs[0].items[0].event
    assert first.payload == b"{}" and first.headers == {"h": "v"} and first.defect is None
    assert first.created_at == datetime(2026, 12, 7, 2, 30, 0, 500000, tzinfo=UTC)
    assert txs[0].items[1].event.headers == {"a": "b"}
    seqs = [i.event.seq for t in txs for i in t.items]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_a_bad_row_is_an_event_with_a_defect() -> None:
    decoder = Decoder(TableRef("outbox"))
    txs = decoder.transactions(
        [begin(1), relation(9, "public", "outbox"), insert(9, row(5, topic="no spaces!")), commit(9)]
    )
    assert txs[0].items[0].event.defect is not None and txs[0].items[0].row_seq == 5


@given(
    st.binary(max_size=64),
    st.one_of(st.none(), st.text(alphabet="abcxyz-0123", min_size=1, max_size=10)),
    st.dictionaries(st.sampled_from(["a", "b", "x-y"]), st.text(alphabet="pqrs \u00e9", max_size=5)),
)
def test_message_round_trip(payload: bytes, key: str | None, headers: dict[str, str]) -> None:
    content = walmessage.encode(id="e-1", topic="orders.created", payload=payload, key=key, headers=headers)
    event = walmessage.decode(3, content)
    assert event.defect is None, event.defect
    assert (event.id, event.topic, event.key, event.payload, dict(event.headers)) == (
        "e-1", "orders.created", key, payload, headers,
    )  # fmt: skip


def test_malformed_messages_have_defects() -> None:
    for content in (b"no newline", b"[1]\n", b'{"v":2,"id":"a","topic":"t"}\n', b'{"id":"a"}\nx', b"{bad\nx"):
        event = walmessage.decode(1, content)
        assert event.defect is not None and event.defect.startswith("message cannot be published"), content


def test_each_outbox_has_its_own_message_prefix() -> None:
    assert walmessage.prefix_for() == "outboxkit"
    assert walmessage.prefix_for("outbox", "sales") == "outboxkit:sales.outbox"
    assert walmessage.prefix_for("events") == "outboxkit:events"


# -- H13: traffic that is not ours, and hostile content ------------------------------------------


def test_non_transactional_messages_are_finished_inputs_the_slot_moves_past() -> None:
    """Another tool's heartbeats (non-transactional, any prefix) end where they were written: each
    is an empty transaction at its position, so the relay advances past any number of them."""
    decoder = Decoder(TableRef("outbox", "s"))
    stream = [message(b"beat", prefix="debezium", transactional=False, lsn=100 + i) for i in range(1000)]
    txs = decoder.transactions(stream)
    assert [t.end_lsn for t in txs] == [100 + i for i in range(1000)]
    assert all(t.items == [] for t in txs)
    assert decoder.unit_end(stream) == 1099


def test_an_own_prefix_non_transactional_message_is_a_dead_letter_that_holds_no_key() -> None:
    decoder = Decoder(TableRef("outbox", "s"))
    content = walmessage.encode(id="m-1", topic="orders.created", payload=b"{}", key="k")
    txs = decoder.transactions([message(content, transactional=False, lsn=77)])
    assert [t.end_lsn for t in txs] == [77]
    (item,) = txs[0].items
    assert item.event.defect is not None and "not trusted" in item.event.defect
    assert item.event.key is None and "'k'" in item.event.defect


def deep(n: int) -> bytes:
    return b"[" * n + b"]" * n


@pytest.mark.parametrize(
    "content",
    [
        b'{"v":1,"id":"a","topic":"t","headers":' + deep(100_000) + b"}\nx",  # RecursionError in json
        deep(100_000) + b"\nx",
        b'{"v":1,"id":"a","topic":"orders.x","key":"\\ud800"}\nx',  # a lone surrogate
        b'{"v":1,"id":"a","topic":"orders.x","key":"a\\u0000b"}\nx',  # NUL
        b'{"v":1,"id":"a","topic":"orders.\\udfff"}\nx',
        b'{"v":1,"id":"a","topic":"' + b"t" * 100_000 + b'"}\nx',  # huge topic
        b'{"v":1,"id":"a","topic":"orders.x","key":"' + b"k" * 100_000 + b'"}\nx',  # huge key
        b'{"v":1,"id":7,"topic":["x"],"key":{"a":1},"headers":[1]}\nx',  # wrong types
        b"\xff\xfe\xfd\nx",  # not UTF-8
    ],
    ids=[
        "deep-headers",
        "deep-attributes",
        "surrogate-key",
        "nul-key",
        "surrogate-topic",
        "huge-topic",
        "huge-key",
        "wrong-types",
        "not-utf8",
    ],
)
def test_hostile_message_content_is_a_defect_never_an_exception(content: bytes) -> None:
    decoder = Decoder(TableRef("outbox", "s"))
    txs = decoder.transactions([begin(1), message(content), commit(50)])
    (item,) = txs[0].items
    assert item.event.defect is not None


@given(st.binary(max_size=300))
def test_any_message_content_decodes_without_raising(content: bytes) -> None:
    event = walmessage.decode(1, content)
    assert event.defect is not None or event.topic


def test_a_row_that_raises_while_read_is_its_own_dead_letter() -> None:
    """headers nested deeper than the JSON parser recurses: the row is a defect, not a failed read."""
    decoder = Decoder(TableRef("outbox", "s"))
    bad = list(row(5))
    bad[8] = '{"a":' + "[" * 50_000 + "]" * 50_000 + "}"
    txs = decoder.transactions(
        [begin(1), relation(9, "s", "outbox"), insert(9, tuple(bad)), insert(9, row(6)), commit(9)]
    )
    assert [(i.row_seq, i.event.defect is None) for i in txs[0].items] == [(5, False), (6, True)]


# The outbox's column types, as the Relation message of a binary stream carries them.
TYPES = {"seq": 20, "id": 2950, "payload": 17, "headers": 3802, "created_at": 1184, "attempts": 23}
TYPES |= {"delivered_at": 1184, "dead_at": 1184}


def typed_relation(relid: int, namespace: str, name: str) -> bytes:
    out = b"R" + struct.pack("!I", relid) + namespace.encode() + b"\0" + name.encode() + b"\0d"
    out += struct.pack("!h", len(COLUMNS))
    for column in COLUMNS:
        out += b"\0" + column.encode() + b"\0" + struct.pack("!Ii", TYPES.get(column, 25), -1)
    return out


def binary_insert(relid: int, seq: int, payload: bytes, headers: str, micros: int, key: str | None) -> bytes:
    """The same row as ``row`` would give in text, each value in its type's send format."""
    import uuid

    uid = uuid.UUID(f"0190a000-0000-7000-8000-{seq:012d}")
    values: list[bytes | None] = [
        struct.pack("!q", seq), uid.bytes, b"orders.created", None if key is None else key.encode(), None, None,
        payload, b"application/json", b"\x01" + headers.encode(), struct.pack("!q", micros), struct.pack("!i", 0),
        None, None, None,
    ]  # fmt: skip
    out = b"I" + struct.pack("!I", relid) + b"N" + struct.pack("!h", len(values))
    for value in values:
        out += b"n" if value is None else b"b" + struct.pack("!i", len(value)) + value
    return out


@given(
    st.integers(min_value=1, max_value=10**12 - 1),
    st.binary(max_size=64),
    st.dictionaries(st.sampled_from(["a", "b"]), st.text(alphabet="pq \u00e9", max_size=5)),
    st.integers(min_value=0, max_value=10**15),
    st.one_of(st.none(), st.text(alphabet="abc-1", min_size=1, max_size=8)),
)
def test_a_binary_row_gives_the_event_its_text_form_gives(
    seq: int, payload: bytes, headers: dict[str, str], micros: int, key: str | None
) -> None:
    import json
    from datetime import timedelta

    at = datetime(2000, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)
    text_row = list(row(seq, key))
    text_row[6], text_row[8], text_row[9] = "\\x" + payload.hex(), json.dumps(headers), at.isoformat()
    text = Decoder(TableRef("outbox", "s")).transactions(
        [begin(1), relation(9, "s", "outbox"), insert(9, tuple(text_row)), commit(10)]
    )
    binary = Decoder(TableRef("outbox", "s")).transactions(
        [
            begin(1), typed_relation(9, "s", "outbox"),
            binary_insert(9, seq, payload, json.dumps(headers), micros, key), commit(10),
        ]
    )  # fmt: skip
    assert binary == text
    assert binary[0].items[0].row_seq == seq and binary[0].items[0].event.payload == payload


def test_a_binary_row_that_cannot_be_read_is_its_own_dead_letter() -> None:
    broken = binary_insert(9, 7, b"{}", "{}", 0, "k").replace(b"\x01{}", b"\x09{}")  # jsonb version 9
    txs = Decoder(TableRef("outbox", "s")).transactions([begin(1), typed_relation(9, "s", "outbox"), broken, commit(5)])
    item = txs[0].items[0]
    assert item.row_seq == 7 and item.event.defect is not None
