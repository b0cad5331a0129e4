"""Settings from CLI flags, environment variables (``OUTBOXKIT_*``) and an optional TOML file,
in that order of precedence. Validated once, here, so bad configuration fails at start-up.

TOML file (``--config FILE`` or ``OUTBOXKIT_CONFIG``)::

    db = "postgresql://app@127.0.0.1/app"
    broker = "nats://127.0.0.1:4222"
    table = "outbox"
    [relay]
    batch_size = 2000
    window = 1000
    poll_interval = 1.0
    workers = 1          # relay processes sharing the buckets (outboxkit relay --workers)
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from outboxkit.brokers.registry import SCHEMES as BROKER_SCHEMES
from outboxkit.brokers.registry import SUPPORTED as SUPPORTED_BROKERS
from outboxkit.core.urls import redact_url, remember_secrets, scheme_of
from outboxkit.core.workers import split_owner
from outboxkit.errors import ConfigurationError
from outboxkit.relay.loop import RelayConfig
from outboxkit.stores.base import BUCKETS, TableRef
from outboxkit.stores.registry import database_for

#: setting name -> environment variable
ENV = {
    "db": "OUTBOXKIT_DB",
    "broker": "OUTBOXKIT_BROKER",
    "table": "OUTBOXKIT_TABLE",
    "schema": "OUTBOXKIT_SCHEMA",
    "source": "OUTBOXKIT_SOURCE",
    "batch_size": "OUTBOXKIT_BATCH_SIZE",
    "window": "OUTBOXKIT_WINDOW",
    "poll_interval": "OUTBOXKIT_POLL_INTERVAL",
    "lease_ttl": "OUTBOXKIT_LEASE_TTL",
    "max_attempts": "OUTBOXKIT_MAX_ATTEMPTS",
    "fetch_max_bytes": "OUTBOXKIT_FETCH_MAX_BYTES",
    "key_depth": "OUTBOXKIT_KEY_DEPTH",
    "workers": "OUTBOXKIT_WORKERS",
    "owner": "OUTBOXKIT_RELAY_OWNER",
}
_RELAY_KEYS = {"batch_size", "window", "poll_interval", "lease_ttl", "max_attempts", "fetch_max_bytes", "key_depth"}
_RELAY_KEYS |= {"workers"}  # of the relay process (how many), not of its loop
_RELAY_KEYS |= {"owner"}  # this relay's name in the lease table, kept across restarts
_KNOWN = set(ENV) | {"relay", "hold_dead_keys"}


@dataclass(frozen=True)
class Settings:
    db: str | None
    broker: str | None
    ref: TableRef
    source: str
    relay: RelayConfig
    hold_dead_keys: bool = True
    workers: int = 1  # relay processes sharing the buckets (``outboxkit relay --workers``)

    def require_db(self) -> str:
        if not self.db:
            raise ConfigurationError("no database: pass --db URL or set OUTBOXKIT_DB")
        return self.db

    def require_broker(self) -> str:
        if not self.broker:
            raise ConfigurationError("no broker: pass --broker URL or set OUTBOXKIT_BROKER")
        return self.broker


def _load_file(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigurationError(f"config file {path} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"config file {path} is not valid TOML: {exc}") from None
    data = dict(data.get("outboxkit", data))
    unknown = set(data) - _KNOWN
    if unknown:
        raise ConfigurationError(f"config file {path}: unknown setting(s) {', '.join(sorted(unknown))}")
    relay = data.pop("relay", {}) or {}
    if not isinstance(relay, dict) or set(relay) - _RELAY_KEYS:
        raise ConfigurationError(f"config file {path}: [relay] takes {', '.join(sorted(_RELAY_KEYS))}")
    data.update(relay)
    return data


def _owner(value: Any) -> str | None:
    """The relay's lease owner name: printable, at most 200 characters (the lease table's column),
    no ``/w<N>`` ending (worker names of a supervisor end so)."""
    if value is None or value == "":
        return None
    owner = str(value)
    if len(owner) > 200 or not owner.isprintable() or owner != owner.strip():
        raise ConfigurationError(f"owner must be 1-200 printable characters without surrounding spaces, got {owner!r}")
    if split_owner(owner) is not None:
        raise ConfigurationError(f"owner {owner!r} ends like a worker's name (/w<N>); choose another")
    return owner


def check_owner(value: Any) -> str | None:
    """A relay owner name as ``--owner`` takes it (None: the default)."""
    return _owner(value)


def _number(name: str, value: Any, kind: type[int] | type[float], minimum: float) -> Any:
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{name} must be a number, got {value!r}") from None
    if number < minimum:
        raise ConfigurationError(f"{name} must be at least {minimum}, got {number}")
    return number


def _scheme(url: str) -> str:
    try:
        return scheme_of(url)
    except ValueError:
        raise ConfigurationError(f"malformed URL {redact_url(url)!r}") from None


def check_ports(url: str) -> str:
    """Every ``host:port`` of ``url`` (Kafka takes a comma-separated list) has a port in 1-65535.

    A bad port is a typo to fix, so it fails here as configuration (exit 2), before any driver
    turns it into "cannot connect" and the user goes looking for a service that is fine."""
    rest = url.split("://", 1)[1] if "://" in url else ""
    netloc = rest.split("/", 1)[0].split("?", 1)[0].rpartition("@")[2]
    for host in netloc.split(","):
        host = host.strip()
        _, bracket, after = host.rpartition("]")  # [::1]:4222
        port = after.partition(":")[2] if bracket else (host.rpartition(":")[2] if ":" in host else "")
        if ":" in (after if bracket else host) and not (port.isdigit() and 0 < int(port) < 65536):
            raise ConfigurationError(f"invalid port {port!r} in {redact_url(url)!r}: use a number from 1 to 65535")
    return url


def check_db_url(url: str) -> str:
    _scheme(url)
    database_for(url)  # ConfigurationError naming the supported schemes
    return check_ports(url)


def check_broker_url(url: str) -> str:
    # The hint names the bus schemes, never a database's: each kind of URL is told its own kinds.
    if _scheme(url) not in BROKER_SCHEMES or "://" not in url:
        raise ConfigurationError(f"unsupported broker URL {redact_url(url)!r}: use {SUPPORTED_BROKERS}")
    return check_ports(url)


def resolve(
    flags: Mapping[str, Any], *, config_file: str | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Merge flags > environment > file > defaults and validate the result."""
    env = os.environ if environ is None else environ
    file_values = _load_file(config_file or env.get("OUTBOXKIT_CONFIG"))
    merged: dict[str, Any] = {}
    for name, var in ENV.items():
        if flags.get(name) is not None:
            merged[name] = flags[name]
        elif env.get(var):
            merged[name] = env[var]
        elif name in file_values:
            merged[name] = file_values[name]
    hold = flags.get("hold_dead_keys")
    if hold is None:
        hold = file_values.get("hold_dead_keys", True)
    defaults = RelayConfig()
    relay = RelayConfig(
        batch_size=_number("batch_size", merged.get("batch_size", defaults.batch_size), int, 1),
        window=_number("window", merged.get("window", defaults.window), int, 1),
        poll_interval=_number("poll_interval", merged.get("poll_interval", defaults.poll_interval), float, 0.001),
        lease_ttl=_number("lease_ttl", merged.get("lease_ttl", defaults.lease_ttl), float, 0.5),
        max_attempts=_number("max_attempts", merged.get("max_attempts", defaults.max_attempts), int, 1),
        fetch_max_bytes=_number("fetch_max_bytes", merged.get("fetch_max_bytes", defaults.fetch_max_bytes), int, 1024),
        key_depth=_number("key_depth", merged.get("key_depth", defaults.key_depth), int, 1),
        owner=_owner(merged.get("owner")),
    )
    workers = _number("workers", merged.get("workers", 1), int, 1)
    if workers > BUCKETS:
        raise ConfigurationError(f"workers must be at most {BUCKETS} (one bucket each at least), got {workers}")
    db = merged.get("db")
    broker = merged.get("broker")
    # From here on, these URLs' passwords and tokens are masked in every log line and error.
    remember_secrets(db, broker)
    return Settings(
        db=check_db_url(db) if db else None,
        broker=check_broker_url(broker) if broker else None,
        ref=TableRef(merged.get("table", "outbox"), merged.get("schema")),
        source=str(merged.get("source", "/outboxkit")),
        relay=relay,
        hold_dead_keys=bool(hold),
        workers=workers,
    )
