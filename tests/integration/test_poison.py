"""H13 one input, one casualty: hostile data costs the table relay that input, never the relay.

One test per kind of input that stalled the relay for good before (it failed, reconnected, read the
same input again, forever, and every later event of every key waited). Each writes the input with
plain SQL, as another program would, between good events, and checks: the relay runs on, the bad
input is a dead letter with a reason (or, where even that cannot be stored, set aside in memory),
and the good events of other keys are published in order.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from outboxkit import migrate
from outboxkit.relay import RelayConfig
from outboxkit.relay.loop import Relay
from outboxkit.relay.process import build_relay
from outboxkit.stores.base import TableRef
from tests.conftest import Backend, Stream
from tests.helpers import db_connect, emit_many, key_column, ph, read_all, running_relay, table

DEADLINE = 60.0  # generous: a condition, not a timing


def _relay(db: str, stream: Stream, ref: TableRef) -> Relay:
    return build_relay(db, stream.url, ref=ref, config=RelayConfig(poll_interval=0.05, retry_cap=0.5))


def _sql(db: str, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = db_connect(db)
    try:
        cur = conn.execute(statement, params)
        return list(cur.fetchall()) if cur.description else []
    finally:
        conn.close()


def _dead(db: str, ref: TableRef) -> list[tuple[int, str]]:
    """(seq, last_error) of the dead letters; reads no column a hostile row could spoil."""
    rows = _sql(db, f"SELECT seq, last_error FROM {table(db, ref)} WHERE dead_at IS NOT NULL ORDER BY seq")
    return [(int(r[0]), str(r[1])) for r in rows]


async def _until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if await asyncio.to_thread(predicate):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {DEADLINE}s: {what}")


async def _check(
    backend: Backend, insert: list[tuple[str, tuple[Any, ...]]], reason: str, *, dead: int | None = None
) -> Relay:
    """Good events on keys k and o, the hostile rows (key k or their own), good events again; the
    relay must publish every good event of o in order, k's first one, and dead-letter the rows."""
    db, ref, stream = backend.db, backend.ref, backend.stream
    topic = stream.topic("poison")
    first = emit_many(db, ref, topic, [{"i": 0}, {"o": 0}], key=lambda i: ["k", "o"][i])
    for statement, params in insert:
        _sql(db, statement, params)
    later = emit_many(db, ref, topic, [{"o": i} for i in range(1, 6)], key=lambda i: "o")
    relay = _relay(db, stream, ref)
    async with running_relay(relay) as running:
        got = await read_all(stream.url, stream.name, expect=len(first) + len(later), idle=0.5, timeout=DEADLINE)
        by_key: dict[str | None, list[str]] = {}
        for m in got:
            by_key.setdefault(m.key, []).append(m.event_id)
        assert by_key.get("o") == [first[1], *later], "other keys flow, in order"
        assert by_key.get("k") == [first[0]]
        want = dead if dead is not None else len(insert)
        await _until(lambda: len(_dead(db, ref)) >= want, f"{want} dead letters")
        letters = _dead(db, ref)
        assert all(reason in error for _, error in letters), letters
        assert running.task is not None and not running.task.done(), "the relay is still running"
    return relay


def _insert(backend: Backend, columns: dict[str, str]) -> tuple[str, tuple[Any, ...]]:
    """An INSERT whose values are SQL expressions (to write bytes no driver would send)."""
    db = backend.db
    cols = [key_column(db) if c == "key" else c for c in columns]
    values = ", ".join(columns.values())
    return f"INSERT INTO {table(db, backend.ref)} ({', '.join(cols)}, payload) VALUES ({values}, {ph(db)})", (b"{}",)


def _text(backend: Backend, value: str) -> str:
    """``value`` as an SQL literal of this database (MariaDB reads backslash escapes in literals)."""
    if backend.name.startswith("mariadb"):
        value = value.replace("\\", "\\\\")
    return "'" + value.replace("'", "''") + "'"


def _refused_at_insert(backend: Backend, row: tuple[str, tuple[Any, ...]]) -> None:
    """This database refuses the hostile input itself: it can never reach the relay. Checked, not
    skipped, so a database that starts to accept it turns this test red."""
    statement, params = row
    with pytest.raises(Exception):  # noqa: B017 - each driver names its refusal differently
        _sql(backend.db, statement, params)


async def test_headers_nested_deeper_than_the_parser_goes_are_a_dead_letter(backend: Backend) -> None:
    # Before: json.loads raised RecursionError (not a ValueError), the fetch failed, forever.
    deep = '{"a": ' + "[" * 5000 + "]" * 5000 + "}"
    headers = _text(backend, deep) + ("::jsonb" if backend.name.startswith("postgres") else "")
    topic = backend.stream.topic("poison")
    row = _insert(backend, {"topic": _text(backend, topic), "key": "'k'", "headers": headers})
    if backend.name.startswith("mariadb"):
        return _refused_at_insert(backend, row)  # JSON_VALID refuses nesting deeper than 32
    await _check(backend, [row], "RecursionError")


