"""``outboxkit inbox dead-letters list|show|retry|discard`` as a user runs them (the console script,
from the directory holding the handler), on SQLite, PostgreSQL and MariaDB.

The dead letters are written with the statements the inbox runner itself uses when a handler has
failed ``--max-attempts`` times (the inbox's claim and ``<inbox>_dead`` row in one transaction)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from outboxkit.inbox.schema import connect_sync, migrate_inbox
from outboxkit.stores.base import TableRef
from outboxkit.stores.registry import database_for
from tests.conftest import MARIADB_URL, PG_URL, require, unique
from tests.integration.test_cli_edges import error_line, run

HANDLER = """\
import json

INSERT = {insert!r}

def on_order(conn, event):
    body = json.loads(event.payload)
    if body.get("poison"):
        raise ValueError("still poison: " + event.id)
    conn.execute(INSERT, (event.id, event.attempt))
"""


def dead_letter(url: str, ref: TableRef, consumer: str, event_id: str, payload: dict[str, object]) -> None:
    """What InboxRunner._dead_letter writes after the last failed attempt."""
    sql = database_for(url).inbox()
    conn = connect_sync(url)
    try:
        conn.execute("BEGIN")
        conn.execute(sql.claim_sql(ref), (consumer, event_id))
        row = (consumer, event_id, "orders.created", "customer-1", json.dumps(payload).encode(), '{"ce-type": "x"}')
        conn.execute(sql.dead_sql(ref), (*row, "Traceback ...\nValueError: boom", 5))
        conn.execute("COMMIT")
    finally:
        conn.close()


def exec_sql(url: str, sql: str) -> list[tuple[object, ...]]:
    conn = connect_sync(url)
    try:
        cur = conn.execute(sql)
        return list(cur.fetchall()) if cur.description else []
    finally:
        conn.close()


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def inbox(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, TableRef, list[str]]]:
    """(url, inbox ref, CLI flags) with an ``invoices`` table the handler writes to."""
    if request.param == "sqlite":
        url, ref = f"sqlite:///{tmp_path}/billing.db", TableRef("inbox")
        invoices = "invoices"
        schema = None
    else:
        require(request.param, "127.0.0.1", 5432 if request.param == "postgresql" else 3306)
        url = PG_URL if request.param == "postgresql" else MARIADB_URL
        schema = unique("oki")
        ref = TableRef("inbox", schema)
        q = database_for(url).quote
        invoices = f"{q}{schema}{q}.invoices"
    migrate_inbox(url, ref)
    exec_sql(url, f"CREATE TABLE {invoices} (event_id varchar(64) PRIMARY KEY, attempt integer)")
    placeholder = "?" if request.param == "sqlite" else "%s"
    insert = f"INSERT INTO {invoices} (event_id, attempt) VALUES ({placeholder}, {placeholder})"
    (tmp_path / "billing_handlers.py").write_text(HANDLER.replace("{insert!r}", repr(insert)))
    flags = ["--db", url, *(["--schema", schema] if schema else [])]
    try:
        yield url, ref, flags
    finally:
        if request.param == "postgresql":
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'.encode())
        elif request.param == "mariadb":
            exec_sql(url, f"DROP DATABASE IF EXISTS `{schema}`")


def invoices_of(url: str, ref: TableRef) -> list[tuple[object, ...]]:
    q = database_for(url).quote
    table = f"{q}{ref.schema}{q}.invoices" if ref.schema else "invoices"
    return [tuple(r) for r in exec_sql(url, f"SELECT event_id, attempt FROM {table} ORDER BY event_id")]


def test_list_show_retry_discard(inbox: tuple[str, TableRef, list[str]], tmp_path: Path) -> None:
    url, ref, flags = inbox
    dead_letter(url, ref, "billing", "e-good", {"id": 1})
    dead_letter(url, ref, "billing", "e-poison", {"id": 2, "poison": True})
    dead_letter(url, ref, "shipping", "e-other", {"id": 3})

    listed = run("inbox", "dead-letters", "list", *flags, "--json")
    assert listed.returncode == 0, listed.stderr
    doc = json.loads(listed.stdout)
    assert doc["total"] == 3
    assert {(d["consumer"], d["event_id"], d["key"], d["attempts"]) for d in doc["dead_letters"]} == {
        ("billing", "e-good", "customer-1", 5),
        ("billing", "e-poison", "customer-1", 5),
        ("shipping", "e-other", "customer-1", 5),
    }
    table = run("inbox", "dead-letters", "list", *flags, "--group", "billing")
    assert table.returncode == 0 and "e-good" in table.stdout and "e-other" not in table.stdout, table.stderr
    assert "ValueError: boom" in table.stdout

    shown = run("inbox", "dead-letters", "show", "--id", "e-poison", *flags, "--json")
    assert shown.returncode == 0, shown.stderr
    (letter,) = json.loads(shown.stdout)["dead_letters"]
    assert json.loads(letter["payload"]) == {"id": 2, "poison": True} and letter["headers"] == {"ce-type": "x"}
    assert "Traceback" in letter["error"]
    missing = run("inbox", "dead-letters", "show", "--id", "nobody", *flags)
    assert missing.returncode == 1 and "no inbox dead letter with id 'nobody'" in error_line(missing)

    # retry imports the handler from the current directory, like consume; it needs a selection.
    vague = run("inbox", "dead-letters", "retry", *flags, "--handler", "billing_handlers:on_order", cwd=tmp_path)
    assert vague.returncode == 2 and "say which dead letters" in error_line(vague)
    retried = run(
        "inbox", "dead-letters", "retry", *flags, "--group", "billing", "--all",
        "--handler", "billing_handlers:on_order", "--json", cwd=tmp_path,
    )  # fmt: skip
    assert retried.returncode == 1, retried.stderr  # one letter failed again
    outcome = json.loads(retried.stdout)
    assert outcome["processed"] == 1 and [f["event_id"] for f in outcome["failed"]] == ["e-poison"]
    assert "still poison: e-poison" in outcome["failed"][0]["error"]
    assert invoices_of(url, ref) == [("e-good", 6)]  # the handler saw attempt = attempts + 1

    after = json.loads(run("inbox", "dead-letters", "list", *flags, "--json").stdout)
    left = {d["event_id"]: d for d in after["dead_letters"]}
    assert set(left) == {"e-poison", "e-other"} and left["e-poison"]["attempts"] == 6
    assert "still poison" in left["e-poison"]["error"]

    # discard asks first (EOF is a no), then deletes only what was selected.
    refused = run("inbox", "dead-letters", "discard", *flags, "--id", "e-poison")
    assert refused.returncode == 1 and "nothing changed" in refused.stderr
    gone = run("inbox", "dead-letters", "discard", *flags, "--id", "e-poison", "--yes", "--json")
    assert gone.returncode == 0 and json.loads(gone.stdout) == {"action": "discard", "rows": 1}, gone.stderr
    final = json.loads(run("inbox", "dead-letters", "list", *flags, "--json").stdout)
    assert [d["event_id"] for d in final["dead_letters"]] == ["e-other"]
    # The inbox still holds the discarded and the retried ids: a copy the bus redelivers is a duplicate.
    q = database_for(url).quote
    claimed = exec_sql(url, f"SELECT event_id FROM {ref.quoted(q)} ORDER BY event_id")
    assert [r[0] for r in claimed] == ["e-good", "e-other", "e-poison"]


def test_a_missing_inbox_is_one_line(tmp_path: Path) -> None:
    db = tmp_path / "empty.db"
    sqlite3.connect(db).close()
    result = run("inbox", "dead-letters", "list", "--db", f"sqlite:///{db}")
    assert result.returncode != 0
    error_line(result)


def test_retry_awaits_an_async_handler(tmp_path: Path) -> None:
    """`async def` handlers work in retry as they do in consume: awaited with the same connection."""
    url, ref = f"sqlite:///{tmp_path}/billing.db", TableRef("inbox")
    migrate_inbox(url, ref)
    exec_sql(url, "CREATE TABLE seen (event_id text PRIMARY KEY)")
    (tmp_path / "async_handlers.py").write_text(
        "import asyncio\n\nasync def on_order(conn, event):\n    await asyncio.sleep(0)\n"
        "    conn.execute('INSERT INTO seen (event_id) VALUES (?)', (event.id,))\n"
    )
    dead_letter(url, ref, "billing", "e-1", {"id": 1})
    done = run("inbox", "dead-letters", "retry", "--db", url, "--id", "e-1", "--handler", "async_handlers:on_order",
               cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0 and "1 dead letter(s) processed, 0 failed again" in done.stderr, done.stderr
    assert exec_sql(url, "SELECT event_id FROM seen") == [("e-1",)]
