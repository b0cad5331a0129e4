"""H13 with generated inputs: hostile rows and logical messages, other tools' traffic and other
tables' rows, interleaved with good events, against the log-tailing relays on the real databases.

Each example writes its inputs, then runs a fresh relay over the same slot (or binlog position
table) and asserts: the relay stays up; every good event (keys no hostile input uses, so none is
held) is published exactly once and in order per key; every hostile input of the outbox is a dead
letter with a reason; the slot or stored binlog position passes everything written; all within a
generous bound. The short profile keeps the suite fast; for a long run set
``OUTBOXKIT_FUZZ_TAIL_EXAMPLES`` (e.g. 200).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outboxkit import Outbox
from outboxkit.stores.base import TableRef
from outboxkit.walemit import MessageOutbox
from tests.conftest import drop_stream, make_stream, unique
from tests.helpers import db_connect, read_all
from tests.integration.tailsupport import (
    binlog_now,
    binlog_relay,
    binlog_stored,
    confirmed_lsn,
    emit_message,
    relay_until,
    tail_binlog_ref,
    tail_pg_db,
    tail_wal_ref,
    wal_lsn,
    wal_relay,
)

__all__ = ["tail_binlog_ref", "tail_pg_db", "tail_wal_ref"]  # fixtures used by name

EXAMPLES = int(os.environ.get("OUTBOXKIT_FUZZ_TAIL_EXAMPLES", "4"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=EXAMPLES <= 10,  # the short profile is the same every run (no flakiness by draw)
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
GOOD_KEYS = ("g0", "g1", "g2")  # no hostile input ever carries one: good events are never held
BAD_KEYS = ("h0", "h1")

# -- what hostile inputs hold ------------------------------------------------------------------
noise = st.text(max_size=40)  # any code point: lone surrogates, NUL, controls
db_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)


def _deep(n: int) -> str:
    return "[" * n + "]" * n


@st.composite
def hostile_content(draw: st.DrawFn) -> bytes:
    """A table-less message with this outbox's prefix that is sure to be a defect."""
    fault = draw(st.sampled_from(["deep", "surrogate-key", "nul-key", "huge-key", "bad-topic", "wrong-type",
                                  "no-newline", "not-json", "surrogate-topic"]))  # fmt: skip
    attrs: dict[str, Any] = {"v": 1, "id": draw(st.uuids()).hex, "topic": "orders.fuzz", "type": draw(noise)}
    attrs["key"] = draw(st.sampled_from(BAD_KEYS))
    if fault == "deep":
        head = '{"v":1,"id":"x","topic":"orders.fuzz","headers":{"a":' + _deep(draw(st.integers(2_000, 100_000)))
        return (head + "}}").encode() + b"\n{}"
    if fault == "surrogate-key":
        attrs["key"] = "h\ud800" + draw(noise)
    elif fault == "nul-key":
        attrs["key"] = "h\x00" + draw(noise)
    elif fault == "huge-key":
        attrs["key"] = secrets.token_hex(draw(st.integers(600, 4000)))
    elif fault == "bad-topic":
        attrs["topic"] = draw(noise) + " !"
    elif fault == "surrogate-topic":
        attrs["topic"] = "orders.\udfff"
    elif fault == "wrong-type":
        attrs["id"] = [draw(noise)]
    head = json.dumps(attrs).encode()  # ensure_ascii: surrogates and NUL travel as \u escapes
    if fault == "no-newline":
        return head
    if fault == "not-json":
        return b"\xff" + head + b"\n{}"
    return head + b"\n" + draw(st.binary(max_size=64))


