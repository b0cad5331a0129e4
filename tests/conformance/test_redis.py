"""Redis Streams against the broker conformance suite, on a private redis-server with AOF.

The server is this test's own (``RedisServer``: ``appendonly yes``, ``appendfsync always``), so the
restart check can SIGKILL it: every XADD Redis confirmed must still be in the stream afterwards.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from outboxkit.brokers.base import Delivered, Features
from outboxkit.brokers.redis import RedisPublisher, read_stream
from outboxkit.testing.redis_server import RedisServer
from tests.conformance.conftest import check_param, run_check

MAX_BYTES = 1024 * 1024


class RedisHarness:
    # The publisher is configured with max_bytes=1 MiB: Redis itself takes up to 512 MB per field.
    oversized = 2 * MAX_BYTES
    restartable = True

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.features = RedisPublisher.features
        self.topics: list[str] = []

    def topic(self, name: str = "events") -> str:
        topic = f"conf.{name}"
        if topic not in self.topics:
            self.topics.append(topic)
        return topic

    def publisher(self, via: tuple[str, int] | None = None) -> RedisPublisher:
        host, port = via or self.address()
        return RedisPublisher(f"redis://{host}:{port}/0?max_bytes={MAX_BYTES}", ack_timeout=2.0)

    def address(self) -> tuple[str, int]:
        return "127.0.0.1", self.server.port

    async def read(self, expect: int, timeout: float = 30.0) -> list[Delivered]:
        from redis.asyncio import Redis

        client = Redis.from_url(self.server.url)
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            while True:
                out: list[Delivered] = []
                for topic in self.topics:
                    out += await read_stream(client, topic)
                if len(out) >= expect or asyncio.get_running_loop().time() > deadline:
                    return out
                await asyncio.sleep(0.2)
        finally:
            await client.aclose()

    async def restart(self) -> None:
        # SIGKILL, not a clean shutdown: only the fsynced AOF can bring the entries back.
        await asyncio.to_thread(self.server.restart, 0.5, signal.SIGKILL)


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[RedisHarness]:
    with RedisServer(str(tmp_path / "redis")) as server:
        yield RedisHarness(server)


@check_param
async def test_redis_conformance(check: object, harness: RedisHarness) -> None:
    assert isinstance(harness.features, Features)
    await run_check(check, harness)
