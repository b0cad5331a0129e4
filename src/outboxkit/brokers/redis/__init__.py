"""Redis Streams: XADD with its reply as the confirmation, a consumer group for subscribers.

The topic names the stream. Redis has no CloudEvents binding, so each entry carries the attributes
as fields of the same names (``specversion``, ``id``, ``source``, ``type``, ``time``, ``subject``,
``datacontenttype``), the payload as ``data`` and each user header ``name`` as ``h-name``
(docs/buses/redis.md).

Publishing: XADDs issued in the same event-loop tick go out as one non-transactional pipeline on
one connection, and the next pipeline only after the previous one answered, so entries are stored
in call order (G5). The XADD reply (the entry id) is the confirmation (G3). Redis 7 has no dedupe
id (``native_dedupe=False``): a re-sent event is a second entry, which the inbox drops (G7).

Durability (H7): Redis acknowledges an XADD once it is in memory. Without AOF (``appendonly no``)
a restart loses acknowledged entries; ``connect()`` warns about it. Safe: ``appendonly yes`` with
``appendfsync always`` (or ``everysec``, which can lose about a second on an OS crash).

The adapter: ``client`` (URL options, connections, durability check), ``wire`` (entry fields both
ways, RESP packing), ``publisher``, ``consumer`` and ``errors`` (the translation tables, H12;
docs/exceptions.md).
"""

from outboxkit.brokers.redis.client import DEFAULT_MAX_BYTES, RedisOptions, parse_url, warn_if_not_durable
from outboxkit.brokers.redis.consumer import RedisConsumer, default_consumer_name, unique_consumer_name
from outboxkit.brokers.redis.errors import PUBLISH_ERRORS, REPLY_PREFIXES, translate
from outboxkit.brokers.redis.publisher import RedisPublisher
from outboxkit.brokers.redis.wire import DATA_FIELD, HEADER_PREFIX, _pack, delivered_from, entry_fields, read_stream

__all__ = [
    "DATA_FIELD",
    "DEFAULT_MAX_BYTES",
    "HEADER_PREFIX",
    "PUBLISH_ERRORS",
    "REPLY_PREFIXES",
    "RedisConsumer",
    "RedisOptions",
    "RedisPublisher",
    "_pack",
    "default_consumer_name",
    "delivered_from",
    "entry_fields",
    "parse_url",
    "read_stream",
    "translate",
    "unique_consumer_name",
    "warn_if_not_durable",
]
