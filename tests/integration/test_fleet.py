"""The relay fleet (outboxkit relay --fleet FILE) on the real PostgreSQL, MariaDB, SQLite and NATS:
the file changes while it runs, tenants with a big backlog beside live ones, one tenant's failure
stays its own, and per-outbox guarantees hold (everything delivered, per key in order)."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import psycopg
import pytest

from tests.conftest import PG_URL, Stream, require
from tests.helpers import emit_many, read_all
from tests.integration.fleetsupport import (
    drop,
    insert_rows,
    mariadb_outbox,
    outboxes_made,
    pending_of,
    pg_database_outbox,
    pg_outbox,
    public,
    ref_of,
    running_fleet,
    sqlite_outbox,
    wait_until,
    write_fleet,
)

pytestmark = [pytest.mark.postgres, pytest.mark.nats]

FAST = {"lease_ttl": 2.0, "reload_interval": 0.05, "poll_interval": 0.5}


def leases_held(entry: dict[str, object]) -> int:
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        row = conn.execute(
            f"SELECT count(*) FROM {ref_of(entry).derived('leases')}"
            " WHERE owner IS NOT NULL AND expires_at > now()".encode()
        ).fetchone()
    return int(row[0]) if row else 0


def tenant_of(topic: str, stream: Stream) -> str:
    return topic.removeprefix(stream.prefix + ".").split(".", 1)[0]


def per_key_in_order(messages: list, stream: Stream) -> bool:  # type: ignore[type-arg]
    last: dict[tuple[str, str | None], int] = {}
    for m in messages:
        where = (tenant_of(m.topic, stream), m.key)
        seq = int(m.headers["ce-sequence"])
        if where in last and seq < last[where]:
            return False
        last[where] = seq
    return True


async def test_fleet_file_changes_while_it_runs(nats_stream: Stream, tmp_path: Path) -> None:
    """Outboxes on PostgreSQL (schema and database per tenant), MariaDB and SQLite; one added, one
    removed (its leases released, its rows left alone), a bad file refused while serving goes on."""
    require("MariaDB", "127.0.0.1", 3306)
    s = nats_stream
    a, b = pg_outbox("a", s.prefix), sqlite_outbox("b", s.prefix, tmp_path)
    c, d = mariadb_outbox("c", s.prefix), pg_database_outbox("d", s.prefix)
    a["tenant_attribute"] = True
    path = tmp_path / "fleet.toml"
    with outboxes_made([a, b, c, d]):
        write_fleet(path, public([a, b]), broker=s.url, **FAST)
        async with running_fleet(path) as fleet:
            for entry in (a, b):
                emit_many(entry["db"], ref_of(entry), "orders.created", list(range(20)), key=lambda i: f"k{i % 3}")
            got = await read_all(s.url, s.name, expect=40)
            assert Counter(tenant_of(m.topic, s) for m in got) == {"a": 20, "b": 20}
            assert all(m.headers.get("ce-tenantid") == "a" for m in got if tenant_of(m.topic, s) == "a")
            assert all("ce-tenantid" not in m.headers for m in got if tenant_of(m.topic, s) == "b")

            # Added while running: served within the reload interval and a start.
            write_fleet(path, public([a, b, c, d]), broker=s.url, **FAST)
            await wait_until("c and d started", lambda: {"c", "d"} <= set(fleet.runs))
            for entry in (c, d):
                emit_many(entry["db"], ref_of(entry), "orders.created", list(range(20)), key=lambda i: f"k{i % 3}")
            await wait_until("c and d drained", lambda: pending_of(c) == 0 and pending_of(d) == 0)

            # Removed while running: stopped, its leases released at once (not left to expire).
            write_fleet(path, public([b, c, d]), broker=s.url, **FAST)
            await wait_until("a stopped", lambda: "a" not in fleet.runs)
            # Released on stop; the release has a time limit (half the lease TTL, as for every relay),
            # and on a loaded machine it may be left to expire instead: either way none is held.
            await wait_until("a's leases free", lambda: leases_held(a) == 0, timeout=30)
            emit_many(a["db"], ref_of(a), "orders.created", list(range(5)))
            # A bad file is refused; the fleet goes on with what it had.
            write_fleet(
                path, public([b, c, d]), broker=s.url, extra='[[outbox]]\ntenant = "e"\ndb = "nosuch://x"', **FAST
            )
            await wait_until("the bad file refused", lambda: fleet.refused >= 1)
            emit_many(b["db"], ref_of(b), "orders.created", list(range(5)))
            await wait_until("b drained after the refusal", lambda: pending_of(b) == 0)
            assert set(fleet.runs) == {"b", "c", "d"}
            assert pending_of(a) == 5  # nobody serves a any more
        got = await read_all(s.url, s.name, expect=85)
        counts = Counter(tenant_of(m.topic, s) for m in got)
        assert counts == {"a": 20, "b": 25, "c": 20, "d": 20}
        assert per_key_in_order(got, s)


async def test_a_big_backlog_does_not_starve_live_tenants(nats_stream: Stream, tmp_path: Path) -> None:
    """One fetch slot, turns of 100 events: the tenant with 20,000 pending rows gets one turn per
    round like everyone else, so the live tenants' events are all delivered while most of the
    backlog still waits."""
    s = nats_stream
    big = pg_outbox("big", s.prefix)
    live = [pg_outbox(f"live{i}", s.prefix) for i in range(3)]
    path = tmp_path / "fleet.toml"
    with outboxes_made([big, *live]):
        insert_rows(big, 20_000)
        write_fleet(path, public([big, *live]), broker=s.url, fetch_slots=1, quantum=100, window=100, **FAST)
        async with running_fleet(path) as fleet:
            await wait_until("the backlog flowing", lambda: fleet.runs["big"].state.published > 0)
            for entry in live:
                emit_many(entry["db"], ref_of(entry), "orders.created", list(range(30)), key=lambda i: f"k{i % 5}")
            await wait_until("the live tenants drained", lambda: all(pending_of(e) == 0 for e in live))
            backlog_left = pending_of(big)
            published_big = fleet.runs["big"].state.published
        assert backlog_left > 10_000, f"only {backlog_left} of 20,000 left: the live tenants waited behind it"
        # Counts, not times: over the same period the big tenant took turns like the others.
        assert published_big < 10_000


async def test_one_tenants_failure_stays_local(nats_stream: Stream, tmp_path: Path) -> None:
    """A tenant's schema dropped (PostgreSQL), a tenant's database dropped (database-per-tenant):
    the others keep flowing, the broken ones show unhealthy, and a re-created one recovers."""
    s = nats_stream
    gone_schema = pg_outbox("gone", s.prefix)
    gone_db = pg_database_outbox("gonedb", s.prefix)
    healthy = [pg_outbox("ok1", s.prefix), sqlite_outbox("ok2", s.prefix, tmp_path)]
    path = tmp_path / "fleet.toml"
    with outboxes_made([gone_schema, gone_db, *healthy]):
        write_fleet(path, public([gone_schema, gone_db, *healthy]), broker=s.url, **FAST)
        async with running_fleet(path) as fleet:
            await wait_until("all healthy", lambda: all(fleet.health().values()) and len(fleet.health()) == 4)
            drop(gone_schema)
            drop(gone_db)
            for entry in healthy:
                emit_many(entry["db"], ref_of(entry), "orders.created", list(range(25)))
            await wait_until("the others drained", lambda: all(pending_of(e) == 0 for e in healthy))
            await wait_until(
                "the broken ones unhealthy", lambda: not fleet.health()["gone"] and not fleet.health()["gonedb"]
            )
            assert fleet.health()["ok1"] and fleet.health()["ok2"]
            # Migrated again, it recovers by itself.
            from outboxkit import migrate

            migrate(gone_schema["db"], ref_of(gone_schema))
            emit_many(gone_schema["db"], ref_of(gone_schema), "orders.created", list(range(10)))
            await wait_until("the re-created tenant drained", lambda: pending_of(gone_schema) == 0)
            await wait_until("it is healthy again", lambda: fleet.health()["gone"])
        got = await read_all(s.url, s.name, expect=60)
        assert Counter(tenant_of(m.topic, s) for m in got) == {"ok1": 25, "ok2": 25, "gone": 10}


async def test_schema_per_tenant_shares_connections(nats_stream: Stream, tmp_path: Path) -> None:
    """Twelve outboxes in one PostgreSQL database: one LISTEN connection wakes them all, and the
    pooled connections stay within the server's bound however many outboxes there are."""
    s = nats_stream
    many = [pg_outbox(f"t{i}", s.prefix) for i in range(12)]
    path = tmp_path / "fleet.toml"
    with outboxes_made(many):
        write_fleet(path, public(many), broker=s.url, max_connections=4, **FAST)
        async with running_fleet(path) as fleet:
            await wait_until("all healthy", lambda: len(fleet.health()) == 12 and all(fleet.health().values()))
            for entry in many:
                emit_many(entry["db"], ref_of(entry), "orders.created", list(range(10)), key=lambda i: f"k{i % 2}")
            await wait_until("all drained", lambda: all(pending_of(e) == 0 for e in many))
            pg = fleet._pg.pg
            assert pg is not None
            assert len(pg.listeners) == 1 and next(iter(pg.listeners.values())).live
            assert all(pool.book.total <= 4 for pool in pg.pools.values())
            assert fleet.connections() <= 5
        got = await read_all(s.url, s.name, expect=120)
        assert len({m.event_id for m in got}) == 120
        assert per_key_in_order(got, s)
        by_tenant: dict[str, int] = defaultdict(int)
        for m in got:
            by_tenant[tenant_of(m.topic, s)] += 1
        assert set(by_tenant.values()) == {10}
