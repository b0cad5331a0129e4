"""The inbox as a FastStream middleware, on the real NATS JetStream and RabbitMQ and a real
PostgreSQL: duplicates have one side effect (G7), a failing handler rolls back its effects and its
follow-up event and is retried, a poison message becomes a dead letter, and the follow-up event is
relayed by the outboxkit relay (consume -> act -> emit, exactly once end to end)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import psycopg
import pytest
from faststream.middlewares import BaseMiddleware
from faststream.nats import JStream, NatsBroker
from faststream.rabbit import ExchangeType, RabbitBroker, RabbitExchange, RabbitQueue
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from outboxkit import Outbox, migrate
from outboxkit.brokers.nats import connect
from outboxkit.contrib.faststream import Inbox, InboxTx
from outboxkit.errors import ConfigurationError
from outboxkit.inbox import migrate_inbox
from outboxkit.stores.base import TableRef
from tests.conftest import NATS_URL, PG_URL, drop_stream, make_stream, require, unique
from tests.helpers import read_all, relay_for, running_relay, wait_drained

pytestmark = pytest.mark.xdist_group("faststream")

RABBIT = "amqp://guest:guest@127.0.0.1:5672/"


@dataclass
class Consumer:
    """The consumer's database: inbox, outbox and a side-effect table in a schema of its own."""

    schema: str
    engine: AsyncEngine

    @property
    def outbox_ref(self) -> TableRef:
        return TableRef("outbox", self.schema)

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            return list(conn.execute(sql.replace("{s}", f'"{self.schema}"').encode()).fetchall())

    def side_effects(self) -> list[str]:
        return [r[0] for r in self.rows("SELECT event_id FROM {s}.side_effects")]

    def outbox_rows(self) -> list[tuple[Any, ...]]:
        return self.rows("SELECT id, topic, key, payload FROM {s}.outbox ORDER BY seq")

    def inbox_ids(self) -> list[str]:
        return [r[0] for r in self.rows("SELECT event_id FROM {s}.inbox")]

    def dead(self) -> list[tuple[Any, ...]]:
        return self.rows("SELECT event_id, attempts, error FROM {s}.inbox_dead")


@pytest.fixture
async def consumer() -> AsyncIterator[Consumer]:
    require("PostgreSQL", "127.0.0.1", 5432)
    schema = unique("okf")
    migrate(PG_URL, TableRef("outbox", schema))
    migrate_inbox(PG_URL, TableRef("inbox", schema))
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'CREATE TABLE "{schema}".side_effects (event_id text NOT NULL, key text)'.encode())
    engine = create_async_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://"), pool_size=2)
    yield Consumer(schema, engine)
    await engine.dispose()
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'.encode())


@dataclass
class Bus:
    """One broker, FastStream's and outboxkit's views of it, with topics of its own."""

    kind: str
    topic_in: str
    topic_out: str
    relay_url: str
    broker: Any
    subscribe: Callable[[Callable[..., Any]], Any]
    publish: Callable[[str, str, dict[str, Any]], Any]
    followups: Callable[[int], Any]
    cleanup: list[Callable[[], Any]] = field(default_factory=list)
    stream: str = ""  # NATS: the JetStream stream


async def _nats_bus(inbox: Inbox) -> Bus:
    require("NATS", "127.0.0.1", 4222)
    stream = await make_stream(NATS_URL)
    broker = NatsBroker(NATS_URL, middlewares=[inbox])
    topic_in, topic_out = stream.topic("orders"), stream.topic("invoices")

    def subscribe(handler: Callable[..., Any]) -> Any:
        durable = unique("okf")
        # A pull consumer with a durable name: FastStream's recommended JetStream subscriber.
        js = JStream(stream.name, declare=False)
        return broker.subscriber(topic_in, stream=js, durable=durable, pull_sub=True)(handler)

    async def publish(event_id: str, key: str, body: dict[str, Any]) -> None:
        # As the relay publishes it, minus JetStream's dedupe id: a duplicate really reaches the consumer.
        nc = await connect(NATS_URL)
        try:
            headers = {"ce-id": event_id, "ce-subject": key, "ce-specversion": "1.0", "ce-type": topic_in}
            await nc.jetstream().publish(topic_in, json.dumps(body).encode(), headers=headers)
        finally:
            await nc.close()

    async def followups(expect: int) -> list[tuple[str, bytes]]:
        got = await read_all(NATS_URL, stream.name, idle=1.0, timeout=20)
        return [(m.event_id, m.payload) for m in got if m.topic == topic_out]

    cleanup = [lambda: drop_stream(stream)]
    return Bus("nats", topic_in, topic_out, NATS_URL, broker, subscribe, publish, followups, cleanup, stream.name)


