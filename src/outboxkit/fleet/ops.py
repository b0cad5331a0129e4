"""``outboxkit status --fleet FILE`` and ``outboxkit migrate --fleet FILE``: the operator's view of
every outbox of a fleet, and its schema brought up to date everywhere.

Each outbox is looked at on a connection of its own with the same queries as ``outboxkit status``
(``ops.queries``), a few at a time; one that cannot be reached is reported as such, with its
reason, and never hides the others.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from outboxkit.core.logfmt import redact_text
from outboxkit.core.urls import redact_url
from outboxkit.fleet.config import FleetSpec, OutboxSpec

#: Outboxes looked at (or migrated) at once: enough to finish a few hundred in seconds, few
#: enough that a fleet of thousands does not open thousands of connections at once.
PARALLEL = 8


@dataclass(frozen=True)
class OutboxStatus:
    tenant: str
    db: str  # redacted
    table: str
    ok: bool
    error: str | None = None
    pending: int | None = None
    oldest_pending_age_s: float | None = None
    dead: int | None = None
    owners: tuple[str, ...] = ()  # relays holding leases of it now (SQLite: the one holding its lock)
    buckets_held: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "db": self.db,
            "table": self.table,
            "ok": self.ok,
            "error": self.error,
            "pending": self.pending,
            "oldest_pending_age_s": self.oldest_pending_age_s,
            "dead": self.dead,
            "owners": list(self.owners),
            "buckets_held": self.buckets_held,
        }


def _where(spec: OutboxSpec) -> tuple[str, str]:
    table = f"{spec.ref.schema}.{spec.ref.table}" if spec.ref.schema else spec.ref.table
    return redact_url(spec.db), table


def outbox_status(spec: OutboxSpec) -> OutboxStatus:
    from outboxkit.ops import queries as q

    db, table = _where(spec)
    try:
        with q.open_db(spec.db, spec.ref) as conn:
            doc = q.status(conn).to_json()
    except Exception as exc:  # this outbox's trouble, reported on its line
        return OutboxStatus(
            spec.tenant, db, table, False, redact_text(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        )
    relays = doc["relays"]
    return OutboxStatus(
        spec.tenant,
        db,
        table,
        True,
        pending=int(doc["pending"]),
        oldest_pending_age_s=doc["oldest_pending_age_s"],
        dead=int(doc["dead"]),
        # Owners are the relays holding unexpired leases now (a relay killed a moment ago still
        # heartbeats in the "live" window, but holds nothing once its leases expired).
        owners=tuple(str(r["owner"]) for r in relays["live"] if r.get("buckets")),
        buckets_held=relays["buckets_held"],
    )


def _each(spec: FleetSpec, fn: Callable[[OutboxSpec], Any]) -> Iterator[Any]:
    with ThreadPoolExecutor(max_workers=PARALLEL, thread_name_prefix="outboxkit-fleet-ops") as pool:
        yield from pool.map(fn, spec.outboxes)


def fleet_status(spec: FleetSpec) -> list[OutboxStatus]:
    """Every outbox's backlog, oldest pending age, dead letters and owners, in fleet-file order."""
    return list(_each(spec, outbox_status))


@dataclass(frozen=True)
class Migrated:
    tenant: str
    table: str
    ok: bool
    detail: str
    seconds: float


def migrate_outbox(spec: OutboxSpec) -> Migrated:
    from outboxkit.migrate import migrate

    _, table = _where(spec)
    started = time.monotonic()
    try:
        count = migrate(spec.db, spec.ref)
    except Exception as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return Migrated(spec.tenant, table, False, redact_text(text), time.monotonic() - started)
    return Migrated(spec.tenant, table, True, f"{count} statements, schema is up to date", time.monotonic() - started)


def fleet_migrate(spec: FleetSpec) -> list[Migrated]:
    """Migrate every outbox (idempotent: the same DDL ``outboxkit migrate`` runs); one failing
    outbox is reported and the others are migrated all the same."""
    return list(_each(spec, migrate_outbox))


__all__ = ["Migrated", "OutboxStatus", "fleet_migrate", "fleet_status", "migrate_outbox", "outbox_status"]
