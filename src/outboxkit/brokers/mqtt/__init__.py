"""MQTT (5 by default, 3.1.1 as an option): publish with PUBACK/PUBCOMP, CloudEvents MQTT binding.

``mqtt://[user:pass@]host:1883?qos=1&version=5`` (``mqtts://`` for TLS). The outbox topic
``orders.created`` is the MQTT topic ``orders/created``. MQTT 5 carries the CloudEvents attributes
as unprefixed user properties and ``datacontenttype`` as the Content Type property (binary mode);
MQTT 3.1.1 has no headers, so the message is a structured-mode JSON CloudEvent. MQTT has no dedupe
id: ``features.native_dedupe`` is False and subscribers de-duplicate on the ``id`` (the inbox does).

The connection is aiomqtt's (paho-mqtt underneath). aiomqtt hides what an outbox needs, so a small
subclass hooks four paho callbacks: PUBACK reason codes (MQTT 5 reports "no matching subscribers"
and refusals there), CONNACK properties (the broker's maximum packet size), raw incoming messages
(the DUP flag) and paho's manual acknowledgement. aiomqtt does not reconnect; :class:`_Link` does.
Durability (H7): Mosquitto keeps messages in memory and writes them to disk only at shutdown or
every ``autosave_interval`` (30 min): see docs/buses/mqtt.md for the safe settings.

The adapter: ``wire`` (URL, topics, encoding both ways), ``link`` (the client and the connection
that reconnects), ``publisher``, ``consumer`` and ``errors`` (the translation tables, H12;
docs/exceptions.md).
"""

from outboxkit.brokers.mqtt.consumer import MqttConsumer
from outboxkit.brokers.mqtt.errors import PAHO_CODES, PUBACK_CODES, client_error, paho_error, puback_error
from outboxkit.brokers.mqtt.link import _Client, drop_session, session_id
from outboxkit.brokers.mqtt.publisher import MqttPublisher
from outboxkit.brokers.mqtt.wire import Settings, decode, encode, mqtt_topic, outbox_topic, parse_url

__all__ = [
    "PAHO_CODES",
    "PUBACK_CODES",
    "MqttConsumer",
    "MqttPublisher",
    "Settings",
    "_Client",
    "client_error",
    "decode",
    "drop_session",
    "encode",
    "mqtt_topic",
    "outbox_topic",
    "paho_error",
    "parse_url",
    "puback_error",
    "session_id",
]