async def _rabbit_bus(inbox: Inbox) -> Bus:
    require("RabbitMQ", "127.0.0.1", 5672)
    exchange, prefix = unique("okf_x"), unique("okf")
    topic_in, topic_out = f"{prefix}.orders", f"{prefix}.invoices"
    queue_in, queue_out = unique("okf_in"), unique("okf_out")
    broker = RabbitBroker(RABBIT, middlewares=[inbox])
    exch = RabbitExchange(exchange, type=ExchangeType.TOPIC, durable=True)
    # The relay's follow-ups need a queue bound before they are published (unroutable otherwise, H8).
    conn = await aio_pika.connect(RABBIT)
    channel = await conn.channel()
    x = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
    out = await channel.declare_queue(queue_out, durable=True)
    await out.bind(x, topic_out)

    def subscribe(handler: Callable[..., Any]) -> Any:
        return broker.subscriber(RabbitQueue(queue_in, durable=True, routing_key=topic_in), exch)(handler)

    async def publish(event_id: str, key: str, body: dict[str, Any]) -> None:
        headers = {"cloudEvents:id": event_id, "cloudEvents:subject": key, "cloudEvents:specversion": "1.0"}
        message = aio_pika.Message(json.dumps(body).encode(), headers=headers, message_id=event_id)
        await x.publish(message, routing_key=topic_in)

    async def followups(expect: int) -> list[tuple[str, bytes]]:
        got: list[tuple[str, bytes]] = []
        deadline = time.monotonic() + 20
        idle_until: float | None = None
        while time.monotonic() < deadline:
            msg = await out.get(no_ack=True, fail=False)
            if msg is not None:
                got.append((str((msg.headers or {}).get("cloudEvents:id")), msg.body))
                idle_until = None
                continue
            if len(got) >= expect:
                idle_until = idle_until or time.monotonic() + 1.0
                if time.monotonic() > idle_until:
                    break
            await asyncio.sleep(0.05)
        return got

    async def drop() -> None:
        await channel.queue_delete(queue_out)
        await channel.queue_delete(queue_in)
        await channel.exchange_delete(exchange)
        await conn.close()

    return Bus(
        "rabbitmq", topic_in, topic_out, f"{RABBIT}?exchange={exchange}", broker, subscribe, publish, followups, [drop]
    )


@pytest.fixture(params=["nats", "rabbitmq"])
def bus_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Running:
    """A consumer service in this event loop: the FastStream broker with the inbox middleware."""

    def __init__(self, consumer: Consumer, kind: str, **inbox: Any) -> None:
        self.consumer = consumer
        self.kind = kind
        self.inbox = Inbox(
            async_sessionmaker(consumer.engine, expire_on_commit=False),
            name="billing",
            schema=consumer.schema,
            outbox=Outbox(schema=consumer.schema, source="/billing"),
            **{"retry_base": 0.05, "retry_cap": 0.2, **inbox},
        )
        self.calls: list[str] = []

    async def __aenter__(self) -> Bus:
        self.bus = await (_nats_bus if self.kind == "nats" else _rabbit_bus)(self.inbox)
        return self.bus

    async def start(self) -> None:
        await self.bus.broker.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.bus.broker.stop()
        for fn in self.bus.cleanup:
            await fn()


async def wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def _insert_side_effect(schema: str) -> Any:
    return text(f'INSERT INTO "{schema}".side_effects (event_id, key) VALUES (:id, :key)')


async def test_a_duplicate_has_one_side_effect_and_one_follow_up(consumer: Consumer, bus_kind: str) -> None:
    running = Running(consumer, bus_kind)
    async with running as bus:

        async def on_order(body: Any, tx: InboxTx) -> None:
            running.calls.append(tx.event.id)
            await tx.session.execute(_insert_side_effect(consumer.schema), {"id": tx.event.id, "key": tx.event.key})
            await tx.emit(bus.topic_out, {"invoice_for": body["order"]}, key=tx.event.key)

        bus.subscribe(on_order)
        await running.start()
        first, second = str(uuid.uuid4()), str(uuid.uuid4())
        await bus.publish(first, "customer-1", {"order": 1})
        await bus.publish(first, "customer-1", {"order": 1})  # the same CloudEvents id again
        await bus.publish(second, "customer-2", {"order": 2})
        await wait_until(lambda: running.inbox.stats.processed + running.inbox.stats.duplicates == 3)
        assert sorted(consumer.side_effects()) == sorted([first, second])
        assert running.calls.count(first) == 1, "the duplicate never reached the handler"
        assert running.inbox.stats.duplicates == 1
        assert sorted(consumer.inbox_ids()) == sorted([first, second])
        outbox = consumer.outbox_rows()
        assert sorted((r[1], r[2], json.loads(bytes(r[3]))["invoice_for"]) for r in outbox) == [
            (bus.topic_out, "customer-1", 1),
            (bus.topic_out, "customer-2", 2),
        ]


