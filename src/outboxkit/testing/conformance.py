"""The broker conformance suite: every publisher adapter passes the same checks.

A bus adapter ships a :class:`BrokerHarness` (how to build its publisher, read back what reached the
broker, restart a broker it owns) and runs :data:`CHECKS` against it; checks a bus cannot support
are skipped by its declared :class:`~outboxkit.brokers.base.Features` and harness capabilities, and
say so. Users who write an adapter for another bus run the same suite::

    @pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
    async def test_my_bus(check, my_harness):
        await check(my_harness)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from outboxkit.brokers.base import Delivered, Features, Publisher
from outboxkit.core.envelope import OutboxEvent, new_event_id
from outboxkit.errors import DeliveryError, PermanentError, TransientError
from outboxkit.testing.proxy import TcpProxy


class NotSupported(Exception):
    """Raised by a check that does not apply to this harness (the test skips with the reason)."""


class BrokerHarness(Protocol):
    """One bus, set up for one test: its own topic space (stream/exchange+queue/topic/...)."""

    features: Features
    #: a payload size the broker refuses for good, or None if the bus has no such limit
    oversized: int | None
    #: whether restart() is available (the harness owns its broker process)
    restartable: bool

    def topic(self, name: str = "events") -> str:
        """A topic this harness routes and can read back."""
        ...

    def publisher(self, via: tuple[str, int] | None = None) -> Publisher:
        """A new, unconnected publisher; ``via`` = connect through this (host, port) proxy instead."""
        ...

    def address(self) -> tuple[str, int]:
        """Host and port of the broker, for a TCP proxy in front of it."""
        ...

    async def read(self, expect: int, timeout: float = 30.0) -> list[Delivered]:
        """Everything published to this harness's topics so far, in broker order per key; waits
        until ``expect`` messages are there (or ``timeout``)."""
        ...

    async def restart(self) -> None:
        """Stop and start the broker this harness owns (same data)."""
        ...


def event(topic: str, i: int, *, key: str | None = None, payload: bytes | None = None) -> OutboxEvent:
    return OutboxEvent(
        seq=i + 1,
        id=new_event_id(),
        topic=topic,
        payload=payload if payload is not None else f'{{"i":{i}}}'.encode(),
        key=key,
        headers={"x-test": f"v{i}"},
    )


async def publish_confirmed(publisher: Publisher, events: Sequence[OutboxEvent], deadline: float = 60.0) -> int:
    """Publish each event until confirmed, one at a time in order, retrying transient errors the
    way the relay does. Returns how many attempts failed on the way."""
    failures = 0
    stop_at = time.monotonic() + deadline
    for ev in events:
        while True:
            try:
                await (await publisher.publish(ev))
                break
            except TransientError:
                failures += 1
                if time.monotonic() > stop_at:
                    raise
                await asyncio.sleep(0.2)
    return failures


async def check_publish_and_confirm(h: BrokerHarness) -> None:
    pub = h.publisher()
    await pub.connect()
    try:
        events = [event(h.topic(), i, key=f"k{i % 5}") for i in range(200)]
        futures = [await pub.publish(e) for e in events]
        await asyncio.gather(*futures)
    finally:
        await pub.close()
    got = await h.read(200)
    assert sorted(m.event_id for m in got) == sorted(e.id for e in events)


async def check_headers_and_id_preserved(h: BrokerHarness) -> None:
    pub = h.publisher()
    await pub.connect()
    ev = OutboxEvent(
        seq=1,
        id=new_event_id(),
        topic=h.topic("hdr"),
        payload=b'{"a":1}',
        key="cust-9",
        type="com.example.thing",
        source="/conformance",
        headers={"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01", "x-tenant": "t1"},
    )
    try:
        await (await pub.publish(ev))
    finally:
        await pub.close()
    (msg,) = await h.read(1)
    assert msg.event_id == ev.id
    assert msg.key == "cust-9"
    assert msg.payload == b'{"a":1}'
    assert msg.headers.get("traceparent") == ev.headers["traceparent"]
    assert msg.headers.get("x-tenant") == "t1"


async def check_per_key_order_under_load(h: BrokerHarness) -> None:
    """2,000 messages over 20 keys, all in flight at once: each key's messages are stored in send
    order (the relay relies on this only between confirmations, but adapters must not reorder)."""
    if not h.features.ordered:
        raise NotSupported("bus declares no ordering")
    pub = h.publisher()
    await pub.connect()
    events = [event(h.topic("order"), i, key=f"k{i % 20}") for i in range(2000)]
    try:
        futures = [await pub.publish(e) for e in events]
        await asyncio.gather(*futures)
    finally:
        await pub.close()
    got = await h.read(2000)
    index = {e.id: i for i, e in enumerate(events)}
    last: dict[str | None, int] = {}
    for m in got:
        i = index[m.event_id]
        assert i > last.get(m.key, -1), f"key {m.key}: message {i} after {last[m.key]}"
        last[m.key] = i
    assert len(got) == 2000


async def check_oversized_is_permanent(h: BrokerHarness) -> None:
    if h.oversized is None:
        raise NotSupported("bus has no message size limit")
    pub = h.publisher()
    await pub.connect()
    try:
        fut = await pub.publish(event(h.topic("big"), 0, payload=b"x" * h.oversized))
        try:
            await fut
        except PermanentError as exc:
            assert str(exc), "the broker's reason is kept"
        else:
            raise AssertionError("an oversized message was confirmed")
        # The connection is still usable afterwards.
        await (await pub.publish(event(h.topic("big"), 1)))
    finally:
        await pub.close()


async def check_broker_restart_mid_stream(h: BrokerHarness) -> None:
    if not h.restartable:
        raise NotSupported("harness does not own a restartable broker")
    if not h.features.persistent:
        raise NotSupported("bus is not persistent: a restart loses what it held")
    pub = h.publisher()
    await pub.connect()
    events = [event(h.topic("restart"), i, key=f"k{i % 3}") for i in range(300)]
    try:
        task = asyncio.create_task(publish_confirmed(pub, events))
        await asyncio.sleep(0.3)
        await h.restart()
        await asyncio.wait_for(task, 90)
    finally:
        await pub.close()
    got = await h.read(300, timeout=60)
    assert {e.id for e in events} <= {m.event_id for m in got}, "a confirmed message was lost in the restart"


async def check_connection_cut_through_proxy(h: BrokerHarness) -> None:
    host, port = h.address()
    with TcpProxy(host, port) as proxy:
        pub = h.publisher(via=("127.0.0.1", proxy.port))
        await pub.connect()
        events = [event(h.topic("cut"), i, key=f"k{i % 3}") for i in range(300)]
        try:
            task = asyncio.create_task(publish_confirmed(pub, events))
            for _ in range(2):
                await asyncio.sleep(0.3)
                proxy.cut()
            await asyncio.wait_for(task, 90)
        finally:
            await pub.close()
    got = await h.read(300, timeout=60)
    assert {e.id for e in events} <= {m.event_id for m in got}


CHECKS: list[Callable[[BrokerHarness], Awaitable[None]]] = [
    check_publish_and_confirm,
    check_headers_and_id_preserved,
    check_per_key_order_under_load,
    check_oversized_is_permanent,
    check_broker_restart_mid_stream,
    check_connection_cut_through_proxy,
]

__all__ = ["CHECKS", "BrokerHarness", "DeliveryError", "NotSupported", "event", "publish_confirmed"]
