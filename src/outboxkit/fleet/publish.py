"""The fleet's publishers: one broker client per (broker URL, source), shared by every outbox that
publishes there, and per outbox a thin handle that adds its topic prefix and tenant attribute.

A relay builds a publisher per session and closes it after an outage; here that only takes and
gives back a reference. The shared client is replaced when a publish through it failed as
unavailable (a client closed for good is never repaired, as ``relay.loop`` says): the next handle
that connects builds a new client, and the old one is closed once no handle uses it.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable

from outboxkit.brokers.base import Features, Publisher
from outboxkit.core.envelope import OutboxEvent
from outboxkit.errors import UnavailableError

Factory = Callable[[str, str], Publisher]  # (url, source) -> an unconnected publisher


class _Client:
    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher
        self.refs = 0
        self.broken = False

    def watch(self, fut: asyncio.Future[None]) -> None:
        if not fut.cancelled() and isinstance(fut.exception(), UnavailableError):
            self.broken = True


class SharedPublishers:
    """Broker clients by (url, source); :meth:`handle` gives one outbox's publisher."""

    def __init__(self, factory: Factory) -> None:
        self.factory = factory
        self._current: dict[tuple[str, str], _Client] = {}
        self._old: list[_Client] = []
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._features: dict[tuple[str, str], Features] = {}

    def handle(
        self, url: str, source: str, *, tenant: str, prefix: str = "", attribute: bool = False
    ) -> TenantPublisher:
        key = (url, source)
        if key not in self._features:
            self._features[key] = self.factory(url, source).features  # not connected: no I/O
        return TenantPublisher(self, key, tenant=tenant, prefix=prefix, attribute=attribute)

    def features(self, key: tuple[str, str]) -> Features:
        return self._features[key]

    async def take(self, key: tuple[str, str]) -> _Client:
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            client = self._current.get(key)
            if client is None or client.broken:
                if client is not None:
                    self._old.append(client)
                    del self._current[key]
                    await self._close_unused()
                publisher = self.factory(*key)
                try:
                    await publisher.connect()
                except BaseException:
                    await publisher.close()
                    raise
                client = self._current[key] = _Client(publisher)
            client.refs += 1
            return client

    async def give(self, client: _Client) -> None:
        client.refs -= 1
        await self._close_unused()

    async def _close_unused(self) -> None:
        done = [c for c in self._old if c.refs <= 0]
        self._old = [c for c in self._old if c.refs > 0]
        for client in done:
            await client.publisher.close()

    def clients(self) -> int:
        return len(self._current) + len(self._old)

    async def close(self) -> None:
        for client in [*self._current.values(), *self._old]:
            await client.publisher.close()
        self._current.clear()
        self._old.clear()


class TenantPublisher:
    """One outbox's :class:`Publisher` on the shared client: ``topic_prefix`` before every topic and,
    when configured, the ``tenantid`` CloudEvents extension attribute on every message."""

    def __init__(
        self, shared: SharedPublishers, key: tuple[str, str], *, tenant: str, prefix: str, attribute: bool
    ) -> None:
        self.shared = shared
        self.key = key
        self.tenant = tenant
        self.prefix = prefix
        self.attribute = attribute
        self._client: _Client | None = None
        self.features: Features = shared.features(key)

    async def connect(self) -> None:
        if self._client is None:
            self._client = await self.shared.take(self.key)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await self.shared.give(client)

    def wire_event(self, event: OutboxEvent) -> OutboxEvent:
        """The event as this tenant's messages carry it (pure)."""
        if not self.prefix and not self.attribute:
            return event
        headers = event.headers
        if self.attribute:
            headers = {**event.headers, "tenantid": self.tenant}
        return dataclasses.replace(event, topic=self.prefix + event.topic, headers=headers)

    async def publish(self, event: OutboxEvent) -> asyncio.Future[None]:
        client = self._client
        if client is None:
            raise UnavailableError("publisher is not connected")
        fut = await client.publisher.publish(self.wire_event(event))
        fut.add_done_callback(client.watch)
        return fut


__all__ = ["SharedPublishers", "TenantPublisher"]
