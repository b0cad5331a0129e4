"""Aggregates on real PostgreSQL and SQLite: rebuild, record, save with optimistic concurrency,
snapshots every N events, upcasting of old event versions."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from outboxkit.errors import ConcurrencyError
from outboxkit.eventstore import Aggregate, EventTypes, NewEvent, Repository
from tests.integration.eventstore_support import Db, db_fixture  # noqa: F401 - the fixture


@dataclass(frozen=True)
class Placed:
    customer: str


@dataclass(frozen=True)
class ItemAdded:
    sku: str
    quantity: int
    price: int  # cents; version 1 had no price (upcast to 0)


@dataclass(frozen=True)
class Paid:
    amount: int


class Order(Aggregate):
    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.customer = ""
        self.lines: list[list[Any]] = []
        self.paid = False
        self.applied = 0  # how many events this instance applied (not the version)

    def apply(self, event: object) -> None:
        self.applied += 1
        match event:
            case Placed(customer=customer):
                self.customer = customer
            case ItemAdded(sku=sku, quantity=quantity, price=price):
                self.lines.append([sku, quantity, price])
            case Paid():
                self.paid = True

    def snapshot_state(self) -> Any:
        return {"customer": self.customer, "lines": self.lines, "paid": self.paid}

    # commands
    def add(self, sku: str, quantity: int, price: int) -> None:
        if self.paid:
            raise ValueError("order is paid")
        self.record(ItemAdded(sku, quantity, price))

    @property
    def total(self) -> int:
        return sum(q * p for _, q, p in self.lines)


def _types() -> EventTypes:
    return (
        EventTypes()
        .register(Placed, "OrderPlaced")
        .register(ItemAdded, "ItemAdded", version=2, upcasters={1: lambda d: {**d, "price": 0}})
        .register(Paid, "OrderPaid")
    )


def _in_tx(db: Db, work: Any) -> Any:
    conn = db.connect()
    try:
        db.begin(conn)
        result = work(conn)
        conn.execute("COMMIT")
        return result
    finally:
        conn.close()


def test_rebuild_record_save_and_concurrency(db: Db) -> None:
    repo = Repository(db.store, Order, _types())
    order = Order("order-1")
    order.record(Placed("ada"))
    order.add("book", 2, 1500)
    assert _in_tx(db, lambda c: repo.save(c, order)).version == 2
    assert (order.version, order.pending) == (2, ())

    first = _in_tx(db, lambda c: repo.load(c, "order-1"))
    second = _in_tx(db, lambda c: repo.load(c, "order-1"))
    assert (first.customer, first.lines, first.version, first.total) == ("ada", [["book", 2, 1500]], 2, 3000)
    first.add("pen", 1, 200)
    _in_tx(db, lambda c: repo.save(c, first))
    second.record(Paid(3000))
    with pytest.raises(ConcurrencyError, match="'order-1': expected version 2, found version 3"):
        _in_tx(db, lambda c: repo.save(c, second))
    again = _in_tx(db, lambda c: repo.load(c, "order-1"))
    assert again.total == 3200 and not again.paid
    empty = _in_tx(db, lambda c: repo.load(c, "nobody"))
    assert (empty.version, empty.customer) == (0, "")
    # The stored event is plain JSON with its type and schema version as headers.
    stored = _in_tx(db, lambda c: db.store.read_stream(c, "order-1"))
    assert [(e.type, e.headers["eventversion"]) for e in stored] == [
        ("OrderPlaced", "1"),
        ("ItemAdded", "2"),
        ("ItemAdded", "2"),
    ]
    assert stored[1].json() == {"sku": "book", "quantity": 2, "price": 1500}


def test_snapshots_every_n_events(db: Db) -> None:
    repo = Repository(db.store, Order, _types(), snapshot_every=5)
    order = Order("order-s")
    order.record(Placed("bob"))
    _in_tx(db, lambda c: repo.save(c, order))
    for i in range(11):
        order.add(f"sku-{i}", 1, 100)
        _in_tx(db, lambda c: repo.save(c, order))  # one event per save: versions 2..12
    assert order.version == 12
    snapshots = db.store.ref.derived("snapshots")
    row = _in_tx(db, lambda c: c.execute(f"SELECT version, state FROM {snapshots}").fetchall())
    assert len(row) == 1 and row[0][0] == 10, "the last multiple of 5 crossed"
    loaded = _in_tx(db, lambda c: repo.load(c, "order-s"))
    assert (loaded.version, loaded.applied, loaded.total) == (12, 2, 1100), "snapshot at 10, then events 11 and 12"
    plain = _in_tx(db, lambda c: Repository(db.store, Order, _types()).load(c, "order-s"))
    assert (plain.version, plain.applied) == (12, 12)
    assert plain.snapshot_state() == loaded.snapshot_state(), "the snapshot path rebuilds the same state"

    # A snapshot of another shape (snapshot_kind bumped) is ignored: rebuilt from the events.
    class OrderV2(Order):
        snapshot_kind = "2"

    rebuilt = _in_tx(db, lambda c: Repository(db.store, OrderV2, _types(), snapshot_every=5).load(c, "order-s"))
    assert (rebuilt.version, rebuilt.applied, rebuilt.total) == (12, 12, 1100)
    state = json.loads(bytes(row[0][1]))
    assert state["customer"] == "bob" and len(state["lines"]) == 9


def test_old_event_versions_are_upcast_when_read(db: Db) -> None:
    # Written by an older release: ItemAdded version 1 had no price.
    old = [NewEvent("OrderPlaced", {"customer": "cy"}), NewEvent("ItemAdded", {"sku": "mug", "quantity": 3})]
    _in_tx(db, lambda c: db.store.append(c, "order-old", old, expected=0))
    order = _in_tx(db, lambda c: Repository(db.store, Order, _types()).load(c, "order-old"))
    assert order.lines == [["mug", 3, 0]] and order.version == 2
    # History is not rewritten.
    stored = _in_tx(db, lambda c: db.store.read_stream(c, "order-old"))
    assert stored[1].json() == {"sku": "mug", "quantity": 3} and "eventversion" not in stored[1].headers


async def test_repository_async_on_psycopg(db: Db) -> None:
    if db.name == "sqlite":
        pytest.skip("no async sqlite3 driver among emit's connections")
    import psycopg

    repo = Repository(db.store, Order, _types(), snapshot_every=2)
    async with await psycopg.AsyncConnection.connect(db.url) as conn:
        order = Order("order-a")
        order.record(Placed("di"))
        order.add("cup", 1, 900)
        order.add("saucer", 1, 300)
        async with conn.transaction():
            assert (await repo.save_async(conn, order)) is not None
        async with conn.transaction():
            assert await repo.save_async(conn, order) is None, "nothing recorded, nothing saved"
        loaded = await repo.load_async(conn, "order-a")
        assert (loaded.version, loaded.total, loaded.applied) == (3, 1200, 0), "from the snapshot at 3"
        stale = await repo.load_async(conn, "order-a")
        loaded.record(Paid(1200))
        async with conn.transaction():
            await repo.save_async(conn, loaded)
        stale.record(Paid(1200))
        with pytest.raises(ConcurrencyError):
            async with conn.transaction():
                await repo.save_async(conn, stale)
