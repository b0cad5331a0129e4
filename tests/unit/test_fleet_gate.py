"""The gate (fleet.gate): the scheduler's asyncio shell hands out turns in order, takes a turn back
when its waiter is cancelled, and gives an overdue fetch's slot to the next outbox."""

from __future__ import annotations

import asyncio

from outboxkit.fleet.gate import Gate


async def test_turns_in_queue_order_with_one_slot() -> None:
    gate = Gate(quantum=10, slots=1, budget=60.0)
    order: list[str] = []
    release = asyncio.Event()

    async def fetch(name: str, hold: bool) -> None:
        async with gate.turn(name, 10) as grant:
            order.append(name)
            assert grant[0] == 10
            if hold:
                await release.wait()
            grant[1] = grant[0]

    first = asyncio.create_task(fetch("a", True))
    await asyncio.sleep(0)
    others = [asyncio.create_task(fetch(n, False)) for n in "bc"]
    await asyncio.sleep(0)
    assert order == ["a"]  # one slot, held
    release.set()
    await asyncio.gather(first, *others)
    assert order == ["a", "b", "c"]


async def test_an_overdue_fetch_gives_its_slot_away() -> None:
    gate = Gate(quantum=10, slots=1, budget=0.01)
    hung = asyncio.Event()
    done = asyncio.Event()

    async def slow() -> None:
        async with gate.turn("slow", 10):
            hung.set()
            await done.wait()  # a database that does not answer

    async def quick() -> None:
        async with gate.turn("quick", 10) as grant:
            grant[1] = 1

    slow_task = asyncio.create_task(slow())
    await hung.wait()
    await asyncio.wait_for(quick(), 30)  # served although "slow" still holds its fetch
    done.set()
    await slow_task


async def test_a_cancelled_waiter_leaves_no_trace() -> None:
    gate = Gate(quantum=10, slots=1, budget=60.0)
    release = asyncio.Event()

    async def hold() -> None:
        async with gate.turn("a", 10):
            await release.wait()

    async def wait_turn(name: str) -> None:
        async with gate.turn(name, 10):
            pass

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)
    waiter = asyncio.create_task(wait_turn("b"))
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    release.set()
    await holder
    await asyncio.wait_for(wait_turn("b"), 30)  # b may ask again: nothing of the cancelled one is left
    assert gate.scheduler.running == frozenset() and gate.scheduler.waiting == ()
