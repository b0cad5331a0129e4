"""A private ``redis-server`` a test owns, so that it can restart it without touching the shared one.

It runs with AOF on and ``appendfsync always``: the restart check asserts that every XADD Redis
acknowledged is still there afterwards, which only holds with an append-only file (H7).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time

from outboxkit.errors import ConfigurationError
from outboxkit.testing.servers import free_port, wait_port


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if not found:
        raise ConfigurationError("redis-server not found on PATH (apt-get install redis-server)")
    return found


class RedisServer:
    """``redis-server`` on a free loopback port with AOF (``appendfsync always``) in ``data_dir``.

    Restartable with the same data::

        with RedisServer() as server:       # doctest: +SKIP
            print(server.url)               # redis://127.0.0.1:<port>/0
            server.restart()
    """

    def __init__(self, data_dir: str | None = None, port: int | None = None, *, appendonly: bool = True) -> None:
        self._own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="outboxkit-redis-")
        os.makedirs(self.data_dir, exist_ok=True)
        self.port = port or free_port()
        self.appendonly = appendonly
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [
            redis_server_binary(),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            self.data_dir,
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "always",
            # No RDB snapshots: the AOF alone is what the restart must recover from.
            "--save",
            "",
            "--logfile",
            os.path.join(self.data_dir, "server.log"),
            "--daemonize",
            "no",
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(self.port)
        except TimeoutError:
            self.stop()
            raise
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self, downtime: float = 0.5, sig: int = signal.SIGTERM) -> None:
        self.stop(sig)
        time.sleep(downtime)
        self.start()

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
