"""The relay fleet: one process serving every outbox of a fleet file (docs/fleet.md).

Each outbox gets the ordinary relay (``relay.loop.Relay``: its pipeline, lease keeper, fencing and
marks, so every guarantee holds per outbox exactly as under ``outboxkit relay``), built on:

* its store behind the fleet's :class:`~outboxkit.fleet.gate.Gate`, so fetches take fair turns
  (``fleet.scheduler``); PostgreSQL stores borrow pooled connections, bounded per server, and
  LISTEN through one connection per database (``stores.postgres.pool``);
* a handle on the broker client shared by every outbox publishing there (``fleet.publish``);
* its own asyncio task with its own supervisor: a failure of one outbox (database down, dropped,
  read-only, schema missing, bad rows) is retried there with a backoff and shows in its status,
  while the other tasks go on. Nothing one outbox does can raise into another's task.

The fleet file is watched (its mtime and size, every ``reload_interval``): an entry added is
started, one removed is stopped the way SIGTERM stops a relay (the batch in flight is confirmed
and marked, the leases released), one changed is stopped and started again. A file that does
not parse is refused with one error line and the fleet keeps serving the set it has.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from outboxkit.brokers.base import Publisher
from outboxkit.brokers.registry import publisher_for
from outboxkit.core.backoff import backoff_delay
from outboxkit.errors import ConfigurationError
from outboxkit.fleet.config import FleetSettings, FleetSpec, OutboxSpec, diff, load_fleet
from outboxkit.fleet.gate import Gate, GatedStore
from outboxkit.fleet.observer import TENANT, TenantLog, TenantObserver, relay_observer
from outboxkit.fleet.publish import SharedPublishers
from outboxkit.relay.loop import Relay, RelayConfig
from outboxkit.stores.base import OutboxStore
from outboxkit.stores.registry import database_for, pooled_stores

log = logging.getLogger("outboxkit.fleet")

#: Loggers whose lines get the ``tenant`` field (and feed each outbox's last problem).
TENANT_LOGGERS = ("outboxkit.relay", "outboxkit.life", "outboxkit.fleet", "outboxkit.nats")


def _default_publisher(url: str, source: str) -> Publisher:
    # The relay bounds each outbox's window; the shared client does not bound them all again.
    return publisher_for(url, source=source, max_in_flight=1 << 20)


@dataclass
class OutboxRun:
    """One outbox being served."""

    spec: OutboxSpec
    relay: Relay
    state: TenantObserver
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    error: str | None = None  # why its relay could not start last time
    error_at: float = 0.0
    restarts: int = 0

    def healthy(self, now: float, stale_after: float) -> bool:
        """Serving: no outage, no start-up failure, and a database round trip not long ago."""
        ok_at = self.state.db_ok_at
        if ok_at is None or self.relay.outage_since is not None or now - ok_at >= stale_after:
            return False
        return self.error is None or ok_at > self.error_at  # started since it last failed to


class Fleet:
    """``Fleet(path).run(stop)``; or ``Fleet.from_spec(spec)`` with :meth:`apply` (tests, embedding)."""

    def __init__(
        self,
        path: str | None = None,
        *,
        spec: FleetSpec | None = None,
        owner: str | None = None,
        publisher_factory: Callable[[str, str], Publisher] = _default_publisher,
    ) -> None:
        if path is None and spec is None:
            raise ConfigurationError("a fleet needs a fleet file or a spec")
        self.path = path
        # Read now: a bad file fails at start-up, in one line naming the entry and the field.
        self.spec = spec if spec is not None else load_fleet(path or "")
        self.settings: FleetSettings = self.spec.settings
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.gate = Gate(self.settings.quantum, self.settings.fetch_slots, self.settings.turn_budget)
        self.publishers = SharedPublishers(publisher_factory)
        self.runs: dict[str, OutboxRun] = {}
        self.started = asyncio.Event()  # set once the first set of outboxes has been started
        self.reloads = 0  # file changes applied
        self.refused = 0  # file changes refused (bad file)
        self._stamp = self._file_stamp()
        self._pg: Any = None  # stores.postgres.pooled.PooledStores, made on first use
        self._log_filter = TenantLog(lambda tenant: run.state if (run := self.runs.get(tenant)) else None)

    # -- building one outbox's relay --------------------------------------------------------------
    def _pooled(self, database: str) -> Any:
        """The shared-connection stores for ``database``'s outboxes, or None (own connections)."""
        if database != "postgresql":
            return None
        if self._pg is None:
            self._pg = pooled_stores(
                database, max_connections=self.settings.max_connections, listen_max=self.settings.listen_max
            )
        return self._pg

    def _store_factory(self, spec: OutboxSpec) -> Callable[[], OutboxStore]:
        database = database_for(spec.db)
        inner: Callable[[], OutboxStore]
        pooled = self._pooled(database.name)
        if pooled is not None:
            # Shared connections and LISTEN: the one database that needs it to be bounded.
            inner = lambda: pooled.store(spec.db, spec.ref)  # noqa: E731
        else:
            inner = lambda: database.store(spec.db, spec.ref)  # noqa: E731
        inner()  # built once now: a bad URL fails here, not in the retry loop
        return lambda: GatedStore(inner(), self.gate, spec.tenant, spec.weight)

    def _relay(self, spec: OutboxSpec, state: TenantObserver) -> Relay:
        s = self.settings
        config = RelayConfig(
            batch_size=s.quantum * spec.weight,  # a full turn is a full batch: the relay asks again at once
            window=s.window,
            poll_interval=s.poll_interval,
            lease_ttl=s.lease_ttl,
            max_attempts=s.max_attempts,
            owner=self.owner,
        )
        publishers = self.publishers

        def publisher() -> Publisher:
            return publishers.handle(
                spec.broker, spec.source, tenant=spec.tenant, prefix=spec.topic_prefix, attribute=spec.tenant_attribute
            )

        return Relay(self._store_factory(spec), publisher, config, relay_observer(state))

    # -- running ----------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Serve the fleet until ``stop`` is set, then stop every outbox cleanly."""
        self._install_log_filter()
        try:
            await self.apply(self.spec)
            self.started.set()
            log.info("fleet %s serving %d outboxes", self.owner, len(self.runs))
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.settings.reload_interval)
                if not stop.is_set():
                    await self.reload_if_changed()
                    self._tidy()
        finally:
            await self.close()
            self._remove_log_filter()

    async def apply(self, spec: FleetSpec) -> None:
        """Make the running set what ``spec`` lists (stop removed and changed, start new)."""
        change = diff({t: r.spec for t, r in self.runs.items()}, spec.by_tenant())
        await asyncio.gather(*(self._stop(tenant) for tenant in change.stop))
        for outbox in change.start:
            try:
                self._start(outbox)
            except ConfigurationError as exc:  # pragma: no cover - the file was validated
                log.error("fleet: outbox %s not started: %s", outbox.tenant, exc)
        self.spec = spec

    async def reload_if_changed(self) -> bool:
        stamp = self._file_stamp()
        if stamp == self._stamp or self.path is None:
            return False
        self._stamp = stamp
        try:
            spec = load_fleet(self.path)
        except ConfigurationError as exc:
            self.refused += 1
            log.error("fleet file change REFUSED, still serving the previous %d outboxes: %s", len(self.runs), exc)
            return False
        if spec.settings != self.settings:
            log.warning("fleet file: [fleet] settings changed; they apply after a restart of the fleet process")
        spec = FleetSpec(spec.outboxes, self.settings)
        before = set(self.runs)
        await self.apply(spec)
        self.reloads += 1
        after = set(self.runs)
        log.warning("fleet file reloaded: %d outboxes (+%d, -%d)", len(after), len(after - before), len(before - after))
        return True

    def _file_stamp(self) -> tuple[int, int] | None:
        if self.path is None:
            return None
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def _start(self, spec: OutboxSpec) -> None:
        state = TenantObserver(spec.tenant)
        run = OutboxRun(spec, self._relay(spec, state), state)
        self.runs[spec.tenant] = run
        token = TENANT.set(spec.tenant)
        try:  # the task copies this context: its relay's log lines carry the tenant
            run.task = asyncio.create_task(self._supervise(run), name=f"outbox {spec.tenant}")
        finally:
            TENANT.reset(token)

    async def _supervise(self, run: OutboxRun) -> None:
        """Run one outbox's relay until told to stop; a failure stays here (retried, reported)."""
        attempt = 0
        while not run.stop.is_set():
            try:
                await run.relay.run(run.stop)
                return
            except Exception as exc:
                # The relay gives up only at start-up, on a schema or configuration problem (a
                # tenant not migrated yet, its schema dropped): in a fleet that is this outbox's
                # trouble alone. Retry with a backoff until it is fixed.
                attempt += 1
                run.restarts += 1
                run.error, run.error_at = str(exc), time.monotonic()
                if attempt == 1 or attempt % 10 == 0:
                    log.error("outbox %s cannot start: %s; retrying until it is fixed", run.spec.tenant, exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(run.stop.wait(), backoff_delay(attempt, base=0.5, cap=10.0))

    async def _stop(self, tenant: str) -> None:
        run = self.runs.pop(tenant, None)
        if run is None:
            return
        run.stop.set()  # the relay lets its batch finish, marks what was confirmed, releases its leases
        if run.task is not None:
            await asyncio.gather(run.task, return_exceptions=True)
        self.gate.forget(tenant)
        log.info("fleet: outbox %s stopped and its leases released", tenant)

    async def close(self) -> None:
        await asyncio.gather(*(self._stop(tenant) for tenant in list(self.runs)))
        await self.publishers.close()
        if self._pg is not None:
            await self._pg.close()

    def _tidy(self) -> None:
        if self._pg is not None:
            self._pg.tidy()

    # -- status -----------------------------------------------------------------------------------
    def stale_after(self) -> float:
        """A database round trip older than this makes an outbox unhealthy: the lease keeper
        renews every third of the TTL, so two missed renewals."""
        return max(1.0, self.settings.lease_ttl * 0.7)

    def health(self) -> dict[str, bool]:
        now = time.monotonic()
        return {tenant: run.healthy(now, self.stale_after()) for tenant, run in self.runs.items()}

    def connections(self) -> int:
        """PostgreSQL connections the fleet holds now (pooled and LISTEN)."""
        return 0 if self._pg is None else self._pg.connections()

    def _install_log_filter(self) -> None:
        for name in TENANT_LOGGERS:
            logging.getLogger(name).addFilter(self._log_filter)

    def _remove_log_filter(self) -> None:
        for name in TENANT_LOGGERS:
            logging.getLogger(name).removeFilter(self._log_filter)


__all__ = ["Fleet", "OutboxRun"]
