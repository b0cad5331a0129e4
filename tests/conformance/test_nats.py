"""NATS JetStream against the broker conformance suite (embedded, restartable nats-server)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from outboxkit.brokers.base import Delivered, Features
from outboxkit.brokers.nats import NatsPublisher, connect, delivered_from, ensure_stream
from outboxkit.testing import NatsServer
from tests.conformance.conftest import check_param, run_check


class NatsHarness:
    oversized = 2 * 1024 * 1024  # over the server's default max_payload (1 MiB)
    restartable = True

    def __init__(self, server: NatsServer) -> None:
        self.server = server
        self.features = NatsPublisher.features
        self.prefix = "conf"
        self.stream = "CONF"

    def topic(self, name: str = "events") -> str:
        return f"{self.prefix}.{name}"

    def publisher(self, via: tuple[str, int] | None = None) -> NatsPublisher:
        url = f"nats://{via[0]}:{via[1]}" if via else self.server.url
        return NatsPublisher(url, ack_timeout=2.0)

    def address(self) -> tuple[str, int]:
        return "127.0.0.1", self.server.port

    async def setup(self) -> None:
        nc = await connect(self.server.url)
        await ensure_stream(nc, self.stream, [f"{self.prefix}.>"])
        await nc.close()

    async def read(self, expect: int, timeout: float = 30.0) -> list[Delivered]:
        nc = await connect(self.server.url)
        out: list[Delivered] = []
        try:
            sub = await nc.jetstream().subscribe(">", stream=self.stream, ordered_consumer=True)
            deadline = asyncio.get_running_loop().time() + timeout
            while len(out) < expect and asyncio.get_running_loop().time() < deadline:
                try:
                    out.append(delivered_from(await sub.next_msg(timeout=1.0)))
                except Exception:  # nats timeout: keep waiting until the deadline
                    continue
            await sub.unsubscribe()
        finally:
            await nc.close()
        return out

    async def restart(self) -> None:
        await asyncio.to_thread(self.server.restart, 0.5)


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[NatsHarness]:
    with NatsServer(str(tmp_path / "nats")) as server:
        h = NatsHarness(server)
        await h.setup()
        yield h


@check_param
async def test_nats_conformance(check: object, harness: NatsHarness) -> None:
    assert isinstance(harness.features, Features)
    await run_check(check, harness)
