"""H13 on the log-tailing relays: traffic that is not ours never pins the slot, and a hostile input
costs only itself (set aside with its reason, the position moves past it). Most of these failed on
the relay before this fix: it stalled (re-reading the same input forever) or, for the own-prefix
non-transactional message, dropped it silently. The wrong-types, not-UTF-8 and bad-everything cases
passed before too: they are kept as coverage of the same rule."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterable

import psycopg
import pytest

from outboxkit import Outbox
from outboxkit.brokers.base import Publisher
from outboxkit.core.envelope import OutboxEvent
from outboxkit.core.tailing import Transaction
from outboxkit.stores.base import TableRef
from outboxkit.stores.postgres.walevents import Decoder
from outboxkit.walemit import MessageOutbox
from tests.conftest import Stream
from tests.helpers import read_all
from tests.integration.tailsupport import (
    confirmed_lsn,
    dead_letters,
    emit_message,
    good_content,
    relay_until,
    tail_pg_db,
    tail_wal_ref,
    wal_lsn,
    wal_relay,
)

__all__ = ["tail_pg_db", "tail_wal_ref"]  # fixtures used by name

# Other tools' messages in bulk (more than a peek holds) and other tables' rows in bulk, on both
# logs: the tail-reader conformance suite (check_foreign_traffic_is_skipped_and_passed).


async def test_an_own_prefix_non_transactional_message_is_recorded_never_published(
    tail_pg_db: str, tail_wal_ref: TableRef, nats_stream: Stream
) -> None:
    """A non-transactional message with the outbox's own prefix survives a rollback: it is not
    trusted. It becomes a dead letter saying why (holding no key), never a published event."""
    topic = nats_stream.topic("orders")
    _, untrusted = good_content(topic, key="k")
    with psycopg.connect(tail_pg_db, autocommit=True) as conn:
        conn.execute(b"BEGIN")
        emit_message(conn, tail_wal_ref, untrusted, transactional=False)
        conn.execute(b"ROLLBACK")  # the message stays in the log all the same
        with conn.transaction():
            good = MessageOutbox(table=tail_wal_ref.table, schema=tail_wal_ref.schema).emit(conn, topic, {}, key="k")
    after = wal_lsn(tail_pg_db)
    relay = wal_relay(tail_pg_db, nats_stream.url, tail_wal_ref)
    await relay_until(relay, lambda: relay.stats.published >= 1 and confirmed_lsn(tail_pg_db, tail_wal_ref) >= after)
    got = await read_all(nats_stream.url, nats_stream.name, expect=1)
    assert [m.event_id for m in got] == [good]  # the key k is not held by the untrusted message
    (dead,) = dead_letters(tail_pg_db, tail_wal_ref)
    assert dead[0] is None and "not trusted" in dead[1] and "walemit" in dead[1]


def _deep(n: int) -> bytes:
    return b"[" * n + b"]" * n


HOSTILE = {
    "deep-attributes": _deep(100_000) + b"\n{}",
    "deep-headers": b'{"v":1,"id":"x","topic":"orders.x","headers":{"a":' + _deep(100_000) + b"}}\n{}",
    "surrogate-key": b'{"v":1,"id":"x","topic":"orders.x","key":"a\\ud800b"}\n{}',
    "nul-key": b'{"v":1,"id":"x","topic":"orders.x","key":"a\\u0000b"}\n{}',
    "surrogate-topic": b'{"v":1,"id":"x","topic":"orders.\\udfff"}\n{}',
    "nul-topic": b'{"v":1,"id":"x","topic":"orders\\u0000x"}\n{}',
    # Incompressible: too long for the dead_keys index of the dead letter's row.
    "huge-key": b'{"v":1,"id":"x","topic":"orders.x","key":"' + secrets.token_hex(4000).encode() + b'"}\n{}',
    "wrong-types": b'{"v":1,"id":["x"],"topic":{"a":1},"key":7,"headers":"h"}\n{}',
    "not-utf8": b'{"v":1,"id":"\xff\xfe","topic":"orders.x"}\n{}',
}


@pytest.mark.parametrize("name", list(HOSTILE))
async def test_a_hostile_table_less_message_costs_only_itself(
    name: str, tail_pg_db: str, tail_wal_ref: TableRef, nats_stream: Stream
) -> None:
    """Deep JSON (RecursionError), lone surrogates or NUL in the key or topic, a huge key, wrong
    types, bytes that are not UTF-8: a dead letter with the reason, then the next event flows."""
    topic = nats_stream.topic("orders")
    with psycopg.connect(tail_pg_db, autocommit=True) as conn:
        with conn.transaction():
            emit_message(conn, tail_wal_ref, HOSTILE[name])
        with conn.transaction():
            good = MessageOutbox(table=tail_wal_ref.table, schema=tail_wal_ref.schema).emit(conn, topic, {}, key="g")
    after = wal_lsn(tail_pg_db)
    relay = wal_relay(tail_pg_db, nats_stream.url, tail_wal_ref)
    await relay_until(relay, lambda: relay.stats.published >= 1 and confirmed_lsn(tail_pg_db, tail_wal_ref) >= after)
    got = await read_all(nats_stream.url, nats_stream.name, expect=1)
    assert [m.event_id for m in got] == [good]
    (dead,) = dead_letters(tail_pg_db, tail_wal_ref)
    assert "cannot be published" in dead[1], dead
    assert relay.stats.outages == 0 and not getattr(relay, "set_aside", None)  # its own guard, not the narrowing net


HOSTILE_ROWS = {
    # jsonb takes it; Python's JSON parser raises RecursionError on it.
    "deep-headers": "INSERT INTO {t} (topic, key, payload, headers) "
    "VALUES ('orders.x', 'h', '\\x7b7d', ('{{\"a\":' || repeat('[', 5000) || repeat(']', 5000) || '}}')::jsonb)",
    # Too long for the dead_keys index once the row is a dead letter (btree rows hold about 2.7 kB).
    "huge-key": "INSERT INTO {t} (topic, key, payload) VALUES ('orders.x', "
    "(SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 300)), '\\x7b7d')",
    "bad-everything": "INSERT INTO {t} (id, topic, key, type, source, payload, content_type, headers) VALUES "
    "(gen_random_uuid(), 'no spaces allowed', E'a\\tb', E'x\\ny', '', '\\x00', 'not a type', '[1, 2]')",
}


@pytest.mark.parametrize("name", list(HOSTILE_ROWS))
async def test_a_hostile_outbox_row_costs_only_itself(
    name: str, tail_pg_db: str, tail_wal_ref: TableRef, nats_stream: Stream
) -> None:
    """A row another program wrote by plain SQL that breaks the parser or the dead-letter index:
    a dead letter with the reason (its key cleared when no index takes it), then the next event."""
    topic = nats_stream.topic("orders")
    with psycopg.connect(tail_pg_db, autocommit=True) as conn:
        conn.execute(HOSTILE_ROWS[name].format(t=tail_wal_ref.qualified).encode())
        with conn.transaction():
            good = Outbox(table=tail_wal_ref.table, schema=tail_wal_ref.schema).emit(conn, topic, {}, key="g")
    after = wal_lsn(tail_pg_db)
    relay = wal_relay(tail_pg_db, nats_stream.url, tail_wal_ref)
    await relay_until(relay, lambda: relay.stats.published >= 1 and confirmed_lsn(tail_pg_db, tail_wal_ref) >= after)
    got = await read_all(nats_stream.url, nats_stream.name, expect=1)
    assert [m.event_id for m in got] == [good]
    (dead,) = dead_letters(tail_pg_db, tail_wal_ref)
    assert "cannot be published" in dead[1], dead
    assert relay.stats.outages == 0 and not getattr(relay, "set_aside", None)


class _BrokenDecoder(Decoder):
    """The real decoder with a bug no guard foresaw: it fails the whole read on one marked message
    (a parser that raises outside the per-input guards)."""

    def transactions(self, messages: Iterable[bytes]) -> list[Transaction]:
        batch = list(messages)
        if any(b"POISON" in data for data in batch):
            raise RuntimeError("decoder bug met a marked message")
        return super().transactions(batch)


async def test_a_round_that_fails_twice_the_same_way_is_narrowed_to_the_input_at_fault(
    tail_pg_db: str, tail_wal_ref: TableRef, nats_stream: Stream
) -> None:
    """The net under the guards: the relay narrows the failing round down to the one transaction
    at fault, sets it aside as a dead letter with the reason, moves the slot past it, and delivers
    every event before and after it, in order."""
    topic = nats_stream.topic("orders")
    messages = MessageOutbox(table=tail_wal_ref.table, schema=tail_wal_ref.schema)
    with psycopg.connect(tail_pg_db, autocommit=True) as conn:

        def one(n: int) -> str:
            with conn.transaction():
                return messages.emit(conn, topic, {"n": n}, key="k")

        before = [one(i) for i in range(30)]
        with conn.transaction():
            emit_message(conn, tail_wal_ref, b"POISON")
        after_ids = [one(j) for j in range(30)]
    after = wal_lsn(tail_pg_db)
    relay = wal_relay(tail_pg_db, nats_stream.url, tail_wal_ref, batch_size=20)  # a peek: 60 changes
    relay.decoder_factory = lambda: _BrokenDecoder(tail_wal_ref)
    await relay_until(relay, lambda: relay.stats.published >= 60 and confirmed_lsn(tail_pg_db, tail_wal_ref) >= after)
    got = await read_all(nats_stream.url, nats_stream.name, expect=60)
    assert [m.event_id for m in got] == before + after_ids
    (dead,) = dead_letters(tail_pg_db, tail_wal_ref)
    assert "set aside after failing the same way" in dead[1] and "decoder bug" in dead[1], dead


class _RefusingPublisher:
    """The real publisher, except that its client refuses one key before sending (as a client
    that cannot encode a header would): ``publish()`` itself raises."""

    def __init__(self, inner: Publisher) -> None:
        self.inner = inner

    async def connect(self) -> None:
        await self.inner.connect()

    async def close(self) -> None:
        await self.inner.close()

    async def publish(self, event: OutboxEvent) -> asyncio.Future[None]:
        if event.key == "refused":
            raise ValueError("the client cannot encode this event")
        return await self.inner.publish(event)


async def test_an_event_the_client_refuses_before_sending_is_its_own_failure(
    tail_pg_db: str, tail_wal_ref: TableRef, nats_stream: Stream
) -> None:
    """An exception from ``publish()`` itself is that event's failed attempt (a dead letter after
    ``max_attempts``), not the round's: before the fix the round failed and was read again forever."""
    topic = nats_stream.topic("orders")
    messages = MessageOutbox(table=tail_wal_ref.table, schema=tail_wal_ref.schema)
    with psycopg.connect(tail_pg_db, autocommit=True) as conn, conn.transaction():
        messages.emit(conn, topic, {}, key="refused")
        good = messages.emit(conn, topic, {}, key="g")
    relay = wal_relay(tail_pg_db, nats_stream.url, tail_wal_ref, max_attempts=2)
    real = relay.publisher_factory
    relay.publisher_factory = lambda: _RefusingPublisher(real())  # type: ignore[assignment]
    await relay_until(relay, lambda: relay.stats.published >= 1 and relay.stats.dead_lettered >= 1)
    got = await read_all(nats_stream.url, nats_stream.name, expect=1)
    assert [m.event_id for m in got] == [good]
    (dead,) = dead_letters(tail_pg_db, tail_wal_ref)
    assert dead[0] == "refused" and "cannot encode" in dead[1], dead


