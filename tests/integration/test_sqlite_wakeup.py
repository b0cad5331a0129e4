"""The embedded default's wake-up: an idle SQLite relay sleeps on inotify instead of asking
``PRAGMA data_version`` every 2 ms, and still wakes when another process commits."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from outboxkit.stores.base import TableRef
from outboxkit.stores.sqlite import watch
from outboxkit.stores.sqlite.store import SqliteOutboxStore
from tests.helpers import emit_many


async def _counting_store(url: str) -> tuple[SqliteOutboxStore, list[int]]:
    store = SqliteOutboxStore(url)
    await store.open()
    calls = [0]
    original = store._call

    async def counted(fn: Any) -> Any:
        calls[0] += 1
        return await original(fn)

    store._call = counted  # type: ignore[method-assign]
    return store, calls


async def test_an_idle_sqlite_relay_does_not_poll(sqlite_url: str) -> None:
    store, calls = await _counting_store(sqlite_url)
    try:
        await store.wait_for_new(1.5)
        assert calls[0] <= 5, f"{calls[0]} database calls in 1.5 s idle: it polled"
    finally:
        await store.close()


@pytest.mark.parametrize("inotify", [True, False], ids=["inotify", "polling"])
async def test_a_commit_by_another_process_wakes_it(
    sqlite_url: str, inotify: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not inotify:
        monkeypatch.setattr(watch, "INotify", None)
    store, _ = await _counting_store(sqlite_url)
    try:
        await store.wait_for_new(0.01)  # settle the starting version
        waiting = asyncio.create_task(store.wait_for_new(20.0))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        started = time.monotonic()
        await asyncio.to_thread(emit_many, sqlite_url, TableRef(), "wake.up", [{"n": 1}])
        await asyncio.wait_for(waiting, 10.0)
        assert time.monotonic() - started < 10.0, "woken by the commit, not by the 20 s timeout"
    finally:
        await store.close()
