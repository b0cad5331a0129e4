"""The tail-reader conformance suite: every log capture (``relay --capture wal|binlog|...``) passes
the same checks, on the real database and a real broker.

A log capture's test ships a :class:`TailHarness` (a database URL with a migrated outbox and its
capture's position, a broker the relay publishes to, and three small database-specific hooks:
other programs' traffic, the log's position now, the capture's stored position) and runs
:data:`TAIL_CHECKS` against it::

    @pytest.mark.parametrize("check", TAIL_CHECKS, ids=lambda c: c.__name__)
    async def test_my_capture(check, my_harness):
        await check(my_harness)

What the checks cover (docs/guarantees.md): G1 committed events are published, G2 rolled-back ones
never, G3 the position moves only past what was done (a peek never moves it; rows are marked
delivered), G4 ids are the same when read again, G5 commit order per key, G6 a restarted relay
resends nothing a clean stop confirmed, H1 a transaction that took the lowest seq and committed last
comes last, H4 no traffic of ours retains no log (the position follows the server while idle), H5
and H11 a row that cannot become a message is a dead letter holding its key, H6 one reader per
position and a standby that takes over, H13 other programs' traffic (other tables, a table of the
same name elsewhere, other tools' log messages) is skipped and moves the position on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Protocol

from outboxkit.brokers.base import Delivered
from outboxkit.emit import Outbox
from outboxkit.relay.loop import RelayConfig
from outboxkit.relay.tail import TailRelay, build_tail_relay
from outboxkit.stores.base import SyncConnection, TableRef
from outboxkit.stores.database import placeholders
from outboxkit.stores.logcapture import LogCapture, TailReader
from outboxkit.stores.registry import database_for, log_capture_for


class TailHarness(Protocol):
    """One log capture, set up for one check: an outbox nobody else uses, migrated with
    ``migrate --capture NAME``, and a broker topic space of its own."""

    url: str
    ref: TableRef
    #: the log capture's name (``wal``, ``binlog``)
    capture: str
    #: the broker the relay publishes to
    broker: str

    def topic(self, name: str = "events") -> str:
        """A topic this harness routes and can read back."""
        ...

    async def read(self, expect: int, timeout: float = 30.0) -> list[Delivered]:
        """Everything published to this harness's topics, in broker order; waits for ``expect``."""
        ...

    def foreign(self) -> None:
        """Commit traffic that is not this outbox's, more than one peek holds: rows of other tables
        of the database, of a table of the outbox's name elsewhere, other tools' log messages."""
        ...

    def head(self) -> Any:
        """The log's position now (after the last commit), comparable with :meth:`saved`."""
        ...

    def saved(self) -> Any:
        """The capture's stored position (read without disturbing a relay that reads the log)."""
        ...


#: Generous: a stalled relay is what the checks catch, and a loaded machine is slow.
TIMEOUT = float(os.environ.get("OUTBOXKIT_TEST_TAIL_TIMEOUT", "90"))
TAKEOVER = 4.0


# ------------------------------------------------------------------------------------------------
# helpers, also for a capture's own tests


def tail_relay(url: str, broker: str, ref: TableRef, capture: str | None = None, **config: Any) -> TailRelay:
    """A tailing relay polling quickly, with a short takeover (lease) time."""
    settings: dict[str, Any] = {"poll_interval": 0.05, "lease_ttl": TAKEOVER, **config}
    return build_tail_relay(url, broker, capture=capture, ref=ref, config=RelayConfig(**settings))


def harness_relay(h: TailHarness, **config: Any) -> TailRelay:
    return tail_relay(h.url, h.broker, h.ref, h.capture, **config)


