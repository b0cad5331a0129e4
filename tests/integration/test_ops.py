"""Operator commands on real PostgreSQL and SQLite: what each does to the rows, --json output,
refusals without a selector, retention that never touches pending or dead rows, and the
PostgreSQL partitioning recipe."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner, Result

from outboxkit import Outbox, migrate
from outboxkit.errors import ConfigurationError
from outboxkit.ops import parse_duration, parse_time, partitioning_recipe
from outboxkit.ops.cli import app
from outboxkit.stores.base import Filter, TableRef
from outboxkit.stores.sqlite.ops import sqlite_text as _sqlite_text
from tests.conftest import unique
from tests.helpers import db_connect, open_store


@dataclass
class Box:
    """One migrated outbox, and the CLI arguments that point at it."""

    db: str
    ref: TableRef

    @property
    def pg(self) -> bool:
        return not self.db.startswith("sqlite")

    @property
    def args(self) -> list[str]:
        return ["--db", self.db, "--schema", self.ref.schema] if self.pg and self.ref.schema else ["--db", self.db]

    def sql(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = db_connect(self.db)
        try:
            cur = conn.execute(statement if self.pg else statement.replace("%s", "?"), params)
            return list(cur.fetchall()) if cur.description else []
        finally:
            conn.close()

    def ts(self, age: timedelta) -> Any:
        moment = datetime.now(UTC) - age  # now, not at import: the suite may import this module minutes earlier
        return moment if self.pg else _sqlite_text(moment)

    def add(
        self,
        topic: str,
        key: str | None = None,
        *,
        state: str = "pending",
        age: timedelta = timedelta(0),
        error: str | None = None,
    ) -> tuple[int, str]:
        """Insert one row in ``state`` (pending, delivered, dead) created ``age`` ago; (seq, id)."""
        delivered = self.ts(age) if state == "delivered" else None
        dead = self.ts(age) if state == "dead" else None
        row = self.sql(
            f"INSERT INTO {self.ref.qualified} (topic, key, payload, created_at, delivered_at, dead_at, last_error)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING seq, id",
            (topic, key, b"{}", self.ts(age), delivered, dead, error),
        )[0]
        return int(row[0]), str(row[1])

    def row(self, seq: int) -> dict[str, Any] | None:
        rows = self.sql(
            f"SELECT attempts, last_error, delivered_at, dead_at FROM {self.ref.qualified} WHERE seq = %s", (seq,)
        )
        if not rows:
            return None
        attempts, last_error, delivered_at, dead_at = rows[0]
        return {"attempts": attempts, "last_error": last_error, "delivered": delivered_at is not None, "dead": dead_at}

    def state(self, seq: int) -> str:
        row = self.row(seq)
        if row is None:
            return "deleted"
        return "dead" if row["dead"] is not None else "delivered" if row["delivered"] else "pending"


@pytest.fixture(params=["postgresql", "sqlite"])
def box(request: pytest.FixtureRequest) -> Iterator[Box]:
    if request.param == "sqlite":
        yield Box(request.getfixturevalue("sqlite_url"), TableRef())
    else:
        yield Box(request.getfixturevalue("pg_url"), request.getfixturevalue("pg_ref"))


def invoke(box: Box, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(app, [*args, *box.args], input=input)


def ok_json(box: Box, *args: str) -> Any:
    result = invoke(box, *args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def refused(result: Result, expect: str) -> None:
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and expect in lines[0], result.stderr


# ---------------------------------------------------------------------------------------- status


def test_status_counts_backlog_dead_letters_and_retained_rows(box: Box) -> None:
    box.add("orders", "k1", age=timedelta(minutes=5))
    box.add("orders", "k2")
    box.add("orders", "poison", state="dead", error="too large")
    box.add("orders", "poison")  # held behind its key's dead letter
    for _ in range(3):
        box.add("payments", state="delivered", age=timedelta(days=2))

    doc = ok_json(box, "status")

    assert doc["database"] == ("postgresql" if box.pg else "sqlite")
    assert (doc["pending"], doc["dead"], doc["dead_keys"], doc["held_pending"]) == (3, 1, 1, 1)
    assert (doc["delivered"], doc["discarded"]) == (3, 0)
    assert 290 < doc["oldest_pending_age_s"] < 400
    assert doc["oldest_delivered_age_s"] > 86400
    by_topic = {t["topic"]: t for t in doc["topics"]}
    assert set(by_topic) == {"orders", "payments"}
    assert (by_topic["orders"]["pending"], by_topic["orders"]["dead"], by_topic["orders"]["delivered"]) == (3, 1, 0)
    assert by_topic["payments"]["oldest_pending_age_s"] is None
    assert set(doc["relays"]) == {"mode", "live", "stale", "buckets_total", "buckets_held", "buckets_free"}


def test_status_without_lease_tables_is_single_relay_mode(box: Box) -> None:
    if box.pg:
        box.sql(f"DROP TABLE IF EXISTS {box.ref.derived('relays')}, {box.ref.derived('leases')}")
    box.add("orders")
    assert ok_json(box, "status")["relays"] == {
        "mode": "single",
        "live": [],
        "stale": None,
        "buckets_total": None,
        "buckets_held": None,
        "buckets_free": None,
    }
    human = invoke(box, "status")
    assert human.exit_code == 0, human.stderr
    assert "single relay mode (no leases)" in human.stdout


@pytest.mark.postgres
def test_status_shows_live_relays_and_their_buckets(pg_url: str, pg_ref: TableRef) -> None:
    box = Box(pg_url, pg_ref)
    relays, leases = pg_ref.derived("relays"), pg_ref.derived("leases")
    # The tables another module creates (idempotent here, so the test holds either way).
    box.sql(
        f"CREATE TABLE IF NOT EXISTS {relays} (owner text PRIMARY KEY, heartbeat_at timestamptz NOT NULL,"
        " started_at timestamptz NOT NULL, info jsonb)"
    )
    box.sql(
        f"CREATE TABLE IF NOT EXISTS {leases} (bucket smallint PRIMARY KEY, owner text,"
        " epoch bigint NOT NULL DEFAULT 0, expires_at timestamptz)"
    )
    box.sql(f"INSERT INTO {leases} (bucket) SELECT generate_series(0, 7) ON CONFLICT DO NOTHING")
    box.sql(
        f"INSERT INTO {relays} VALUES ('relay-a', now(), now() - interval '1 hour', '{{\"host\": \"a\"}}'),"
        " ('relay-b', now() - interval '1 minute', now() - interval '2 hours', '{}')"
    )
    box.sql(
        f"UPDATE {leases} SET owner = 'relay-a', epoch = 3, expires_at = now() + interval '30 s' WHERE bucket IN (0, 1)"
    )
    box.sql(f"UPDATE {leases} SET owner = 'relay-a', expires_at = now() - interval '1 s' WHERE bucket = 2")
    box.sql(f"UPDATE {leases} SET owner = 'relay-b', expires_at = now() - interval '1 s' WHERE bucket = 3")

    relay_doc = ok_json(box, "status")["relays"]

    assert relay_doc["mode"] == "leases"
    assert [(r["owner"], r["buckets"], r["info"]) for r in relay_doc["live"]] == [("relay-a", [0, 1], {"host": "a"})]
    assert relay_doc["stale"] == 1 and relay_doc["buckets_held"] == 2
    assert {2, 3, 4, 5, 6, 7} <= set(relay_doc["buckets_free"])
    human = invoke(box, "status")
    assert "relay-a" in human.stdout and "relay-b" not in human.stdout


# ---------------------------------------------------------------------------------- dead letters


def test_dead_letters_list_filters_and_json(box: Box) -> None:
    first, first_id = box.add("orders", "k1", state="dead", error="rejected: too large")
    box.add("orders", "k2", state="dead", error="rejected")
    box.add("payments", "k1", state="dead", error="rejected")
    box.add("orders", "k1")  # pending, not a dead letter

    every = ok_json(box, "dead-letters", "list")
    assert every["total"] == 3 and [d["topic"] for d in every["dead_letters"]] == ["orders", "orders", "payments"]
    assert every["dead_letters"][0] | {"created_at": None, "dead_at": None} == {
        "seq": first,
        "id": first_id,
        "topic": "orders",
        "key": "k1",
        "attempts": 0,
        "last_error": "rejected: too large",
        "created_at": None,
        "dead_at": None,
    }
    assert ok_json(box, "dead-letters", "list", "--topic", "orders", "--key", "k1")["total"] == 1
    limited = ok_json(box, "dead-letters", "list", "--limit", "1")
    assert limited["total"] == 3 and len(limited["dead_letters"]) == 1
    human = invoke(box, "dead-letters", "list")
    assert human.exit_code == 0 and "dead letters: 3 of 3" in human.stdout


async def test_retry_makes_a_dead_row_pending_again_first_of_its_key(box: Box) -> None:
    dead, _ = box.add("orders", "k1", state="dead", error="broker said no")
    box.sql(f"UPDATE {box.ref.qualified} SET attempts = 5 WHERE seq = %s", (dead,))
    later, _ = box.add("orders", "k1")
    other, _ = box.add("orders", "k2", state="dead")

    store = await open_store(box.db, box.ref)
    try:
        assert [e.seq for e in await store.fetch_pending(10, Filter())] == []  # k1 held behind its dead letter
        assert ok_json(box, "dead-letters", "retry", "--key", "k1") == {"action": "retry", "rows": 1}
        assert box.row(dead) == {"attempts": 0, "last_error": "broker said no", "delivered": False, "dead": None}
        # The relay sends the retried row before its key's later event (G5).
        assert [e.seq for e in await store.fetch_pending(10, Filter())] == [dead, later]
    finally:
        await store.close()
    assert box.state(other) == "dead"


def test_retry_and_discard_refuse_without_a_selector(box: Box) -> None:
    seq, _ = box.add("orders", "k1", state="dead")
    refused(invoke(box, "dead-letters", "retry"), "--all")
    refused(invoke(box, "dead-letters", "discard", "--yes"), "--all")
    refused(invoke(box, "dead-letters", "retry", "--all", "--topic", "orders"), "cannot be combined")
    result = invoke(box, "dead-letters", "retry", "--id", "not-a-uuid")
    assert result.exit_code == 2 and "invalid event id" in result.stderr
    assert box.state(seq) == "dead"


def test_discard_marks_delivered_releases_the_key_and_never_replays(box: Box) -> None:
    dead, dead_id = box.add("orders", "k1", state="dead", error="too large")
    kept, _ = box.add("orders", "k2", state="dead")

    declined = invoke(box, "dead-letters", "discard", "--id", dead_id, input="n\n")
    assert declined.exit_code == 1 and box.state(dead) == "dead"

    assert ok_json(box, "dead-letters", "discard", "--id", dead_id, "--yes") == {"action": "discard", "rows": 1}
    row = box.row(dead)
    assert row is not None and row["dead"] is None and row["delivered"]
    assert row["last_error"] == "discarded: too large"
    assert ok_json(box, "status")["dead_keys"] == 1  # only k2 still holds its key
    assert box.state(kept) == "dead"
    # A discarded row never reached the broker: replay leaves it alone.
    assert ok_json(box, "replay", "--topic", "orders", "--yes")["rows"] == 0
    assert ok_json(box, "status")["discarded"] == 1


def test_discard_delete_removes_the_rows(box: Box) -> None:
    a, _ = box.add("orders", "k1", state="dead")
    b, _ = box.add("payments", "k1", state="dead")
    pending, _ = box.add("orders", "k1")
    assert ok_json(box, "dead-letters", "discard", "--all", "--delete", "--yes") == {"action": "delete", "rows": 2}
    assert (box.state(a), box.state(b), box.state(pending)) == ("deleted", "deleted", "pending")


# ---------------------------------------------------------------------------------------- replay


def test_replay_selects_delivered_rows_only(box: Box) -> None:
    old, old_id = box.add("orders", "k1", state="delivered", age=timedelta(hours=5))
    recent, _ = box.add("orders", "k2", state="delivered", age=timedelta(minutes=10))
    other_topic, _ = box.add("payments", "k1", state="delivered", age=timedelta(hours=1))
    dead, _ = box.add("orders", "k1", state="dead")
    pending, _ = box.add("orders", "k3")

    assert ok_json(box, "replay", "--id", old_id, "--yes") == {"action": "replay", "rows": 1}
    assert box.state(old) == "pending"
    assert ok_json(box, "replay", "--since", "2h", "--until", "30m", "--yes")["rows"] == 1
    assert box.state(other_topic) == "pending"
    assert ok_json(box, "replay", "--topic", "orders", "--key", "k2", "--yes")["rows"] == 1
    assert box.state(recent) == "pending"
    assert (box.state(dead), box.state(pending)) == ("dead", "pending")


def test_replay_refuses_without_a_selector_and_confirms(box: Box) -> None:
    seq, _ = box.add("orders", state="delivered")
    refused(invoke(box, "replay", "--yes"), "needs a selector")
    refused(invoke(box, "replay", "--until", "1h", "--yes"), "--until needs --since")
    refused(invoke(box, "replay", "--since", "yesterday", "--yes"), "invalid time")
    declined = invoke(box, "replay", "--topic", "orders", input="n\n")
    assert declined.exit_code == 1 and box.state(seq) == "delivered"
    accepted = invoke(box, "replay", "--topic", "orders", input="y\n")
    assert accepted.exit_code == 0 and "1 event(s) pending again" in accepted.stderr
    assert box.state(seq) == "pending"


# --------------------------------------------------------------------------------------- cleanup


def test_cleanup_deletes_old_delivered_rows_in_batches_and_nothing_else(box: Box) -> None:
    old = [box.add("orders", f"k{i}", state="delivered", age=timedelta(days=10))[0] for i in range(7)]
    recent, _ = box.add("orders", "k1", state="delivered", age=timedelta(days=1))
    old_pending, _ = box.add("orders", "k1", age=timedelta(days=30))
    old_dead, _ = box.add("orders", "k2", state="dead", age=timedelta(days=30))
    discarded, discarded_id = box.add("orders", "k3", state="dead", age=timedelta(days=30))
    assert ok_json(box, "dead-letters", "discard", "--id", discarded_id, "--yes")["rows"] == 1

    assert ok_json(box, "cleanup", "--older-than", "7d", "--dry-run") == {
        "dry_run": True,
        "deleted": 0,
        "would_delete": 7,
    }
    doc = ok_json(box, "cleanup", "--older-than", "7d", "--batch", "3")

    assert doc["deleted"] == 7 and doc["batches"] == 3 and not doc["dry_run"]
    assert all(box.state(seq) == "deleted" for seq in old)
    assert (box.state(recent), box.state(old_pending), box.state(old_dead)) == ("delivered", "pending", "dead")
    # Discarded just now: kept for the whole window like any delivered row.
    assert box.state(discarded) == "delivered"
    assert ok_json(box, "cleanup", "--older-than", "0s")["deleted"] == 2  # recent + discarded
    assert (box.state(old_pending), box.state(old_dead)) == ("pending", "dead")


def test_cleanup_progress_and_bad_input(box: Box) -> None:
    box.add("orders", state="delivered", age=timedelta(days=8))
    result = invoke(box, "cleanup", "--batch", "10")
    assert result.exit_code == 0 and "deleted 1 row(s) in 1 batch(es)" in result.stderr
    refused(invoke(box, "cleanup", "--older-than", "7 days"), "invalid duration")
    refused(invoke(box, "cleanup", "--batch", "0"), "--batch")
    if not box.pg:
        refused(invoke(box, "cleanup", "--explain-partitioning"), "PostgreSQL recipe")


def test_missing_database_or_table_is_one_line(tmp_path: Any) -> None:
    result = CliRunner().invoke(app, ["status", "--db", f"sqlite:///{tmp_path}/none.db"])
    assert result.exit_code == 1 and result.stderr.startswith("error:") and "migrate" in result.stderr
    result = CliRunner().invoke(app, ["status"], env={"OUTBOXKIT_DB": "", "OUTBOXKIT_CONFIG": ""})
    assert result.exit_code == 2 and "no database" in result.stderr


# ---------------------------------------------------------------------------------- pure parsing


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("7d", 604800), ("12h", 43200), ("30m", 1800), ("45s", 45), ("2w", 1209600), ("1d12h", 129600), ("0s", 0)],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "7", "d", "7x", "-1d", "7 days", "1.5h"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ConfigurationError):
        parse_duration(text)


def test_parse_time() -> None:
    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    assert parse_time("2h", now=now) == datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
    assert parse_time("2026-11-25T10:00:00Z") == datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    assert parse_time("2026-11-25T10:00:00") == datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    assert parse_time("2026-11-25T12:00:00+02:00") == datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


# ---------------------------------------------------------------------------------- partitioning


def in_day(day: date) -> timedelta:
    """The age that puts a row written now at noon (UTC) of ``day``."""
    return datetime.now(UTC) - datetime(day.year, day.month, day.day, 12, tzinfo=UTC)


@pytest.mark.postgres
async def test_partitioning_recipe_works_with_migrate_relay_and_cleanup(pg_url: str) -> None:
    ref = TableRef("outbox", unique("okt"))
    box = Box(pg_url, ref)
    printed = CliRunner().invoke(app, ["cleanup", "--explain-partitioning", "--schema", ref.schema or ""])
    assert printed.exit_code == 0 and "PARTITION BY RANGE (created_at)" in printed.stdout
    try:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            for stmt in partitioning_recipe(ref):
                conn.execute(stmt.encode())
            # The day of the partition, and rows placed at its noon whatever the clock says when
            # they are written: a run that crosses midnight (UTC) between the two once put the
            # "busy" row in the next day's partition and the test saw its day dropped.
            day = (datetime.now(UTC) - timedelta(days=10)).date()
            conn.execute(
                f'CREATE TABLE "{ref.schema}"."outbox_p{day:%Y%m%d}" PARTITION OF {ref.qualified}'
                f" FOR VALUES FROM ('{day}T00:00Z') TO ('{day + timedelta(days=1)}T00:00Z')".encode()
            )
        migrate(pg_url, ref)  # keeps the partitioned table, adds indexes, meta, trigger

        old_delivered = [box.add("orders", "k1", state="delivered", age=in_day(day))[0] for _ in range(3)]
        with psycopg.connect(pg_url) as conn, conn.transaction():
            event_id = Outbox(schema=ref.schema).emit(conn, "orders", {"n": 1}, key="k1")
        store = await open_store(pg_url, ref)
        try:
            assert [e.id for e in await store.fetch_pending(10, Filter())] == [event_id]
        finally:
            await store.close()

        maintain = f"SELECT * FROM {ref.derived('partitions')}('7 days')"
        busy, _ = box.add("orders", "k2", age=in_day(day))  # a pending row keeps its day
        assert f"kept outbox_p{day:%Y%m%d} (pending or dead rows)" in {r[0] for r in box.sql(maintain)}
        box.sql(f"UPDATE {ref.qualified} SET delivered_at = now() WHERE seq = %s", (busy,))
        assert f"dropped outbox_p{day:%Y%m%d}" in {r[0] for r in box.sql(maintain)}
        assert all(box.state(seq) == "deleted" for seq in [*old_delivered, busy])

        # The batched cleanup works on the partitioned table too (seq keys, not ctid).
        box.add("orders", state="delivered", age=timedelta(days=0))
        assert ok_json(box, "cleanup", "--older-than", "0s")["deleted"] == 1
        assert ok_json(box, "status")["pending"] == 1
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{ref.schema}" CASCADE'.encode())
