"""PostgreSQL wake-ups (hazard H2, ``stores/postgres/wake.py``): writers notify only while a relay
sleeps, a sleeping relay is woken, a busy one is left alone, and no interleaving of a writer's
steps with a relay falling asleep leaves a committed row to the polling fallback."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outboxkit import Outbox, migrate
from outboxkit.stores.base import Filter, TableRef
from outboxkit.stores.postgres.eventstore import PostgresWaiter
from outboxkit.stores.postgres.store import PostgresOutboxStore
from outboxkit.stores.postgres.wake import SLOTS, WakePolicy, sleep_sql, wake_keys
from tests.conftest import PG_URL, require, unique
from tests.helpers import emit_many

FENCE = "fence"


class Listener:
    """A LISTEN connection of the test's own: which backends notified. Notifications reach a
    listener in commit order, so once our own fence arrived, every notification committed before
    it has arrived too (no waiting on a clock)."""

    def __init__(self, url: str, ref: TableRef) -> None:
        self.channel = ref.channel
        self.conn = psycopg.connect(url, autocommit=True)
        self.conn.execute(f'LISTEN "{self.channel}"')
        self.fencer = psycopg.connect(url, autocommit=True)

    def senders(self) -> list[int]:
        """Pids that notified since the last call (the fence excluded)."""
        self.fencer.execute("SELECT pg_notify(%s, %s)", [self.channel, FENCE])
        got: list[int] = []
        for n in self.conn.notifies(timeout=60):
            if n.payload == FENCE and n.pid == self.fencer.info.backend_pid:
                return got
            got.append(n.pid)
        raise AssertionError("our own notification never arrived")  # pragma: no cover

    def close(self) -> None:
        self.conn.close()
        self.fencer.close()


class Writer:
    """One writer connection whose steps the test interleaves: BEGIN, emit (the trigger's check
    runs here), COMMIT."""

    def __init__(self, url: str, ref: TableRef) -> None:
        self.conn = psycopg.connect(url, autocommit=True)
        self.outbox = Outbox(table=ref.table, schema=ref.schema)
        self.pid = self.conn.info.backend_pid
        self.ids: list[str] = []

    def begin(self) -> None:
        self.conn.execute("BEGIN")

    def emit(self) -> None:
        self.ids.append(self.outbox.emit(self.conn, "wake.test", {"n": len(self.ids)}))

    def commit(self) -> None:
        self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def listener(pg_url: str, pg_ref: TableRef) -> Iterator[Listener]:
    lst = Listener(pg_url, pg_ref)
    yield lst
    lst.close()


async def _opened(url: str, ref: TableRef, *, quiet: float | None = None) -> PostgresOutboxStore:
    store = PostgresOutboxStore(url, ref)
    if quiet is not None:
        store._policy = WakePolicy(quiet=quiet)
    await store.open()
    return store


async def _fall_asleep(store: PostgresOutboxStore) -> None:
    """What the relay does when it runs out of work: wait (takes a slot, returns to re-check),
    fetch, and now it would sleep."""
    await store.wait_for_new(0.0)
    assert store._slot is not None, "a quiet relay with no writer in flight takes a slot"
    await store.fetch_pending(100, Filter())
    assert store._rechecked


async def test_a_sleeping_relay_is_notified_and_woken(pg_url: str, pg_ref: TableRef, listener: Listener) -> None:
    store = await _opened(pg_url, pg_ref)
    try:
        await _fall_asleep(store)
        waiting = asyncio.create_task(store.wait_for_new(60.0))
        await asyncio.sleep(0)
        assert not waiting.done(), "asleep and re-checked: it waits"
        writer = Writer(pg_url, pg_ref)
        try:
            writer.begin()
            writer.emit()
            writer.commit()
            assert listener.senders() == [writer.pid], "a writer notifies a sleeping relay"
            await asyncio.wait_for(waiting, 30.0)  # the notification ended the 60 s wait
            first = await store.fetch_pending(100, Filter())
            assert [e.id for e in first] == writer.ids
            assert store._slot is not None, "one row per wake-up is not busy: it stays asleep"
            await store.mark_delivered([e.seq for e in first])
            await store.wait_for_new(0.0)  # re-checked already: waits (0 s here)
            writer.begin()
            writer.emit()
            writer.emit()
            writer.commit()
            assert listener.senders() == [writer.pid], "still asleep: notified again"
            rows = await store.fetch_pending(100, Filter())
            assert [e.id for e in rows] == writer.ids[1:]
            assert store._slot is None, "busy (more rows than one wake-up): the slot is given back"
        finally:
            writer.close()
    finally:
        await store.close()


async def test_writers_do_not_notify_a_busy_relay(pg_url: str, pg_ref: TableRef, listener: Listener) -> None:
    store = await _opened(pg_url, pg_ref, quiet=3600.0)
    try:
        emit_many(pg_url, pg_ref, "wake.test", [{"n": 0}, {"n": 1}])
        assert len(await store.fetch_pending(100, Filter())) == 2  # commits faster than wake-ups: busy
        await store.wait_for_new(0.0)
        assert store._slot is None, "a busy relay does not sleep"
        emit_many(pg_url, pg_ref, "wake.test", [{"n": i} for i in range(2, 20)])
        assert listener.senders() == [], "nobody sleeps: no writer notified"
        assert len(await store.fetch_pending(100, Filter())) == 20
    finally:
        await store.close()


def test_no_relay_no_notification_and_every_slot_wakes(pg_url: str, pg_ref: TableRef, listener: Listener) -> None:
    """Without a sleeper nobody notifies; a sleeper in any of the slots is notified; one sleeper
    more than the slots cannot sleep (it polls)."""
    emit_many(pg_url, pg_ref, "wake.test", [{"n": 0}])
    assert listener.senders() == []
    holders = [psycopg.connect(pg_url, autocommit=True) for _ in range(SLOTS + 1)]
    try:
        keys = wake_keys(pg_ref)
        for slot in range(SLOTS):
            holders[slot].execute("SELECT pg_advisory_lock(%s)", [keys[slot]])
            writer = Writer(pg_url, pg_ref)
            writer.begin()
            writer.emit()
            writer.commit()
            writer.close()
            assert listener.senders() == [writer.pid], f"a sleeper in slot {slot} is notified"
            holders[slot].execute("SELECT pg_advisory_unlock(%s)", [keys[slot]])
        taken = [int(h.execute(sleep_sql(pg_ref)).fetchone()[0]) for h in holders]  # type: ignore[index]
        assert taken == [*range(SLOTS), -1]
    finally:
        for h in holders:
            h.close()


async def test_an_open_writer_keeps_the_relay_polling_then_its_row_is_fetched(pg_url: str, pg_ref: TableRef) -> None:
    """The fallback: a writer whose transaction is open holds the slots shared, so the relay cannot
    sleep and keeps polling; once it commits, the relay sleeps, and the re-check fetch finds its row
    (it never notified: it saw no sleeper)."""
    store = await _opened(pg_url, pg_ref, quiet=0.0)
    writer = Writer(pg_url, pg_ref)
    try:
        writer.begin()
        writer.emit()
        for _ in range(3):
            await store.wait_for_new(0.01)
            assert store._slot is None, "a writer is in flight: no slot"
            assert await store.fetch_pending(100, Filter()) == []
        writer.commit()
        await store.wait_for_new(0.01)
        assert store._slot is not None and not store._rechecked, "asleep, with a re-check due"
        await store.wait_for_new(60.0)  # returns at once: the re-check comes first
        assert [e.id for e in await store.fetch_pending(100, Filter())] == writer.ids
    finally:
        writer.close()
        await store.close()


async def test_a_lost_lease_connection_takes_the_slot_with_it(pg_url: str, pg_ref: TableRef) -> None:
    store = await _opened(pg_url, pg_ref)
    try:
        await _fall_asleep(store)
        assert store._lease is not None
        await store._lease.close()
        await store.wait_for_new(0.0)  # notices, and takes a slot again on a new connection
        assert store._slot is not None and store._slot_conn is store._lease and not store._lease.closed
    finally:
        await store.close()


def test_projection_waiter_sleeps_on_a_slot(pg_url: str, pg_ref: TableRef, listener: Listener) -> None:
    waiter = PostgresWaiter(pg_url, pg_ref.channel, pg_ref)
    try:
        assert waiter.wait(0.0) is True and waiter.slot is not None, "takes a slot, reads once more"
        emit_many(pg_url, pg_ref, "wake.test", [{"n": 1}])
        assert len(listener.senders()) == 1
        assert waiter.wait(30.0) is True, "woken by the notification"
        assert waiter.slot is None
        emit_many(pg_url, pg_ref, "wake.test", [{"n": 2}])
        assert listener.senders() == [], "awake: nobody notifies"
    finally:
        waiter.close()


def test_migrate_upgrades_an_every_insert_trigger(pg_url: str, pg_ref: TableRef, listener: Listener) -> None:
    """An outbox migrated by an earlier version (a trigger that notified on every insert) gets the
    sleeper-only trigger from ``migrate``; migrating again changes nothing."""
    fn, trigger = pg_ref.derived("notify"), pg_ref.index_name("notify")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"DROP TRIGGER {trigger} ON {pg_ref.qualified}".encode())
        conn.execute(
            f"""CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_notify('{pg_ref.channel}', ''); RETURN NULL; END $$""".encode()
        )
        conn.execute(
            f"CREATE TRIGGER {trigger} AFTER INSERT ON {pg_ref.qualified}"
            f" FOR EACH STATEMENT EXECUTE FUNCTION {fn}()".encode()
        )
    emit_many(pg_url, pg_ref, "wake.test", [{"n": 0}])
    assert len(listener.senders()) == 1, "the old trigger notifies every insert"
    for _ in range(2):
        migrate(pg_url, pg_ref)
        emit_many(pg_url, pg_ref, "wake.test", [{"n": 1}])
        assert listener.senders() == [], "upgraded: no sleeper, no notification"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        (count,) = conn.execute(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal", [pg_ref.qualified]
        ).fetchone()  # type: ignore[misc]
    assert count == 1


# -- the race, over generated interleavings -----------------------------------------------------------
# A writer's steps: BEGIN, emit (the trigger's check), maybe a second emit, COMMIT. The relay
# alternates wait and fetch (it always fetches after a wait returns) and ends on a wait, with quiet=0
# so every wait tries to sleep. Whatever the interleaving, once all writers committed: if the relay's
# next wait would block (slot taken, re-checked), every committed row its fetches did not see was
# announced by its writer's notification.

WRITERS = 3


@st.composite
def schedules(draw: Any) -> list[tuple[str, int]]:
    lanes: list[list[tuple[str, int]]] = []
    for w in range(WRITERS):
        steps = [("begin", w), ("emit", w)] + ([("emit", w)] if draw(st.booleans()) else []) + [("commit", w)]
        lanes.append(steps)
    rounds = draw(st.integers(min_value=1, max_value=6))
    # The relay ends on a wait: that is where it would block if it slept without re-checking.
    lanes.append([*(op for _ in range(rounds) for op in (("wait", -1), ("fetch", -1))), ("wait", -1)])
    merged: list[tuple[str, int]] = []
    while any(lanes):
        live = [lane for lane in lanes if lane]
        lane = draw(st.sampled_from(live))
        merged.append(lane.pop(0))
    return merged


async def _race(url: str, ref: TableRef, schedule: list[tuple[str, int]]) -> None:
    listener = Listener(url, ref)
    store = await _opened(url, ref, quiet=0.0)
    writers = [Writer(url, ref) for _ in range(WRITERS)]
    seen: set[str] = set()
    try:
        listener.senders()  # earlier examples' notifications are not this one's
        for op, w in schedule:
            if op == "wait":
                await store.wait_for_new(0.0)
            elif op == "fetch":
                rows = await store.fetch_pending(1000, Filter())
                seen.update(e.id for e in rows)
                await store.mark_delivered([e.seq for e in rows])
            else:
                getattr(writers[w], op)()
        if store._slot is None or not store._rechecked:
            return  # awake: it polls, or its next wait takes a slot and re-checks: nothing to prove
        notified = set(listener.senders())
        for writer in writers:
            unseen = [i for i in writer.ids if i not in seen]
            assert not unseen or writer.pid in notified, (
                f"writer {writer.pid} committed {unseen} after the relay's last fetch, and the relay "
                f"sleeps un-notified (schedule {schedule})"
            )
    finally:
        for writer in writers:
            writer.close()
        await store.close()
        listener.close()


def test_generated_interleavings_never_leave_a_row_to_the_poll() -> None:
    require("PostgreSQL", "127.0.0.1", 5432)
    ref = TableRef("outbox", unique("okwake"))
    migrate(PG_URL, ref)

    @settings(
        max_examples=int(os.environ.get("OUTBOXKIT_WAKE_EXAMPLES", "60")),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        derandomize=os.environ.get("OUTBOXKIT_FUZZ_RANDOM") != "1",
        database=None,
    )
    @given(schedules())
    def run(schedule: list[tuple[str, int]]) -> None:
        asyncio.run(_race(PG_URL, ref, schedule))

    try:
        run()
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{ref.schema}" CASCADE'.encode())
