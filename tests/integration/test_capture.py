"""Capture by triggers on PostgreSQL, MariaDB and SQLite: rows changed by plain SQL (no emit, no
application change) reach the bus once each, in commit order per key, with the operation as a
CloudEvents attribute; nothing for a rolled-back transaction."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from typer.testing import CliRunner

from outboxkit import migrate
from outboxkit.capture import CaptureSpec, add_capture, list_captures, remove_capture
from outboxkit.cli import app
from outboxkit.errors import ConfigurationError
from outboxkit.stores.base import TableRef
from outboxkit.stores.database import placeholders
from outboxkit.stores.registry import database_for
from tests.conftest import Backend
from tests.helpers import db_connect, pending, read_all, relay_for, running_relay


def _orders(backend: Backend) -> TableRef:
    """A business table next to the outbox, created by plain SQL."""
    target = TableRef("orders", backend.ref.schema)
    conn = db_connect(backend.db)
    try:
        conn.execute(
            f"CREATE TABLE {target.quoted(database_for(backend.db).quote)} (id integer PRIMARY KEY,"
            " customer varchar(64) NOT NULL, status varchar(32) NOT NULL, amount integer)"
        )
    finally:
        conn.close()
    return target


def _sql(backend: Backend, target: TableRef, statements: list[tuple[str, tuple[Any, ...]]], *, commit: bool) -> None:
    """One transaction of plain SQL, as psql or a program in another language would run it."""
    database = database_for(backend.db)
    table = target.quoted(database.quote)
    conn = db_connect(backend.db)
    try:
        conn.execute(database.begin_sql)
        for text, params in statements:
            conn.execute(placeholders(database, text.format(t=table)), params)
        conn.execute("COMMIT" if commit else "ROLLBACK")
    finally:
        conn.close()


async def test_plain_sql_changes_arrive_once_each_in_commit_order_per_key(backend: Backend) -> None:
    target = _orders(backend)
    topic = backend.stream.topic("orders.changed")
    add_capture(backend.db, CaptureSpec(target, topic, key="customer"), backend.ref)
    insert = "INSERT INTO {t} (id, customer, status, amount) VALUES (?, ?, ?, ?)"
    rows = [(insert, (1, "c1", "new", 10)), (insert, (2, "c2", "new", 20)), (insert, (3, "c1", "new", 30))]
    _sql(backend, target, rows, commit=True)
    # A multi-row UPDATE: one statement, three rows, two keys.
    _sql(backend, target, [("UPDATE {t} SET status = ? WHERE id IN (1, 2, 3)", ("paid",))], commit=True)
    # Rolled back: nothing may reach the bus.
    undone = [("UPDATE {t} SET status = ? WHERE id = 1", ("refunded",)), (insert, (4, "c2", "x", 1))]
    _sql(backend, target, undone, commit=False)
    _sql(backend, target, [("DELETE FROM {t} WHERE id = ?", (2,))], commit=True)
    async with running_relay(relay_for(backend.db, backend.stream.url, backend.ref)):
        got = await read_all(backend.stream.url, backend.stream.name, expect=7, idle=1.0)
    assert pending(backend.db, backend.ref) == 0
    assert len(got) == 7 and len({m.event_id for m in got}) == 7, "each change once"
    bodies = [json.loads(m.payload) for m in got]
    assert all(uuid.UUID(m.event_id).version == 7 for m in got), "ids follow the envelope (UUIDv7)"
    # The operation is visible without parsing the body: a CloudEvents extension attribute.
    assert [m.headers.get("ce-operation") for m in got] == [b["op"] for b in bodies]
    per_key: dict[str | None, list[tuple[str, int, str]]] = {}
    for m, b in zip(got, bodies, strict=True):
        row = b.get("after") or b["before"]
        per_key.setdefault(m.key, []).append((b["op"], int(row["id"]), row["status"]))
    assert per_key == {
        "c1": [("insert", 1, "new"), ("insert", 3, "new"), ("update", 1, "paid"), ("update", 3, "paid")],
        "c2": [("insert", 2, "new"), ("update", 2, "paid"), ("delete", 2, "paid")],
    }
    update = next(b for b in bodies if b["op"] == "update")
    assert update["before"]["status"] == "new" and update["after"]["status"] == "paid"
    assert not any(b.get("after", {}).get("status") == "refunded" for b in bodies), "the rollback leaked"
    assert not any(int((b.get("after") or b["before"])["id"]) == 4 for b in bodies), "the rollback leaked"


async def test_columns_operations_list_remove_and_migrate_reinstalls(backend: Backend) -> None:
    target = _orders(backend)
    topic = backend.stream.topic("orders.status")
    spec = CaptureSpec(target, topic, key="id", on=("update",), columns=("id", "status"))
    add_capture(backend.db, spec, backend.ref)
    assert list_captures(backend.db, backend.ref) == [(spec, 1)]
    insert = "INSERT INTO {t} (id, customer, status, amount) VALUES (?, ?, ?, ?)"
    _sql(backend, target, [(insert, (1, "c1", "new", 10))], commit=True)  # not captured: --on update
    _sql(backend, target, [("UPDATE {t} SET status = ? WHERE id = 1", ("paid",))], commit=True)
    assert pending(backend.db, backend.ref) == 1
    # migrate re-creates installed triggers (here after someone dropped them by hand).
    database = database_for(backend.db)
    conn = db_connect(backend.db)
    try:
        for stmt in database.capture().remove(backend.ref, target):
            conn.execute(stmt)
    finally:
        conn.close()
    _sql(backend, target, [("UPDATE {t} SET status = ? WHERE id = 1", ("lost",))], commit=True)
    assert pending(backend.db, backend.ref) == 1
    migrate(backend.db, backend.ref)
    _sql(backend, target, [("UPDATE {t} SET status = ? WHERE id = 1", ("shipped",))], commit=True)
    assert pending(backend.db, backend.ref) == 2
    async with running_relay(relay_for(backend.db, backend.stream.url, backend.ref)):
        got = await read_all(backend.stream.url, backend.stream.name, expect=2, idle=1.0)
    bodies = [json.loads(m.payload) for m in got]
    assert [b["after"] for b in bodies] == [{"id": 1, "status": "paid"}, {"id": 1, "status": "shipped"}]
    assert [m.key for m in got] == ["1", "1"]
    assert remove_capture(backend.db, target, backend.ref)
    assert list_captures(backend.db, backend.ref) == []
    _sql(backend, target, [("UPDATE {t} SET status = ? WHERE id = 1", ("after-remove",))], commit=True)
    assert pending(backend.db, backend.ref) == 0
    assert not remove_capture(backend.db, target, backend.ref)


@pytest.mark.parametrize(
    ("table", "key", "columns", "words"),
    [
        ('orders"; DROP TABLE x; --', None, None, "invalid table"),
        ("orders", "nope", None, "no column nope"),
        ("orders", None, ("id", "nope"), "no column nope"),
        ("missing_table", None, None, "not found"),
    ],
)
def test_bad_names_are_refused_before_anything_changes(
    backend: Backend, table: str, key: str | None, columns: tuple[str, ...] | None, words: str
) -> None:
    _orders(backend)
    with pytest.raises(ConfigurationError, match=words):
        add_capture(backend.db, CaptureSpec(TableRef(table, backend.ref.schema), "orders.x", key, columns=columns))
    assert list_captures(backend.db, backend.ref) == []


def test_cli_add_list_remove(backend: Backend) -> None:
    target = _orders(backend)
    schema = ["--schema", target.schema] if target.schema else []
    runner = CliRunner()
    added = runner.invoke(
        app, ["capture", "add", "--db", backend.db, *schema, "--table", "orders", "--topic", "orders.changed",
              "--key", "customer", "--on", "insert,delete"],
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    listed = runner.invoke(app, ["capture", "list", "--db", backend.db, *schema, "--json"])
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.stdout) == [
        {
            "schema": target.schema,
            "table": "orders",
            "topic": "orders.changed",
            "key": "customer",
            "on": ["insert", "delete"],
            "columns": None,
            "trigger_version": 1,
        }
    ]
    bad = runner.invoke(app, ["capture", "add", "--db", backend.db, *schema, "--table", "orders", "--topic", "x y"])
    assert bad.exit_code != 0
    removed = runner.invoke(app, ["capture", "remove", "--db", backend.db, *schema, "--table", "orders"])
    assert removed.exit_code == 0, removed.output
    assert json.loads(runner.invoke(app, ["capture", "list", "--db", backend.db, *schema, "--json"]).stdout) == []