async def test_a_failing_handler_rolls_back_its_effects_and_emit_then_the_retry_is_relayed_once(
    consumer: Consumer, bus_kind: str
) -> None:
    running = Running(consumer, bus_kind)
    async with running as bus:

        async def on_order(body: Any, tx: InboxTx) -> None:
            running.calls.append(tx.event.id)
            await tx.session.execute(_insert_side_effect(consumer.schema), {"id": tx.event.id, "key": tx.event.key})
            await tx.emit(bus.topic_out, {"invoice_for": body["order"]}, key=tx.event.key)
            if len(running.calls) <= 2:  # the first two deliveries fail after acting and emitting
                raise RuntimeError("payment service said no")

        bus.subscribe(on_order)
        await running.start()
        event_id = str(uuid.uuid4())
        await bus.publish(event_id, "customer-9", {"order": 9})
        await wait_until(lambda: running.inbox.stats.processed == 1)
        assert running.calls == [event_id] * 3, "redelivered after each failure"
        assert running.inbox.stats.failed == 2
        assert consumer.side_effects() == [event_id], "the failed attempts' effects were rolled back"
        outbox = consumer.outbox_rows()
        assert len(outbox) == 1, "the failed attempts' follow-up events were rolled back"
        followup_id = str(outbox[0][0])

        # The outboxkit relay publishes the follow-up event: exactly one copy, with the id emitted.
        async with running_relay(relay_for(PG_URL, bus.relay_url, consumer.outbox_ref)):
            await wait_drained(PG_URL, consumer.outbox_ref)
            got = await bus.followups(1)
        assert [(i, json.loads(p)) for i, p in got] == [(followup_id, {"invoice_for": 9})]


async def test_a_poison_message_becomes_a_dead_letter_and_is_not_redelivered(consumer: Consumer, bus_kind: str) -> None:
    running = Running(consumer, bus_kind, max_attempts=3)
    async with running as bus:

        async def on_order(body: Any, tx: InboxTx) -> None:
            running.calls.append(tx.event.id)
            if body["order"] == 13:
                await tx.emit(bus.topic_out, {"never": True})
                raise ValueError("order 13 is cursed")
            await tx.session.execute(_insert_side_effect(consumer.schema), {"id": tx.event.id, "key": tx.event.key})

        bus.subscribe(on_order)
        await running.start()
        poison, good = str(uuid.uuid4()), str(uuid.uuid4())
        await bus.publish(poison, "k13", {"order": 13})
        await bus.publish(good, "k14", {"order": 14})
        await wait_until(lambda: running.inbox.stats.dead_lettered == 1 and running.inbox.stats.processed == 1)
        dead = consumer.dead()
        assert [(d[0], d[1]) for d in dead] == [(poison, 3)]
        assert "order 13 is cursed" in dead[0][2]
        assert consumer.side_effects() == [good]
        assert consumer.outbox_rows() == [], "no follow-up from a dead letter"
        await bus.publish(poison, "k13", {"order": 13})  # a later copy is a duplicate: handler not called
        await wait_until(lambda: running.inbox.stats.duplicates == 1)
        assert running.calls.count(poison) == 3


async def test_messages_without_an_event_id_are_parked_with_the_reason(consumer: Consumer) -> None:
    """Three messages from another producer, no CloudEvents headers: never handled, never a
    "duplicate" of each other, each parked in the dead letters with the reason, then acked."""
    running = Running(consumer, "nats")
    async with running as bus:

        async def on_order(body: Any, tx: InboxTx) -> None:
            running.calls.append(tx.event.id)

        bus.subscribe(on_order)
        await running.start()
        nc = await connect(NATS_URL)
        try:
            for i in range(3):
                await nc.jetstream().publish(bus.topic_in, json.dumps({"n": i}).encode())
        finally:
            await nc.close()
        await wait_until(lambda: running.inbox.stats.dead_lettered == 3)
        stats = running.inbox.stats
        assert running.calls == [] and (stats.processed, stats.duplicates, stats.unidentified) == (0, 0, 3)
        dead = consumer.dead()
        assert len({d[0] for d in dead}) == 3
        assert all(d[0].startswith("unidentified:") and d[1] == 0 and "no event id" in d[2] for d in dead)
        assert consumer.inbox_ids() == []