async def test_a_header_with_a_lone_surrogate_is_a_dead_letter_at_once(backend: Backend) -> None:
    # Before: the NATS client raised UnicodeEncodeError at publish, classed transient: retried for
    # a quarter of an hour (20 attempts) while its key waited.
    topic = backend.stream.topic("poison")
    surrogate = _text(backend, '{"h": "\\ud800"}') + ("::jsonb" if backend.name.startswith("postgres") else "")
    row = _insert(backend, {"topic": _text(backend, topic), "key": "'k'", "headers": surrogate})
    if not backend.name.startswith("sqlite"):
        return _refused_at_insert(backend, row)  # jsonb and MariaDB's JSON_VALID refuse a lone surrogate escape
    await _check(backend, [row], "surrogate")
    attempts = _sql(backend.db, f"SELECT attempts FROM {table(backend.db, backend.ref)} WHERE dead_at IS NOT NULL")
    assert attempts == [(1,)]


async def test_nul_and_control_characters_in_key_topic_and_headers(backend: Backend) -> None:
    topic = backend.stream.topic("poison")
    if backend.name.startswith("postgres"):
        # PostgreSQL text refuses NUL: such a row cannot exist.
        return _refused_at_insert(backend, _insert(backend, {"topic": _text(backend, topic), "key": "'k' || chr(0)"}))
    nul = "char(0)" if backend.name.startswith("sqlite") else "CHAR(0)"
    cat = (lambda *p: " || ".join(p)) if backend.name.startswith("sqlite") else (lambda *p: f"CONCAT({', '.join(p)})")
    # Each on a key of its own: a dead letter holds its key's later rows (the hold policy).
    rows = [
        _insert(backend, {"topic": _text(backend, topic), "key": cat("'k'", nul, "'x'")}),
        _insert(backend, {"topic": cat(_text(backend, topic), nul), "key": "'n2'"}),
        _insert(backend, {"topic": _text(backend, topic), "key": "'n3'", "type": cat("'t'", nul)}),
        # NUL and ESC in a header value are legal (emit takes them): published or dead, never stuck.
        _insert(
            backend,
            {"topic": _text(backend, topic), "key": "'n4'", "headers": _text(backend, '{"h": "a\\u0000\\u001b"}')},
        ),
    ]
    await _check(backend, rows, "", dead=3)


async def test_a_key_of_10000_characters_on_postgresql_is_a_dead_letter(pg_url: str, nats_stream: Stream) -> None:
    # Before: its dead letter set dead_at, which the btree index dead_keys refused (index row over
    # 2,700 bytes): the UPDATE failed, the relay reconnected and read the row again, forever.
    ref = TableRef("outbox", f"okt_poison_{time.monotonic_ns() % 10**9}")
    migrate(pg_url, ref)
    try:
        backend = Backend("postgres+nats", pg_url, ref, nats_stream)
        topic = nats_stream.topic("poison")
        # Random hex: an index row is compressed, so a repetitive key would fit in the btree.
        random_key = "(SELECT string_agg(md5(random()::text), '') FROM generate_series(1, {}))"
        rows = [
            _insert(backend, {"topic": _text(backend, topic), "key": f"left({random_key.format(320)}, 10000)"}),
            _insert(backend, {"topic": _text(backend, topic), "key": random_key.format(100)}),
        ]
        await _check(backend, rows, "1024 bytes")
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{ref.schema}" CASCADE'.encode())


async def test_mariadb_keys_up_to_the_column_are_dead_letters_and_longer_ones_are_refused_at_insert(
    mariadb_url: str, mariadb_ref: TableRef, nats_stream: Stream
) -> None:
    # The key column is VARCHAR(1024) and its index a 191-character prefix: no key the column takes
    # can be refused by the index. 1,024 four-byte characters (4 KiB) are over emit's 1,024 bytes.
    backend = Backend("mariadb+nats", mariadb_url, mariadb_ref, nats_stream)
    topic = nats_stream.topic("poison")
    rows = [_insert(backend, {"topic": _text(backend, topic), "key": "REPEAT('\U0001f600', 1024)"})]
    await _check(backend, rows, "1024 bytes")
    statement, params = _insert(backend, {"topic": _text(backend, topic), "key": "REPEAT('x', 10000)"})
    with pytest.raises(Exception, match="too long"):
        _sql(mariadb_url, statement, params)


