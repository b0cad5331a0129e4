"""Test helpers shared by outboxkit's own tests, the demo and the lab; public so that users can
run the same fault fixtures against their setup: embedded servers, a TCP proxy, relay processes,
the broker conformance suite (``outboxkit.testing.conformance``), the store suite
(``outboxkit.testing.stores``) and the tail-reader suite (``outboxkit.testing.tailing``)."""

from outboxkit.testing.proxy import TcpProxy
from outboxkit.testing.servers import NatsServer, RelayProcess, free_port, nats_server_binary

__all__ = ["NatsServer", "RelayProcess", "TcpProxy", "free_port", "nats_server_binary"]

# Private broker servers for restart tests live in their own modules, imported on demand because
# they need the broker binaries: testing.kafka_server (TansuServer), testing.rabbitmq_server
# (RabbitMQServer), testing.redis_server (RedisServer), testing.mqtt_server (MosquittoServer).
