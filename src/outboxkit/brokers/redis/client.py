"""The ``redis://`` URL options, connections that fail fast, and the durability check (H7)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from outboxkit.brokers.redis.errors import _CONNECTION_ERRORS
from outboxkit.core.urls import redact_url
from outboxkit.errors import ConfigurationError, UnavailableError

log = logging.getLogger("outboxkit.redis")

#: Redis refuses a bulk string over ``proto-max-bulk-len`` (512 MB by default) with a protocol error
#: and drops the connection, which would look transient and be retried forever (H9): refuse it here.
DEFAULT_MAX_BYTES = 512 * 1024 * 1024


_OPTIONS = frozenset({"maxlen", "max_bytes", "start", "claim_idle", "consumer"})


@dataclass(frozen=True, slots=True)
class RedisOptions:
    """A ``redis://`` URL split into what redis-py connects to and outboxkit's own query options."""

    client_url: str
    maxlen: int | None = None
    max_bytes: int = DEFAULT_MAX_BYTES
    start: str = "0"
    claim_idle: float = 30.0
    consumer: str | None = None


def parse_url(url: str) -> RedisOptions:
    """``redis://[:password@]host:6379/0?maxlen=N&max_bytes=N&start=0|$&claim_idle=S&consumer=NAME``.

    Other query parameters go to redis-py unchanged (``socket_timeout`` and friends)."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ConfigurationError(f"not a Redis URL: {redact_url(url)!r} (use redis://host:6379/0)")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ConfigurationError(f"bad port in Redis URL {redact_url(url)!r}") from None
    ours: dict[str, str] = {}
    rest: list[tuple[str, str]] = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        (ours.__setitem__(name, value) if name in _OPTIONS else rest.append((name, value)))
    client_url = urlunsplit(parts._replace(query=urlencode(rest)))
    try:
        maxlen = int(ours["maxlen"]) if ours.get("maxlen") else None
        max_bytes = int(ours["max_bytes"]) if ours.get("max_bytes") else DEFAULT_MAX_BYTES
        claim_idle = float(ours["claim_idle"]) if ours.get("claim_idle") else 30.0
    except ValueError as exc:
        raise ConfigurationError(f"bad option in Redis URL {redact_url(url)!r}: {exc}") from None
    start = ours.get("start") or "0"
    if (maxlen is not None and maxlen <= 0) or max_bytes <= 0 or claim_idle <= 0 or start not in ("0", "$"):
        raise ConfigurationError(
            f"bad option in Redis URL {redact_url(url)!r}: maxlen, max_bytes and claim_idle must be "
            "positive, start must be 0 or $"
        )
    return RedisOptions(client_url, maxlen, max_bytes, start, claim_idle, ours.get("consumer") or None)


def _client(url: str, *, socket_timeout: float | None) -> Redis:
    # No hidden retries: a lost connection fails the pipeline in hand (TransientError), the pool opens
    # a new connection for the next one, and the relay decides what to resend.
    return Redis.from_url(
        url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=3.0,
        retry=Retry(NoBackoff(), 0),
        decode_responses=False,
    )


async def _open(url: str, client_url: str, *, socket_timeout: float | None) -> Redis:
    client = _client(client_url, socket_timeout=socket_timeout)
    try:
        await asyncio.wait_for(client.ping(), 5.0)
    except (RedisError, *_CONNECTION_ERRORS) as exc:
        await client.aclose()
        raise UnavailableError(f"Redis at {redact_url(url)} is unavailable: {exc or 'timed out'}") from None
    return client


async def warn_if_not_durable(client: Redis, url: str) -> bool:
    """Log one WARNING when the server runs without AOF; returns whether it does (H7).

    ``CONFIG`` may be disabled or renamed (managed Redis): then nothing is known and nothing logged."""
    try:
        reply = await _call(client, "CONFIG", "GET", "appendonly")
    except RedisError as exc:
        log.debug("cannot read Redis appendonly setting: %s", exc)
        return True
    values = _pairs(reply)
    if values.get("appendonly", "yes") == "no":
        log.warning(
            "Redis at %s runs without AOF (appendonly no): acknowledged events are lost if it restarts; "
            "set appendonly yes and appendfsync always (or everysec)",
            redact_url(url),
        )
        return False
    return True


def _pairs(reply: Any) -> dict[str, str]:
    """CONFIG GET answers a dict (redis-py's callback) or a flat list of name, value."""
    items = reply.items() if isinstance(reply, Mapping) else zip(reply[::2], reply[1::2], strict=True)
    return {_text(k): _text(v) for k, v in items}


async def _call(client: Redis, *args: Any, **options: Any) -> Any:
    """One command, parsed by redis-py's reply callback for it (``options`` reach the callback)."""
    return await client.execute_command(*args, **options)  # type: ignore[no-untyped-call]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
