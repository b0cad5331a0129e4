"""A running relay and consumer show they are alive at the default log level (no -v): one line when
they start (what, where, buckets) and a periodic one-line summary; --quiet silences both."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from outboxkit import migrate
from outboxkit.stores.base import TableRef
from tests.conftest import Stream
from tests.helpers import emit_many

CLI = [sys.executable, "-m", "outboxkit"]


class Process:
    """A CLI process whose stderr lines are read as they come."""

    def __init__(self, *args: str, cwd: Path | None = None) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOXKIT_")}
        self.proc = subprocess.Popen(
            [*CLI, *args], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env, cwd=cwd
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, *needles: str, timeout: float = 30.0) -> str:
        """The first stderr line containing every needle."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            self.seen.append(line)
            if all(n in line for n in needles):
                return line
        raise AssertionError(f"no line with {needles!r} within {timeout}s; got:\n" + "\n".join(self.seen))

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(20)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return code


def test_relay_logs_its_start_and_a_periodic_summary_by_default(tmp_path: Path, nats_stream: Stream) -> None:
    db = f"sqlite:///{tmp_path}/app.db"
    migrate(db)
    relay = Process("relay", "--db", db, "--broker", nats_stream.url, "--summary-interval", "0.5")
    try:
        start = relay.wait_for("relay started:")
        assert "app.db" in start and nats_stream.url in start and "holds 64 of 64 buckets" in start
        assert "INFO outboxkit.life" in start
        emit_many(db, TableRef(), nats_stream.topic(), [{"n": i} for i in range(5)])
        # Published counts at the broker's confirmation; the marks follow in the background, so an
        # early summary may still see the five rows waiting. A later one must show them gone.
        summary = relay.wait_for("relay: 5 published", "backlog 0")
        assert "0 failed attempts" in summary and "64/64 buckets" in summary
    finally:
        assert relay.stop() == 0
    assert any("relay stopped: 5 published" in line for line in relay.seen)


def test_quiet_relay_says_nothing_until_it_stops(tmp_path: Path, nats_stream: Stream) -> None:
    db = f"sqlite:///{tmp_path}/app.db"
    migrate(db)
    relay = Process("--quiet", "relay", "--db", db, "--broker", nats_stream.url, "--summary-interval", "0.2")
    time.sleep(2.0)
    assert relay.stop() == 0
    assert not [line for line in relay.seen if "relay started" in line or "published (+" in line], relay.seen


def test_consumer_logs_its_start_and_a_periodic_summary_by_default(tmp_path: Path, nats_stream: Stream) -> None:
    db = f"sqlite:///{tmp_path}/billing.db"
    subprocess.run([*CLI, "migrate", "--inbox", "--db", db], check=True, capture_output=True)
    (tmp_path / "billing.py").write_text("def on_order(conn, event):\n    pass\n")
    outbox = f"sqlite:///{tmp_path}/app.db"
    migrate(outbox)
    emit_many(outbox, TableRef(), nats_stream.topic(), [{"n": i} for i in range(3)])
    relay = Process("--quiet", "relay", "--db", outbox, "--broker", nats_stream.url)
    consumer = Process(
        "consume", "--db", db, "--broker", nats_stream.url, "--group", "billing",
        "--topic", f"{nats_stream.prefix}.>", "--handler", "billing:on_order", "--summary-interval", "0.5",
        cwd=tmp_path,
    )  # fmt: skip
    try:
        start = consumer.wait_for("consumer billing started:")
        assert f"topics {nats_stream.prefix}.>" in start and "billing.db" in start and "billing:on_order" in start
        summary = consumer.wait_for("consumer billing: 3 processed")
        assert "0 duplicates skipped" in summary and "0 dead-lettered" in summary
    finally:
        assert consumer.stop() == 0
        assert relay.stop() == 0
