"""Run strategies side by side against the same database and the same fault schedule.

Each strategy is independent of the others: fresh business tables (own schema on PostgreSQL and
MariaDB, own file on SQLite), its own NATS server (a broker restart of one strategy must not be a
fault for another), its own stream and companion process. So they run concurrently, at most
``parallel`` at a time (2 by default: the writer, the relay and the database share the cores, and
more at once would measure the machine's queue rather than the strategy).

Within a strategy: the writer subprocess in segments; each crash ends a segment and the runner
starts a new instance (as an orchestrator would), after deleting the instance's local files when
the fault says the instance was lost. A strategy the chosen database cannot run (binlog on
PostgreSQL) is listed in ``LabRun.skipped`` with the reason, never dropped silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from outboxkit.brokers.nats import connect, ensure_stream
from outboxkit.lab.companion import _Companion
from outboxkit.lab.faults import FAULTS, Scheduled, plan, schedule
from outboxkit.lab.strategies import STRATEGIES
from outboxkit.lab.strategy import DEFAULT_DB, Env, Strategy
from outboxkit.lab.verify import Received, Verdict, WriterLog, verify
from outboxkit.lab.writer import WriterSpec
from outboxkit.stores.registry import database_for, database_named
from outboxkit.testing.servers import NatsServer
from outboxkit.testing.workload import OrdersWorkload


@dataclass(frozen=True)
class LabOptions:
    strategies: tuple[str, ...] = tuple(STRATEGIES)
    faults: tuple[str, ...] = tuple(FAULTS)
    events: int = 600
    seed: int = 1
    db: str = DEFAULT_DB
    rollback_ratio: float = 0.05
    rate: float = 50.0  # writer transactions per second (0: as fast as it can)
    drain_timeout: float = 90.0  # a bound, not a wait: draining ends as soon as the backlog is 0
    # Before each fault, everything committed so far must be on the bus: well under a second
    # normally, a lease TTL or two after a relay restart. Past this the run stops and says why.
    settle_timeout: float = 30.0
    workdir: str | None = None
    parallel: int = 2  # strategies at once; see the module docstring


class LabStalled(RuntimeError):
    """The companion stopped delivering: a settle or the final drain ran out of time. The message
    is the diagnostic (pending rows, leases, relay process and log, the writer's own publishing),
    given at once instead of after every remaining fault's wait."""


@dataclass
class StrategyRun:
    strategy: str
    summary: str
    choose: str
    faults: list[Scheduled]
    not_applicable: list[str]
    verdict: Verdict
    elapsed: float
    restarts: int
    companion: bool = False  # whether a background process (a relay) delivered for it

    def as_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "summary": self.summary,
            "choose": self.choose,
            "faults": [f.as_dict() for f in self.faults],
            "not_applicable": self.not_applicable,
            "elapsed_s": self.elapsed,
            "writer_restarts": self.restarts,
            "companion": self.companion,
            **self.verdict.as_dict(),
        }


@dataclass
class LabRun:
    options: LabOptions
    runs: list[StrategyRun] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (strategy, why it did not run)
    elapsed: float = 0.0
    # When it ran and how busy the machine was (1-minute load average at start and end): the
    # timings mean little without it.
    started_at: float = 0.0
    load: tuple[float, float] = (0.0, 0.0)


def skip_reason(strategy: Strategy, database: str) -> str | None:
    """Why ``strategy`` cannot run on ``database`` (a registry name), or None when it can."""
    only = getattr(strategy, "databases", None)
    if only is None or database in only:
        return None
    return f"needs {' or '.join(only)}; this run's database is {database}"


def applicable(kind: str, strategy: Strategy, env: Env) -> bool:
    if kind == "kill-relay":
        return strategy.companion(env) is not None
    if kind == "db-kill":
        return env.database.can_kill_sessions
    return True


Phase = Callable[[str, str], None]


