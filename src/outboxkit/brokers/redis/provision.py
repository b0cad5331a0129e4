"""Redis Streams provisioning: nothing to create, one durability check.

``XADD`` creates a stream on its first entry, so the relay needs nothing created in advance (and a
consumer group is created by ``outboxkit consume`` with ``MKSTREAM``). What matters is the server's
persistence (H7): without AOF a restart loses confirmed entries. Provisioning connects, reads
``appendonly`` and warns when it is off; it never changes server configuration.
"""

from __future__ import annotations

import contextlib

from outboxkit.brokers.provision import ProvisionRequest, Step
from outboxkit.brokers.redis.client import _call, _open, _pairs, parse_url
from outboxkit.errors import ConfigurationError


async def provision(url: str, request: ProvisionRequest, *, dry_run: bool) -> list[Step]:
    if not request.topics:
        raise ConfigurationError("provision needs at least one --topic")
    options = parse_url(url)
    steps = [Step("nothing", "stream", topic, "XADD creates the stream on the first event") for topic in request.topics]
    client = await _open(url, options.client_url, socket_timeout=5.0)
    try:
        try:
            appendonly = _pairs(await _call(client, "CONFIG", "GET", "appendonly")).get("appendonly")
        except Exception:  # CONFIG disabled or renamed (managed Redis): nothing can be known
            appendonly = None
    finally:
        with contextlib.suppress(Exception):
            await client.aclose()
    if appendonly == "no":
        steps.append(
            Step(
                "warning",
                "server",
                "appendonly",
                "is off: a Redis restart loses entries it confirmed (H7). Set appendonly yes with "
                "appendfsync always (or everysec) in redis.conf",
            )
        )
    return steps


__all__ = ["provision"]