async def test_h14_a_handler_that_commits_the_session_itself_is_retried_not_a_duplicate(consumer: Consumer) -> None:
    """Attempt 1 commits the session (and with it the inbox row) and raises; attempt 2 commits and
    returns. Both are failed attempts; attempt 3 is processed. Never a "duplicate" of itself."""
    running = Running(consumer, "nats", max_attempts=5)
    async with running as bus:

        async def on_order(body: Any, tx: InboxTx) -> None:
            running.calls.append(tx.event.id)
            if len(running.calls) <= 2:
                await tx.session.commit()
                if len(running.calls) == 1:
                    raise RuntimeError("failed after committing")
                return
            await tx.session.execute(_insert_side_effect(consumer.schema), {"id": tx.event.id, "key": tx.event.key})

        bus.subscribe(on_order)
        await running.start()
        event_id = str(uuid.uuid4())
        await bus.publish(event_id, "k1", {"order": 1})
        await wait_until(lambda: running.inbox.stats.processed + running.inbox.stats.duplicates >= 1)
        stats = running.inbox.stats
        assert running.calls == [event_id] * 3
        assert (stats.processed, stats.duplicates, stats.failed) == (1, 0, 2)
        assert consumer.side_effects() == [event_id] and consumer.inbox_ids() == [event_id]


async def test_a_redelivery_racing_the_first_delivery_is_a_duplicate(consumer: Consumer) -> None:
    """JetStream redelivers a message whose ack is late (ack_wait 1 s, the first handling takes 2.5 s)
    to a second worker while the first still holds its transaction: the second claim waits on the
    inbox's primary key, finds the id committed, and the handler runs once (G7)."""
    from nats.js.api import ConsumerConfig

    running = Running(consumer, "nats")
    async with running as bus:
        delivered: list[int] = []

        async def on_order(body: Any, tx: InboxTx) -> None:
            running.calls.append(tx.event.id)
            delivered.append(tx.event.attempt)
            await tx.session.execute(_insert_side_effect(consumer.schema), {"id": tx.event.id, "key": tx.event.key})
            if len(running.calls) == 1:
                await asyncio.sleep(2.5)  # longer than ack_wait: JetStream hands the message out again

        durable = unique("okf")
        bus.broker.subscriber(
            bus.topic_in,
            stream=JStream(bus.stream, declare=False),
            durable=durable,
            pull_sub=True,
            max_workers=2,
            config=ConsumerConfig(ack_wait=1.0),
        )(on_order)
        await running.start()
        event_id = str(uuid.uuid4())
        await bus.publish(event_id, "customer-3", {"order": 3})
        await wait_until(lambda: running.inbox.stats.processed == 1 and running.inbox.stats.duplicates >= 1)
        assert running.calls == [event_id], "the redelivered copy never reached the handler"
        assert consumer.side_effects() == [event_id]


async def test_ack_first_is_refused_before_the_handler_runs(consumer: Consumer) -> None:
    """AckPolicy.ACK_FIRST acknowledges before the inbox could commit: a crash would lose the
    message. The inbox refuses it on the first message, without running the handler."""
    from faststream.middlewares import AckPolicy

    running = Running(consumer, "rabbitmq")
    async with running as bus:
        refused: list[BaseException] = []

        class Spy(BaseMiddleware):  # outside the inbox: sees what the inbox raises
            async def consume_scope(self, call_next: Any, msg: Any) -> Any:
                try:
                    return await call_next(msg)
                except Exception as exc:
                    refused.append(exc)
                    raise

        bus.broker.insert_middleware(Spy)
        queue = RabbitQueue(unique("okf_in"), durable=False, auto_delete=True, routing_key=bus.topic_in)
        exchange = RabbitExchange(bus.relay_url.split("exchange=")[1], type=ExchangeType.TOPIC, durable=True)

        async def on_order(body: Any, tx: InboxTx) -> None:
            running.calls.append(tx.event.id)

        bus.broker.subscriber(queue, exchange, ack_policy=AckPolicy.ACK_FIRST)(on_order)
        await running.start()
        await bus.publish(str(uuid.uuid4()), "k", {"order": 1})
        await wait_until(lambda: bool(refused))
        assert isinstance(refused[0], ConfigurationError) and "ACK_FIRST" in str(refused[0])
        assert running.calls == [] and consumer.inbox_ids() == []


