"""``outboxkit demo``: the whole flow on real processes, with crashes, and an honest tally.

An orders service (writer threads) commits orders and their events, rolling some back on purpose;
a relay runs as a separate OS process and is SIGKILLed at random moments, then restarted; an
independent subscriber reads the stream. At the end the database (ground truth) is compared with
what the subscriber received.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from outboxkit.brokers.nats import connect, ensure_stream, read_stream
from outboxkit.core.tally import Delivery, Tally, tally
from outboxkit.migrate import migrate
from outboxkit.stores.registry import database_for, log_capture_for
from outboxkit.testing.servers import NatsServer, RelayProcess
from outboxkit.testing.workload import EventBudget, OrdersWorkload, delivered_count


@dataclass(frozen=True)
class DemoOptions:
    events: int = 5000
    writers: int = 4
    kills: int = 3
    db: str | None = None
    broker: str | None = None
    seed: int | None = None
    rate: float = 1500.0  # events/s across all writers, so the kills land mid-run
    drain_timeout: float = 60.0
    # table: the table relay; wal: ``relay --capture wal`` (PostgreSQL); wal-message: the same relay,
    # with the events written table-less (``walemit.MessageOutbox``); binlog: ``relay --capture
    # binlog`` (MariaDB/MySQL).
    capture: str = "table"


@dataclass
class DemoResult:
    tally: Tally
    kills: int
    relay_exit: int
    elapsed: float
    workdir: str
    deliveries: list[Delivery] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.tally.ok and self.relay_exit == 0


def run_demo(options: DemoOptions, console: Console | None = None) -> DemoResult:
    return asyncio.run(_demo(options, console or Console()))


class _Pacer:
    """Shared rate limit for the writers (events per second, all writers together)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.start = time.monotonic()
        self.count = 0
        self.lock = threading.Lock()

    def __call__(self, events: int) -> None:
        with self.lock:
            self.count += events
            due = self.start + self.count / self.rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)


