"""The NATS connection (one log line per outage; closed-for-good detection) and helpers for subscribers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from outboxkit.brokers._errors import Outage
from outboxkit.brokers.base import Delivered
from outboxkit.core.urls import redact_url
from outboxkit.errors import ConfigurationError, UnavailableError

log = logging.getLogger("outboxkit.nats")


def split_options(url: str) -> tuple[str, dict[str, str]]:
    """``nats://h:4222?ack_wait=5`` -> (``nats://h:4222``, {"ack_wait": "5"}): options are ours, not the server's."""
    parts = urlsplit(url)
    options = dict(parse_qsl(parts.query))
    return urlunsplit(parts._replace(query="")), options


def _check_url(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme not in ("nats", "tls"):
        raise ConfigurationError(f"not a NATS URL: {redact_url(url)!r} (use nats://host:4222)")
    try:
        port = parts.port or 4222
    except ValueError:
        raise ConfigurationError(f"bad port in NATS URL {redact_url(url)!r}") from None
    return parts.hostname or "127.0.0.1", port


async def probe(url: str, timeout: float = 3.0) -> None:
    """Fail fast, in one line, when nothing listens at ``url``: nats-py would retry forever."""
    host, port = _check_url(url)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError) as exc:
        raise UnavailableError(f"NATS at {redact_url(url)} is unavailable: {exc or 'timed out'}") from None
    writer.close()


async def connect(
    url: str,
    *,
    name: str = "outboxkit",
    outage: Outage | None = None,
    on_closed: Callable[[], None] | None = None,
    on_error: Callable[[Exception], None] | None = None,
) -> Client:
    """A nats-py client that reconnects forever after a successful first connect.

    One line is logged per lost connection. A caller that passes its ``outage`` (and sets its
    ``closing`` before closing the client itself) also learns when the client closed for good:
    nats-py closes it after most ``-ERR`` replies of the server ('Authorization Violation', 'Unknown
    Protocol Operation', ...) and never reconnects it; ``outage.dead`` names the reply and
    ``on_closed`` runs."""
    await probe(url)
    watched = outage is not None
    outage = outage or Outage(log, f"NATS {redact_url(url)}")
    client: Client | None = None

    async def on_disconnected() -> None:
        if client is not None and not (client.is_closed or client.is_draining):
            outage.down()

    async def on_reconnected() -> None:
        outage.up()

    async def on_closed_cb() -> None:
        if client is None or outage.closing or not watched:
            return
        reason = client.last_error
        outage.kill(
            f"closed after an -ERR reply of the server ({str(reason).removeprefix('nats: ')})"
            if reason is not None
            else "the connection was closed and is not reconnected"
        )
        if on_closed is not None:
            on_closed()

    async def on_client_error(exc: Exception) -> None:
        log.debug("NATS client error: %s", exc)
        if on_error is not None:
            on_error(exc)

    try:
        client = await nats.connect(
            servers=[url],
            name=name,
            connect_timeout=3,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.25,
            disconnected_cb=on_disconnected,
            reconnected_cb=on_reconnected,
            closed_cb=on_closed_cb,
            error_cb=on_client_error,
            # Buffer publishes made while reconnecting; their PubAck timeout still applies.
            pending_size=64 * 1024 * 1024,
        )
    except (nats.errors.Error, OSError) as exc:
        raise UnavailableError(f"NATS at {redact_url(url)} is unavailable: {exc}") from None
    return client


async def ensure_stream(nc: Client, name: str, subjects: Sequence[str], **config: Any) -> None:
    """Create the stream if missing (idempotent). ``config`` goes to ``StreamConfig``."""
    js = nc.jetstream()
    try:
        await js.stream_info(name)
    except nats.js.errors.NotFoundError:
        await js.add_stream(name=name, subjects=list(subjects), **config)


def delivered_from(msg: Msg) -> Delivered:
    headers = dict(msg.headers or {})
    return Delivered(
        event_id=headers.get("ce-id") or headers.get("Nats-Msg-Id", ""),
        topic=msg.subject,
        key=headers.get("ce-subject"),
        payload=msg.data,
        headers=headers,
    )


async def read_stream(
    nc: Client, stream: str, subject: str = ">", *, idle_timeout: float | None = None
) -> AsyncIterator[Delivered]:
    """Every message of ``stream`` in stream order, from the start, through an ordered consumer.

    Stops after ``idle_timeout`` seconds without a message (None: never)."""
    js = nc.jetstream()
    queue: asyncio.Queue[Msg] = asyncio.Queue()

    async def on_msg(msg: Msg) -> None:
        await queue.put(msg)

    sub = await js.subscribe(subject, stream=stream, ordered_consumer=True, cb=on_msg)
    try:
        while True:
            try:
                msg = await asyncio.wait_for(queue.get(), idle_timeout)
            except TimeoutError:
                return
            yield delivered_from(msg)
    finally:
        await sub.unsubscribe()