async def test_a_database_outage_requeues_without_counting_attempts(consumer: Consumer) -> None:
    """The consumer's database is unreachable (through a proxy that refuses connections): the claim
    fails, the message is requeued, no attempt is counted (max_attempts=1 would dead-letter at the
    first counted failure) and the handler never runs; once the database is back, the message is
    processed once."""
    from outboxkit.testing.proxy import TcpProxy

    with TcpProxy("127.0.0.1", 5432) as proxy:
        url = PG_URL.replace("postgresql://", "postgresql+psycopg://").replace(":5432/", f":{proxy.port}/")
        engine = create_async_engine(url, pool_size=2)
        proxied = Consumer(consumer.schema, engine)
        running = Running(proxied, "nats", max_attempts=1)
        try:
            async with running as bus:

                async def on_order(body: Any, tx: InboxTx) -> None:
                    running.calls.append(tx.event.id)
                    params = {"id": tx.event.id, "key": tx.event.key}
                    await tx.session.execute(_insert_side_effect(consumer.schema), params)

                bus.subscribe(on_order)
                proxy.block()
                await running.start()
                event_id = str(uuid.uuid4())
                await bus.publish(event_id, "customer-5", {"order": 5})
                await wait_until(lambda: running.inbox._outages >= 2)  # requeued and delivered again
                assert running.calls == [] and running.inbox.stats.failed == 0
                proxy.unblock()
                await wait_until(lambda: running.inbox.stats.processed == 1)
                assert running.calls == [event_id]
                assert running.inbox.stats.dead_lettered == 0 and consumer.dead() == []
                assert consumer.side_effects() == [event_id]
        finally:
            await engine.dispose()


@pytest.mark.parametrize("db", ["sqlite", "mariadb"])
async def test_the_inbox_on_sqlite_and_mariadb(db: str, tmp_path: Any) -> None:
    """The same middleware on the other databases the inbox supports (aiosqlite, asyncmy): a
    duplicate is skipped, a failure rolls back the effect and the follow-up event."""
    from outboxkit.stores.registry import database_for
    from tests.conftest import MARIADB_URL

    if db == "sqlite":
        url, sa_url, schema = f"sqlite:///{tmp_path}/consumer.db", f"sqlite+aiosqlite:///{tmp_path}/consumer.db", None
    else:
        require("MariaDB", "127.0.0.1", 3306)
        url, sa_url, schema = MARIADB_URL, MARIADB_URL.replace("mysql://", "mysql+asyncmy://"), unique("okf")
    database = database_for(url)
    migrate(url, TableRef("outbox", schema))
    migrate_inbox(url, TableRef("inbox", schema))
    effects = TableRef("side_effects", schema).quoted(database.quote)
    outbox = TableRef("outbox", schema).quoted(database.quote)

    def rows(sql: str) -> list[tuple[Any, ...]]:
        conn = database.connect(url)
        try:
            return list(conn.execute(sql).fetchall())
        finally:
            conn.close()

    rows(f"CREATE TABLE {effects} (event_id varchar(64) NOT NULL, k varchar(64))")
    engine = create_async_engine(sa_url)
    inbox = Inbox(engine, name="billing", schema=schema, outbox=Outbox(schema=schema), retry_base=0.05, retry_cap=0.2)
    bus = await _nats_bus(inbox)
    calls: list[str] = []
    try:

        async def on_order(body: Any, tx: InboxTx) -> None:
            calls.append(tx.event.id)
            insert = text(f"INSERT INTO {effects} (event_id, k) VALUES (:id, :k)")
            await tx.session.execute(insert, {"id": tx.event.id, "k": tx.event.key})
            await tx.emit(bus.topic_out, {"invoice_for": body["order"]}, key=tx.event.key)
            if len(calls) == 1:
                raise RuntimeError("first attempt fails after acting and emitting")

        bus.subscribe(on_order)
        await bus.broker.start()
        first, second = str(uuid.uuid4()), str(uuid.uuid4())
        await bus.publish(first, "k1", {"order": 1})
        await bus.publish(first, "k1", {"order": 1})
        await bus.publish(second, "k2", {"order": 2})
        await wait_until(lambda: inbox.stats.processed == 2 and inbox.stats.duplicates == 1)
        assert calls == [first, first, second]
        assert sorted(r[0] for r in rows(f"SELECT event_id FROM {effects}")) == sorted([first, second])
        assert len(rows(f"SELECT id FROM {outbox}")) == 2
    finally:
        await bus.broker.stop()
        for fn in bus.cleanup:
            await fn()
        await engine.dispose()
        if schema:
            conn = database.connect(url)
            try:
                database.drop_namespace(conn, schema)
            finally:
                conn.close()
