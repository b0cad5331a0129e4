"""Test helpers shared by outboxkit's own tests, the demo and the lab; public so that users can
run the same fault fixtures against their setup: embedded servers, a TCP proxy, relay processes."""

from outboxkit.testing.proxy import TcpProxy
from outboxkit.testing.servers import NatsServer, RelayProcess, free_port, nats_server_binary

__all__ = ["NatsServer", "RelayProcess", "TcpProxy", "free_port", "nats_server_binary"]
