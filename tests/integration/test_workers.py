"""``outboxkit relay --workers N`` as a real process group on real PostgreSQL, SQLite and NATS:
the workers share the buckets and deliver everything in per-key order (G1, G5), a SIGKILLed worker
is started again with nothing lost, SIGTERM stops them all with exit 0, a SIGKILLed supervisor
leaves no worker behind, ``status`` shows the workers, and bad configuration fails once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from outboxkit import migrate
from outboxkit.core.tally import Delivery, tally
from outboxkit.ops import queries as q
from outboxkit.relay.loop import RelayConfig
from outboxkit.stores.base import BUCKETS, TableRef
from outboxkit.testing.servers import free_port
from outboxkit.testing.workload import OrdersWorkload
from outboxkit.workers import Supervisor, WorkerSpec
from tests.conftest import PG_URL, Stream, drop_stream, make_stream, require, unique
from tests.helpers import read_all

CLI = [sys.executable, "-m", "outboxkit"]
pytestmark = pytest.mark.xdist_group("workers")  # process groups: keep them on one xdist worker


def _env() -> dict[str, str]:
    env = dict(os.environ)
    for var in [v for v in env if v.startswith("OUTBOXKIT_")]:
        env.pop(var)
    return env


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


class Supervised:
    """``outboxkit relay --workers N`` in a child process, its log in a file."""

    def __init__(self, db: str, broker: str, workers: int, log: Path, *extra: str) -> None:
        args = [*CLI, "-v", "relay", "--db", db, "--broker", broker, "--workers", str(workers)]
        args += ["--lease-ttl", "2", "--poll-interval", "0.2", "--summary-interval", "0", *extra]
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=_env())

    def workers(self) -> list[int]:
        try:
            with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
                return sorted(int(p) for p in f.read().split())
        except FileNotFoundError:
            return []

    def text(self) -> str:
        return self.log.read_text()

    async def wait_for(self, what: str, check: Callable[[], bool], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert self.proc.poll() is None, f"supervisor exited {self.proc.returncode}:\n{self.text()}"
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}:\n{self.text()}")
            await asyncio.sleep(0.1)

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        for pid in [*self.workers(), self.proc.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait()


def status_text(db: str, *extra: str) -> str:
    out = subprocess.run([*CLI, "status", "--db", db, *extra], capture_output=True, text=True, env=_env())
    assert out.returncode == 0, out.stderr
    return out.stdout


def quick_status(db: str, schema: str | None) -> dict[str, Any]:
    """What ``status --json`` prints, computed in this process: cheap enough to poll."""
    with q.open_db(db, TableRef("outbox", schema)) as conn:
        return q.status(conn).to_json()


def live_relays(db: str, schema: str | None) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = quick_status(db, schema)["relays"]["live"]
    return found


def _writers(workload: OrdersWorkload, stop: threading.Event, n: int = 2) -> list[threading.Thread]:
    threads = [
        threading.Thread(
            target=workload.write,
            args=(10**9,),
            kwargs={"seed": i, "stop": stop, "on_commit": lambda _: stop.wait(0.004)},
            daemon=True,
        )
        for i in range(n)
    ]
    for t in threads:
        t.start()
    return threads


async def _verify(workload: OrdersWorkload, stream: Stream) -> None:
    committed = await asyncio.to_thread(workload.committed)
    got = await read_all(stream.url, stream.name, expect=len(committed), timeout=90)
    result = tally(committed, [Delivery(m.event_id, m.key, None) for m in got])
    print(result.as_dict())
    assert result.committed > 100
    assert result.lost == 0, result
    assert result.phantom == 0, result
    assert result.order_violations == 0, result


async def _drained(workload: OrdersWorkload, sup: Supervised) -> None:
    def done() -> bool:
        return bool(quick_status(workload.db, workload.schema)["pending"] == 0)

    await sup.wait_for("the outbox to drain", done, timeout=90)


@pytest.fixture
def pg_orders() -> Iterator[OrdersWorkload]:
    require("PostgreSQL", "127.0.0.1", 5432)
    workload = OrdersWorkload(PG_URL, topic_prefix=unique("okw"), schema=unique("okw"), keys=40)
    migrate(PG_URL, workload.ref)
    workload.setup()
    yield workload
    workload.drop()


async def test_three_workers_share_buckets_survive_a_sigkill_and_stop_on_sigterm(
    pg_orders: OrdersWorkload, nats_url: str, tmp_path: Path
) -> None:
    assert pg_orders.schema is not None
    stream = await make_stream(nats_url, pg_orders.topic.split(".")[0])
    sup = Supervised(PG_URL, nats_url, 3, tmp_path / "sup.log", "--schema", pg_orders.schema)
    stop = threading.Event()
    try:
        await sup.wait_for("3 workers", lambda: len(sup.workers()) == 3)
        writers = _writers(pg_orders, stop)

        def spread() -> bool:
            live = live_relays(PG_URL, pg_orders.schema)
            # Each worker holds some once the first one (alone at first: all 64) gave its surplus back.
            return (
                len(live) == 3 and all(r["buckets"] for r in live) and sum(len(r["buckets"]) for r in live) == BUCKETS
            )

        await sup.wait_for("the buckets spread over 3 workers", spread)
        # status: the three workers of one supervisor, numbered 1-3, every bucket held once.
        live = live_relays(PG_URL, pg_orders.schema)  # what `status --json` prints
        assert len({r["supervisor"] for r in live}) == 1 and sorted(r["worker"] for r in live) == [1, 2, 3]
        assert all(r["owner"] == f"{r['supervisor']}/w{r['worker']}" for r in live)
        assert all(r["buckets"] for r in live)
        text = status_text(PG_URL, "--schema", pg_orders.schema)
        assert f"supervisor {live[0]['supervisor']}: 3 live worker(s) holding {BUCKETS} bucket(s)" in text

        # SIGKILL one worker while events are written: the supervisor starts it again.
        before = sup.workers()
        os.kill(before[1], signal.SIGKILL)
        await sup.wait_for("the restart", lambda: "was killed by SIGKILL" in sup.text())
        await sup.wait_for("3 workers again", lambda: len(sup.workers()) == 3 and sup.workers() != before)
        # Under its old name, the new process renews the leases its predecessor left (same epoch).
        await sup.wait_for("the new one to hold its buckets", lambda: sup.text().count("relay started:") == 4)
        await asyncio.sleep(1.5)  # the new one works for a while
        stop.set()
        for w in writers:
            w.join()
        await _drained(pg_orders, sup)
        await _verify(pg_orders, stream)

        workers = sup.workers()
        started = time.monotonic()
        assert sup.stop() == 0, sup.text()
        print(f"SIGTERM -> exit 0 in {time.monotonic() - started:.1f}s")
        assert not any(_alive(p) for p in workers), "every worker is gone"
        assert sup.text().count("relay stopped:") == 3
        # Clean stops give the leases back (a release that misses its 1 s limit on a loaded machine
        # leaves them to expire within the 2 s TTL): nothing stays held.
        await _no_leases_left(pg_orders.schema)
    finally:
        stop.set()
        sup.kill()
        await drop_stream(stream)


async def test_workers_stop_when_the_supervisor_is_sigkilled(
    pg_orders: OrdersWorkload, nats_url: str, tmp_path: Path
) -> None:
    assert pg_orders.schema is not None
    port = _two_free_ports()
    sup = Supervised(PG_URL, nats_url, 2, tmp_path / "sup.log", "--schema", pg_orders.schema, "--http-port", str(port))
    try:
        await sup.wait_for("2 workers", lambda: len(sup.workers()) == 2)
        await sup.wait_for("2 live relays", lambda: len(live_relays(PG_URL, pg_orders.schema)) == 2)
        # Worker wI serves its own metrics on --http-port + I - 1.
        for p in (port, port + 1):
            assert b"outboxkit_relay_events_published" in await asyncio.to_thread(_get, f"http://127.0.0.1:{p}/metrics")
        workers = sup.workers()
        sup.proc.kill()
        sup.proc.wait()
        deadline = time.monotonic() + 30
        while any(_alive(p) for p in workers) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert not any(_alive(p) for p in workers), "orphaned workers stopped by themselves"
        # They stopped cleanly (SIGTERM from the kernel): "relay stopped" each, and no lease left.
        await _no_leases_left(pg_orders.schema)
        assert sup.text().count("relay stopped:") == 2
    finally:
        sup.kill()


async def _no_leases_left(schema: str | None, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        relays = quick_status(PG_URL, schema)["relays"]
        if relays["buckets_held"] == 0:
            return
        assert time.monotonic() < deadline, relays
        await asyncio.sleep(0.2)


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200
        body: bytes = resp.read()
        return body


def _two_free_ports() -> int:
    """A port p with p + 1 free too (for workers w1 and w2)."""
    for _ in range(50):
        base = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", base + 1))
            except OSError:
                continue
        return base
    raise AssertionError("no two adjacent free ports")


def _lock_holder(pids: list[int], lock: str) -> int | None:
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except FileNotFoundError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == lock:
                    return pid
            except OSError:
                continue
    return None


async def test_workers_on_sqlite_one_relays_the_other_takes_over(nats_url: str, tmp_path: Path) -> None:
    """SQLite allows one relay per file: one worker holds it, the other stands by; SIGKILL of the
    holder loses nothing and breaks no key's order."""
    db = f"sqlite:///{tmp_path}/app.db"
    workload = OrdersWorkload(db, topic_prefix=unique("okw"), keys=40)
    migrate(db)
    workload.setup()
    stream = await make_stream(nats_url, workload.topic.split(".")[0])
    sup = Supervised(db, nats_url, 2, tmp_path / "sup.log")
    stop = threading.Event()
    lock = f"{tmp_path}/app.db.relay-lock"
    try:
        await sup.wait_for("a worker holding the SQLite file", lambda: _lock_holder(sup.workers(), lock) is not None)
        assert "SQLite allows one relay per database file" in sup.text()
        writers = _writers(workload, stop, n=1)
        await asyncio.sleep(1.0)
        holder = _lock_holder(sup.workers(), lock)
        assert holder is not None
        os.kill(holder, signal.SIGKILL)
        await sup.wait_for("the restart", lambda: "was killed by SIGKILL" in sup.text())
        await sup.wait_for("another holder", lambda: _lock_holder(sup.workers(), lock) not in (None, holder))
        await asyncio.sleep(1.0)
        stop.set()
        for w in writers:
            w.join()
        await _drained(workload, sup)
        await _verify(workload, stream)
        workers = sup.workers()
        assert sup.stop() == 0, sup.text()
        assert not any(_alive(p) for p in workers)
    finally:
        stop.set()
        sup.kill()
        await drop_stream(stream)


