"""The AMQP URL settings and the robust connection: reconnects forever, one log line per outage."""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aio_pika
import aio_pika.abc
import aiormq
import aiormq.abc
import aiormq.exceptions

from outboxkit.brokers._errors import Outage
from outboxkit.brokers.rabbitmq.wire import CE_AMQP_PREFIX, CE_RABBITMQ_PREFIX
from outboxkit.core.urls import redact_url
from outboxkit.errors import ConfigurationError, UnavailableError

log = logging.getLogger("outboxkit.rabbitmq")

DEFAULT_EXCHANGE = "outboxkit"


# Our own URL options; the rest of the query string (heartbeat, ...) goes to aio-pika untouched.
_OPTIONS = {"exchange", "cloudevents", "prefetch"}


_BINDINGS = {"amqp": (CE_AMQP_PREFIX,), "both": (CE_AMQP_PREFIX, CE_RABBITMQ_PREFIX)}


class _Settings:
    def __init__(self, url: str) -> None:
        try:
            parts = urlsplit(url)
            port = parts.port or 5672
        except ValueError:
            raise ConfigurationError(f"bad AMQP URL {redact_url(url)!r}") from None
        if parts.scheme not in ("amqp", "amqps"):
            raise ConfigurationError(f"not an AMQP URL: {redact_url(url)!r} (use amqp://user:pass@host:5672/vhost)")
        query = parse_qsl(parts.query, keep_blank_values=True)
        ours = {k: v for k, v in query if k in _OPTIONS}
        self.host = parts.hostname or "127.0.0.1"
        self.port = port
        self.exchange = ours.get("exchange") or DEFAULT_EXCHANGE
        binding = ours.get("cloudevents", "both")
        if binding not in _BINDINGS:
            raise ConfigurationError(f"cloudevents={binding!r} in {redact_url(url)!r}: use 'amqp' or 'both'")
        self.prefixes = _BINDINGS[binding]
        try:
            self.prefetch = int(ours.get("prefetch", "256"))
        except ValueError:
            raise ConfigurationError(f"prefetch must be an integer in {redact_url(url)!r}") from None
        rest = [(k, v) for k, v in query if k not in _OPTIONS]
        self.client_url = urlunsplit(parts._replace(query=urlencode(rest)))
        self.display = redact_url(url)


async def probe(host: str, port: int, display: str, timeout: float = 3.0) -> None:
    """Fail fast, in one line, when nothing listens: the AMQP handshake errors are less clear."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError) as exc:
        raise UnavailableError(f"RabbitMQ at {display} is unavailable: {exc or 'timed out'}") from None
    writer.close()


_OURS: weakref.WeakSet[Any] = weakref.WeakSet()


def _is_ours(record: logging.LogRecord) -> bool:
    """Whether a library record is about one of our connections during an outage."""
    args = record.args if isinstance(record.args, tuple) else ()
    first = args[0] if args else None
    if record.name == "aio_pika.robust_connection":  # "Connection attempt to %s failed", per retry
        return any(first is c for c in _OURS)
    if record.name == "aio_pika.tools":  # a robust channel's close callback finds the connection gone
        owner = getattr(getattr(getattr(first, "callback", None), "__self__", None), "_connection", None)
        return any(owner is c for c in _OURS)
    if record.name == "aiormq.connection" and record.exc_info and len(_OURS):
        return isinstance(record.exc_info[1], ConnectionError)  # the socket dropped: an outage
    return False


class _OneLinePerOutage(logging.Filter):
    """aio-pika and aiormq log on every reconnect attempt and on every dropped socket, some of it at
    ERROR with a traceback. For our connections the adapter logs one line when an outage starts and
    one when it ends; their records are demoted to DEBUG (still there for ``--debug``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.DEBUG and _is_ours(record):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


for _name in ("aio_pika.robust_connection", "aio_pika.tools", "aiormq.connection"):
    logging.getLogger(_name).addFilter(_OneLinePerOutage())


async def connect(
    url: str, *, name: str = "outboxkit", reconnect_interval: float = 0.5
) -> tuple[aio_pika.abc.AbstractRobustConnection, Outage]:
    """A robust connection that reconnects forever after a successful first connect (aio-pika never
    gives up); fails fast with ``UnavailableError`` when the broker cannot be reached now."""
    settings = _Settings(url)
    await probe(settings.host, settings.port, settings.display)
    outage = Outage(log, f"RabbitMQ {settings.display}")
    try:
        conn = await aio_pika.connect_robust(
            settings.client_url,
            timeout=5,
            reconnect_interval=reconnect_interval,
            client_properties={"connection_name": name},
        )
    except (aiormq.exceptions.AMQPError, OSError, TimeoutError) as exc:
        raise UnavailableError(f"RabbitMQ at {settings.display} is unavailable: {exc or type(exc).__name__}") from None
    _OURS.add(conn)
    conn.close_callbacks.add(lambda *_: outage.down())
    conn.reconnect_callbacks.add(lambda *_: outage.up())
    return conn, outage


def blocked(conn: aio_pika.abc.AbstractConnection | None) -> bool:
    """Whether RabbitMQ blocks this connection's publishes (a memory or disk alarm): it then reads
    nothing from the socket until the alarm clears, so confirms stop without the connection dropping.
    aiormq keeps the state in a private event; without it we cannot know (False)."""
    transport = getattr(conn, "transport", None)
    unblocked = getattr(getattr(transport, "connection", None), "_Connection__connection_unblocked", None)
    return isinstance(unblocked, asyncio.Event) and not unblocked.is_set()


async def declare_exchange(channel: aio_pika.abc.AbstractChannel, name: str) -> aio_pika.abc.AbstractExchange:
    """The durable topic exchange (idempotent; a robust channel re-declares it after a reconnect)."""
    try:
        return await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True)
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        raise ConfigurationError(
            f"exchange {name!r} exists with other settings (want a durable topic): {exc}"
        ) from None
