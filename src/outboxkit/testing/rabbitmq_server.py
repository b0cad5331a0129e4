"""A private RabbitMQ node a test owns, so that it can restart it without touching the shared broker.

It runs the installed ``rabbitmq-server`` as a second Erlang node: its own node name, AMQP port,
distribution port, data and log directories (under a temporary directory) and Erlang cookie, no
plugins, and a small ``max_message_size`` so that an oversized message is cheap to send. Starting it
takes a few seconds.

>>> with RabbitMQServer() as node:          # doctest: +SKIP
...     print(node.url)
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from outboxkit.errors import ConfigurationError
from outboxkit.testing.servers import free_port, wait_port

# The Debian/Ubuntu wrapper in /usr/sbin switches to the rabbitmq user; the script behind it runs the
# node as whoever calls it, with the environment we give it.
_CANDIDATES = ("/usr/lib/rabbitmq/bin/rabbitmq-server", "/usr/local/sbin/rabbitmq-server")


def rabbitmq_server_binary() -> str:
    for candidate in (os.environ.get("OUTBOXKIT_RABBITMQ_SERVER", ""), *_CANDIDATES):
        if candidate and Path(candidate).exists():
            return candidate
    found = shutil.which("rabbitmq-server")
    if not found:
        raise ConfigurationError("rabbitmq-server not found: install RabbitMQ (apt-get install rabbitmq-server)")
    return found


class RabbitMQServer:
    """A RabbitMQ node on free loopback ports; ``restart()`` keeps its data (same node name and dir)."""

    def __init__(
        self,
        data_dir: str | None = None,
        *,
        port: int | None = None,
        max_message_size: int = 1024 * 1024,
        start_timeout: float = 30.0,
    ) -> None:
        self._own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="outboxkit-rabbitmq-")
        self.port = port or free_port()
        self.dist_port = free_port()
        self.node = f"outboxkit{self.port}@localhost"
        self.max_message_size = max_message_size
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def _environment(self) -> dict[str, str]:
        base = Path(self.data_dir)
        (base / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\n"
            f"max_message_size = {self.max_message_size}\n"
            "loopback_users = none\n"
        )
        (base / "enabled_plugins").write_text("[].\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update(
            HOME=str(base),  # its own Erlang cookie, created there on first start
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(base / "mnesia"),
            RABBITMQ_LOG_BASE=str(base / "log"),
            RABBITMQ_CONFIG_FILE=str(base / "rabbitmq.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(base / "enabled_plugins"),
            RABBITMQ_CONF_ENV_FILE=str(base / "rabbitmq-env.conf"),  # not the system node's file
            RABBITMQ_PID_FILE=str(base / "node.pid"),
            ERL_EPMD_ADDRESS="127.0.0.1",
        )
        return env

    def start(self) -> RabbitMQServer:
        out = open(os.path.join(self.data_dir, "server.out"), "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [rabbitmq_server_binary()],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=self.data_dir,
            env=self._environment(),
            start_new_session=True,  # its own process group: stop() signals the node and nothing else
        )
        out.close()
        try:
            wait_port(self.port, self.start_timeout)
        except TimeoutError:
            tail = self.log_tail()
            self.stop()
            raise TimeoutError(f"RabbitMQ node {self.node} not up within {self.start_timeout}s: {tail}") from None
        return self

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = Path(self.data_dir, "server.out").read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])

    def stop(self, sig: int = signal.SIGTERM) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        # The start script and the Erlang VM share the process group we created for them.
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the VM may outlive the script for a moment
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)

    def restart(self, downtime: float = 0.5, sig: int = signal.SIGTERM) -> None:
        self.stop(sig)
        time.sleep(downtime)
        self.start()

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> RabbitMQServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
