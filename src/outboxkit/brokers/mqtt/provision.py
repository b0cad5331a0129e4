"""MQTT provisioning: nothing to create, and the one thing to know.

MQTT topics need no creation. But a broker keeps a message only for the subscriptions that exist
when it arrives: with no session subscribed, the relay's publish is acknowledged and dropped (with
``require_subscriber=true``, the default, MQTT 5 reports "no matching subscribers" and the relay
keeps the event pending instead, H8). So the consumer's persistent session must exist before the
relay publishes: start ``outboxkit consume`` once (it subscribes with a session that outlives it).
"""

from __future__ import annotations

from outboxkit.brokers.mqtt.wire import mqtt_topic, parse_url
from outboxkit.brokers.provision import ProvisionRequest, Step
from outboxkit.errors import ConfigurationError


async def provision(url: str, request: ProvisionRequest, *, dry_run: bool) -> list[Step]:
    if not request.topics:
        raise ConfigurationError("provision needs at least one --topic")
    parse_url(url)  # a bad URL is still a configuration error here
    return [
        Step(
            "nothing",
            "topic",
            mqtt_topic(topic),
            "MQTT topics need no creation; only subscribed sessions keep messages: start "
            "`outboxkit consume` once before the relay publishes",
        )
        for topic in request.topics
    ]


__all__ = ["provision"]