async def run_lab(
    options: LabOptions, on_phase: Phase | None = None, on_done: Callable[[StrategyRun], None] | None = None
) -> LabRun:
    unknown = [s for s in options.strategies if s not in STRATEGIES]
    if unknown:
        raise ValueError(f"unknown strategy {', '.join(unknown)}; choose from {', '.join(STRATEGIES)}")
    if options.parallel < 1:
        raise ValueError("parallel must be at least 1")
    phase = on_phase or (lambda _s, _p: None)
    run_id = uuid.uuid4().hex[:8]
    # A private directory per run (parallel runs never share one); removed at the end unless given.
    workdir = Path(options.workdir or tempfile.mkdtemp(prefix=f"outboxkit-lab-{run_id}-"))
    os.makedirs(workdir, exist_ok=True)
    txns = len(plan(options.events, options.seed, rollback_ratio=options.rollback_ratio))
    all_faults = schedule(list(options.faults), txns, options.seed)
    lab = LabRun(options, started_at=time.time(), load=(os.getloadavg()[0], 0.0))
    started = time.monotonic()
    chosen = database_for(options.db) if "://" in options.db else database_named(options.db)
    todo: list[tuple[int, str]] = []
    for index, name in enumerate(options.strategies):
        reason = skip_reason(STRATEGIES[name], chosen.name)
        if reason is None:
            todo.append((index, name))
        else:
            lab.skipped.append((name, reason))
            phase(name, f"skipped: {reason}")
    gate = asyncio.Semaphore(options.parallel)
    results: dict[int, StrategyRun] = {}

    async def one(index: int, name: str) -> None:
        async with gate:
            result = await _run_one(STRATEGIES[name], index, run_id, workdir, options, all_faults, phase)
        results[index] = result
        if on_done is not None:
            on_done(result)

    try:
        # A TaskGroup: the first strategy that fails (a stall) cancels the others, whose exit
        # stacks stop their processes; the caller sees that one error (a stall first, it carries
        # the diagnostic), not a group of them.
        try:
            async with asyncio.TaskGroup() as group:
                for index, name in todo:
                    group.create_task(one(index, name))
        except BaseExceptionGroup as failed:
            stalls = [e for e in failed.exceptions if isinstance(e, LabStalled)]
            raise (stalls or failed.exceptions)[0] from None
    finally:
        if options.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    lab.runs = [results[i] for i, _ in todo]
    lab.elapsed = time.monotonic() - started
    lab.load = (lab.load[0], os.getloadavg()[0])
    return lab


async def _run_one(
    strategy: Strategy,
    index: int,
    run_id: str,
    workdir: Path,
    options: LabOptions,
    all_faults: list[Scheduled],
    phase: Phase,
) -> StrategyRun:
    started = time.monotonic()
    slug = f"lab_{run_id}_{index}"
    # A namespace (schema, database) of its own per strategy, or a file of its own for SQLite.
    chosen = database_for(options.db) if "://" in options.db else database_named(options.db)
    by_file = not chosen.namespaces
    db = f"sqlite:///{workdir}/{slug}.db" if by_file else options.db
    (workdir / slug).mkdir(parents=True, exist_ok=True)
    # Its own broker: a broker restart is this strategy's fault, not its neighbour's.
    server = NatsServer(str(workdir / slug / "nats"))
    env = Env(db, None if by_file else slug, "", f"{slug}.orders", str(workdir / slug / "instance"))
    faults = [f for f in all_faults if applicable(f.kind, strategy, env)]
    skipped = sorted({f.kind for f in all_faults} - {f.kind for f in faults})
    workload = OrdersWorkload(db, schema=env.schema)
    stream = f"LAB_{run_id}_{index}".upper()
    # Every blocking step runs in a thread: the strategy running beside this one shares the event
    # loop, and a blocked loop would show up as its latency.
    off = asyncio.to_thread
    async with contextlib.AsyncExitStack() as stack:
        phase(strategy.name, "setting up")
        await off(server.start)
        stack.push_async_callback(off, server.stop)
        env = dataclasses.replace(env, broker=server.url)
        await off(workload.setup)
        stack.push_async_callback(off, workload.drop)
        await off(strategy.prepare, env)
        cleanup = getattr(strategy, "cleanup", None)  # what prepare made outside the namespace (a slot)
        if cleanup is not None:
            stack.push_async_callback(off, cleanup, env)
        nc = await connect(server.url, name="outboxkit-lab")
        stack.push_async_callback(nc.close)
        await ensure_stream(nc, stream, [f"{slug}.>"])
        companion = _Companion(strategy.companion(env), workdir / slug / "companion.log")
        stack.push_async_callback(off, companion.stop)
        companion.start()
        # A relay in production is running before the service writes: wait until it holds its
        # buckets, or its start-up would count as the strategy's steady-state latency.
        await companion.wait_ready()
        supervisor = asyncio.create_task(companion.supervise())
        stack.callback(supervisor.cancel)
        phase(strategy.name, "writing")
        restarts = await _write(
            strategy, env, options, faults, workdir / slug / "writer.jsonl", server, companion, phase
        )
        phase(strategy.name, "draining")
        await _settle(strategy, env, options.drain_timeout, companion, "the final drain")
        await asyncio.sleep(0.3)  # a copy the companion sends while it is being stopped still counts
        supervisor.cancel()
        await off(companion.stop)
        phase(strategy.name, "verifying")
        received = await _read_stream(nc, stream, strategy)
        committed = await off(workload.committed)
        verdict = verify(committed, received, WriterLog.read(workdir / slug / "writer.jsonl"), faults)
        await nc.jetstream().delete_stream(stream)
    return StrategyRun(
        strategy.name, strategy.summary, strategy.choose, faults, skipped, verdict, time.monotonic() - started,
        restarts, companion.argv is not None,
    )  # fmt: skip


