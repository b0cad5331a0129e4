"""The lease keeper beside a relay's session, on a real PostgreSQL store (H6, G5).

**Trust that lapses during a renewal.** A mark fenced (or the local deadline passing) while a
renewal is on its way stops the session; the renewal's answer must then say the leases are trusted
again, or the session, with nothing else to wake it, publishes nothing more.

**A bucket back at a new epoch.** Relay A fetched rows of key ``k``, then paused past its lease.
Relay B took the buckets, published those rows and a newer event of the key, and gave the buckets
back (a clean stop). A's next renewal gets the same bucket numbers at a new epoch. Rows A fetched
under the old epoch were already sent by B: published now they would follow B's newer event (a
per-key reordering and a duplicate). The bucket counts as lost and gained, so those rows leave the
relay's hands.

The relay's session is driven step by step (fetch, renew, take) against a real PostgreSQL store, so
the pause needs no clock and no signal: A's lease is expired in the database, as its TTL would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import psycopg
import pytest

from outboxkit.brokers.nats import NatsPublisher
from outboxkit.relay.leases import LeaseKeeper
from outboxkit.relay.loop import Relay, RelayConfig
from outboxkit.relay.observer import NullObserver
from outboxkit.relay.pipeline import Session
from outboxkit.stores.base import BUCKETS, Filter, LeaseGrant, Leases, TableRef
from outboxkit.stores.postgres import PostgresOutboxStore
from outboxkit.stores.registry import store_for
from tests.helpers import emit_many

TTL = 30.0  # long: nothing expires by the clock during the test; the pause is made in the database


@pytest.fixture
async def relay_a(pg_url: str, pg_ref: TableRef, nats_url: str) -> AsyncIterator[Session]:
    store = PostgresOutboxStore(pg_url, pg_ref)
    publisher = NatsPublisher(nats_url)
    await store.open()
    await publisher.connect()
    relay = Relay(lambda: store, lambda: publisher, RelayConfig(owner="relay-a", lease_ttl=TTL))
    # No keeper task: the test renews by hand, so every renewal happens exactly where it says.
    keeper = LeaseKeeper(store, "relay-a", TTL, relay.observer)
    await keeper.renew()
    assert len(keeper.leases) == BUCKETS
    session = Session(relay, store, publisher, keeper, asyncio.Event())
    keeper.on_change = session.leases_changed
    try:
        yield session
    finally:
        await publisher.close()
        await store.close()


async def _pause_past_lease_while_b_delivers(pg_url: str, ref: TableRef) -> None:
    """A's lease and heartbeat expire; B takes every bucket, marks what is pending (it published
    it), publishes a newer event of the key, and stops cleanly (its buckets are free at once)."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"UPDATE {ref.derived('leases')} SET expires_at = now() - interval '1 second'".encode())
        conn.execute(f"UPDATE {ref.derived('relays')} SET heartbeat_at = now() - interval '1 hour'".encode())
    b = PostgresOutboxStore(pg_url, ref)
    await b.open()
    try:
        held = (await b.maintain_leases("relay-b", {}, TTL, rebalance=True)).held
        assert len(held) == BUCKETS
        emit_many(pg_url, ref, "t.x", [{"n": 3}], key=lambda _: "k")
        pending = await b.fetch_pending(100, Filter(), held)
        assert [r.payload for r in pending] == [b'{"n":1}', b'{"n":2}', b'{"n":3}']
        assert await b.mark_delivered([r.seq for r in pending], held) == 3
        await b.release_leases("relay-b")
    finally:
        await b.close()


def _fetch_started(session: Session) -> asyncio.Task[object]:
    session._maybe_fetch()
    assert session.fetching is not None
    return session.fetching  # type: ignore[return-value]


async def test_rows_in_hand_of_a_bucket_regained_at_a_new_epoch_are_withdrawn(
    relay_a: Session, pg_url: str, pg_ref: TableRef
) -> None:
    session = relay_a
    emit_many(pg_url, pg_ref, "t.x", [{"n": 1}, {"n": 2}], key=lambda _: "k")
    await _fetch_started(session)
    session._take_results()  # the two rows are in hand, waiting in the dispatcher
    assert session.dispatcher.waiting == 2
    before = dict(session.keeper.leases)

    await _pause_past_lease_while_b_delivers(pg_url, pg_ref)
    await session.keeper.renew()  # A wakes: the same bucket numbers, each at a new epoch

    assert session.keeper.leases.keys() == before.keys()
    assert all(session.keeper.leases[b] > before[b] for b in before)
    assert session.dispatcher.take(10) == [], "rows fetched under the old epoch must not be published"
    assert session.in_hand == {}


