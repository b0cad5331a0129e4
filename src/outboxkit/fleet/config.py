"""The fleet file: which outboxes one ``outboxkit relay --fleet FILE`` serves (TOML, stdlib tomllib).

::

    [fleet]                                   # defaults for every [[outbox]], and the fleet's knobs
    broker = "nats://127.0.0.1:4222"
    table = "outbox"
    max_connections = 20                      # PostgreSQL: pooled connections per server
    quantum = 200                             # events per outbox per round (the fair share)

    [[outbox]]
    tenant = "acme"                           # unique; the metrics label and CloudEvents tenantid
    db = "postgresql://app@db1/app"
    schema = "acme"                           # PostgreSQL schema / MariaDB database

    [[outbox]]
    tenant = "globex"
    db = "postgresql://app@db1/globex"        # database-per-tenant
    topic_prefix = "globex."                  # prepended to every topic this outbox publishes
    weight = 2                                # twice the share of the rounds

Parsing is pure (text in, :class:`FleetSpec` out) so that a bad file is refused in one line that
names the entry and the field, at start-up and on every reload, before anything is touched.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from outboxkit.config import check_broker_url, check_db_url
from outboxkit.core.envelope import MAX_TOPIC_LENGTH
from outboxkit.core.urls import remember_secrets
from outboxkit.errors import ConfigurationError
from outboxkit.stores.base import TableRef

#: At most this many outboxes in one fleet file: the tenant label of the fleet's metrics has at most
#: this many values (bounded cardinality), and one process serves them all.
MAX_OUTBOXES = 5000

_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
_PREFIX = re.compile(r"(?:[A-Za-z0-9_\-]+\.)*")  # whole tokens, each followed by a dot: "acme." or "eu.acme."

_OUTBOX_FIELDS = {"tenant", "db", "schema", "table", "broker", "topic_prefix", "source", "weight", "tenant_attribute"}
_FLEET_FIELDS = {
    "broker",
    "table",
    "source",
    "tenant_attribute",
    "max_connections",
    "listen_max",
    "quantum",
    "fetch_slots",
    "turn_budget",
    "lease_ttl",
    "window",
    "poll_interval",
    "max_attempts",
    "reload_interval",
}


@dataclass(frozen=True, slots=True)
class OutboxSpec:
    """One outbox of the fleet. Two specs that compare equal are the same outbox: a reload that
    changes any field stops the old one and starts the new one."""

    tenant: str
    db: str
    ref: TableRef
    broker: str
    topic_prefix: str = ""
    source: str = "/outboxkit"
    weight: int = 1
    tenant_attribute: bool = False  # stamp ``tenantid`` (CloudEvents extension) on every message


@dataclass(frozen=True, slots=True)
class FleetSettings:
    """Knobs of the fleet process (``[fleet]``), with the defaults docs/fleet.md explains."""

    max_connections: int = 20  # PostgreSQL: pooled connections per server (host, port, user)
    listen_max: int = 16  # PostgreSQL: LISTEN connections per server (one per database); beyond: polling
    quantum: int = 200  # events an outbox may fetch per round (times its weight)
    fetch_slots: int = 16  # fetches running at once across the fleet (keep below max_connections)
    turn_budget: float = 2.0  # seconds a fetch holds its slot; past it, the slot goes to the next outbox
    lease_ttl: float = 15.0  # per-outbox bucket leases: a dead fleet's outboxes move within ~1.33x
    window: int = 256  # unconfirmed publishes per outbox
    poll_interval: float = 5.0  # longest wait without a wake-up (polling backs off up to this)
    max_attempts: int = 20
    reload_interval: float = 1.0  # seconds between looks at the fleet file's mtime


@dataclass(frozen=True, slots=True)
class FleetSpec:
    outboxes: tuple[OutboxSpec, ...]
    settings: FleetSettings = field(default_factory=FleetSettings)

    def by_tenant(self) -> dict[str, OutboxSpec]:
        return {o.tenant: o for o in self.outboxes}


@dataclass(frozen=True, slots=True)
class FleetChange:
    """What a reload does: outboxes to stop (removed or changed) and to start (added or changed)."""

    stop: tuple[str, ...]
    start: tuple[OutboxSpec, ...]


def diff(old: Mapping[str, OutboxSpec], new: Mapping[str, OutboxSpec]) -> FleetChange:
    """Pure: a changed entry is stopped and started again; an unchanged one is left running."""
    stop = tuple(sorted(t for t, spec in old.items() if new.get(t) != spec))
    start = tuple(spec for t, spec in sorted(new.items()) if old.get(t) != spec)
    return FleetChange(stop, start)


def _where(index: int, entry: Mapping[str, Any]) -> str:
    tenant = entry.get("tenant")
    return f"[[outbox]] #{index + 1}" + (f" (tenant {tenant!r})" if isinstance(tenant, str) else "")


def _number(where: str, name: str, value: Any, kind: type[int] | type[float], minimum: float) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float) or (kind is int and not isinstance(value, int)):
        raise ConfigurationError(f"{where}: {name} must be a{'n integer' if kind is int else ' number'}, got {value!r}")
    if value < minimum:
        raise ConfigurationError(f"{where}: {name} must be at least {minimum:g}, got {value!r}")
    return kind(value)


def _text(where: str, name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{where}: {name} must be a non-empty string, got {value!r}")
    return value


def _settings(raw: Mapping[str, Any]) -> FleetSettings:
    d = FleetSettings()
    w = "[fleet]"
    return FleetSettings(
        max_connections=_number(w, "max_connections", raw.get("max_connections", d.max_connections), int, 2),
        listen_max=_number(w, "listen_max", raw.get("listen_max", d.listen_max), int, 0),
        quantum=_number(w, "quantum", raw.get("quantum", d.quantum), int, 1),
        fetch_slots=_number(w, "fetch_slots", raw.get("fetch_slots", d.fetch_slots), int, 1),
        turn_budget=_number(w, "turn_budget", raw.get("turn_budget", d.turn_budget), float, 0.01),
        lease_ttl=_number(w, "lease_ttl", raw.get("lease_ttl", d.lease_ttl), float, 0.5),
        window=_number(w, "window", raw.get("window", d.window), int, 1),
        poll_interval=_number(w, "poll_interval", raw.get("poll_interval", d.poll_interval), float, 0.01),
        max_attempts=_number(w, "max_attempts", raw.get("max_attempts", d.max_attempts), int, 1),
        reload_interval=_number(w, "reload_interval", raw.get("reload_interval", d.reload_interval), float, 0.05),
    )


def _outbox(index: int, entry: Any, defaults: Mapping[str, Any]) -> OutboxSpec:
    if not isinstance(entry, dict):
        raise ConfigurationError(f"[[outbox]] #{index + 1}: must be a table of fields")
    where = _where(index, entry)
    unknown = sorted(set(entry) - _OUTBOX_FIELDS)
    if unknown:
        raise ConfigurationError(f"{where}: unknown field {unknown[0]!r} (fields: {', '.join(sorted(_OUTBOX_FIELDS))})")
    merged = {k: v for k, v in defaults.items() if k in _OUTBOX_FIELDS} | entry
    if "tenant" not in merged:
        raise ConfigurationError(f"{where}: tenant is missing")
    tenant = _text(where, "tenant", merged["tenant"])
    if not _TENANT.fullmatch(tenant):
        raise ConfigurationError(
            f"{where}: tenant must be 1-64 letters, digits, '_', '-' or '.', starting with a letter or digit"
        )
    for name in ("db", "broker"):
        if name not in merged:
            raise ConfigurationError(
                f"{where}: {name} is missing" + (" (or set it in [fleet])" if name != "db" else "")
            )
    db, broker = _text(where, "db", merged["db"]), _text(where, "broker", merged["broker"])
    remember_secrets(db, broker)  # masked in every log line from here on
    try:
        db = check_db_url(db)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{where}: db: {exc}") from None
    try:
        broker = check_broker_url(broker)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{where}: broker: {exc}") from None
    schema = merged.get("schema")
    try:
        ref = TableRef(
            _text(where, "table", merged.get("table", "outbox")),
            None if schema is None else _text(where, "schema", schema),
        )
    except ConfigurationError as exc:
        raise ConfigurationError(f"{where}: {exc}") from None
    prefix = merged.get("topic_prefix", "")
    if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix) or len(prefix) > MAX_TOPIC_LENGTH // 2:
        raise ConfigurationError(
            f"{where}: topic_prefix must be whole topic tokens each ending with a dot (e.g. 'acme.'), got {prefix!r}"
        )
    attribute = merged.get("tenant_attribute", False)
    if not isinstance(attribute, bool):
        raise ConfigurationError(f"{where}: tenant_attribute must be true or false, got {attribute!r}")
    return OutboxSpec(
        tenant=tenant,
        db=db,
        ref=ref,
        broker=broker,
        topic_prefix=prefix,
        source=_text(where, "source", merged.get("source", "/outboxkit")),
        weight=_number(where, "weight", merged.get("weight", 1), int, 1),
        tenant_attribute=attribute,
    )


def parse_fleet(text: str, *, name: str = "fleet file") -> FleetSpec:
    """Parse and validate a whole fleet file; :class:`ConfigurationError` names the entry and field."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{name} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"fleet", "outbox"})
    if unknown:
        raise ConfigurationError(f"{name}: unknown section {unknown[0]!r} (use [fleet] and [[outbox]])")
    fleet = data.get("fleet", {})
    if not isinstance(fleet, dict):
        raise ConfigurationError(f"{name}: [fleet] must be a table")
    bad = sorted(set(fleet) - _FLEET_FIELDS)
    if bad:
        raise ConfigurationError(
            f"{name}: [fleet]: unknown field {bad[0]!r} (fields: {', '.join(sorted(_FLEET_FIELDS))})"
        )
    entries = data.get("outbox", [])
    if not isinstance(entries, list):
        raise ConfigurationError(f"{name}: outboxes are [[outbox]] entries (an array of tables)")
    if len(entries) > MAX_OUTBOXES:
        raise ConfigurationError(f"{name}: {len(entries)} outboxes; one fleet serves at most {MAX_OUTBOXES}")
    outboxes: list[OutboxSpec] = []
    seen: dict[str, int] = {}
    places: dict[tuple[str, str | None, str], str] = {}
    try:
        settings = _settings(fleet)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{name}: {exc}") from None
    for index, entry in enumerate(entries):
        try:
            spec = _outbox(index, entry, fleet)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{name}: {exc}") from None
        if spec.tenant in seen:
            raise ConfigurationError(
                f"{name}: {_where(index, entry)}: tenant {spec.tenant!r} is also entry #{seen[spec.tenant] + 1}"
                ": tenants are unique"
            )
        place = (spec.db, spec.ref.schema, spec.ref.table)
        if place in places:
            raise ConfigurationError(
                f"{name}: {_where(index, entry)}: db/schema/table is the same outbox as tenant {places[place]!r}"
            )
        seen[spec.tenant], places[place] = index, spec.tenant
        outboxes.append(spec)
    return FleetSpec(tuple(outboxes), settings)


def load_fleet(path: str) -> FleetSpec:
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise ConfigurationError(f"fleet file {path} not found") from None
    except OSError as exc:
        raise ConfigurationError(f"fleet file {path} cannot be read: {exc.strerror or exc}") from None
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise ConfigurationError(f"fleet file {path} is not UTF-8 text") from None
    return parse_fleet(text, name=f"fleet file {path}")


__all__ = [
    "MAX_OUTBOXES",
    "FleetChange",
    "FleetSettings",
    "FleetSpec",
    "OutboxSpec",
    "diff",
    "load_fleet",
    "parse_fleet",
]
