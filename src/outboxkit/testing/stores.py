"""The store conformance suite: every database package passes the same checks.

A store ships a :class:`StoreHarness` (a database URL and a migrated outbox of its own, plus what the
database can do) and runs :data:`CHECKS` against it; a check that cannot apply to the database says
why (:class:`~outboxkit.testing.conformance.NotSupported`). Users who add a database run the same
suite::

    @pytest.mark.parametrize("check", STORE_CHECKS, ids=lambda c: c.__name__)
    async def test_my_store(check, my_harness):
        await check(my_harness)

What the checks cover (DESIGN.md): G1 committed events are fetched, G2 rolled-back ones never, G3 a
row leaves the pending set only when marked, G4 ids are stable across fetches, G5 per-key order
(fetch order, ``fetch_committed`` never overtakes a key, paused topics and held keys wait), G6 an
unmarked row comes back and a marked one never does, H1 a transaction that commits late with the
lowest seq is still fetched, H5 dead letters hold their key, H6 leases on the database's clock and
fenced marks, H11 rows other programs wrote never break a fetch, H3 retention through the operator
commands; and what the relay's pipeline relies on: fetches bounded by bytes and leaving out the
rows in hand, concurrent calls from its tasks, wake-ups after a commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any, Protocol

from outboxkit.core.envelope import OutboxEvent
from outboxkit.emit import Outbox
from outboxkit.errors import SchemaError
from outboxkit.migrate import migrate
from outboxkit.ops import queries as ops
from outboxkit.stores.base import BUCKETS, Filter, OutboxStore, SyncConnection, TableRef
from outboxkit.stores.database import placeholders
from outboxkit.stores.registry import database_for
from outboxkit.testing.conformance import NotSupported


class StoreHarness(Protocol):
    """One database, set up for one check: a migrated outbox nobody else uses."""

    url: str
    ref: TableRef
    #: several relays share the outbox through bucket leases (False: one relay holds every bucket)
    shares_buckets: bool
    #: writers can keep transactions open side by side, so seqs commit out of order (H1 can happen)
    concurrent_writers: bool


# ------------------------------------------------------------------------------------------------
# helpers


def writer(h: StoreHarness) -> SyncConnection:
    """A plain autocommit connection, as an application (or psql) would have."""
    return database_for(h.url).connect(h.url, label="outboxkit-conformance")


def transaction(
    h: StoreHarness,
    conn: SyncConnection,
    events: Sequence[tuple[str | None, str | None]],
    *,
    commit: bool = True,
    topic: str = "conf.events",
) -> list[str]:
    """One transaction emitting ``(topic-suffix or None, key)`` events in order; returns the ids."""
    outbox = Outbox(table=h.ref.table, schema=h.ref.schema, source="/conformance")
    conn.execute(database_for(h.url).begin_sql)
    try:
        ids = [
            outbox.emit(conn, f"{topic}.{suffix}" if suffix else topic, {"i": i, "key": key}, key=key)
            for i, (suffix, key) in enumerate(events)
        ]
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT" if commit else "ROLLBACK")
    return ids


def emit_committed(h: StoreHarness, events: Sequence[tuple[str | None, str | None]], **kw: Any) -> list[str]:
    conn = writer(h)
    try:
        return transaction(h, conn, events, **kw)
    finally:
        conn.close()


@contextlib.asynccontextmanager
async def opened(h: StoreHarness, *, hold_dead_keys: bool = True) -> AsyncIterator[OutboxStore]:
    store = database_for(h.url).store(h.url, h.ref, hold_dead_keys=hold_dead_keys)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def fetch_all(store: OutboxStore, leases: dict[int, int] | None = None) -> list[OutboxEvent]:
    return list(await store.fetch_pending(10_000, Filter(), leases))


def ids_of(events: Sequence[OutboxEvent]) -> list[str]:
    return [e.id for e in events]


# ------------------------------------------------------------------------------------------------
# checks


async def check_schema_is_checked_and_migrate_idempotent(h: StoreHarness) -> None:
    migrate(h.url, h.ref)  # a second run changes nothing and does not fail
    async with opened(h) as store:
        assert await store.pending_count() == 0
    other = database_for(h.url).store(h.url, TableRef(f"{h.ref.table}_missing", h.ref.schema))
    try:
        await other.open()
    except SchemaError:
        pass
    else:
        raise AssertionError("a store opened on a table that migrate never created")
    finally:
        await other.close()


async def check_fields_round_trip_and_ids_are_stable(h: StoreHarness) -> None:
    """G4: what emit wrote is what the relay reads, with the same id on every fetch."""
    conn = writer(h)
    try:
        outbox = Outbox(table=h.ref.table, schema=h.ref.schema, source="/conformance")
        conn.execute(database_for(h.url).begin_sql)
        event_id = outbox.emit(
            conn, "conf.fields", {"name": "zoë", "n": 1}, key="cust-1", headers={"x-tenant": "t1"}, type="com.ex.t"
        )
        conn.execute("COMMIT")
    finally:
        conn.close()
    async with opened(h) as store:
        (first,) = await fetch_all(store)
        (again,) = await fetch_all(store)
    assert first.id == again.id == event_id
    assert (first.topic, first.key, first.type, first.source) == ("conf.fields", "cust-1", "com.ex.t", "/conformance")
    assert first.payload == '{"name":"zoë","n":1}'.encode()
    assert first.content_type == "application/json"
    assert first.headers == {"x-tenant": "t1"}
    assert first.attempts == 0
    assert first.created_at is not None


async def check_committed_fetched_in_order_rolled_back_never(h: StoreHarness) -> None:
    """G1, G2, G5: every committed event, in commit order (emit order within a transaction), and
    nothing of a rolled-back transaction."""
    conn = writer(h)
    try:
        first = transaction(h, conn, [(None, "a"), (None, "b"), (None, "a")])
        gone = transaction(h, conn, [(None, "a"), (None, "c")], commit=False)
        second = transaction(h, conn, [(None, "b"), (None, None)])
    finally:
        conn.close()
    async with opened(h) as store:
        got = await fetch_all(store)
        assert await store.pending_count() == 5
    assert ids_of(got) == first + second
    assert not set(gone) & set(ids_of(got)), "a rolled-back event was fetched (G2)"
    assert [e.seq for e in got] == sorted(e.seq for e in got)


async def check_unmarked_comes_back_marked_never(h: StoreHarness) -> None:
    """G3, G6: a row stays pending until marked (at-least-once); a mark is counted once."""
    ids = emit_committed(h, [(None, f"k{i}") for i in range(5)])
    async with opened(h) as store:
        batch = await store.fetch_pending(3, Filter())
        assert ids_of(batch) == ids[:3]
        assert ids_of(await store.fetch_pending(3, Filter())) == ids[:3], "unmarked rows must come back"
        assert await store.mark_delivered([e.seq for e in batch]) == 3
        assert await store.mark_delivered([e.seq for e in batch]) == 0, "a row was marked twice"
        assert ids_of(await fetch_all(store)) == ids[3:]
        assert await store.pending_count() == 2
    async with opened(h) as reopened:  # durable: another connection sees the marks
        assert ids_of(await fetch_all(reopened)) == ids[3:]


async def check_late_commit_is_fetched(h: StoreHarness) -> None:
    """H1: a transaction takes the lowest seq, 50 others commit and are delivered, then it commits:
    the relay must still find it (no ``seq > last`` cursor)."""
    if not h.concurrent_writers:
        raise NotSupported("writers are serialised: a transaction cannot commit after later ones")
    held = writer(h)
    outbox = Outbox(table=h.ref.table, schema=h.ref.schema)
    held.execute(database_for(h.url).begin_sql)
    late = outbox.emit(held, "conf.late", {"late": True}, key="late-key")
    try:
        async with opened(h) as store:
            others: list[str] = []
            conn = writer(h)
            try:
                for i in range(50):
                    others += transaction(h, conn, [(None, f"k{i % 7}")])
            finally:
                conn.close()
            delivered: list[OutboxEvent] = []
            while batch := await store.fetch_pending(20, Filter()):
                delivered += batch
                assert await store.mark_delivered([e.seq for e in batch]) == len(batch)
            assert ids_of(delivered) == others
            assert late not in ids_of(delivered), "an uncommitted row was fetched (G2)"
            held.execute("COMMIT")
            got = await fetch_all(store)
            assert ids_of(got) == [late], "the late commit was skipped (H1)"
            assert got[0].seq < min(e.seq for e in delivered), "the held transaction did not take the lowest seq"
    finally:
        with contextlib.suppress(Exception):
            held.execute("ROLLBACK")
        held.close()


async def check_fetch_committed_never_overtakes_a_key(h: StoreHarness) -> None:
    """G5 for inline publishing: a writer may publish its own rows only when no earlier row of the
    key is pending; uncommitted ids are never returned."""
    (e1,) = emit_committed(h, [(None, "k")])
    (e2, other) = emit_committed(h, [(None, "k"), (None, "j")])
    conn = writer(h)
    try:
        open_ids = transaction(h, conn, [(None, "z")], commit=False)
    finally:
        conn.close()
    async with opened(h) as store:
        assert ids_of(await store.fetch_committed([e2, other, *open_ids])) == [other]
        assert ids_of(await store.fetch_committed([e1, e2])) == [e1]
        (first,) = await store.fetch_committed([e1])
        await store.mark_delivered([first.seq])
        assert ids_of(await store.fetch_committed([e2])) == [e2]
        assert await store.fetch_committed([]) == []


async def check_dead_letter_holds_its_key(h: StoreHarness) -> None:
    """H5: a dead letter holds its key's later events (the default), never other keys, and inline
    publishing does not overtake it either; with ``hold_dead_keys=False`` the key flows on. Failed
    attempts are counted, and any error text is storable."""
    (poison, later, other) = emit_committed(h, [(None, "k"), (None, "k"), (None, "j")])
    async with opened(h) as store:
        rows = {e.id: e for e in await fetch_all(store)}
        assert await store.record_failure(rows[poison].seq, "broker said no \x00", dead=False)
        (again, *_) = await fetch_all(store)
        assert again.id == poison and again.attempts == 1
        assert await store.record_failure(rows[poison].seq, "refused for good", dead=True)
        assert ids_of(await fetch_all(store)) == [other], "a dead letter's key was not held"
        assert ids_of(await store.fetch_committed([later, other])) == [other]
        assert await store.pending_count() == 2
    async with opened(h, hold_dead_keys=False) as skipping:
        assert ids_of(await fetch_all(skipping)) == [later, other]


async def check_paused_topic_holds_its_keys(h: StoreHarness) -> None:
    """G5: while a topic is paused (unroutable), its rows and every later row of their keys wait."""
    (held, behind, free) = emit_committed(h, [("paused", "k"), ("open", "k"), ("open", "j")])
    async with opened(h) as store:
        got = await store.fetch_pending(100, Filter(paused_topics=frozenset({"conf.events.paused"})))
        assert ids_of(got) == [free]
        assert ids_of(await fetch_all(store)) == [held, behind, free]


async def check_wait_for_new_wakes_on_commit(h: StoreHarness) -> None:
    """A commit by another connection ends ``wait_for_new`` long before its timeout."""
    async with opened(h) as store:
        await store.wait_for_new(0.01)  # settle: whatever happened before is not news
        timeout = 30.0
        waiter = asyncio.create_task(store.wait_for_new(timeout))
        await asyncio.sleep(0.2)
        started = time.monotonic()
        await asyncio.to_thread(emit_committed, h, [(None, "wake")])
        await asyncio.wait_for(waiter, timeout - 5)  # fails (TimeoutError) if only the timeout ended it
        assert time.monotonic() - started < timeout - 5
        assert len(await fetch_all(store)) == 1


async def check_leases_share_buckets_and_fence_marks(h: StoreHarness) -> None:
    """H6: relays split the buckets (the one over its share drains, then releases the surplus); a
    relay that stopped renewing loses its buckets (on the database's clock) to one with a higher
    epoch, and its marks are fenced off."""
    ttl = 1.5
    async with opened(h) as a, opened(h) as b:
        a_held = (await a.maintain_leases("relay-a", {}, ttl, rebalance=True)).held
        assert len(a_held) == BUCKETS
        b_grant = await b.maintain_leases("relay-b", {}, ttl, rebalance=True)
        if not h.shares_buckets:
            assert b_grant.held == {}, "two relays hold the same single-relay outbox"
            await a.release_leases("relay-a")
            assert len((await b.maintain_leases("relay-b", {}, ttl, rebalance=True)).held) == BUCKETS
            return
        assert b_grant.held == {}, "a bucket was leased twice"
        a_grant = await a.maintain_leases("relay-a", a_held, ttl, rebalance=True)
        assert a_grant.share == BUCKETS // 2 and len(a_grant.held) == BUCKETS, "maintain released on its own"
        await a.release_leases("relay-a", sorted(a_grant.held)[a_grant.share :])  # drained: give back
        a_held = (await a.maintain_leases("relay-a", a_grant.held, ttl, rebalance=True)).held
        b_held = (await b.maintain_leases("relay-b", {}, ttl, rebalance=True)).held
        assert len(a_held) == len(b_held) == BUCKETS // 2
        assert not set(a_held) & set(b_held) and set(a_held) | set(b_held) == set(range(BUCKETS))

        ids = emit_committed(h, [(None, f"key-{i}") for i in range(40)])
        mine, theirs = await fetch_all(a, a_held), await fetch_all(b, b_held)
        assert sorted(ids_of(mine) + ids_of(theirs)) == sorted(ids)
        assert not set(ids_of(mine)) & set(ids_of(theirs))
        assert mine and theirs, "40 keys all hashed into one relay's half"
        assert all(e.bucket in a_held for e in mine if e.bucket is not None)

        # relay-a pauses past its lease; relay-b takes its buckets over with a higher epoch.
        await asyncio.sleep(ttl + 0.5)
        b_held = (await b.maintain_leases("relay-b", b_held, ttl, rebalance=True)).held
        assert len(b_held) == BUCKETS
        assert all(b_held[bucket] > epoch for bucket, epoch in a_held.items())
        assert await a.mark_delivered([e.seq for e in mine], a_held) == 0, "a fenced relay marked rows"
        assert not await a.record_failure(mine[0].seq, "late", dead=True, leases=a_held)
        assert await b.mark_delivered([e.seq for e in mine], b_held) == len(mine)
        assert (await a.maintain_leases("relay-a", a_held, ttl, rebalance=False)).held == {}
        await b.release_leases("relay-b")
        assert len((await a.maintain_leases("relay-a", {}, ttl, rebalance=True)).held) == BUCKETS


async def check_fetch_is_bounded_by_bytes(h: StoreHarness) -> None:
    """A fetch stops at ``max_bytes`` of payload (at least one row), whatever the row limit."""
    conn = writer(h)
    try:
        outbox = Outbox(table=h.ref.table, schema=h.ref.schema, max_payload=200_000)
        conn.execute(database_for(h.url).begin_sql)
        ids = [outbox.emit(conn, "conf.big", {"blob": "x" * 100_000}, key=f"b{i}") for i in range(5)]
        conn.execute("COMMIT")
    finally:
        conn.close()
    async with opened(h) as store:
        assert ids_of(await store.fetch_pending(100, Filter(), max_bytes=250_000)) == ids[:3]
        assert ids_of(await store.fetch_pending(100, Filter(), max_bytes=1)) == ids[:1]
        assert ids_of(await store.fetch_pending(100, Filter())) == ids


async def check_rows_in_hand_are_left_out(h: StoreHarness) -> None:
    """A fetch leaves out the seqs the relay holds in hand (in flight, or confirmed with the mark
    on its way), so a continuous pipeline never fetches them twice."""
    ids = emit_committed(h, [(None, f"k{i}") for i in range(6)])
    async with opened(h) as store:
        rows = await fetch_all(store)
        in_hand = [rows[0].seq, rows[2].seq, rows[3].seq]
        assert ids_of(await store.fetch_pending(100, Filter(), exclude=in_hand)) == [ids[1], ids[4], ids[5]]
        many = list(range(10**9, 10**9 + 5000))  # thousands in hand cost one parameter
        assert ids_of(await store.fetch_pending(100, Filter(), exclude=[*many, *in_hand])) == [ids[1], ids[4], ids[5]]
        assert ids_of(await store.fetch_pending(2, Filter(), exclude=in_hand)) == [ids[1], ids[4]]


async def check_concurrent_calls_are_safe(h: StoreHarness) -> None:
    """The relay calls one store from several tasks at once (marks overlap the next fetch, failures
    are recorded from publish tasks, the keeper renews leases, an idle relay waits): every call
    returns its own answer."""
    ids = emit_committed(h, [(None, f"k{i % 10}") for i in range(400)])
    async with opened(h) as store:
        leases = (await store.maintain_leases("relay-c", {}, 10.0, rebalance=True)).held
        rows = await store.fetch_pending(1000, Filter(), leases)
        assert ids_of(rows) == ids
        chunks = [rows[i : i + 40] for i in range(0, len(rows), 40)]
        calls = asyncio.gather(
            *(store.mark_delivered([e.seq for e in chunk], leases) for chunk in chunks[:-1]),
            *(store.fetch_pending(50, Filter(), leases) for _ in range(5)),
            store.record_failure(chunks[-1][0].seq, "boom", dead=False, leases=leases),
            store.maintain_leases("relay-c", leases, 10.0, rebalance=False),
            store.wait_for_new(0.05),
            store.pending_count(),
        )
        # A connection that interleaves two statements hangs or answers the wrong call.
        results = await asyncio.wait_for(calls, 60)
        assert results[: len(chunks) - 1] == [40] * (len(chunks) - 1)
        for fetched in results[len(chunks) - 1 : len(chunks) + 4]:
            assert [e.seq for e in fetched] == sorted(e.seq for e in fetched)  # type: ignore[union-attr]
        assert results[len(chunks) + 4] is True
        assert ids_of(await fetch_all(store, leases)) == ids[-40:]


async def check_held_keys_and_seqs_wait(h: StoreHarness) -> None:
    """G5 during a retry's backoff: a held key waits whole, a held keyless event only itself."""
    (k1, k2, keyless, j1) = emit_committed(h, [(None, "k"), (None, "k"), (None, None), (None, "j")])
    async with opened(h) as store:
        rows = {e.id: e for e in await fetch_all(store)}
        got = await store.fetch_pending(
            100, Filter(held_keys=frozenset({"k"}), held_seqs=frozenset({rows[keyless].seq}))
        )
        assert ids_of(got) == [j1]
        assert ids_of(await fetch_all(store)) == [k1, k2, keyless, j1]


async def check_rows_other_programs_wrote_never_break_a_fetch(h: StoreHarness) -> None:
    """H11: a row inserted by plain SQL that breaks the contract comes back with ``defect`` set
    (for the relay to dead-letter); it never makes the fetch fail, and other rows come back whole."""
    database = database_for(h.url)
    table = h.ref.quoted(database.quote)
    key = "`key`" if database.quote == "`" else "key"
    conn = writer(h)
    try:
        conn.execute(
            placeholders(
                database, f"INSERT INTO {table} (id, topic, {key}, payload, content_type) VALUES (?, ?, ?, ?, ?)"
            ),
            ("0190a5d2-0000-7000-8000-000000000001", "not a topic", "bad-1", b"{}", "application/json"),
        )
        conn.execute(
            placeholders(
                database, f"INSERT INTO {table} (id, topic, {key}, payload, content_type) VALUES (?, ?, ?, ?, ?)"
            ),
            ("0190a5d2-0000-7000-8000-000000000002", "conf.ok", "bad-2", b"{}", "garbage"),
        )
    finally:
        conn.close()
    (good,) = emit_committed(h, [(None, "good")])
    async with opened(h) as store:
        got = await fetch_all(store)
    assert [e.defect is not None for e in got] == [True, True, False]
    assert "topic" in (got[0].defect or "") and "media type" in (got[1].defect or "")
    assert got[2].id == good


async def check_narrowing_reads_seqs_then_rows(h: StoreHarness) -> None:
    """H13: ``pending_seqs`` names exactly the rows ``fetch_pending`` would return (same filter,
    leases, byte bound and rows in hand) reading only their seqs, and ``fetch_rows`` reads some of
    them alone: what the relay needs to narrow a failing fetch down to its row. A dead letter
    stored by seq takes any key, however long (no index refuses it)."""
    ids = emit_committed(h, [(None, f"k{i % 3}") for i in range(9)])
    async with opened(h) as store:
        rows = await fetch_all(store)
        skip = Filter(held_keys=frozenset({"k1"}))
        for kwargs in ({}, {"exclude": [rows[0].seq]}, {"max_bytes": 1}):
            want = [e.seq for e in await store.fetch_pending(100, skip, **kwargs)]
            assert await store.pending_seqs(100, skip, **kwargs) == want
        assert await store.pending_seqs(4, Filter()) == [e.seq for e in rows[:4]]
        assert ids_of(await store.fetch_rows([rows[5].seq, rows[2].seq])) == [ids[2], ids[5]]
        assert await store.mark_delivered([rows[2].seq]) == 1
        assert ids_of(await store.fetch_rows([rows[2].seq, rows[5].seq])) == [ids[5]], "pending rows only"
    database = database_for(h.url)
    key = "`key`" if database.quote == "`" else "key"
    # Over emit's 1,024 bytes: 10,240 random-looking characters where the column takes them (a
    # btree index would refuse it), else the column's 1,024 characters of two bytes each.
    long_key = "\u00e9" * 1024 if database.quote == "`" else "".join(f"{i * 7919 % 65536:04x}" for i in range(2560))
    conn = writer(h)
    try:
        conn.execute(
            placeholders(
                database, f"INSERT INTO {h.ref.quoted(database.quote)} (topic, {key}, payload) VALUES (?, ?, ?)"
            ),
            ("conf.long", long_key, b"{}"),
        )
    finally:
        conn.close()
    async with opened(h) as store:
        bad = [e for e in await fetch_all(store) if e.topic == "conf.long"]
        assert len(bad) == 1 and bad[0].defect is not None
        assert await store.record_failure(bad[0].seq, f"key of {len(long_key)} characters\x00\ud800", dead=True)


async def check_operations_and_retention(h: StoreHarness) -> None:
    """H3 and the operator commands: status counts, dead letters retried, replay, and cleanup that
    deletes delivered rows only (never pending, never dead), in batches."""
    ids = emit_committed(h, [(None, f"k{i}") for i in range(6)])
    async with opened(h) as store:
        rows = await fetch_all(store)
        assert await store.mark_delivered([e.seq for e in rows[:4]]) == 4
        assert await store.record_failure(rows[4].seq, "refused", dead=True)
    await asyncio.sleep(0.05)  # the cleanup cutoff (now - 0) must be later than the marks' time
    with ops.open_db(h.url, h.ref) as db:
        doc = ops.status(db).to_json()
        assert (doc["pending"], doc["dead"], doc["delivered"]) == (1, 1, 4), doc
        assert doc["database"] == database_for(h.url).name
        total, dead = ops.list_dead(db, ops.Selector(), 10)
        assert total == 1 and dead[0].id == ids[4] and dead[0].last_error == "refused"
        assert ops.replay(db, ops.Selector(ids=(ids[0],))) == 1
        assert ops.count_cleanup(db, timedelta(0)) == 3
        progress = list(ops.cleanup(db, timedelta(0), batch=2))
        assert progress[-1].deleted == 3 and progress[-1].batches == 2
        assert ops.retry_dead(db, ops.Selector(ids=(ids[4],))) == 1
        doc = ops.status(db).to_json()
        assert (doc["pending"], doc["dead"], doc["delivered"]) == (3, 0, 0), doc
    async with opened(h) as store:
        assert sorted(ids_of(await fetch_all(store))) == sorted([ids[0], ids[4], ids[5]])


STORE_CHECKS: list[Callable[[StoreHarness], Awaitable[None]]] = [
    check_schema_is_checked_and_migrate_idempotent,
    check_fields_round_trip_and_ids_are_stable,
    check_committed_fetched_in_order_rolled_back_never,
    check_unmarked_comes_back_marked_never,
    check_late_commit_is_fetched,
    check_fetch_committed_never_overtakes_a_key,
    check_dead_letter_holds_its_key,
    check_paused_topic_holds_its_keys,
    check_wait_for_new_wakes_on_commit,
    check_leases_share_buckets_and_fence_marks,
    check_fetch_is_bounded_by_bytes,
    check_rows_in_hand_are_left_out,
    check_concurrent_calls_are_safe,
    check_held_keys_and_seqs_wait,
    check_rows_other_programs_wrote_never_break_a_fetch,
    check_narrowing_reads_seqs_then_rows,
    check_operations_and_retention,
]

__all__ = ["STORE_CHECKS", "StoreHarness", "emit_committed", "opened", "transaction", "writer"]
