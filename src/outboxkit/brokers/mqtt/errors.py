"""MQTT error translation (H12): PUBACK reason codes, paho's return codes, client exceptions.

Every row is listed in docs/exceptions.md and exercised by tests/unit/test_broker_classification.py.
"""

from __future__ import annotations

import aiomqtt
import paho.mqtt.client as paho

from outboxkit.brokers._errors import unexpected
from outboxkit.errors import DeliveryError, PermanentError, TransientError, UnavailableError, UnroutableError

_NO_SUBSCRIBERS = 0x10


#: MQTT 5 PUBACK/PUBREC reason codes >= 0x80 (and 0x10) -> class; an unlisted failure code is a
#: counted TransientError. 0x95 is not a legal PUBACK code, but a broker that sends it means it.
PUBACK_CODES: dict[int, type[DeliveryError]] = {
    0x10: UnroutableError,  # no matching subscribers: the broker dropped it (with require_subscriber)
    0x80: TransientError,  # unspecified error
    0x83: PermanentError,  # implementation specific error: the broker will not take this message
    0x87: UnroutableError,  # not authorized: an ACL denies this topic (fixed by granting it)
    0x90: PermanentError,  # topic name invalid
    0x91: TransientError,  # packet identifier in use
    0x95: PermanentError,  # packet too large
    0x97: TransientError,  # quota exceeded
    0x99: PermanentError,  # payload format invalid
}


#: paho's return code of ``publish()`` (the message was not queued) -> class.
PAHO_CODES: dict[int, type[DeliveryError]] = {
    paho.MQTT_ERR_NO_CONN: UnavailableError,
    paho.MQTT_ERR_CONN_LOST: UnavailableError,
    paho.MQTT_ERR_KEEPALIVE: UnavailableError,
    paho.MQTT_ERR_PAYLOAD_SIZE: PermanentError,
    paho.MQTT_ERR_QUEUE_SIZE: TransientError,
    paho.MQTT_ERR_NOMEM: TransientError,
}


def puback_error(code: int, event_id: str, reason: object) -> DeliveryError:
    """The outboxkit error of a refused PUBACK (``code`` >= 0x80, or 0x10 when a subscriber is required)."""
    kind = PUBACK_CODES.get(code, TransientError)
    if kind is UnroutableError and code == _NO_SUBSCRIBERS:
        return UnroutableError(f"no MQTT subscription matches the topic of {event_id}: the broker dropped it")
    if kind is UnroutableError:
        return UnroutableError(f"MQTT broker refused {event_id} for its topic: {reason} (0x{code:02X})")
    return kind(f"MQTT broker refused {event_id}: {reason} (0x{code:02X})")


def paho_error(rc: int, event_id: str) -> DeliveryError:
    """The outboxkit error of a ``publish()`` paho did not queue (its return code)."""
    kind = PAHO_CODES.get(rc, TransientError)
    return kind(f"MQTT publish of {event_id} failed: {paho.error_string(rc)}")


def client_error(exc: BaseException, what: str) -> DeliveryError:
    """An exception of paho/aiomqtt as an outboxkit error: a refused or lost connection (MqttError,
    MqttCodeError with a CONNACK/DISCONNECT reason code, a socket error, a timeout) is an outage;
    paho's ValueError (invalid topic, QoS, payload over 256 MB) refuses the message for good."""
    if isinstance(exc, DeliveryError):
        return exc
    if isinstance(exc, aiomqtt.MqttError | OSError | TimeoutError):
        return UnavailableError(f"{what}: {exc or type(exc).__name__}")
    if isinstance(exc, ValueError):
        return PermanentError(f"{what}: MQTT refused the message: {exc}")
    return unexpected(exc, what)


def _consumer_error(exc: Exception) -> DeliveryError:
    return client_error(exc, "MQTT consumer")
