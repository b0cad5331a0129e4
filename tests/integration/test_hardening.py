"""Hardening (issue 8): no row, reply or outage can kill a relay, stall a key forever, or reorder it.

Each test is named after the item it covers and fails on the code before the fix:

* item 1 / H11: rows other programs wrote that cannot become messages are dead letters with the
  reason; the relay keeps running and other keys (and, with the skip policy, the same key) flow;
* item 2 / H12: a failure the adapter does not recognise is counted on the row and ends as a dead
  letter after ``max_attempts``, while other keys flow at full speed;
* item 3: inline publishing does not overtake a key held behind a dead letter;
* item 8: a fetch is bounded by bytes as well as rows.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from outboxkit import migrate
from outboxkit.brokers.nats import connect
from outboxkit.brokers.registry import publisher_for
from outboxkit.relay import RelayConfig
from outboxkit.relay.inline import InlinePublisher
from outboxkit.relay.loop import Relay
from outboxkit.relay.process import build_relay
from outboxkit.stores.base import Filter, TableRef
from outboxkit.stores.postgres import PostgresOutboxStore
from outboxkit.stores.registry import database_for, store_for
from outboxkit.testing import NatsServer
from outboxkit.testing.proxy import TcpProxy
from tests.conftest import Backend, Stream, make_stream, unique
from tests.helpers import db_connect, emit_many, key_column, pending, read_all, running_relay, table, wait_drained
from tests.helpers import ph as placeholder

MiB = 1024 * 1024


def _insert(db: str, ref: TableRef, rows: list[dict[str, Any]]) -> None:
    """Plain-SQL INSERTs, as another program would write them (one transaction each)."""
    conn = db_connect(db)
    jsonb = db.startswith("postgres")
    mark = placeholder(db)
    try:
        for row in rows:
            cols = [key_column(db) if col == "key" else col for col in row]
            values = []
            for col in row:
                if col == "headers" and jsonb:
                    values.append(f"{mark}::jsonb")
                else:
                    values.append(mark)
            conn.execute(
                f"INSERT INTO {table(db, ref)} ({', '.join(cols)}) VALUES ({', '.join(values)})",
                tuple(row.values()),
            )
    finally:
        conn.close()


def _dead(db: str, ref: TableRef) -> list[tuple[str, int, str]]:
    conn = db_connect(db)
    try:
        rows = conn.execute(
            f"SELECT {key_column(db)}, attempts, last_error FROM {table(db, ref)}"
            " WHERE dead_at IS NOT NULL ORDER BY seq"
        ).fetchall()
    finally:
        conn.close()
    return [(r[0], r[1], r[2]) for r in rows]


def _bad_rows(backend: Backend, topic: str) -> list[tuple[dict[str, Any], str]]:
    """(row, the words its dead letter's reason must contain)."""
    good_payload = b'{"bad": true}'
    rows: list[tuple[dict[str, Any], str]] = [
        ({"topic": topic, "key": "k1", "payload": good_payload, "headers": '["a"]'}, "headers must be a JSON object"),
        ({"topic": topic, "key": "k2", "payload": good_payload, "headers": '{"n": 1}'}, "must be a str"),
        ({"topic": "not a topic", "key": "k3", "payload": good_payload}, "invalid topic"),
        ({"topic": topic, "key": "k4", "payload": good_payload, "content_type": "garbage"}, "not a media type"),
        ({"topic": topic, "key": "k5", "payload": b"x" * (2 * MiB)}, "max_payload"),
        ({"topic": topic, "key": "k6", "payload": good_payload, "type": "a\nb"}, "control characters"),
    ]
    if backend.db.startswith("sqlite"):
        rows.append(({"topic": topic, "key": "k7", "payload": good_payload, "headers": "not json"}, "not JSON"))
        rows.append(({"topic": topic, "key": "k8", "payload": good_payload, "created_at": "yesterday"}, "ISO 8601"))
    else:
        rows.append(({"topic": topic, "key": "k7", "payload": good_payload, "headers": '"text"'}, "JSON object"))
    return rows


@pytest.mark.parametrize("hold", [True, False], ids=["hold-key", "skip-key"])
async def test_item1_rows_other_programs_wrote_become_dead_letters_and_never_stop_the_relay(
    backend: Backend, hold: bool
) -> None:
    topic = backend.stream.topic("bad")
    bad = _bad_rows(backend, topic)
    before = emit_many(backend.db, backend.ref, topic, [{"i": i} for i in range(len(bad))], key=lambda i: f"k{i + 1}")
    _insert(backend.db, backend.ref, [row for row, _ in bad])
    after = emit_many(backend.db, backend.ref, topic, [{"i": i} for i in range(len(bad))], key=lambda i: f"k{i + 1}")
    others = emit_many(backend.db, backend.ref, topic, [{"o": i} for i in range(20)], key=lambda i: f"o{i}")
    relay = build_relay(
        backend.db, backend.stream.url, ref=backend.ref, config=RelayConfig(poll_interval=0.05), hold_dead_keys=hold
    )
    async with running_relay(relay) as running:
        expected = [*before, *others] if hold else [*before, *after, *others]
        got = await read_all(backend.stream.url, backend.stream.name, expect=len(expected), idle=1.5)
        assert sorted(m.event_id for m in got) == sorted(expected)
        assert running.task is not None and not running.task.done(), "the relay is still running"
        # Per key, what was published is in emit order (the bad row in between held or skipped).
        by_key: dict[str, list[str]] = {}
        for m in got:
            by_key.setdefault(m.key or "", []).append(m.event_id)
        for i in range(len(bad)):
            key = f"k{i + 1}"
            assert by_key[key] == ([before[i]] if hold else [before[i], after[i]])
    dead = _dead(backend.db, backend.ref)
    assert len(dead) == len(bad), dead
    for (key, attempts, reason), (row, words) in zip(dead, bad, strict=True):
        assert key == row["key"]
        assert attempts == 1, "dead-lettered at the first attempt, not retried"
        assert words in reason, (words, reason)
    assert pending(backend.db, backend.ref) == (len(bad) if hold else 0)


async def test_item1_a_relay_taking_over_a_bucket_with_bad_rows_keeps_running(backend: Backend) -> None:
    """The next relay that takes over meets the same rows: it must not stop either."""
    topic = backend.stream.topic("bad2")
    _insert(backend.db, backend.ref, [{"topic": topic, "key": "k", "payload": b"{}", "headers": "[1]"}])
    for _ in range(2):  # one relay after the other, as after a crash
        relay = build_relay(backend.db, backend.stream.url, ref=backend.ref, config=RelayConfig(poll_interval=0.05))
        async with running_relay(relay) as running:
            good = emit_many(backend.db, backend.ref, topic, [{"g": 1}], key=lambda _: "g")
            deadline = time.monotonic() + 20
            while pending(backend.db, backend.ref) > 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert running.task is not None and not running.task.done()
        assert good
    assert len(_dead(backend.db, backend.ref)) == 1


async def test_item2_an_error_the_adapter_never_saw_is_counted_then_dead_lettered_without_slowing_others(
    pg_url: str, pg_ref: TableRef, nats_url: str
) -> None:
    """A JetStream error code that is in no table of the adapter (10077, per-subject limit) fails
    every attempt of one event: attempts grow, the event becomes a dead letter after max_attempts,
    and other keys are delivered meanwhile, not after a global backoff."""
    from nats.js.api import DiscardPolicy, StreamConfig

    prefix = unique("okl")
    name = prefix.upper()
    nc = await connect(nats_url)
    await nc.jetstream().add_stream(
        StreamConfig(
            name=name,
            subjects=[f"{prefix}.>"],
            max_msgs_per_subject=1,
            discard=DiscardPolicy.NEW,
            discard_new_per_subject=True,
        )
    )
    try:
        full = f"{prefix}.full"
        first = emit_many(pg_url, pg_ref, full, [{"n": 1}, {"n": 2}], key=lambda _: "stuck")
        relay = build_relay(pg_url, nats_url, ref=pg_ref, config=RelayConfig(poll_interval=0.05, max_attempts=6))
        async with running_relay(relay) as running:
            # Wait for the first counted failure of the second event ...
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and _attempts(pg_url, pg_ref, first[1]) < 1:
                await asyncio.sleep(0.05)
            assert _attempts(pg_url, pg_ref, first[1]) >= 1, "a failed attempt is recorded"
            # ... then other keys, emitted now, arrive while the stuck event is still retrying.
            # (one subject per event: the stream keeps one message per subject)
            others = [
                emit_many(pg_url, pg_ref, f"{prefix}.other{i}", [{"i": i}], key=lambda _, i=i: f"o{i}")[0]
                for i in range(50)
            ]
            got = await read_all(nats_url, name, expect=51, idle=0.5, timeout=30)
            assert {m.event_id for m in got} == {first[0], *others}
            assert _dead(pg_url, pg_ref) == [], "other keys were not held up behind the retries"
            # The stuck event ends as a dead letter after max_attempts, with the broker's reason.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not _dead(pg_url, pg_ref):
                await asyncio.sleep(0.1)
            assert running.task is not None and not running.task.done()
        dead = _dead(pg_url, pg_ref)
        assert len(dead) == 1 and dead[0][0] == "stuck" and dead[0][1] == 6
        assert "gave up after 6 attempts" in dead[0][2] and "10077" in dead[0][2]
    finally:
        await nc.jetstream().delete_stream(name)
        await nc.close()


def _attempts(db: str, ref: TableRef, event_id: str) -> int:
    conn = db_connect(db)
    try:
        row = conn.execute(f"SELECT attempts FROM {table(db, ref)} WHERE id = {placeholder(db)}", [event_id]).fetchone()
    finally:
        conn.close()
    return int(row[0])


async def test_item2_an_exception_nobody_classified_is_counted_not_fatal(backend: Backend) -> None:
    """A publisher raising a plain RuntimeError for one topic (a bug, a driver surprise): the relay
    records the attempt, retries, dead-letters after max_attempts and keeps running."""
    from outboxkit.brokers.nats import NatsPublisher

    class Surprising(NatsPublisher):
        async def publish(self, event: Any) -> asyncio.Future[None]:
            if event.topic.endswith(".boom"):
                raise RuntimeError("driver surprise")
            return await super().publish(event)

    topic_ok, topic_boom = backend.stream.topic("fine"), backend.stream.topic("boom")
    boom = emit_many(backend.db, backend.ref, topic_boom, [{"b": 1}], key=lambda _: "b")
    fine = emit_many(backend.db, backend.ref, topic_ok, [{"f": i} for i in range(5)], key=lambda i: f"f{i}")
    relay = Relay(
        lambda: store_for(backend.db, backend.ref),
        lambda: Surprising(backend.stream.url),
        RelayConfig(poll_interval=0.05, max_attempts=3),
    )
    async with running_relay(relay) as running:
        got = await read_all(backend.stream.url, backend.stream.name, expect=len(fine), idle=0.5)
        assert {m.event_id for m in got} == set(fine)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not _dead(backend.db, backend.ref):
            await asyncio.sleep(0.05)
        assert running.task is not None and not running.task.done()
    dead = _dead(backend.db, backend.ref)
    assert dead and dead[0][1] == 3 and "RuntimeError: driver surprise" in dead[0][2], dead
    assert boom


async def test_item3_inline_publishing_respects_keys_held_behind_a_dead_letter(backend: Backend) -> None:
    topic = backend.stream.topic("inline")
    old = emit_many(backend.db, backend.ref, topic, [{"n": 1}], key=lambda _: "k")
    conn = db_connect(backend.db)
    now, key = database_for(backend.db).now_sql, key_column(backend.db)
    conn.execute(f"UPDATE {backend.table} SET dead_at = {now}, last_error = 'test' WHERE {key} = 'k'")
    conn.close()
    new = emit_many(backend.db, backend.ref, topic, [{"n": 2}], key=lambda _: "k")
    inline = await asyncio.to_thread(lambda: InlinePublisher(backend.db, backend.stream.url, ref=backend.ref).start())
    try:
        published = await asyncio.wrap_future(inline.submit(new))
    finally:
        await asyncio.to_thread(inline.close)
    assert published == 0, "the new event waits behind the dead letter of its key"
    # An operator retries the dead letter: the relay publishes the old event, then the new one.
    from outboxkit.ops.queries import Selector, open_db, retry_dead

    with open_db(backend.db, backend.ref) as db:
        assert retry_dead(db, Selector(key="k")) == 1
    async with running_relay(build_relay(backend.db, backend.stream.url, ref=backend.ref)):
        got = await read_all(backend.stream.url, backend.stream.name, expect=2, idle=1.0)
    assert [m.event_id for m in got] == [*old, *new]


@pytest.mark.parametrize("db_kind", ["sqlite", "postgres"])
async def test_item8_a_fetch_is_bounded_by_bytes(db_kind: str, request: pytest.FixtureRequest) -> None:
    if db_kind == "sqlite":
        db, ref = request.getfixturevalue("sqlite_url"), TableRef()
    else:
        db, ref = request.getfixturevalue("pg_url"), request.getfixturevalue("pg_ref")
    _insert(db, ref, [{"topic": "big.rows", "key": f"k{i}", "payload": b"x" * MiB} for i in range(12)])
    store = store_for(db, ref)
    await store.open()
    try:
        rows = await store.fetch_pending(2000, Filter(), None, max_bytes=4 * MiB)
        assert len(rows) == 4, "rows are taken while the bytes before them stay under the limit"
        one = await store.fetch_pending(2000, Filter(), None, max_bytes=1)
        assert len(one) == 1, "one row always moves on, however large"
        every = await store.fetch_pending(2000, Filter(), None, max_bytes=64 * MiB)
        assert len(every) == 12
    finally:
        await store.close()


async def test_item8_bytes_bound_keeps_the_relay_delivering(backend: Backend) -> None:
    """With a small byte bound the relay takes big rows a few at a time and still delivers all."""
    topic = backend.stream.topic("bigrows")
    ids = emit_many(backend.db, backend.ref, topic, [{"pad": "x" * 200_000, "i": i} for i in range(15)])
    relay = build_relay(
        backend.db,
        backend.stream.url,
        ref=backend.ref,
        config=RelayConfig(poll_interval=0.05, fetch_max_bytes=500_000),
    )
    async with running_relay(relay):
        got = await read_all(backend.stream.url, backend.stream.name, expect=15, idle=1.0)
    assert [m.event_id for m in got] == ids
    assert relay.stats.batches >= 5


def _terminate(pg_url: str, where: str, params: list[Any]) -> int:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        rows = conn.execute(
            (
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND " + where
            ).encode(),
            params,
        ).fetchall()
    return len(rows)


def _pg_relay(pg_url: str, broker: str, ref: TableRef, app: str, **config: Any) -> Relay:
    settings = {"poll_interval": 0.05, "lease_ttl": 1.5, **config}
    return Relay(
        lambda: PostgresOutboxStore(pg_url, ref, application_name=app),
        lambda: publisher_for(broker),
        RelayConfig(**settings),
    )


async def _until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await asyncio.to_thread(predicate):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {timeout}s: {what}")


async def test_item4_a_relay_standing_by_recovers_when_its_lease_keeper_fails(
    pg_url: str, pg_ref: TableRef, nats_stream: Stream
) -> None:
    """Relay B stands by (A holds every bucket). B's database connections are cut, so its lease
    keeper fails while B waits for a lease change. B must notice, reconnect and take the buckets
    over when A leaves; before the fix it stayed parked forever."""
    a = _pg_relay(pg_url, nats_stream.url, pg_ref, "okt-relay-a", lease_ttl=30.0)
    b = _pg_relay(pg_url, nats_stream.url, pg_ref, "okt-relay-b", lease_ttl=1.5)
    run_a, run_b = running_relay(a), running_relay(b)
    await run_a.__aenter__()
    try:
        await _until(lambda: len(a.leases) == 64, 10, "A holds every bucket")
        await run_b.__aenter__()
        try:
            await asyncio.sleep(0.5)
            assert not b.leases, "B stands by while A holds every bucket"
            assert _terminate(pg_url, "application_name = %s", ["okt-relay-b"]) >= 1
            await asyncio.sleep(1.5)  # B's keeper meets the dead connection on its next renewal
            await run_a.__aexit__(None, None, None)  # A leaves cleanly: every bucket is free now
            ids = emit_many(pg_url, pg_ref, nats_stream.topic("standby"), [{"i": i} for i in range(10)])
            got = await read_all(nats_stream.url, nats_stream.name, expect=10, idle=0.5, timeout=30)
            assert [m.event_id for m in got] == ids, "B took the buckets over and delivered"
            assert run_b.task is not None and not run_b.task.done()
        finally:
            await run_b.__aexit__(None, None, None)
    finally:
        if run_a.task is not None and not run_a.task.done():
            await run_a.__aexit__(None, None, None)


@pytest.fixture
def pg_database(pg_url: str) -> Iterator[str]:
    """A database of its own (for database-wide settings), migrated, dropped after the test."""
    name = unique("okt_db")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"'.encode())
    url = pg_url.rsplit("/", 1)[0] + f"/{name}"
    migrate(url)
    yield url
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


async def test_item5_a_read_only_node_after_fail_over_is_unavailable_not_fatal(
    pg_database: str, pg_url: str, nats_stream: Stream
) -> None:
    """The relay reconnects to a node that is read-only (a demoted primary): its writes fail with
    ReadOnlySqlTransaction. That is an outage: retry until the node is writable again, then go on."""
    name = pg_database.rsplit("/", 1)[1]
    ref = TableRef()
    relay = _pg_relay(pg_database, nats_stream.url, ref, "okt-relay-ro")
    async with running_relay(relay) as running:
        first = emit_many(pg_database, ref, nats_stream.topic("ro"), [{"n": 1}])
        await wait_drained(pg_database, ref)
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on'.encode())
        _terminate(pg_url, "datname = %s", [name])
        await asyncio.sleep(3.0)  # reconnects, meets the read-only node, backs off, retries
        assert running.task is not None and not running.task.done(), "the relay is still running"
        assert relay.stats.outages >= 1
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only'.encode())
        _terminate(pg_url, "datname = %s AND application_name <> %s", [name, "okt-relay-ro"])
        second = emit_many(pg_database, ref, nats_stream.topic("ro"), [{"n": 2}])
        got = await read_all(nats_stream.url, nats_stream.name, expect=2, idle=0.5, timeout=30)
        assert [m.event_id for m in got] == [*first, *second]


async def test_item6_rebalancing_does_not_re_send(pg_url: str, pg_ref: TableRef, nats_stream: Stream) -> None:
    """A second relay joins while the first is busy: buckets move only once drained, so no event
    is published twice (no fault happened; G6 allows duplicates only after faults)."""
    a = _pg_relay(pg_url, nats_stream.url, pg_ref, "okt-relay-a", lease_ttl=1.5, batch_size=200, window=100)
    b = _pg_relay(pg_url, nats_stream.url, pg_ref, "okt-relay-b", lease_ttl=1.5, batch_size=200, window=100)
    topic = nats_stream.topic("rebalance")
    total = 4000
    stop_writing = threading.Event()

    def writer() -> None:
        for chunk in range(40):
            if stop_writing.is_set():
                return
            emit_many(pg_url, pg_ref, topic, [{"c": chunk, "i": i} for i in range(total // 40)], key=lambda i: f"k{i}")

    async with running_relay(a):
        write = asyncio.create_task(asyncio.to_thread(writer))
        try:
            await asyncio.sleep(1.0)
            async with running_relay(b):
                await write
                await wait_drained(pg_url, pg_ref, timeout=60)
                await _until(lambda: 0 < len(b.leases) < 64, 10, "B took a share of the buckets")
        finally:
            stop_writing.set()
    assert a.stats.fenced == 0 and b.stats.fenced == 0
    assert a.stats.published + b.stats.published == total, (a.stats.published, b.stats.published)
    assert b.stats.published > 0


async def test_item8_inline_publishing_has_backpressure_during_a_broker_outage(tmp_path: Any) -> None:
    """With the broker gone, InlinePublisher neither piles up work nor slows the writer: at most
    max_pending events are in its hands, the rest go to the relay at once; after the outage it
    publishes again (its client rebuilt), and the relay delivers everything it left."""
    db = f"sqlite:///{tmp_path}/inline.db"
    migrate(db)
    ref = TableRef()
    with NatsServer() as server:
        stream = await make_stream(server.url)
        ids = emit_many(db, ref, stream.topic("bp"), [{"i": i} for i in range(3000)], key=lambda i: f"k{i % 50}")
        inline = await asyncio.to_thread(lambda: InlinePublisher(db, server.url, ref=ref, max_pending=500).start())
        try:
            server.stop()
            started = time.monotonic()
            futures = [inline.submit(ids[i : i + 100]) for i in range(0, 3000, 100)]
            submitting = time.monotonic() - started
            assert inline.pending <= 500, "never more than max_pending events in hand"
            results = [await asyncio.wrap_future(f) for f in futures]
            assert sum(results) == 0 and inline.left_to_relay == 3000
            assert submitting < 5.0, f"submit did not wait for the broker ({submitting:.1f}s)"
            server.start()
            more = emit_many(db, ref, stream.topic("bp"), [{"m": i} for i in range(10)], key=lambda i: f"m{i}")
            deadline = time.monotonic() + 60
            while inline.published == 0 and time.monotonic() < deadline:
                await asyncio.wrap_future(inline.submit(more))
                await asyncio.sleep(0.5)
            assert inline.published > 0, "inline publishing resumed after the outage"
        finally:
            await asyncio.to_thread(inline.close)
        async with running_relay(build_relay(db, server.url, ref=ref, config=RelayConfig(poll_interval=0.05))):
            await wait_drained(db, ref, timeout=60)
        got = await read_all(server.url, stream.name, expect=3010, idle=1.0)
        assert sorted({m.event_id for m in got}) == sorted([*ids, *more])


async def test_item5_a_schema_problem_after_start_up_is_retried_not_fatal(
    pg_url: str, pg_ref: TableRef, nats_stream: Stream
) -> None:
    """Start-up is strict, but a running relay whose table vanishes for a while (a migration
    renaming it, a restore) logs it loudly and retries; it resumes once the table is back."""
    relay = _pg_relay(pg_url, nats_stream.url, pg_ref, "okt-relay-schema")
    async with running_relay(relay) as running:
        await _until(lambda: len(relay.leases) == 64, 10, "the relay holds its buckets")
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'ALTER TABLE {pg_ref.qualified} RENAME TO "outbox_aside"'.encode())
        await asyncio.sleep(2.0)
        assert running.task is not None and not running.task.done(), "the relay is still running"
        assert relay.stats.outages >= 1
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'ALTER TABLE "{pg_ref.schema}"."outbox_aside" RENAME TO "outbox"'.encode())
        ids = emit_many(pg_url, pg_ref, nats_stream.topic("back"), [{"n": 1}])
        got = await read_all(nats_stream.url, nats_stream.name, expect=1, idle=0.5, timeout=30)
        assert [m.event_id for m in got] == ids


async def test_item6_a_hung_database_connection_times_out_and_stops_publishing(
    pg_url: str, pg_ref: TableRef, nats_stream: Stream
) -> None:
    """The database stops answering without closing anything (a partition): the lease renewal gets
    no answer, times out after half the TTL, the relay stops trusting its leases and reconnects;
    when the network heals it resumes. Before the fix the keeper waited forever."""
    host, port = "127.0.0.1", 5432
    with TcpProxy(host, port) as proxy:
        url = pg_url.replace(f"{host}:{port}", f"127.0.0.1:{proxy.port}")
        relay = _pg_relay(url, nats_stream.url, pg_ref, "okt-relay-hang", lease_ttl=2.0)
        async with running_relay(relay) as running:
            await _until(lambda: len(relay.leases) == 64, 10, "the relay holds its buckets")
            proxy.freeze()
            await _until(lambda: relay.stats.outages >= 1, 10, "the hung renewal timed out")
            assert relay.keeper is None or not relay.keeper.usable(), "no publishing on untrusted leases"
            proxy.thaw()
            proxy.cut()  # the stale connections go; the relay reconnects through the proxy
            ids = emit_many(pg_url, pg_ref, nats_stream.topic("hang"), [{"n": 1}])
            got = await read_all(nats_stream.url, nats_stream.name, expect=1, idle=0.5, timeout=30)
            assert [m.event_id for m in got] == ids
            assert running.task is not None and not running.task.done()
