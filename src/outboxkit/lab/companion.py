"""The strategy's background process (the relay), as the lab runs it: started before the writer,
supervised, SIGKILLable by a fault and restarted by its recovery."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path


class _Companion:
    """The strategy's background process (the relay), SIGKILLable and restartable.

    Supervised as in production (systemd ``Restart=on-failure``, a Kubernetes restart policy): a
    relay started while the broker or the database is down exits at once with one line, by design,
    and the supervisor starts it again. A SIGKILL injected by the lab is not restarted here: the
    fault's own recovery step does that."""

    def __init__(self, argv: list[str] | None, log_path: Path) -> None:
        self.argv = argv
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.supervisor_restarts = 0

    async def supervise(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            if self.proc is not None and self.proc.poll() not in (None, 0, -signal.SIGKILL):
                self.supervisor_restarts += 1
                self.start()

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Until the process logged its start line (``relay started:``, logged once it holds its
        buckets); a no-op without a companion."""
        if self.argv is None:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log_path.exists() and b"relay started:" in self.log_path.read_bytes():
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"the companion did not start within {timeout:.0f}s; see {self.log_path}")

    def describe(self) -> list[str]:
        """The process's state and the end of its log, for a stall diagnostic."""
        if self.argv is None:
            return ["no companion process"]
        if self.proc is None:
            state = "not running"
        elif self.proc.poll() is None:
            state = f"running (pid {self.proc.pid})"
        else:
            state = f"exited with status {self.proc.returncode}"
        tail = self.log_path.read_text(errors="replace").splitlines()[-12:] if self.log_path.exists() else []
        head = f"companion {state}; restarted by the supervisor {self.supervisor_restarts} times; log {self.log_path}:"
        return [head, *(f"  | {line[:300]}" for line in tail)]

    def start(self) -> None:
        if self.argv is None:
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
