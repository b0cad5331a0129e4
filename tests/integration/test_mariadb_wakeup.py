"""An idle MariaDB relay polls slowly, and still notices a commit (issue 12: idle cost under 1 % of a
core). The wake-up probe backs off to 50 ms, and to ``WAKE_IDLE_S`` once nothing changed for
``QUIET_S``; here QUIET_S is shortened so the test does not wait 10 s."""

from __future__ import annotations

import asyncio
import time

import pytest

from outboxkit.stores.base import Filter, TableRef
from outboxkit.stores.mariadb import store as mariadb_store
from outboxkit.stores.mariadb.store import MariaDbOutboxStore
from tests.helpers import emit_many


async def _probes_during_wait(store: MariaDbOutboxStore, seconds: float) -> int:
    count = 0
    probe = store._probe

    async def counting() -> tuple[int, int]:
        nonlocal count
        count += 1
        return await probe()

    store._probe = counting  # type: ignore[method-assign]
    try:
        await store.wait_for_new(seconds)
    finally:
        store._probe = probe  # type: ignore[method-assign]
    return count


async def test_an_idle_relay_probes_slowly_and_still_wakes_on_a_commit(
    mariadb_url: str, mariadb_ref: TableRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mariadb_store, "QUIET_S", 0.3)
    store = MariaDbOutboxStore(mariadb_url, mariadb_ref)
    await store.open()
    try:
        await store.wait_for_new(0.1)  # takes the first fingerprint
        await asyncio.sleep(0.4)  # quiet for longer than QUIET_S
        # 1.5 s at the idle interval (150 ms): about 10 probes; at 50 ms it would be 30 or more.
        probes = await _probes_during_wait(store, 1.5)
        assert probes <= 14, probes

        # A commit while idle is still noticed, within about one idle interval.
        async def commit_soon() -> float:
            await asyncio.sleep(0.3)
            await asyncio.to_thread(emit_many, mariadb_url, mariadb_ref, "orders.created", [{"n": 1}])
            return time.monotonic()

        task = asyncio.create_task(commit_soon())
        await store.wait_for_new(5.0)
        woke = time.monotonic()
        committed = await task
        assert woke - committed < 1.0, woke - committed
        assert await store.fetch_pending(10, Filter()) != []
    finally:
        await store.close()
