"""A private ``redis-server`` a test owns, so that it can restart it without touching the shared one.

It runs with AOF on and ``appendfsync always``: the restart check asserts that every XADD Redis
acknowledged is still there afterwards, which only holds with an append-only file (H7).
"""

from __future__ import annotations

import shutil

from outboxkit.errors import ConfigurationError
from outboxkit.testing.servers import ServerProcess


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if not found:
        raise ConfigurationError("redis-server not found on PATH (apt-get install redis-server)")
    return found


class RedisServer(ServerProcess):
    """``redis-server`` on a free loopback port with AOF (``appendfsync always``) in ``data_dir``.

    Restartable with the same data::

        with RedisServer() as server:       # doctest: +SKIP
            print(server.url)               # redis://127.0.0.1:<port>/0
            server.restart()
    """

    prefix = "outboxkit-redis-"

    def __init__(self, data_dir: str | None = None, port: int | None = None, *, appendonly: bool = True) -> None:
        super().__init__(data_dir, port)
        self.appendonly = appendonly

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            redis_server_binary(),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", self.data_dir,
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always",
            # No RDB snapshots: the AOF alone is what the restart must recover from.
            "--save", "",
            "--daemonize", "no",
        ]  # fmt: skip