async def test_sqlite_text_that_is_not_utf8_is_narrowed_down_and_dead_lettered(backend: Backend) -> None:
    # Before: sqlite3 raised while fetching ("Could not decode to UTF-8"), the whole fetch failed,
    # forever. Now the fetch that fails twice the same way is narrowed down to the rows, which are
    # dead-lettered by seq without reading them.
    topic = _text(backend, backend.stream.topic("poison"))
    if backend.name.startswith("postgres"):
        bad = "convert_from('\\xff6b'::bytea, 'UTF8')"
        return _refused_at_insert(backend, _insert(backend, {"topic": topic, "key": bad}))
    if backend.name.startswith("mariadb"):
        bad = "CONVERT(x'ff6b' USING utf8mb4)"  # strict mode: "Incorrect string value"
        return _refused_at_insert(backend, _insert(backend, {"topic": topic, "key": bad}))
    # Keys of their own: a row found this way cannot be read, so its key is unknown until its dead
    # letter holds it, and then it holds the key's earlier pending rows too (docs/guarantees.md).
    rows = [
        _insert(backend, {"topic": topic, "key": "CAST(x'ff6b' AS TEXT)"}),  # invalid UTF-8
        _insert(backend, {"topic": "CAST(x'eda080' AS TEXT)", "key": "'u2'"}),  # a lone surrogate, UTF-8 encoded
        _insert(backend, {"topic": topic, "key": "'u3'", "headers": "CAST(x'7b2268223a2280227d' AS TEXT)"}),
    ]
    await _check(backend, rows, "cannot be read")


# -- where even the dead letter cannot be stored: set aside in memory ---------------------------------


def _refuse(pg_url: str, ref: TableRef, when: str) -> None:
    """A trigger, as a DBA might add, that refuses some UPDATEs of the outbox."""
    fn = f'"{ref.schema}".refuse'
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            f"CREATE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$"
            " BEGIN RAISE EXCEPTION 'refused by a trigger'; END $$".encode()
        )
        conn.execute(
            f'CREATE TRIGGER refuse BEFORE UPDATE ON "{ref.schema}".outbox FOR EACH ROW WHEN ({when})'
            f" EXECUTE FUNCTION {fn}()".encode()
        )


async def test_a_dead_letter_that_cannot_be_stored_sets_the_row_aside(
    pg_url: str, pg_ref: TableRef, nats_stream: Stream
) -> None:
    # Before: the failing UPDATE failed the session; the relay reconnected and read the row again.
    _refuse(pg_url, pg_ref, "OLD.key = 'k' AND NEW.attempts > OLD.attempts")
    topic = nats_stream.topic("poison")
    db = pg_url
    first = emit_many(db, pg_ref, topic, [{"o": 0}], key=lambda i: "o")
    _sql(db, f"INSERT INTO {table(db, pg_ref)} (topic, key, payload) VALUES ('not a topic', 'k', '')")
    held = emit_many(db, pg_ref, topic, [{"k": 1}], key=lambda i: "k")
    later = emit_many(db, pg_ref, topic, [{"o": i} for i in range(1, 4)], key=lambda i: "o")
    relay = _relay(db, nats_stream, pg_ref)
    async with running_relay(relay) as running:
        got = await read_all(nats_stream.url, nats_stream.name, expect=len(first) + len(later), idle=1.0)
        assert [m.event_id for m in got] == [*first, *later], "k's later event waits behind the row set aside"
        await _until(lambda: relay.stats.set_aside == 1, "the row set aside")
        assert relay.casualties.aside.keys == {"k"}
        assert running.task is not None and not running.task.done()
    assert held[0] not in {m.event_id for m in got}


async def test_a_mark_that_cannot_be_stored_sets_that_row_aside_and_marks_the_others(
    pg_url: str, pg_ref: TableRef, nats_stream: Stream
) -> None:
    # Before: the marker failed, the session ended, and every row of the batch was sent again, forever.
    _refuse(pg_url, pg_ref, "OLD.key = 'nomark' AND NEW.delivered_at IS NOT NULL")
    topic = nats_stream.topic("poison")
    ids = emit_many(pg_url, pg_ref, topic, [{"i": i} for i in range(20)], key=lambda i: "nomark" if i == 5 else f"k{i}")
    relay = _relay(pg_url, nats_stream, pg_ref)
    async with running_relay(relay) as running:
        await _until(lambda: relay.stats.set_aside == 1, "the unmarkable row set aside")
        pending = f"SELECT count(*) FROM {table(pg_url, pg_ref)} WHERE delivered_at IS NULL"
        await _until(lambda: _sql(pg_url, pending)[0][0] == 1, "every other row marked")
        assert running.task is not None and not running.task.done()
    got = await read_all(nats_stream.url, nats_stream.name, expect=len(ids), idle=0.5)
    assert set(ids) <= {m.event_id for m in got}
    assert len(got) <= 2 * len(ids), "not re-sent round after round"


def test_migrate_replaces_the_btree_dead_keys_index_with_a_hash_index(pg_url: str, pg_ref: TableRef) -> None:
    # A table made by an earlier version: the btree index under the old name.
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP INDEX "{pg_ref.schema}".outbox_dead_key_hash'.encode())
        conn.execute(
            f'CREATE INDEX outbox_dead_keys ON "{pg_ref.schema}".outbox (key) WHERE dead_at IS NOT NULL'.encode()
        )
    migrate(pg_url, pg_ref)
    migrate(pg_url, pg_ref)  # idempotent
    with psycopg.connect(pg_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s AND indexname LIKE %s",
            [pg_ref.schema, "%dead%"],
        ).fetchall()
    assert [(name, "USING hash (key)" in sql) for name, sql in rows] == [("outbox_dead_key_hash", True)]