async def test_a_fetch_issued_under_the_old_epoch_is_dropped_when_it_lands(
    relay_a: Session, pg_url: str, pg_ref: TableRef
) -> None:
    session = relay_a
    emit_many(pg_url, pg_ref, "t.x", [{"n": 1}, {"n": 2}], key=lambda _: "k")
    fetch = _fetch_started(session)
    await asyncio.wait({fetch})  # the answer arrived, the relay has not looked at it yet (paused)

    await _pause_past_lease_while_b_delivers(pg_url, pg_ref)
    await session.keeper.renew()
    session._take_results()  # now it looks: the rows were read under the old epochs

    assert session.dispatcher.take(10) == []
    assert session.in_hand == {}


class HeldRenewals(PostgresOutboxStore):
    """The real store, with a gate in front of its lease round trip: the test decides when the
    database answers, so "a mark is fenced while the renewal is on its way" happens every time."""

    def __init__(self, url: str, ref: TableRef) -> None:
        super().__init__(url, ref)
        self.gate = asyncio.Event()
        self.gate.set()
        self.waiting = asyncio.Event()

    async def maintain_leases(self, owner: str, held: Leases, ttl: float, *, rebalance: bool) -> LeaseGrant:
        self.waiting.set()
        await self.gate.wait()
        return await super().maintain_leases(owner, held, ttl, rebalance=rebalance)


async def test_a_mark_fenced_during_a_renewal_is_announced_once_trust_is_back(pg_url: str, pg_ref: TableRef) -> None:
    store = HeldRenewals(pg_url, pg_ref)
    await store.open()
    try:
        announced: list[bool] = []
        keeper = LeaseKeeper(store, "relay-a", TTL, NullObserver(), on_change=lambda: announced.append(keeper.usable()))
        await keeper.renew()
        assert keeper.usable()
        announced.clear()

        store.gate.clear()
        store.waiting.clear()
        renewal = asyncio.ensure_future(keeper.renew())
        await store.waiting.wait()  # the request is on its way
        keeper.doubt()  # a mark is fenced meanwhile: the session stops publishing and waits
        assert not keeper.usable()
        store.gate.set()
        await renewal
        # This answer may predate the fenced mark: it does not clear the doubt by itself ...
        assert not keeper.usable()
        await keeper.renew()  # ... the renewal the doubt asked for does, and says so
        assert keeper.usable()
        assert announced and announced[-1] is True, "the session must be woken when trust is back"
    finally:
        await store.close()


async def test_a_deadline_passed_during_a_renewal_is_announced(pg_url: str, pg_ref: TableRef) -> None:
    store = HeldRenewals(pg_url, pg_ref)
    await store.open()
    try:
        announced: list[bool] = []
        keeper = LeaseKeeper(store, "relay-a", TTL, NullObserver(), on_change=lambda: announced.append(keeper.usable()))
        await keeper.renew()
        announced.clear()

        store.gate.clear()
        store.waiting.clear()
        renewal = asyncio.ensure_future(keeper.renew())
        await store.waiting.wait()
        keeper._deadline = 0.0  # the loop stalled past the local deadline while the request was out
        assert not keeper.usable()  # the session sees it and waits
        store.gate.set()
        await renewal
        assert keeper.usable()
        assert announced == [True], "the session must be woken when trust is back"
    finally:
        await store.close()


@pytest.mark.parametrize("database", ["postgresql", "mariadb"])
async def test_a_relay_started_again_under_its_name_takes_its_buckets_back_at_a_new_epoch(
    database: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("pg_url" if database == "postgresql" else "mariadb_url")
    ref = request.getfixturevalue("pg_ref" if database == "postgresql" else "mariadb_ref")
    first, again = store_for(url, ref), store_for(url, ref)
    await first.open()
    await again.open()
    try:
        before = (await first.maintain_leases("web-1", {}, TTL, rebalance=True)).held
        assert len(before) == BUCKETS
        # SIGKILLed and started again by its supervisor under the same name, long before the TTL:
        grant = await again.maintain_leases("web-1", {}, TTL, rebalance=True)
        assert grant.held.keys() == before.keys(), "every bucket back at once, none left to expire"
        assert all(grant.held[b] == before[b] + 1 for b in before), "at a new epoch"
        # The earlier process, were it still alive, marks nothing any more (H6) ...
        emit_many(url, ref, "t.x", [{"n": 1}], key=lambda _: "k")
        (row,) = await again.fetch_pending(10, Filter(), grant.held)
        assert await first.mark_delivered([row.seq], before) == 0
        # ... and the relay under that name goes on with its buckets: a renewal keeps the epoch.
        assert (await again.maintain_leases("web-1", grant.held, TTL, rebalance=True)).held == grant.held
        assert await again.mark_delivered([row.seq], grant.held) == 1
    finally:
        await first.close()
        await again.close()