async def _demo(options: DemoOptions, console: Console) -> DemoResult:
    seed = options.seed if options.seed is not None else random.randrange(1_000_000)
    rng = random.Random(seed)
    run_id = uuid.uuid4().hex[:8]
    workdir = tempfile.mkdtemp(prefix="outboxkit-demo-")
    console.print(f"[bold]outboxkit demo[/] seed={seed} workdir={workdir}")
    async with contextlib.AsyncExitStack() as stack:
        if options.broker:
            broker = options.broker
        else:
            server = NatsServer(str(Path(workdir) / "nats")).start()
            stack.callback(server.close)
            broker = server.url
            console.print(f"  embedded NATS JetStream at {broker}")
        db = options.db or f"sqlite:///{workdir}/orders.db"
        schema = f"outboxkit_demo_{run_id}" if database_for(db).namespaces else None
        workload = OrdersWorkload(db, topic_prefix=f"demo_{run_id}.orders", schema=schema)
        if schema:
            stack.callback(workload.drop)
        migrate(db, workload.ref)
        if options.capture != "table":
            # wal-message: the wal relay, with the events written table-less.
            log_capture = log_capture_for(db, options.capture.removesuffix("-message"))
            log_capture.migrate(db, workload.ref)  # a binlog's position table lives in the demo's schema
            stack.callback(log_capture.drop, db, workload.ref)  # a slot left behind keeps WAL forever (H4)
            if options.capture == "wal-message":
                from outboxkit.walemit import MessageOutbox

                workload.outbox = MessageOutbox(schema=schema, source="/outboxkit/demo/orders")
        workload.setup()
        console.print(f"  database {db.split('@')[-1]} ({'schema ' + schema if schema else 'file'})")

        nc = await connect(broker, name="outboxkit-demo-subscriber")
        stack.push_async_callback(nc.close)
        stream = f"OUTBOXKIT_DEMO_{run_id}"
        await ensure_stream(nc, stream, [f"demo_{run_id}.>"])
        if options.broker:
            stack.push_async_callback(nc.jetstream().delete_stream, stream)

        deliveries: list[Delivery] = []
        received_ids: set[str] = set()

        async def subscribe() -> None:
            async for msg in read_stream(nc, stream):
                deliveries.append(Delivery(msg.event_id, msg.key, None))
                received_ids.add(msg.event_id)

        sub_task = asyncio.create_task(subscribe())

        extra = ["--schema", schema] if schema else []
        if options.capture != "table":
            extra += ["--capture", options.capture.removesuffix("-message")]
        relay = RelayProcess(db, broker, *extra, log_path=str(Path(workdir) / "relay.log")).start()
        stop_writers = threading.Event()
        pacer = _Pacer(options.rate)
        target = options.events
        budget = EventBudget(target)  # exactly `target` committed events, whatever is in flight

        def on_commit(count: int) -> None:
            if workload.stats.committed_events >= target:
                stop_writers.set()
            pacer(count)

        started = time.monotonic()
        writers = [
            asyncio.create_task(
                asyncio.to_thread(
                    workload.write,
                    10**9,
                    seed=seed * 100 + i,
                    on_commit=on_commit,
                    stop=stop_writers,
                    budget=budget,
                )
            )
            for i in range(options.writers)
        ]
        expected_duration = target / options.rate
        kill_times = sorted(rng.uniform(0.1, 0.9) * expected_duration for _ in range(options.kills))

        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[note]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as progress:
            committed_bar = progress.add_task("committed", total=target, note="")
            received_bar = progress.add_task("received ", total=target, note="")

            def refresh(note: str = "") -> None:
                committed = workload.stats.committed_events
                progress.update(
                    committed_bar,
                    completed=min(committed, target),
                    note=f"rolled back tx: {workload.stats.rolled_back_tx}",
                )
                progress.update(
                    received_bar,
                    total=max(committed, 1),
                    completed=len(received_ids),
                    note=note or f"relay kills: {relay.kills}",
                )

            while not all(w.done() for w in writers):
                now = time.monotonic() - started
                if kill_times and now >= kill_times[0]:
                    kill_times.pop(0)
                    relay.kill()
                    refresh("relay SIGKILLed")
                    await asyncio.sleep(rng.uniform(0.1, 0.4))
                    relay.start()
                refresh()
                await asyncio.sleep(0.05)
            for w in writers:
                w.result()  # a writer's exception ends the demo loudly
            while relay.kills < options.kills:  # writers finished early: still crash the relay
                relay.kill()
                await asyncio.sleep(0.2)
                relay.start()
            committed = workload.committed()
            deadline = time.monotonic() + options.drain_timeout
            while time.monotonic() < deadline and not received_ids >= committed.keys():
                refresh("draining")
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)  # late duplicates, if any, are counted too
            refresh("done")
        relay_exit = await asyncio.to_thread(relay.stop)
        sub_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sub_task
        elapsed = time.monotonic() - started
        result = tally(committed, list(deliveries), published=delivered_count(workload))
        _print(console, result, relay.kills, relay_exit, elapsed, len(workload.stats.rolled_back_ids))
        return DemoResult(result, relay.kills, relay_exit, elapsed, workdir, list(deliveries))
    raise AssertionError("unreachable")


def _print(console: Console, t: Tally, kills: int, relay_exit: int, elapsed: float, rolled_back: int) -> None:
    table = Table(title="outboxkit demo: tally", show_lines=False)
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("meaning")
    good, bad = "green", "bold red"
    rows = [
        ("committed", t.committed, "events whose business transaction committed", None),
        ("rolled back", rolled_back, "events emitted in transactions rolled back on purpose", None),
        ("published", t.published, "outbox rows the relay marked as confirmed", None),
        ("received", t.received, "messages the subscriber got (duplicates included)", None),
        ("lost", t.lost, "committed but never received", t.lost == 0),
        ("phantom", t.phantom, "received but never committed", t.phantom == 0),
        ("duplicates", t.duplicates, "extra copies (at-least-once; dedupe in the inbox)", None),
        (
            "order violations",
            t.order_violations,
            "per-key first deliveries out of commit order",
            t.order_violations == 0,
        ),
        ("relay SIGKILLs", kills, "crashes injected into the relay", None),
        ("relay exit", relay_exit, "exit code after SIGTERM (0 = clean)", relay_exit == 0),
    ]
    for name, value, meaning, passed in rows:
        style = None if passed is None else (good if passed else bad)
        table.add_row(name, str(value), meaning, style=style)
    console.print(table)
    verdict = (
        "[bold green]OK[/]: nothing lost, no phantom, per-key order kept"
        if t.ok and relay_exit == 0
        else "[bold red]FAILED[/]"
    )
    console.print(f"{verdict}  ({elapsed:.1f}s, {t.committed / max(elapsed, 0.001):.0f} events/s end to end)")