async def test_a_dead_letter_that_cannot_be_stored_is_set_aside_as_on_the_table_relay(
    tail_pg_db: str, tail_wal_ref: TableRef, nats_stream: Stream
) -> None:
    """The last resort both relays share (``relay/isolate.set_aside``): a trigger refuses every dead
    letter, as it is and sanitized; the bad row is set aside (``stats.set_aside``, the
    ``outboxkit_relay_set_aside`` metric; not counted as a dead letter), and the next event flows."""
    topic = nats_stream.topic("orders")
    t = tail_wal_ref.qualified
    refuse = f'"{tail_wal_ref.schema}".refuse_dead'
    with psycopg.connect(tail_pg_db, autocommit=True) as conn:
        conn.execute(
            f"CREATE FUNCTION {refuse}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN IF NEW.dead_at IS NOT NULL "
            "THEN RAISE EXCEPTION 'no dead letters here'; END IF; RETURN NEW; END $$".encode()
        )
        trigger = f"CREATE TRIGGER refuse_dead BEFORE INSERT OR UPDATE ON {t} FOR EACH ROW EXECUTE FUNCTION {refuse}()"
        conn.execute(trigger.encode())
        conn.execute(f"INSERT INTO {t} (topic, key, payload) VALUES ('bad topic!', 'bad', '\\x00')".encode())
        with conn.transaction():
            good = Outbox(table=tail_wal_ref.table, schema=tail_wal_ref.schema).emit(conn, topic, {}, key="g")
    relay = wal_relay(tail_pg_db, nats_stream.url, tail_wal_ref)
    await relay_until(relay, lambda: relay.stats.published >= 1 and relay.stats.set_aside >= 1)
    got = await read_all(nats_stream.url, nats_stream.name, expect=1)
    assert [m.event_id for m in got] == [good]
    assert relay.stats.dead_lettered == 0 and relay.stats.outages == 0
    (reason,) = relay.set_aside
    assert "no dead letters here" in reason and "topic" in reason, reason
    assert dead_letters(tail_pg_db, tail_wal_ref) == []