@st.composite
def hostile_row(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """(fault, columns) of an outbox row written by plain SQL that is sure to be a defect."""
    fault = draw(st.sampled_from(["bad-topic", "control-key", "huge-key", "headers-not-object", "content-type",
                                  "deep-headers"]))  # fmt: skip
    row: dict[str, Any] = {"topic": "orders.fuzz", "key": draw(st.sampled_from(BAD_KEYS)), "type": draw(db_text)}
    row["headers"] = "{}"
    row["content_type"] = "application/json"
    if fault == "bad-topic":
        row["topic"] = (draw(db_text) + " !")[:200]
    elif fault == "control-key":
        row["key"] = "h\t" + draw(db_text)
    elif fault == "huge-key":
        row["key"] = secrets.token_hex(draw(st.integers(600, 3000)))
    elif fault == "headers-not-object":
        row["headers"] = draw(st.sampled_from(["[1, 2]", '"text"', "7", "null"]))
    elif fault == "content-type":
        row["content_type"] = "not a type " + draw(db_text)
    else:
        row["headers"] = '{"a":' + _deep(draw(st.integers(1_100, 3_000))) + "}"
    return fault, row


good = st.tuples(st.sampled_from(["good-row", "good-message"]), st.sampled_from(GOOD_KEYS))
wal_input = st.one_of(
    good,
    good,
    st.tuples(st.just("bad-row"), hostile_row()),
    st.tuples(st.just("bad-message"), hostile_content()),
    # Non-transactional with our prefix: not trusted, even when it looks like a good event.
    st.tuples(
        st.just("untrusted"), st.one_of(hostile_content(), st.just(b'{"v":1,"id":"u","topic":"o.x","key":"g0"}\n'))
    ),
    st.tuples(
        st.just("foreign"),
        st.tuples(
            st.booleans(),
            st.sampled_from(["other-prefix", "outboxkit", "outboxkit:x.y", "hb"]),
            st.binary(max_size=100),
            st.integers(1, 400),
        ),
    ),
    st.tuples(st.just("other-table"), st.integers(1, 500)),
)
transactions = st.lists(st.lists(wal_input, min_size=1, max_size=4), min_size=1, max_size=12)


@dataclass
class Expected:
    good: list[tuple[str, str]] = field(default_factory=list)  # (id, key) in commit order
    recorded: int = 0  # hostile inputs of the outbox: one dead letter each


def _write_wal(db: str, ref: TableRef, topic: str, plan: list[list[tuple[str, Any]]]) -> Expected:
    expected = Expected()
    rows = Outbox(table=ref.table, schema=ref.schema)
    messages = MessageOutbox(table=ref.table, schema=ref.schema)
    t = ref.qualified
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(f'CREATE TABLE IF NOT EXISTS "{ref.schema}".other (id bigserial, pad text)'.encode())
        for tx in plan:
            pending: list[tuple[str, str]] = []
            recorded = 0
            with conn.transaction():
                for kind, arg in tx:
                    if kind in ("good-row", "good-message"):
                        emitter = rows if kind == "good-row" else messages
                        pending.append((emitter.emit(conn, topic, {"k": arg}, key=arg), arg))
                    elif kind == "bad-row":
                        _fault, row = arg
                        conn.execute(
                            f"INSERT INTO {t} (topic, key, type, payload, content_type, headers) "
                            "VALUES (%s, %s, %s, '\\x7b7d', %s, %s::jsonb)".encode(),
                            [row["topic"], row["key"], row["type"], row["content_type"], row["headers"]],
                        )
                        recorded += 1
                    elif kind == "bad-message":
                        emit_message(conn, ref, arg)
                        recorded += 1
                    elif kind == "untrusted":
                        emit_message(conn, ref, arg, transactional=False)
                        expected.recorded += 1  # written whether this transaction commits or not
                    elif kind == "foreign":
                        transactional, prefix, content, count = arg
                        conn.execute(
                            b"SELECT pg_logical_emit_message(%s, %s, %s::bytea) FROM generate_series(1, %s)",
                            [transactional, prefix, content, count],
                        )
                    else:
                        conn.execute(
                            f"INSERT INTO \"{ref.schema}\".other (pad) SELECT repeat('x', 100) "
                            "FROM generate_series(1, %s)".encode(),
                            [arg],
                        )
            expected.good += pending
            expected.recorded += recorded
    return expected


def _dead_count(db: str, ref: TableRef) -> int:
    conn = db_connect(db)
    try:
        row = conn.execute(
            f"SELECT count(*) FROM {ref.quoted(_quote(db))} WHERE dead_at IS NOT NULL AND last_error <> ''"
        ).fetchone()
    finally:
        conn.close()
    return int(row[0])


def _quote(db: str) -> str:
    return '"' if db.startswith("postgres") else "`"


async def _check(
    relay: Any, stream: Any, expected: Expected, dead_before: int, db: str, ref: TableRef, moved: Any
) -> None:
    want_dead = dead_before + expected.recorded
    await relay_until(
        relay,
        lambda: relay.stats.published >= len(expected.good) and _dead_count(db, ref) >= want_dead and moved(),
    )
    got = await read_all(stream.url, stream.name, expect=len(expected.good), idle=0.3)
    ids = [m.event_id for m in got]
    assert sorted(ids) == sorted(i for i, _ in expected.good), "each good event published exactly once"
    for key in GOOD_KEYS:
        assert [m.event_id for m in got if m.key == key] == [i for i, k in expected.good if k == key], key
    assert _dead_count(db, ref) == want_dead, "one dead letter with a reason per hostile input"
    assert not getattr(relay, "set_aside", None), relay.set_aside


@FUZZ
@given(plan=transactions)
def test_fuzz_wal_relay(
    plan: list[list[tuple[str, Any]]], tail_pg_db: str, tail_wal_ref: TableRef, nats_url: str
) -> None:
    async def example() -> None:
        stream = await make_stream(nats_url)
        try:
            dead_before = await asyncio.to_thread(_dead_count, tail_pg_db, tail_wal_ref)
            expected = await asyncio.to_thread(_write_wal, tail_pg_db, tail_wal_ref, stream.topic("fuzz"), plan)
            after = wal_lsn(tail_pg_db)
            relay = wal_relay(tail_pg_db, stream.url, tail_wal_ref, batch_size=50)  # a peek: 150 changes
            moved = lambda: confirmed_lsn(tail_pg_db, tail_wal_ref) >= after  # noqa: E731
            await _check(relay, stream, expected, dead_before, tail_pg_db, tail_wal_ref, moved)
        finally:
            await drop_stream(stream)

    asyncio.run(example())


# -- binlog --------------------------------------------------------------------------------------
@st.composite
def hostile_binlog_row(draw: st.DrawFn) -> dict[str, Any]:
    """An outbox row written by plain SQL on MariaDB that is sure to be a defect."""
    fault = draw(st.sampled_from(["bad-topic", "nul-key", "huge-key", "headers-not-object", "content-type"]))
    row: dict[str, Any] = {"topic": "orders.fuzz", "key": draw(st.sampled_from(BAD_KEYS)), "type": draw(db_text)}
    row["headers"], row["content_type"] = "{}", "application/json"
    if fault == "bad-topic":
        row["topic"] = (draw(db_text) + " !")[:200]
    elif fault == "nul-key":
        row["key"] = "h\x00" + draw(db_text)
    elif fault == "huge-key":
        row["key"] = "\U0001f600" * draw(st.integers(300, 1024))  # over 1,024 bytes, within 1,024 characters
    elif fault == "headers-not-object":
        row["headers"] = draw(st.sampled_from(["[1, 2]", '"text"', "7"]))
    else:
        row["content_type"] = "not a type " + draw(db_text)
    return row


binlog_input = st.one_of(
    st.tuples(st.just("good-row"), st.sampled_from(GOOD_KEYS)),
    st.tuples(st.just("good-row"), st.sampled_from(GOOD_KEYS)),
    st.tuples(st.just("bad-row"), hostile_binlog_row()),
    st.tuples(st.just("other-table"), st.integers(1, 500)),
    st.tuples(st.just("other-database"), st.integers(1, 500)),
)
binlog_transactions = st.lists(st.lists(binlog_input, min_size=1, max_size=4), min_size=1, max_size=12)


def _write_binlog(db: str, ref: TableRef, other_db: str, topic: str, plan: list[list[tuple[str, Any]]]) -> Expected:
    expected = Expected()
    outbox = Outbox(table=ref.table, schema=ref.schema)
    t = f"`{ref.schema}`.`{ref.table}`"
    conn = db_connect(db)
    try:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS `{ref.schema}`.other (id BIGINT AUTO_INCREMENT PRIMARY KEY, pad TEXT)"
        )
        for tx in plan:
            pending: list[tuple[str, str]] = []
            conn.execute("BEGIN")
            for kind, arg in tx:
                if kind == "good-row":
                    pending.append((outbox.emit(conn, topic, {"k": arg}, key=arg), arg))
                elif kind == "bad-row":
                    conn.execute(
                        f"INSERT INTO {t} (topic, `key`, type, payload, content_type, headers) "
                        "VALUES (%s, %s, %s, '{}', %s, %s)",
                        (arg["topic"], arg["key"], arg["type"], arg["content_type"], arg["headers"]),
                    )
                    expected.recorded += 1
                elif kind == "other-table":
                    conn.execute(
                        f"INSERT INTO `{ref.schema}`.other (pad) SELECT REPEAT('x', 100) FROM seq_1_to_{int(arg)}"
                    )
                else:
                    conn.execute(
                        f"INSERT INTO `{other_db}`.`{ref.table}` (topic) SELECT 'bad topic!' FROM seq_1_to_{int(arg)}"
                    )
            conn.execute("COMMIT")
            expected.good += pending
    finally:
        conn.close()
    return expected


