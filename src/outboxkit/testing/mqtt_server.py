"""A private Mosquitto on a free loopback port, for tests that restart the broker.

The shared Mosquitto of the development machine must never be restarted; a test that needs a broker
restart (or a configured message size limit) starts its own::

    with MosquittoServer() as server:          # doctest: +SKIP
        print(server.url)                      # mqtt://127.0.0.1:PORT

The generated configuration keeps the session store on disk (``persistence true``) so that a restart
with SIGTERM keeps queued messages and persistent sessions, and raises ``max_queued_messages`` far
above Mosquitto's default of 1,000 per offline session, beyond which QoS 1 messages are dropped.
"""

from __future__ import annotations

import os
import pwd
import shutil

from outboxkit.errors import ConfigurationError
from outboxkit.testing.servers import ServerProcess


def mosquitto_binary() -> str:
    """The ``mosquitto`` broker on PATH, or in /usr/sbin where Debian puts it."""
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if not found:
        raise ConfigurationError("mosquitto not found: install it (apt-get install mosquitto)")
    return found


class MosquittoServer(ServerProcess):
    """A private ``mosquitto`` with persistence in ``store_dir``; restartable with the same data.

    ``message_size_limit`` (bytes, 0 = none) makes the broker refuse larger PUBLISH packets, which
    MQTT 5 clients see as a PUBACK reason code; ``max_queued_messages`` bounds each offline session.
    """

    def __init__(
        self,
        store_dir: str | None = None,
        port: int | None = None,
        *,
        message_size_limit: int = 0,
        max_queued_messages: int = 1_000_000,
        max_packet_size: int = 0,
        autosave_every_change: bool = False,
    ) -> None:
        super().__init__(store_dir, port)
        self.message_size_limit = message_size_limit
        self.max_queued_messages = max_queued_messages
        self.max_packet_size = max_packet_size
        self.autosave_every_change = autosave_every_change

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> str:
        return os.path.join(self.store_dir, "mosquitto.conf")

    def config(self) -> str:
        lines = [
            f"listener {self.port} 127.0.0.1",
            # Started as root, Mosquitto would switch to the "mosquitto" user, who cannot write here.
            f"user {pwd.getpwuid(os.getuid()).pw_name}",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {self.store_dir.rstrip('/')}/",
            f"max_queued_messages {self.max_queued_messages}",
            "max_queued_bytes 0",
            # Many unacknowledged messages per consumer (the default 20 would stall held retries).
            "max_inflight_messages 1000",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
        ]
        if self.autosave_every_change:
            # Rewrite the store after every change instead of every 30 minutes: acknowledged messages
            # then survive a SIGKILL too (H7), at the price of rewriting the whole file each time.
            lines += ["autosave_on_changes true", "autosave_interval 1"]
        if self.message_size_limit:
            lines.append(f"message_size_limit {self.message_size_limit}")
        if self.max_packet_size:
            lines.append(f"max_packet_size {self.max_packet_size}")
        return "\n".join(lines) + "\n"

    prefix = "outboxkit-mosquitto-"

    def prepare(self) -> None:
        with open(self.config_path, "w") as f:
            f.write(self.config())

    def command(self) -> list[str]:
        return [mosquitto_binary(), "-c", self.config_path]
