"""Every broker adapter's translation table (H12), exercised row by row with the client library's own
exception objects: each case below is an exception as the library raises it, and the outboxkit class
the relay must see. A coverage test per table checks that no row goes unexercised, so a row added
without a case fails here. docs/exceptions.md lists the same rows and names these tests.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import aiomqtt
import aiormq.channel
import aiormq.exceptions
import nats.errors
import nats.js.errors
import paho.mqtt.client as paho
import pytest
from aiormq.abc import DeliveredMessage
from confluent_kafka import KafkaError, KafkaException
from nats.aio.msg import Msg
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode
from pamqp import commands as spec
from pamqp.header import ContentHeader
from redis._parsers.base import BaseParser
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, InvalidResponse
from redis.exceptions import TimeoutError as RedisTimeoutError

from outboxkit.brokers import _errors, kafka, mqtt, rabbitmq
from outboxkit.brokers import redis as redis_bus
from outboxkit.brokers._errors import Outage, Row
from outboxkit.brokers.nats import errors as nats_bus
from outboxkit.core.envelope import OutboxEvent, new_event_id
from outboxkit.errors import (
    ConfigurationError,
    DeliveryError,
    PermanentError,
    TransientError,
    UnavailableError,
    UnroutableError,
)

U, T, R, P = UnavailableError, TransientError, UnroutableError, PermanentError


class Unheard(Exception):
    """An exception no table can know."""


def event(payload: bytes = b"{}", topic: str = "orders.created") -> OutboxEvent:
    return OutboxEvent(seq=1, id=new_event_id(), topic=topic, payload=payload)


def down(what: str = "test") -> Outage:
    outage = Outage(logging.getLogger("test"), what)
    outage.down("cut")
    return outage


def row_hit(exc: BaseException, table: Sequence[Row]) -> int | None:
    """Index of the first row ``exc`` matches: the one the adapter applies."""
    return next((i for i, (cls, _) in enumerate(table) if isinstance(exc, cls)), None)


def assert_every_row_hit(cases: Sequence[BaseException], table: Sequence[Row]) -> None:
    hit = {row_hit(exc, table) for exc in cases}
    missed = [table[i][0].__name__ for i in range(len(table)) if i not in hit]
    assert not missed, f"rows without a case: {missed}"


# -- the shared rules --------------------------------------------------------------------------------


def test_timeout_is_counted_while_connected_and_not_during_an_outage() -> None:
    outage = Outage(logging.getLogger("test"), "bus")
    assert type(_errors.timed_out(outage, "no ack")) is TransientError
    outage.down()
    assert type(_errors.timed_out(outage, "no ack")) is UnavailableError
    outage.up()
    assert type(_errors.timed_out(outage, "no ack")) is TransientError
    outage.kill("server said no")
    error = _errors.timed_out(outage, "no ack")
    assert type(error) is UnavailableError
    assert "server said no" in str(error)


def test_outage_logs_one_line_per_change_and_one_for_a_dead_client(caplog: pytest.LogCaptureFixture) -> None:
    outage = Outage(logging.getLogger("outboxkit.test"), "Bus x://h")
    with caplog.at_level(logging.WARNING, "outboxkit.test"):
        for _ in range(3):
            outage.down("reset")
        outage.up()
        outage.up()
        outage.kill("the server replied -ERR 'x'")
        outage.kill("again")
        outage.down("ignored: dead already")
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "Bus x://h connection lost (reset); reconnecting in the background"
    assert lines[1].startswith("Bus x://h reconnected after ")
    assert lines[2] == "Bus x://h client closed for good: the server replied -ERR 'x'; a new publisher must be built"
    assert len(lines) == 3
    assert caplog.records[2].levelno == logging.ERROR


def test_our_own_close_is_not_an_outage() -> None:
    outage = Outage(logging.getLogger("test"), "bus")
    outage.closing = True
    outage.down()
    outage.kill("closed by us")
    assert not outage.is_down


def test_unexpected_is_counted_and_logged_once_per_type(caplog: pytest.LogCaptureFixture) -> None:
    class Strange(Exception):
        pass

    with caplog.at_level(logging.WARNING, "outboxkit.brokers"):
        first = _errors.unexpected(Strange("a"), "Bus publish")
        second = _errors.unexpected(Strange("b"), "Bus publish")
    assert type(first) is TransientError and type(second) is TransientError
    assert "Strange: a" in str(first)
    assert len([r for r in caplog.records if "Strange" in r.getMessage()]) == 1


def test_consumer_errors_let_only_unavailable_or_transient_out() -> None:
    def table(exc: Exception) -> DeliveryError:
        return PermanentError(str(exc)) if isinstance(exc, ValueError) else UnavailableError(str(exc))

    with pytest.raises(TransientError) as info, _errors.consumer_errors(table):
        raise ValueError("a consumer has no event to dead-letter")
    assert type(info.value) is TransientError
    assert isinstance(info.value.__cause__, ValueError)
    with pytest.raises(UnavailableError), _errors.consumer_errors(table):
        raise OSError("reset")
    # Already classed errors, and a ConfigurationError of connect(), pass unchanged.
    with pytest.raises(ConfigurationError), _errors.consumer_errors(table):
        raise ConfigurationError("no stream")
    with pytest.raises(UnroutableError), _errors.consumer_errors(table):
        raise UnroutableError("no group")


# -- NATS ----------------------------------------------------------------------------------------------

NATS_CASES: list[tuple[BaseException, type[DeliveryError]]] = [
    (nats.errors.ConnectionClosedError(), U),
    (nats.errors.ConnectionDrainingError(), U),
    (nats.errors.ConnectionReconnectingError(), U),
    (nats.errors.OutboundBufferLimitError(), U),
    (nats.errors.StaleConnectionError(), U),
    (nats.errors.UnexpectedEOF(), U),
    (nats.errors.NoServersError(), U),
    (nats.errors.AuthorizationError(), U),
    (nats.errors.MaxPayloadError(), P),
    (nats.errors.BadSubjectError(), P),
    (nats.errors.BadHeaderError("bad\r\nkey"), P),
    (nats.js.errors.NoStreamResponseError(), R),
    (nats.errors.NoRespondersError(), R),
    (nats.js.errors.TooManyStalledMsgsError(), T),
    # not in the table: counted
    (nats.errors.ProtocolError(), T),
    (nats.js.errors.Error("something new"), T),
    (Unheard("?"), T),
]


@pytest.mark.parametrize(("exc", "kind"), NATS_CASES, ids=lambda v: type(v).__name__)
def test_nats_publish_table(exc: BaseException, kind: type[DeliveryError]) -> None:
    error = nats_bus.translate(exc, event())
    assert type(error) is kind, error
    assert str(error)


def test_nats_every_publish_row_has_a_case() -> None:
    assert_every_row_hit([exc for exc, _ in NATS_CASES], nats_bus.PUBLISH_ERRORS)


@pytest.mark.parametrize(("code", "kind"), sorted(nats_bus.JS_CODES.items()))
def test_nats_jetstream_code_table(code: int, kind: type[DeliveryError]) -> None:
    # As the server sends it in a PubAck: {"error": {"code": 400, "err_code": 10054, "description": ...}}
    exc = nats_bus._pub_ack_error(_reply(f'{{"error":{{"code":400,"err_code":{code},"description":"d"}}}}'))
    assert exc is not None
    error = nats_bus.translate(exc, event())
    assert type(error) is kind, error
    assert f"err_code {code}" in str(error) or kind is UnroutableError


def test_nats_jetstream_codes_of_note() -> None:
    # Spot checks that the table says what the docs say (a row moved by mistake fails here).
    assert nats_bus.JS_CODES[10054] is PermanentError  # message over the stream's max_msg_size
    assert nats_bus.JS_CODES[10071] is PermanentError  # a row's Nats-Expected-Last-Sequence header
    assert nats_bus.JS_CODES[10077] is TransientError  # a full stream with discard=new
    assert nats_bus.JS_CODES[10008] is UnavailableError  # JetStream temporarily unavailable


def test_nats_unknown_jetstream_code_is_counted_not_permanent() -> None:
    exc = nats_bus._pub_ack_error(_reply('{"error":{"code":400,"err_code":19999,"description":"from the future"}}'))
    assert exc is not None
    error = nats_bus.translate(exc, event())
    assert type(error) is TransientError
    assert "from the future" in str(error)


def test_nats_bare_503_is_unavailable() -> None:
    assert type(nats_bus.translate(nats.js.errors.ServiceUnavailableError(), event())) is UnavailableError
    no_code = nats.js.errors.APIError(code=503, description="unavailable")
    assert type(nats_bus.translate(no_code, event())) is UnavailableError
    assert type(nats_bus.translate(nats.js.errors.APIError(code=500), event())) is TransientError


def test_nats_no_responders_reply_is_unroutable_and_a_pub_ack_is_none() -> None:
    status = _reply("", headers={"Status": "503"})
    assert type(nats_bus.translate(nats_bus._pub_ack_error(status), event())) is UnroutableError  # type: ignore[arg-type]
    assert nats_bus._pub_ack_error(_reply('{"stream":"S","seq":7}')) is None


def test_nats_timeout_depends_on_the_connection() -> None:
    assert type(nats_bus.translate(nats.errors.TimeoutError(), event())) is TransientError
    assert type(nats_bus.translate(nats.errors.TimeoutError(), event(), down())) is UnavailableError


def test_nats_dead_client_names_the_reason() -> None:
    outage = Outage(logging.getLogger("test"), "NATS n://h")
    outage.kill("the server replied -ERR 'authorization violation'")
    error = nats_bus.translate(nats.errors.ConnectionClosedError(), event(), outage)
    assert type(error) is UnavailableError
    assert "authorization violation" in str(error)


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (nats.errors.ConnectionClosedError(), U),
        (nats.errors.StaleConnectionError(), U),
        (nats.errors.TimeoutError(), T),
        (nats.js.errors.APIError(code=409, description="Consumer Deleted"), T),
        (nats.js.errors.NotFoundError(code=404, err_code=10014), T),
        (Unheard("?"), T),
    ],
    ids=lambda v: type(v).__name__,
)
def test_nats_consumer_table(exc: Exception, kind: type[DeliveryError]) -> None:
    assert type(_errors.for_consumer(nats_bus._consumer_error(exc))) is kind


def test_nats_plain_asyncio_timeout_is_in_the_tables(caplog: pytest.LogCaptureFixture) -> None:
    # nats-py's fetch() raises the plain asyncio TimeoutError when its deadline passes between its
    # own steps; it is "no answer in time", not an unknown error to warn about.
    with caplog.at_level(logging.WARNING):
        assert type(_errors.for_consumer(nats_bus._consumer_error(TimeoutError()))) is TransientError
        assert type(nats_bus.translate(TimeoutError(), event())) is TransientError
        assert type(nats_bus.translate(TimeoutError(), event(), down())) is UnavailableError
    assert not [r for r in caplog.records if "error table" in r.getMessage()]


def _reply(data: str, headers: dict[str, str] | None = None) -> Msg:
    return Msg(_client=None, subject="_INBOX.x.1", data=data.encode(), headers=headers)  # type: ignore[arg-type]


# -- RabbitMQ ------------------------------------------------------------------------------------------


def _closed(code: int, text: str) -> aiormq.exceptions.AMQPError:
    """The exception aiormq raises when the broker closes the channel with this reply."""
    return aiormq.channel.exception_by_code(spec.Channel.Close(reply_code=code, reply_text=text))


def _returned() -> aiormq.exceptions.PublishError:
    delivery = spec.Basic.Return(reply_code=312, reply_text="NO_ROUTE", exchange="x", routing_key="orders.created")
    message = DeliveredMessage(delivery=delivery, header=ContentHeader(), body=b"{}", channel=None)  # type: ignore[arg-type]
    return aiormq.exceptions.PublishError(message, delivery)


def _routing_key_too_long() -> ValueError:
    with pytest.raises(ValueError) as info:
        aiormq.channel._check_routing_key("k" * 256)
    return info.value


TOO_LARGE = "PRECONDITION_FAILED - message size 2097152 is larger than configured max size 1048576"

RABBIT_CASES: list[tuple[BaseException, type[DeliveryError]]] = [
    (_returned(), R),
    (aiormq.exceptions.DeliveryError(None, spec.Basic.Nack(delivery_tag=7)), T),
    (_closed(404, "NOT_FOUND - no exchange 'outboxkit' in vhost '/'"), R),
    (_closed(403, "ACCESS_REFUSED - write access to exchange 'outboxkit' refused for user 'app'"), R),
    (_closed(406, "PRECONDITION_FAILED - unknown delivery tag 1"), T),
    (_closed(405, "RESOURCE_LOCKED - cannot obtain exclusive access"), T),
    (_closed(541, "INTERNAL_ERROR"), T),
    (aiormq.exceptions.ChannelInvalidStateError("<Channel: 1> closed"), T),
    (aiormq.exceptions.ConnectionClosed(320, "CONNECTION_FORCED - broker forced connection closure"), U),
    (aiormq.exceptions.ConnectionNotAllowed("NOT_ALLOWED - vhost / not found"), U),
    (aiormq.exceptions.AuthenticationError("PLAIN", "AMQPLAIN"), U),
    (ConnectionResetError(104, "Connection reset by peer"), U),
    (_routing_key_too_long(), P),
    (Unheard("?"), T),
]


@pytest.mark.parametrize(("exc", "kind"), RABBIT_CASES, ids=lambda v: type(v).__name__)
def test_rabbitmq_publish_table(exc: BaseException, kind: type[DeliveryError]) -> None:
    error = rabbitmq.translate(exc, event())
    assert type(error) is kind, error
    assert str(error)


def test_rabbitmq_every_publish_row_has_a_case() -> None:
    assert_every_row_hit([exc for exc, _ in RABBIT_CASES], rabbitmq.PUBLISH_ERRORS)


def test_rabbitmq_oversized_is_permanent_only_for_the_oversized_one() -> None:
    closed = _closed(406, TOO_LARGE)
    assert type(rabbitmq.translate(closed, event(b"x" * 2_097_152))) is PermanentError
    assert type(rabbitmq.translate(closed, event(b"small"))) is TransientError


def test_rabbitmq_a_channel_lost_with_its_connection_is_not_counted() -> None:
    closed = aiormq.exceptions.ChannelInvalidStateError("<Channel: 1> closed")
    assert type(rabbitmq.translate(closed, event(), down())) is UnavailableError
    assert type(rabbitmq.translate(_closed(541, "INTERNAL_ERROR"), event(), down())) is UnavailableError
    # ...but a routing verdict stays what it is.
    assert type(rabbitmq.translate(_returned(), event(), down())) is UnroutableError


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (aiormq.exceptions.ConnectionClosed(320, "CONNECTION_FORCED"), U),
        (ConnectionResetError(), U),
        (aiormq.exceptions.ChannelInvalidStateError("closed"), U),
        (_closed(404, "NOT_FOUND - no queue 'q'"), T),
        (Unheard("?"), T),
    ],
    ids=lambda v: type(v).__name__,
)
def test_rabbitmq_consumer_table(exc: Exception, kind: type[DeliveryError]) -> None:
    assert type(_errors.for_consumer(rabbitmq.errors._consumer_error(exc))) is kind


def test_rabbitmq_consumer_every_row_has_a_case() -> None:
    cases = [
        aiormq.exceptions.ConnectionClosed(320, "x"),
        ConnectionResetError(),
        aiormq.exceptions.ChannelInvalidStateError("closed"),
        _closed(404, "x"),
    ]
    assert_every_row_hit(cases, rabbitmq.CONSUMER_ERRORS)


def test_rabbitmq_blocked_reads_aiormqs_unblocked_event() -> None:
    import asyncio

    class Underlying:
        def __init__(self) -> None:
            self._Connection__connection_unblocked = asyncio.Event()

    class Transport:
        connection = Underlying()

    class Conn:
        transport = Transport()

    conn = Conn()
    assert rabbitmq.blocked(conn) is True  # type: ignore[arg-type]
    conn.transport.connection._Connection__connection_unblocked.set()
    assert rabbitmq.blocked(conn) is False  # type: ignore[arg-type]
    assert rabbitmq.blocked(None) is False
    # The name aiormq uses today: if it changes, blocked() silently says False; this says so loudly.
    import aiormq.connection

    assert "_Connection__connection_unblocked" in aiormq.connection.Connection.__init__.__code__.co_names


# -- Kafka ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "kind"), sorted(kafka.CODES.items()), ids=lambda v: str(v))
def test_kafka_code_table(code: int, kind: type[DeliveryError]) -> None:
    error = kafka.translate(KafkaError(code), "orders")
    assert type(error) is kind, error
    # The same code inside a KafkaException (what produce() and commit() raise).
    assert type(kafka.translate(KafkaException(KafkaError(code)), "orders")) is kind


def test_kafka_codes_of_note() -> None:
    E = KafkaError
    assert kafka.CODES[E.MSG_SIZE_TOO_LARGE] is PermanentError
    assert kafka.CODES[E.UNKNOWN_TOPIC_OR_PART] is UnroutableError
    assert kafka.CODES[E._ALL_BROKERS_DOWN] is UnavailableError
    assert kafka.CODES[E._MSG_TIMED_OUT] is TransientError
    assert kafka.CODES[E._FATAL] is UnavailableError


def test_kafka_fatal_error_is_unavailable_whatever_its_code() -> None:
    for code in (KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, KafkaError.NOT_ENOUGH_REPLICAS, KafkaError.UNKNOWN):
        error = kafka.translate(KafkaError(code, "producer state broken", fatal=True), "orders")
        assert type(error) is UnavailableError, (code, error)


def test_kafka_unknown_code_and_unknown_exception_are_counted() -> None:
    assert KafkaError.REBALANCE_IN_PROGRESS not in kafka.CODES
    assert type(kafka.translate(KafkaError(KafkaError.REBALANCE_IN_PROGRESS), "orders")) is TransientError
    assert type(kafka.translate(KafkaError(KafkaError.UNKNOWN), "orders")) is TransientError
    assert type(kafka.translate(Unheard("?"), "orders")) is TransientError
    assert type(kafka.translate(RuntimeError("something else"), "orders")) is TransientError


def test_kafka_client_side_exceptions() -> None:
    assert type(kafka.translate(BufferError("Local: Queue full"), "orders")) is TransientError
    # What confluent-kafka raises once the handle is closed: only a new client can send.
    assert type(kafka.translate(RuntimeError("Producer has been closed"), "orders")) is UnavailableError
    assert type(kafka.translate(RuntimeError("Consumer closed"), "orders")) is UnavailableError


def test_kafka_message_timeout_depends_on_the_connection() -> None:
    timed_out = KafkaError(KafkaError._MSG_TIMED_OUT)
    assert type(kafka.translate(timed_out, "orders", Outage(logging.getLogger("t"), "k"))) is TransientError
    assert type(kafka.translate(timed_out, "orders", down())) is UnavailableError


def test_kafka_producer_is_replaced_for_broken_idempotence_codes() -> None:
    E = KafkaError
    assert {E.OUT_OF_ORDER_SEQUENCE_NUMBER, E.PRODUCER_FENCED, E._FATAL} <= kafka.errors._REBUILD
    assert not {E._TRANSPORT, E._ALL_BROKERS_DOWN, E._PURGE_QUEUE, E._MSG_TIMED_OUT} & kafka.errors._REBUILD


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (KafkaException(KafkaError(KafkaError.REBALANCE_IN_PROGRESS)), T),
        (KafkaException(KafkaError(KafkaError.ILLEGAL_GENERATION)), T),
        (KafkaException(KafkaError(KafkaError._ALL_BROKERS_DOWN)), U),
        (KafkaException(KafkaError(KafkaError._FATAL, "fenced", fatal=True)), U),
        (KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)), T),  # permanent for a publish only
        (RuntimeError("Consumer closed"), U),
        (Unheard("?"), T),
    ],
    ids=lambda v: str(v)[:40],
)
def test_kafka_consumer_table(exc: Exception, kind: type[DeliveryError]) -> None:
    assert type(_errors.for_consumer(kafka.errors._consumer_error(exc))) is kind


# -- Redis ---------------------------------------------------------------------------------------------

# Error replies as the server sends them (after the "-"), parsed by redis-py's own parser.
REDIS_REPLIES: list[tuple[str, type[DeliveryError]]] = [
    ("NOAUTH Authentication required.", U),
    ("WRONGPASS invalid username-password pair or user is disabled.", U),
    ("ERR max number of clients reached", U),
    ("LOADING Redis is loading the dataset in memory", U),
    ("READONLY You can't write against a read only replica.", U),
    ("OOM command not allowed when used memory > 'maxmemory'.", U),
    ("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.", U),
    ("CLUSTERDOWN The cluster is down", U),
    ("NOPERM User app has no permissions to run the 'xadd' command", R),
    ("MOVED 3999 127.0.0.1:6381", R),
    ("ASK 3999 127.0.0.1:6381", R),
    ("TRYAGAIN Multiple keys request during rehashing of slot", T),
    ("EXECABORT Transaction discarded because of previous errors.", T),
    ("NOSCRIPT No matching script. Please use EVAL.", T),
    ("WRONGTYPE Operation against a key holding the wrong kind of value", R),
    ("MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk.", U),
    ("NOREPLICAS Not enough good replicas to write.", U),
    ("BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.", T),
    ("ERR unknown command 'XADD', with args beginning with: 'orders' ", T),
    ("SOMETHINGNEW never seen before", T),
]

REDIS_OTHER: list[tuple[BaseException, type[DeliveryError]]] = [
    (RedisConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused."), U),
    (InvalidResponse("Protocol Error: b'?'"), U),
    (DataError("Invalid input of type: 'dict'."), P),
    (RedisTimeoutError("Timeout reading from 127.0.0.1:6379"), T),
    (ConnectionResetError(104, "Connection reset by peer"), U),
    (Unheard("?"), T),
]


def _reply_error(reply: str) -> BaseException:
    error: BaseException = BaseParser.parse_error(reply)
    return error


@pytest.mark.parametrize(("reply", "kind"), REDIS_REPLIES, ids=lambda v: str(v).split(" ")[0])
def test_redis_reply_table(reply: str, kind: type[DeliveryError]) -> None:
    error = redis_bus.translate(_reply_error(reply), "orders")
    assert type(error) is kind, error
    # The reply's first word is in the message, although redis-py strips it from its exception.
    assert reply.split(" ")[0] in str(error)


@pytest.mark.parametrize(("exc", "kind"), REDIS_OTHER, ids=lambda v: type(v).__name__)
def test_redis_client_side_table(exc: BaseException, kind: type[DeliveryError]) -> None:
    assert type(redis_bus.translate(exc, "orders")) is kind


def test_redis_every_row_has_a_case() -> None:
    from redis.exceptions import AuthorizationError

    cases = [_reply_error(r) for r, _ in REDIS_REPLIES] + [e for e, _ in REDIS_OTHER]
    cases.append(AuthorizationError("ACL"))  # raised by redis-py for a refused AUTH on connect
    assert_every_row_hit(cases, redis_bus.PUBLISH_ERRORS)
    words = {r.split(" ")[0] for r, _ in REDIS_REPLIES}
    assert set(redis_bus.REPLY_PREFIXES) <= words


def test_redis_timeout_during_an_outage_is_not_counted() -> None:
    timeout = RedisTimeoutError("Timeout reading from 127.0.0.1:6379")
    assert type(redis_bus.translate(timeout, "orders", down())) is UnavailableError


def test_redis_consumer_never_gets_permanent() -> None:
    assert type(_errors.for_consumer(redis_bus.errors._consumer_error(DataError("x")))) is TransientError
    assert type(_errors.for_consumer(redis_bus.errors._consumer_error(_reply_error("READONLY x")))) is UnavailableError


# -- MQTT ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "kind"), sorted(mqtt.PUBACK_CODES.items()), ids=lambda v: str(v))
def test_mqtt_puback_table(code: int, kind: type[DeliveryError]) -> None:
    # 0x95 is no legal PUBACK code (paho will not build it), but a broker that sends it means it.
    packet = PacketTypes.PUBACK if code != 0x95 else PacketTypes.DISCONNECT
    reason = ReasonCode(packet, identifier=code)  # type: ignore[no-untyped-call]
    error = mqtt.puback_error(int(reason.value), "ev-1", reason)
    assert type(error) is kind, error
    assert "ev-1" in str(error)


def test_mqtt_puback_codes_of_note() -> None:
    assert mqtt.PUBACK_CODES[0x10] is UnroutableError
    assert mqtt.PUBACK_CODES[0x87] is UnroutableError  # not authorized: an ACL, like NOPERM / 403
    assert mqtt.PUBACK_CODES[0x97] is TransientError
    assert mqtt.PUBACK_CODES[0x99] is PermanentError


def test_mqtt_unknown_puback_code_is_counted() -> None:
    assert 0x9E not in mqtt.PUBACK_CODES
    assert type(mqtt.puback_error(0x9E, "ev-1", "Shared Subscriptions not supported")) is TransientError


@pytest.mark.parametrize(("rc", "kind"), sorted(mqtt.PAHO_CODES.items()), ids=lambda v: str(v))
def test_mqtt_paho_return_code_table(rc: int, kind: type[DeliveryError]) -> None:
    assert type(mqtt.paho_error(rc, "ev-1")) is kind


def test_mqtt_paho_return_codes_as_paho_gives_them() -> None:
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.max_queued_messages_set(1)
    first = client.publish("orders/created", b"{}", qos=1)  # not connected: queued, rc NO_CONN
    assert first.rc == paho.MQTT_ERR_NO_CONN
    assert type(mqtt.paho_error(first.rc, "ev-1")) is UnavailableError
    second = client.publish("orders/created", b"{}", qos=1)  # the queue of one is full
    assert second.rc == paho.MQTT_ERR_QUEUE_SIZE
    assert type(mqtt.paho_error(second.rc, "ev-2")) is TransientError
    assert type(mqtt.paho_error(paho.MQTT_ERR_UNKNOWN, "ev-3")) is TransientError


def _paho_value_error(topic: str) -> ValueError:
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    with pytest.raises(ValueError) as info:
        client.publish(topic, b"{}", qos=1)
    return info.value


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (aiomqtt.MqttCodeError(ReasonCode(PacketTypes.CONNACK, identifier=0x87), "refused"), U),  # type: ignore[no-untyped-call]
        (aiomqtt.MqttCodeError(paho.MQTT_ERR_CONN_LOST, "lost"), U),
        (aiomqtt.MqttError("Disconnected during message iteration"), U),
        (ConnectionRefusedError(111, "Connection refused"), U),
        (TimeoutError(), U),
        (_paho_value_error("orders/#"), P),  # a wildcard in a topic name
        (PermanentError("header clash"), P),
        (Unheard("?"), T),
    ],
    ids=lambda v: type(v).__name__,
)
def test_mqtt_client_table(exc: BaseException, kind: type[DeliveryError]) -> None:
    assert type(mqtt.client_error(exc, "MQTT publish")) is kind


def test_mqtt_consumer_never_gets_permanent() -> None:
    assert type(_errors.for_consumer(mqtt.errors._consumer_error(_paho_value_error("a/+")))) is TransientError
    assert type(_errors.for_consumer(mqtt.errors._consumer_error(aiomqtt.MqttError("gone")))) is UnavailableError