async def relay_until(relay: TailRelay, done: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Run ``relay`` until ``done()`` (polled off the loop: it may query), then stop it; a relay
    that fails for good fails here, and ``TimeoutError`` after ``timeout``."""
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        async with asyncio.timeout(timeout):
            while not await asyncio.to_thread(done):
                if task.done():
                    task.result()
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def wait_for(condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Poll ``condition`` (off the loop) until it holds; ``TimeoutError`` after ``timeout``."""
    async with asyncio.timeout(timeout):
        while not await asyncio.to_thread(condition):
            await asyncio.sleep(0.05)


def writer(h: TailHarness) -> SyncConnection:
    """A plain autocommit connection, as an application (or psql) would have."""
    return database_for(h.url).connect(h.url, label="outboxkit-conformance")


def emit_each(h: TailHarness, topic: str, keys: Sequence[str | None]) -> list[str]:
    """One committed transaction per event, in order; returns the ids."""
    outbox = Outbox(table=h.ref.table, schema=h.ref.schema, source="/conformance")
    begin = database_for(h.url).begin_sql
    conn = writer(h)
    try:
        ids = []
        for i, key in enumerate(keys):
            conn.execute(begin)
            ids.append(outbox.emit(conn, topic, {"i": i}, key=key))
            conn.execute("COMMIT")
        return ids
    finally:
        conn.close()


def _query(h: TailHarness, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    database = database_for(h.url)
    conn = writer(h)
    try:
        return [tuple(r) for r in conn.execute(placeholders(database, sql), tuple(params)).fetchall()]
    finally:
        conn.close()


def pending(h: TailHarness) -> int:
    table = h.ref.quoted(database_for(h.url).quote)
    return int(_query(h, f"SELECT COUNT(*) FROM {table} WHERE delivered_at IS NULL AND dead_at IS NULL")[0][0])


def dead_letters(h: TailHarness) -> list[tuple[str, str | None, str]]:
    """(id, key, last_error) of every dead letter, in seq order."""
    database = database_for(h.url)
    table, key = h.ref.quoted(database.quote), f"{database.quote}key{database.quote}"
    rows = _query(h, f"SELECT id, {key}, last_error FROM {table} WHERE dead_at IS NOT NULL ORDER BY seq")
    return [(str(r[0]), r[1], str(r[2])) for r in rows]


def capture_of(h: TailHarness) -> LogCapture:
    return log_capture_for(h.url, h.capture)


async def _read_log(
    reader: TailReader, capture: LogCapture, h: TailHarness, until: Callable[[list[str]], bool]
) -> tuple[list[str], int | None]:
    """Peek (and decode) from the reader's position until ``until(ids)``: the event ids in log
    order, each once (a reader that does not consume, like a slot, returns the same changes on every
    peek), and the end of the last transaction that had one (a position to advance to)."""
    decoder = capture.decoder(h.ref)
    seen: list[str] = []
    end: int | None = None
    async with asyncio.timeout(TIMEOUT):
        while not until(seen):
            messages, _ = await reader.peek(10_000)
            for tx in decoder.transactions(messages):
                seen += [i.event.id for i in tx.items if i.event.id not in seen]
                end = tx.end_lsn if tx.items else end
            if not messages:
                await asyncio.sleep(0.05)
    return seen, end


@contextlib.asynccontextmanager
async def _locked_reader(h: TailHarness) -> AsyncIterator[TailReader]:
    reader = capture_of(h).reader(h.url, h.ref, takeover=TAKEOVER)
    await reader.connect()
    try:
        # The previous check's reader closed its session, but the server ends that session (and
        # frees its lock or slot) a moment later, on its own time: a loaded machine shows the gap.
        deadline = asyncio.get_running_loop().time() + TIMEOUT
        while not await reader.try_lock():
            assert asyncio.get_running_loop().time() < deadline, "no other reader holds the position"
            await asyncio.sleep(0.05)
        yield reader
    finally:
        await reader.close()


# ------------------------------------------------------------------------------------------------
# checks


async def check_commit_order_rollbacks_and_late_commit(h: TailHarness) -> None:
    """G1, G2, G5, H1: every committed event in commit order (one that took the lowest seq and
    committed last comes last), never a rolled-back one; attributes kept; rows marked delivered."""
    topic = h.topic("orders")
    outbox = Outbox(table=h.ref.table, schema=h.ref.schema, source="/conformance")
    begin = database_for(h.url).begin_sql
    early, conn = writer(h), writer(h)
    try:
        early.execute(begin)
        late = outbox.emit(early, topic, {"n": "late"}, key="k")  # takes the lowest seq
        order = []
        for i in range(5):
            conn.execute(begin)
            order.append(outbox.emit(conn, topic, {"n": i}, key="k"))
            order.append(outbox.emit(conn, topic, {"n": i, "second": True}, key="k", headers={"h": "v"}))
            conn.execute("COMMIT")
        conn.execute(begin)
        rolled = outbox.emit(conn, topic, {"n": "x"}, key="k")
        conn.execute("ROLLBACK")
        early.execute("COMMIT")
        order.append(late)
    finally:
        early.close()
        conn.close()
    relay = harness_relay(h)
    await relay_until(relay, lambda: relay.stats.published >= len(order))
    got = await h.read(len(order))
    assert [m.event_id for m in got] == order
    assert rolled not in {m.event_id for m in got}
    assert got[1].headers.get("h") == "v" and got[1].key == "k"
    assert pending(h) == 0


async def check_foreign_traffic_is_skipped_and_passed(h: TailHarness) -> None:
    """H13: other programs' traffic, more than a peek holds, then a good event: only the event is
    published, nothing is a dead letter, and the stored position passes all of it."""
    await asyncio.to_thread(h.foreign)
    (good,) = emit_each(h, h.topic("orders"), ["g"])
    after = h.head()
    relay = harness_relay(h, batch_size=100)  # a peek: about 300 changes
    await relay_until(relay, lambda: relay.stats.published >= 1 and h.saved() >= after)
    got = await h.read(1)
    assert [m.event_id for m in got] == [good]
    assert relay.stats.dead_lettered == 0 and relay.stats.outages == 0
    assert dead_letters(h) == []


async def check_an_idle_outbox_retains_no_log(h: TailHarness) -> None:
    """H4: while the relay runs and the outbox is idle, other traffic goes by; the stored position
    follows the log's head (the log is not kept for this relay), and nothing is published."""
    relay = harness_relay(h)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        await wait_for(lambda: relay.active)
        await asyncio.to_thread(h.foreign)
        after = h.head()
        await wait_for(lambda: h.saved() >= after)
        assert relay.stats.published == 0
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def check_bad_rows_are_dead_letters_that_hold_their_key(h: TailHarness) -> None:
    """H11, H5: a row another program wrote that cannot become a message is a dead letter with the
    reason; its key's later events are held (dead letters too); other keys flow."""
    database = database_for(h.url)
    q = database.quote
    conn = writer(h)
    try:
        sql = f"INSERT INTO {h.ref.quoted(q)} (topic, {q}key{q}, payload) VALUES (?, ?, ?)"
        conn.execute(placeholders(database, sql), ("bad topic!", "bad", b"x"))
    finally:
        conn.close()
    topic = h.topic("orders")
    outbox = Outbox(table=h.ref.table, schema=h.ref.schema, source="/conformance")
    conn = writer(h)
    try:
        conn.execute(database.begin_sql)
        after_bad = outbox.emit(conn, topic, {"i": 1}, key="bad")
        good = outbox.emit(conn, topic, {"i": 2}, key="good")
        conn.execute("COMMIT")
    finally:
        conn.close()
    relay = harness_relay(h)
    await relay_until(relay, lambda: relay.stats.published + relay.stats.dead_lettered >= 3)
    got = await h.read(1)
    assert [m.event_id for m in got] == [good]
    dead = dead_letters(h)
    assert len(dead) == 2, dead
    assert "topic" in dead[0][2]
    assert dead[1][0] == after_bad and "held" in dead[1][2]
    assert pending(h) == 0


async def check_a_peek_never_moves_the_position(h: TailHarness) -> None:
    """G3, G4: a reader closed without advancing leaves the position where it was (a new reader
    reads the same events, same ids); once advanced, a new reader starts after them."""
    capture = capture_of(h)
    topic = h.topic("orders")
    ids = emit_each(h, topic, ["a", "b", "a"])
    for _ in range(2):  # closed without advancing, twice: the same events each time
        async with _locked_reader(h) as reader:
            seen, _ = await _read_log(reader, capture, h, lambda s: len(s) >= len(ids))
        assert seen == ids
    async with _locked_reader(h) as reader:
        seen, end = await _read_log(reader, capture, h, lambda s: len(s) >= len(ids))
        assert seen == ids and end is not None
        await reader.advance(end)
    (marker,) = emit_each(h, topic, ["c"])
    async with _locked_reader(h) as reader:
        seen, _ = await _read_log(reader, capture, h, lambda s: marker in s)
    assert seen == [marker], "a new reader starts after the advanced position"


async def check_a_restarted_relay_resends_nothing_confirmed(h: TailHarness) -> None:
    """G6 and the position kept across restarts: a relay stopped cleanly after its events were
    confirmed; a new one publishes only what came after."""
    topic = h.topic("orders")
    first = emit_each(h, topic, [f"k{i % 2}" for i in range(5)])
    relay = harness_relay(h)
    await relay_until(relay, lambda: relay.stats.published >= len(first))
    second = emit_each(h, topic, [f"k{i % 2}" for i in range(3)])
    again = harness_relay(h)
    await relay_until(again, lambda: again.stats.published >= len(second))
    got = await h.read(len(first) + len(second))
    assert [m.event_id for m in got] == first + second
    assert again.stats.published == len(second)


async def check_one_reader_and_a_standby_takes_over(h: TailHarness) -> None:
    """H6: one reader holds the position at a time (a second one's lock is refused); a standby
    relay waits, and takes over when the holder stops."""
    capture = capture_of(h)
    async with _locked_reader(h):
        other = capture.reader(h.url, h.ref, takeover=TAKEOVER)
        await other.connect()
        try:
            assert not await other.try_lock(), "two readers hold one position"
        finally:
            await other.close()
    first, second = harness_relay(h), harness_relay(h)
    refused = 0
    make = second.reader_factory

    def watched() -> TailReader:
        reader = make()
        try_lock = reader.try_lock

        async def counting() -> bool:
            nonlocal refused
            got = await try_lock()
            refused += not got
            return got

        setattr(reader, "try_lock", counting)  # noqa: B010 (an instance's method, replaced)
        return reader

    second.reader_factory = watched
    stop1, stop2 = asyncio.Event(), asyncio.Event()
    t1 = asyncio.create_task(first.run(stop1))
    t2: asyncio.Task[None] | None = None
    try:
        await wait_for(lambda: first.active)
        t2 = asyncio.create_task(second.run(stop2))
        await wait_for(lambda: refused > 0)  # the second one stands by
        assert not second.active
        stop1.set()
        await asyncio.wait_for(t1, 30)
        (event_id,) = emit_each(h, h.topic("orders"), ["k"])
        await wait_for(lambda: second.stats.published >= 1)
        assert second.active and second.stats.handovers == 1
        got = await h.read(1)
        assert [m.event_id for m in got] == [event_id]
    finally:
        stop1.set()
        stop2.set()
        await asyncio.wait_for(t1, 30)
        if t2 is not None:
            await asyncio.wait_for(t2, 30)


TAIL_CHECKS: list[Callable[[TailHarness], Awaitable[None]]] = [
    check_commit_order_rollbacks_and_late_commit,
    check_foreign_traffic_is_skipped_and_passed,
    check_an_idle_outbox_retains_no_log,
    check_bad_rows_are_dead_letters_that_hold_their_key,
    check_a_peek_never_moves_the_position,
    check_a_restarted_relay_resends_nothing_confirmed,
    check_one_reader_and_a_standby_takes_over,
]

__all__ = [
    "TAIL_CHECKS",
    "TailHarness",
    "dead_letters",
    "emit_each",
    "pending",
    "relay_until",
    "tail_relay",
    "wait_for",
]