# -- configuration errors: once, at start-up ------------------------------------------------------


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "env", "toml", "expect"),
    [
        (["--workers", "3", "--http-port", "65534"], {}, None, "needs ports up to 65536"),
        ([], {"OUTBOXKIT_WORKERS": "0"}, None, "workers must be at least 1"),
        ([], {}, "[relay]\nworkers = 'many'\n", "workers must be a number"),
        (["--workers", "65"], {}, None, "at most 64"),
        (["--workers", "2", "--http-port", "9464", "--dashboard"], {}, None, "run `outboxkit dashboard` beside"),
    ],
)
def test_bad_workers_configuration_fails_once_with_exit_2(
    args: list[str], env: dict[str, str], toml: str | None, expect: str, tmp_path: Path
) -> None:
    db = f"sqlite:///{tmp_path}/app.db"
    extra = []
    if toml is not None:
        (tmp_path / "c.toml").write_text(toml)
        extra = ["--config", str(tmp_path / "c.toml")]
    result = subprocess.run(
        [*CLI, "relay", "--db", db, "--broker", "nats://127.0.0.1:4222", *args, *extra],
        capture_output=True,
        text=True,
        env={**_env(), **env},
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert expect in _one_line(result)


def test_a_missing_schema_fails_once_before_any_worker_starts(nats_url: str, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/never-migrated.db"
    result = subprocess.run(
        [*CLI, "relay", "--db", db, "--broker", nats_url, "--workers", "3"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
    )
    assert result.returncode in (1, 2), result.stderr
    assert "worker" not in _one_line(result)  # the supervisor's check, not three workers' lines


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_an_http_port_in_use_fails_once(nats_url: str, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/app.db"
    migrate(db)
    # w1 serves on port - 1, w2 on the port this test holds. Port - 1 must be free for w1, and no
    # test can hold it for w1: so it is checked free first, and a run in which another program
    # took it meanwhile (the error names w1's port) is a precondition lost, tried again.
    for _ in range(5):
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            if not _free(port - 1):
                continue
            result = subprocess.run(
                [*CLI, "relay", "--db", db, "--broker", nats_url, "--workers", "2", "--http-port", str(port - 1)],
                capture_output=True,
                text=True,
                env=_env(),
                timeout=60,
            )
        if f"worker w1's metrics on 127.0.0.1:{port - 1}" not in _one_line(result):
            break
    assert result.returncode == 2, result.stderr
    assert f"cannot serve worker w2's metrics on 127.0.0.1:{port}" in _one_line(result)


def _spec(index: int) -> WorkerSpec:
    return WorkerSpec(
        index=index,
        workers=2,
        supervisor_pid=os.getpid(),
        db="sqlite:///unused.db",
        broker="nats://127.0.0.1:4222",
        table="outbox",
        schema=None,
        source="/s",
        relay=RelayConfig(),
    )


def test_a_worker_exiting_2_stops_the_group_once(caplog: pytest.LogCaptureFixture) -> None:
    """Exit status 2 (configuration) cannot be fixed by a restart: the supervisor stops them all."""
    started: list[int] = []

    def command(spec: WorkerSpec) -> list[str]:
        started.append(spec.index)
        code, sleep = (2, 0.3) if spec.index == 1 else (0, 30)
        return [sys.executable, "-c", f"import sys, time; sys.stdin.read(); time.sleep({sleep}); sys.exit({code})"]

    caplog.set_level(logging.WARNING, "outboxkit.relay")
    sup = Supervisor([_spec(1), _spec(2)], command=command, stop_timeout=10)
    t0 = time.monotonic()
    assert sup.run() == 2
    assert time.monotonic() - t0 < 10, "the sleeping worker got SIGTERM, not a timeout"
    assert started == [1, 2]  # nobody was restarted
    lines = [r.getMessage() for r in caplog.records if r.name == "outboxkit.relay"]
    assert lines == ["relay worker w1 exited with status 2 (a configuration error, see above); stopping all workers"]


def test_a_crashing_worker_is_restarted_with_backoff(caplog: pytest.LogCaptureFixture) -> None:
    starts: list[float] = []

    def command(spec: WorkerSpec) -> list[str]:
        starts.append(time.monotonic())
        return [sys.executable, "-c", "import sys; sys.stdin.read(); sys.exit(1)"]

    def died() -> list[str]:
        return [r.getMessage() for r in caplog.records if "relay worker w1 exited with status 1" in r.getMessage()]

    caplog.set_level(logging.WARNING, "outboxkit.relay")
    sup = Supervisor([_spec(1)], command=command)
    done = threading.Event()

    def stop_after_three_deaths() -> None:
        # Waits for the deaths rather than a fixed time: on a loaded machine each start is slower.
        deadline = time.monotonic() + 60
        while not done.is_set() and len(died()) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        if not done.is_set():
            os.kill(os.getpid(), signal.SIGTERM)

    watcher = threading.Thread(target=stop_after_three_deaths, daemon=True)
    watcher.start()
    try:
        assert sup.run() == 0  # stopped by SIGTERM while waiting to restart: nothing left to stop
    finally:
        done.set()
        watcher.join()
    deaths = died()
    assert len(deaths) >= 3 and len(starts) in (len(deaths), len(deaths) + 1), (deaths, starts)
    # One line per death, each saying how long it waits: longer after each quick death.
    delays = [float(line.rsplit(" in ", 1)[1].rstrip("s")) for line in deaths]
    assert delays[2] > delays[0], delays


def test_a_second_signal_kills_workers_that_do_not_stop(caplog: pytest.LogCaptureFixture) -> None:
    """SIGTERM asks; a second one (an impatient Ctrl-C) SIGKILLs the workers still there: exit 1."""
    stubborn = (
        "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); sys.stdin.read(); time.sleep(60)"
    )

    caplog.set_level(logging.WARNING, "outboxkit.relay")
    sup = Supervisor([_spec(1), _spec(2)], command=lambda _: [sys.executable, "-c", stubborn], stop_timeout=60)
    timers = [threading.Timer(t, lambda: os.kill(os.getpid(), signal.SIGTERM)) for t in (1.5, 3.0)]
    for t in timers:
        t.start()
    t0 = time.monotonic()
    try:
        assert sup.run() == 1
    finally:
        for t in timers:
            t.cancel()
    assert time.monotonic() - t0 < 20, "not the 60 s stop timeout"
    assert any("second SIGTERM: SIGKILL" in r.getMessage() for r in caplog.records)


WAL_WORKERS = ["--workers", "2", "--capture", "wal"]


def test_workers_refuse_a_wal_capture_once() -> None:
    # A replication slot has one reader: N workers could only stand by, so it is a configuration error.
    result = subprocess.run(
        [*CLI, "relay", "--db", "postgresql://u@127.0.0.1:1/x", "--broker", "nats://127.0.0.1:4222", *WAL_WORKERS],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "--workers cannot share it" in _one_line(result)