@pytest.fixture
def other_database(mariadb_url: str) -> Any:
    """A database with a table named like the outbox: its rows are not ours."""
    name = unique("okt_other")
    conn = db_connect(mariadb_url)
    try:
        conn.execute(f"CREATE DATABASE `{name}`")
        conn.execute(f"CREATE TABLE `{name}`.`outbox` (seq BIGINT AUTO_INCREMENT PRIMARY KEY, topic TEXT)")
        yield name
        conn.execute(f"DROP DATABASE IF EXISTS `{name}`")
    finally:
        conn.close()


@pytest.mark.xdist_group("binlog")  # every reader of the shared binlog in one group (test_binlog.py)
@FUZZ
@given(plan=binlog_transactions)
def test_fuzz_binlog_relay(
    plan: list[list[tuple[str, Any]]], mariadb_url: str, tail_binlog_ref: TableRef, other_database: str, nats_url: str
) -> None:
    async def example() -> None:
        stream = await make_stream(nats_url)
        try:
            dead_before = await asyncio.to_thread(_dead_count, mariadb_url, tail_binlog_ref)
            expected = await asyncio.to_thread(
                _write_binlog, mariadb_url, tail_binlog_ref, other_database, stream.topic("fuzz"), plan
            )
            after = binlog_now(mariadb_url)
            relay = binlog_relay(mariadb_url, stream.url, tail_binlog_ref, batch_size=50)
            moved = lambda: binlog_stored(mariadb_url, tail_binlog_ref) >= after  # noqa: E731
            await _check(relay, stream, expected, dead_before, mariadb_url, tail_binlog_ref, moved)
        finally:
            await drop_stream(stream)

    asyncio.run(example())
