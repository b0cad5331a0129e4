"""The ``outboxkit`` commands on MariaDB: migrate (and --sql), status with relays and buckets,
dead letters, replay and cleanup, the same commands and JSON as on PostgreSQL."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from outboxkit.cli import app
from outboxkit.stores.base import BUCKETS, Filter, TableRef
from outboxkit.stores.mariadb import DATABASE
from outboxkit.testing.stores import emit_committed, opened
from tests.conftest import MARIADB_URL, require, unique


@dataclass
class Harness:
    url: str
    ref: TableRef
    shares_buckets: bool = True
    concurrent_writers: bool = True


SCHEMA_DOC = Path(__file__).resolve().parents[2] / "docs" / "schema.md"


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def box() -> Iterator[tuple[TableRef, list[str]]]:
    require("MariaDB", "127.0.0.1", 3306)
    ref = TableRef("outbox", unique("okc"))
    args = ["--db", MARIADB_URL, "--schema", ref.schema or ""]
    migrated = run("migrate", *args)
    assert migrated.exit_code == 0, migrated.output
    yield ref, args
    conn = DATABASE.connect(MARIADB_URL)
    try:
        DATABASE.drop_namespace(conn, ref.schema or "")
    finally:
        conn.close()


def test_migrate_sql_prints_mariadb_ddl_with_quoted_identifiers() -> None:
    printed = run("migrate", "--sql", "--dialect", "mariadb", "--schema", "app", "--table", "events")
    assert printed.exit_code == 0, printed.output
    assert "CREATE TABLE IF NOT EXISTS `app`.`events`" in printed.stdout
    assert "AUTO_INCREMENT" in printed.stdout and "UTC_TIMESTAMP(6)" in printed.stdout
    inbox = run("migrate", "--inbox", "--sql", "--dialect", "mysql")
    assert inbox.exit_code == 0 and "INSERT" not in inbox.stdout and "`inbox_dead`" in inbox.stdout
    bad = run("migrate", "--sql", "--dialect", "mariadb", "--table", "x`; DROP TABLE y; --")
    assert bad.exit_code != 0


async def test_status_dead_letters_replay_and_cleanup(box: tuple[TableRef, list[str]]) -> None:
    ref, args = box
    h = Harness(MARIADB_URL, ref)
    ids = emit_committed(h, [(None, f"k{i}") for i in range(4)])
    async with opened(h) as store:
        leases = (await store.maintain_leases("relay-x", {}, 30.0, rebalance=True)).held
        rows = await store.fetch_pending(10, Filter(), leases)
        assert await store.mark_delivered([rows[0].seq, rows[1].seq], leases) == 2
        assert await store.record_failure(rows[2].seq, "too large", dead=True, leases=leases)

        status = run("status", *args, "--json")
        assert status.exit_code == 0, status.output
        doc = json.loads(status.stdout)
        assert doc["database"] == "mariadb"
        assert (doc["pending"], doc["dead"], doc["delivered"]) == (1, 1, 2)
        assert doc["relays"]["mode"] == "leases"
        assert [r["owner"] for r in doc["relays"]["live"]] == ["relay-x"]
        assert len(doc["relays"]["live"][0]["buckets"]) == BUCKETS and doc["relays"]["buckets_free"] == []

    listed = json.loads(run("dead-letters", "list", *args, "--json").stdout)
    assert listed["total"] == 1 and listed["dead_letters"][0]["id"] == ids[2]
    assert listed["dead_letters"][0]["last_error"] == "too large"
    replayed = run("replay", *args, "--id", ids[0], "--yes", "--json")
    assert json.loads(replayed.stdout) == {"action": "replay", "rows": 1}
    discarded = run("dead-letters", "discard", *args, "--all", "--yes", "--json")
    assert json.loads(discarded.stdout) == {"action": "discard", "rows": 1}
    dry = json.loads(run("cleanup", *args, "--older-than", "0s", "--dry-run", "--json").stdout)
    assert dry["would_delete"] == 2  # ids[1] and the discarded dead letter
    done = json.loads(run("cleanup", *args, "--older-than", "0s", "--batch", "1", "--json").stdout)
    assert done["deleted"] == 2 and done["batches"] == 3
    doc = json.loads(run("status", *args, "--json").stdout)
    assert (doc["pending"], doc["dead"], doc["delivered"]) == (2, 0, 0)
    assert doc["table"] == f"{box[0].schema}.outbox"  # named as a person writes it, no quotes
    refused = run("cleanup", *args, "--explain-partitioning")
    assert refused.exit_code == 2 and "PostgreSQL recipe" in refused.output


async def test_schema_doc_mariadb_insert_is_a_valid_row(box: tuple[TableRef, list[str]]) -> None:
    """The plain-SQL INSERT that docs/schema.md shows for MariaDB runs as written and makes a row
    the relay reads whole."""
    ref, _ = box
    page = SCHEMA_DOC.read_text()
    (sql,) = [b for b in re.findall(r"```sql\n(.*?)```", page, re.DOTALL) if "MariaDB" in b]
    conn = DATABASE.connect(MARIADB_URL)
    try:
        conn.execute(f"USE `{ref.schema}`")
        conn.execute(sql)
    finally:
        conn.close()
    async with opened(Harness(MARIADB_URL, ref)) as store:
        (event,) = await store.fetch_pending(10, Filter())
    assert event.defect is None
    assert (event.topic, event.key, event.payload) == ("orders.created", "customer-7", b'{"id": 7}')