async def _write(
    strategy: Strategy,
    env: Env,
    options: LabOptions,
    faults: list[Scheduled],
    stats_path: Path,
    server: NatsServer,
    companion: _Companion,
    phase: Phase,
) -> int:
    """Writer segments until the plan is done; returns how many times the instance was restarted."""
    start, restarts = 0, 0
    pending: list[asyncio.Task[None]] = []
    while True:
        spec = WriterSpec(
            env, strategy.name, options.events, options.seed, start,
            [f for f in faults if f.tx >= start], str(stats_path), options.rollback_ratio, options.rate,
        )  # fmt: skip
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "outboxkit.lab.writer", spec.to_json(),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdout is not None and proc.stdin is not None
        try:
            while line := (await proc.stdout.readline()).decode().strip():
                if line == "SETTLE":
                    phase(strategy.name, "settling before a fault")
                    await _settle(strategy, env, options.settle_timeout, companion, "a settle before a fault")
                    proc.stdin.write(b"ok\n")
                    await proc.stdin.drain()
                elif line.startswith("FAULT "):
                    kind = line.split()[1]
                    phase(strategy.name, f"fault: {kind}")
                    # The fault has happened when the writer goes on; recovery (restart) runs in the background.
                    later = await _act(kind, env, server, companion)
                    if later is not None:
                        pending.append(asyncio.create_task(later))
                    proc.stdin.write(b"ok\n")
                    await proc.stdin.drain()
        except BaseException:
            # A stall, or a neighbour's stall cancelling this strategy: the writer waits for our
            # answer, and left alone it would write on after we stop.
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            raise
        assert proc.stderr is not None
        err = (await proc.stderr.read()).decode()
        code = await proc.wait()
        if code == 0:
            break
        crash = next((f for f in faults if f.tx >= start and f.crash), None)
        if code != -9 or crash is None:
            raise RuntimeError(f"{strategy.name} writer failed (exit {code}):\n{err[-3000:]}")
        phase(strategy.name, f"crashed: {crash.kind}")
        if crash.action == "wipe-instance":
            shutil.rmtree(env.instance_dir, ignore_errors=True)
        start, restarts = crash.tx + 1, restarts + 1
    for task in pending:
        await task
    return restarts


async def _settle(strategy: Strategy, env: Env, timeout: float, companion: _Companion, what: str) -> None:
    """Until the strategy's companion has delivered everything committed (no-op without one);
    raises :class:`LabStalled` with a diagnostic when it does not within ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        waiting: int = await asyncio.to_thread(strategy.backlog, env)
        if not waiting:
            return
        if time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.02)
    report = getattr(strategy, "stall_report", None)
    lines = [f"{strategy.name}: {what} timed out after {timeout:g}s with {waiting} events not delivered"]
    if report is not None:
        lines += await asyncio.to_thread(report, env)
    lines += companion.describe()
    lines += _writer_publishing(Path(env.instance_dir).parent / "writer.jsonl")
    raise LabStalled("\n  ".join(lines))


def _writer_publishing(stats: Path) -> list[str]:
    """The writer's own publishing (inline strategies): how many publishes failed, and the last."""
    failures = [line for line in stats.read_text().splitlines() if '"publish_failed"' in line] if stats.exists() else []
    if not failures:
        return ["writer: no failed publish of its own"]
    return [f"writer: {len(failures)} failed publishes of its own; last: {failures[-1][:300]}"]


async def _act(kind: str, env: Env, server: NatsServer, companion: _Companion) -> Coroutine[Any, Any, None] | None:
    """Make the fault happen now; return what brings the service back, to run in the background."""
    if kind == "kill-relay":
        companion.kill()
        return _after(0.3, companion.start)
    if kind == "broker-restart":
        await asyncio.to_thread(server.stop)
        return _after(1.0, server.start)
    if kind == "db-kill":
        await asyncio.to_thread(_kill_connections, env)
    return None


async def _after(delay: float, action: Callable[[], object]) -> None:
    await asyncio.sleep(delay)
    await asyncio.to_thread(action)


def _kill_connections(env: Env) -> None:
    """Terminate this run's writer connection and its relay's database connections."""
    q = env.database.quote
    env.database.kill_sessions(env.db, f"outboxkit-lab-{env.schema}", f"{q}{env.schema}{q}")


async def _read_stream(nc: Any, stream: str, strategy: Strategy) -> list[Received]:
    """Every message the stream holds, in stream order, with the broker's store time."""
    js = nc.jetstream()
    total = (await js.stream_info(stream)).state.messages
    out: list[Received] = []
    if not total:
        return out
    sub = await js.subscribe(">", stream=stream, ordered_consumer=True)
    try:
        while len(out) < total:
            msg = await sub.next_msg(timeout=10)
            headers = msg.headers or {}
            event_id, tx = strategy.identify(headers, msg.data)
            out.append(Received(event_id, headers.get("ce-subject"), tx, msg.metadata.timestamp.timestamp()))
    finally:
        await sub.unsubscribe()
    return out
