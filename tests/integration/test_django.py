"""outboxkit.contrib.django in a real Django project (tests/integration/django_project): emit inside
``transaction.atomic()``, the migrations against ``outboxkit migrate``, the admin through Django's
test client, and the management commands as processes, on SQLite, PostgreSQL and MariaDB.

Django is configured once per test process (its settings cannot be swapped): the project has a
``default`` SQLite alias, a ``pg`` alias in a schema of this process, and a ``mysql`` alias in a
database of this process; each test picks the alias holding the outbox with ``override_settings``.
The tests share one xdist group, so one worker sets Django up once.
"""

from __future__ import annotations

import asyncio
import html
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from outboxkit import migrate
from outboxkit.errors import InvalidTopicError, NoTransactionError
from outboxkit.inbox.schema import migrate_inbox
from outboxkit.stores.base import TableRef
from outboxkit.stores.registry import store_for
from tests.conftest import CI, MARIADB_URL, NATS_URL, PG_URL, _reachable, drop_stream, make_stream, unique
from tests.helpers import read_all

pytest.importorskip("django")  # the `django` extra; installed by scripts/bootstrap (dev)

pytestmark = pytest.mark.xdist_group("django")

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = "tests.integration.django_project.settings"
ALIASES = ["default", "pg", "mysql"]


def _need(name: str, port: int) -> bool:
    if _reachable("127.0.0.1", port):
        return True
    if CI:
        pytest.fail(f"{name} is not reachable at 127.0.0.1:{port} (CI=true: services are required)")
    return False


@pytest.fixture(scope="session")
def django_env() -> Iterator[dict[str, str]]:
    """Configure Django once for this process: fresh SQLite file, PostgreSQL schema, MariaDB database."""
    tmp = tempfile.mkdtemp(prefix="okt-django-")
    env = {
        "DJANGO_SETTINGS_MODULE": SETTINGS,
        "OKT_DJANGO_SQLITE": os.path.join(tmp, "shop.db"),
        "OKT_DJANGO_BROKER": NATS_URL,
    }
    pg_schema = mysql_db = None
    if _need("PostgreSQL", 5432):
        pg_schema = unique("okt_dj")
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{pg_schema}"'.encode())
        env["OKT_DJANGO_PG_SCHEMA"] = pg_schema
    if _need("MariaDB", 3306):
        from outboxkit.stores.mariadb import DATABASE

        mysql_db = unique("okt_dj")
        conn = DATABASE.connect(MARIADB_URL)
        DATABASE.create_namespace(conn, mysql_db)
        conn.close()
        env["OKT_DJANGO_MYSQL_DB"] = mysql_db
    os.environ.update(env)
    import django
    from django.core.management import call_command
    from django.db import connections
    from django.test.utils import override_settings, setup_test_environment

    django.setup()
    setup_test_environment()  # the test client records templates and contexts
    for alias in connections:
        with override_settings(OUTBOXKIT={"DATABASE": alias}):
            call_command("migrate", database=alias, verbosity=0)
    try:
        yield env
    finally:
        connections.close_all()
        if pg_schema:
            with psycopg.connect(PG_URL, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{pg_schema}" CASCADE'.encode())
        if mysql_db:
            from outboxkit.stores.mariadb import DATABASE

            conn = DATABASE.connect(MARIADB_URL)
            DATABASE.drop_namespace(conn, mysql_db)
            conn.close()


@pytest.fixture(params=ALIASES)
def alias(request: pytest.FixtureRequest, django_env: dict[str, str]) -> Iterator[str]:
    """The alias holding the outbox for this test (OUTBOXKIT["DATABASE"])."""
    from django.conf import settings
    from django.db import connections
    from django.test.utils import override_settings

    name = request.param
    if name not in connections:
        pytest.skip(f"no {name} database here")
    with override_settings(OUTBOXKIT={**settings.OUTBOXKIT, "DATABASE": name}):
        yield name


def _rows(alias: str, topic: str) -> list[tuple[Any, ...]]:
    """(id, key, attempts, delivered, dead, last_error) of the outbox rows of ``topic``, in seq order."""
    from django.db import connections

    key = "`key`" if connections[alias].vendor == "mysql" else "key"
    with connections[alias].cursor() as cur:
        cur.execute(
            f"SELECT id, {key}, attempts, delivered_at IS NOT NULL, dead_at IS NOT NULL, last_error "
            "FROM outbox WHERE topic = %s ORDER BY seq",
            [topic],
        )
        return [(str(r[0]), r[1], r[2], bool(r[3]), bool(r[4]), r[5]) for r in cur.fetchall()]


def _orders(alias: str, customer: str) -> int:
    from tests.integration.django_project.shop.models import Order

    return int(Order.objects.using(alias).filter(customer=customer).count())


def _manage(env: dict[str, str], alias: str, *args: str) -> subprocess.Popen[str]:
    """``python -m django <args>`` with this process's databases and the outbox on ``alias``."""
    full = {**os.environ, **env, "OKT_DJANGO_OUTBOX": alias, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "django", *args],
        cwd=ROOT,
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# --------------------------------------------------------------------------------------------
# emit


def test_emit_in_atomic_commits_and_rolls_back_with_the_model(alias: str) -> None:
    from django.db import transaction

    from outboxkit.contrib.django import emit
    from tests.integration.django_project.shop.models import Order

    topic, customer = f"{unique('t')}.created", unique("c")
    with transaction.atomic(using=alias):
        order = Order.objects.using(alias).create(customer=customer, total=5)
        kept = emit(topic, {"order": order.pk}, key=customer, using=alias)
    with pytest.raises(RuntimeError), transaction.atomic(using=alias):
        Order.objects.using(alias).create(customer=customer, total=6)
        emit(topic, {"order": "gone"}, key=customer, using=alias)
        raise RuntimeError("rolled back")
    assert _orders(alias, customer) == 1
    assert _rows(alias, topic) == [(kept, customer, 0, False, False, None)]
    assert uuid.UUID(kept).version == 7


def test_emit_refuses_outside_a_transaction(alias: str) -> None:
    from django.db import IntegrityError, transaction

    from outboxkit.contrib.django import emit
    from tests.integration.django_project.shop.models import Order

    topic = f"{unique('t')}.created"
    with pytest.raises(NoTransactionError, match=r"autocommit mode.*transaction\.atomic"):
        emit(topic, {"n": 1}, using=alias)
    # A bad topic is refused before the INSERT: the transaction goes on and commits.
    with transaction.atomic(using=alias):
        with pytest.raises(InvalidTopicError):
            emit("bad topic with spaces", {"n": 1}, using=alias)
        emit(topic, {"n": 2}, using=alias)
    assert len(_rows(alias, topic)) == 1
    # A transaction Django will roll back (an error caught inside atomic) takes no event.
    with transaction.atomic(using=alias):
        order = Order.objects.using(alias).create(customer=unique("c"), total=1)
        try:
            with transaction.atomic(using=alias, savepoint=False):
                Order.objects.using(alias).create(id=order.pk, customer="dup", total=1)
        except IntegrityError:
            pass
        with pytest.raises(NoTransactionError, match="marked for rollback"):
            emit(topic, {"n": 3}, using=alias)
        transaction.set_rollback(True, using=alias)
    assert len(_rows(alias, topic)) == 1


def test_table_and_schema_settings_reach_emit_and_the_commands(
    django_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """OUTBOXKIT TABLE / SCHEMA: emit writes there, and `outbox_status` reads there."""
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connections, transaction
    from django.test.utils import override_settings

    from outboxkit.contrib.django import emit

    if "pg" not in connections:
        pytest.skip("no PostgreSQL here")
    ref = TableRef("events", unique("okt_dj"))
    migrate(PG_URL, ref)
    try:
        conf = {**settings.OUTBOXKIT, "DATABASE": "pg", "TABLE": ref.table, "SCHEMA": ref.schema}
        with override_settings(OUTBOXKIT=conf):
            with transaction.atomic(using="pg"):
                event_id = emit("orders.created", {"n": 1})
            with connections["pg"].cursor() as cur:
                cur.execute(f"SELECT id::text, source FROM {ref.qualified}")
                assert cur.fetchall() == [(event_id, "/shop")]
            capsys.readouterr()
            call_command("outbox_status", outboxkit_args=["--json"])
        report = json.loads(capsys.readouterr().out)
        assert (report["table"], report["pending"]) == (f"{ref.schema}.{ref.table}", 1)  # no quotes
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{ref.schema}" CASCADE'.encode())


def test_atomic_requests_make_the_request_the_transaction(alias: str) -> None:
    """A view without atomic(): refused in autocommit (the order stays, no event: the view's
    own fault, said clearly); with ATOMIC_REQUESTS the order and the event commit together."""
    from django.db import connections
    from django.test import Client

    topic, customer = f"{unique('t')}.created", unique("c")
    client = Client(raise_request_exception=True)
    with pytest.raises(NoTransactionError, match="autocommit"):
        client.post("/orders/implicit/", {"customer": customer, "topic": topic})
    assert _rows(alias, topic) == []
    settings_dict = connections[alias].settings_dict
    settings_dict["ATOMIC_REQUESTS"] = True
    try:
        placed = client.post("/orders/implicit/", {"customer": customer, "topic": topic})
    finally:
        settings_dict["ATOMIC_REQUESTS"] = False
    assert placed.status_code == 201
    assert [r[0] for r in _rows(alias, topic)] == [placed.json()["event"]]


def test_the_docs_view_runs_as_written(django_env: dict[str, str]) -> None:
    """docs/django.md's view, run as the page shows it (its `shop` app is the test project's)."""
    from django.test import RequestFactory

    from outboxkit.contrib.django.models import OutboxEvent
    from tests.integration.django_project.shop.models import Order

    page = (ROOT / "docs" / "django.md").read_text()
    blocks = [b.split("```", 1)[0] for b in page.split("```python\n")[1:]]
    (code,) = [b for b in blocks if "def place_order" in b]
    code = code.replace("from shop.models import", "from tests.integration.django_project.shop.models import")
    namespace: dict[str, Any] = {}
    exec(compile(code, "docs/django.md", "exec"), namespace)
    customer = unique("c")
    response = namespace["place_order"](RequestFactory().post("/orders/", {"customer": customer, "total": "3"}))
    assert response.status_code == 201
    placed = json.loads(response.content)
    event = OutboxEvent.objects.get(event_id=placed["event"])
    assert (event.topic, event.key, json.loads(bytes(event.payload))) == (
        "orders.created",
        f"customer-{customer}",
        {"order": placed["order"], "customer": customer, "total": 3},
    )
    assert Order.objects.filter(customer=customer).count() == 1


def test_the_docs_test_drives_the_relay_until_empty(django_env: dict[str, str]) -> None:
    """docs/django.md's test case, run as the page shows it: the view through Django's test client,
    `outbox_relay --until-empty` in this process, then the delivered row read through the model.

    Its body runs directly rather than through unittest: TransactionTestCase's teardown flushes the
    database, and here that database is the session's, shared with the other tests. Only the topic
    changes (the test project's view takes one), so that a stream of this test captures it."""
    from django.db import connections
    from django.test import Client

    if not _need("NATS", 4222):
        pytest.skip("NATS is not reachable")
    page = (ROOT / "docs" / "django.md").read_text()
    blocks = [b.split("```", 1)[0] for b in page.split("```python\n")[1:]]
    (code,) = [b for b in blocks if "--until-empty" in b]
    stream = asyncio.run(make_stream(NATS_URL))
    posted = '{"customer": "ada", "total": "30"}'
    assert posted in code
    code = code.replace(posted, f'{{"customer": "ada", "total": "30", "topic": "{stream.topic("orders")}"}}')
    # What earlier tests left pending (topics no stream takes, keys behind their dead letters) is
    # not this test's to publish: --until-empty would rightly refuse to call the outbox empty.
    with connections["default"].cursor() as cur:
        cur.execute("UPDATE outbox SET delivered_at = CURRENT_TIMESTAMP, dead_at = NULL WHERE delivered_at IS NULL")
    namespace: dict[str, Any] = {}
    try:
        exec(compile(code, "docs/django.md", "exec"), namespace)
        case = namespace["PlaceOrderTest"]("test_placing_an_order_publishes_its_event")
        case.client = Client()
        case.test_placing_an_order_publishes_its_event()
        got = asyncio.run(read_all(NATS_URL, stream.name, expect=1, idle=0.2, timeout=30))
        assert [json.loads(m.payload)["customer"] for m in got] == ["ada"]
    finally:
        asyncio.run(drop_stream(stream))


def test_the_settings_table_in_the_docs_is_the_code(django_env: dict[str, str]) -> None:
    from outboxkit.contrib.django.conf import _KNOWN

    page = (ROOT / "docs" / "django.md").read_text()
    table = page.split("| key | default | meaning |", 1)[1].split("\n\n", 1)[0]
    keys = {line.split("|")[1].strip().strip("`") for line in table.strip().splitlines()[1:]}
    assert keys == _KNOWN


# --------------------------------------------------------------------------------------------
# migrations: the same schema as `outboxkit migrate`


def _sqlite_schema(path: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        objects = conn.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master "
            "WHERE tbl_name LIKE 'outbox%' OR tbl_name LIKE 'inbox%' ORDER BY type, name"
        ).fetchall()
        return [*objects, *conn.execute("SELECT * FROM outbox_meta").fetchall()]
    finally:
        conn.close()


def _pg_schema(schema: str) -> list[tuple[Any, ...]]:
    """Columns, constraints, indexes, triggers, functions and the meta row of the outbox and inbox
    tables in ``schema``, with the schema's name taken out."""
    mine = "(c.relname LIKE 'outbox%%' OR c.relname LIKE 'inbox%%')"
    with psycopg.connect(PG_URL) as conn:
        out: list[tuple[Any, ...]] = []
        out += conn.execute(
            "SELECT table_name, column_name, ordinal_position, data_type, is_nullable, column_default, "
            "is_identity, identity_generation FROM information_schema.columns WHERE table_schema = %s "
            "AND (table_name LIKE 'outbox%%' OR table_name LIKE 'inbox%%') ORDER BY 1, 3",
            [schema],
        ).fetchall()
        queries = [
            "SELECT c.relname, x.conname, pg_get_constraintdef(x.oid) FROM pg_constraint x "
            f"JOIN pg_class c ON c.oid = x.conrelid WHERE x.connamespace = %s::regnamespace AND {mine}",
            f"SELECT c.relname, i.indexname, i.indexdef FROM pg_indexes i JOIN pg_class c ON c.relname = i.tablename "
            f"AND c.relnamespace = %s::regnamespace WHERE i.schemaname = c.relnamespace::regnamespace::text AND {mine}",
            "SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid) FROM pg_trigger t JOIN pg_class c "
            f"ON c.oid = t.tgrelid WHERE c.relnamespace = %s::regnamespace AND NOT t.tgisinternal AND {mine}",
            "SELECT p.proname, '', pg_get_functiondef(p.oid) FROM pg_proc p WHERE p.pronamespace = %s::regnamespace",
        ]
        for query in queries:
            rows = conn.execute(query.encode(), [f'"{schema}"']).fetchall()
            out += sorted((a, b, c.replace(f'"{schema}".', "S.").replace(f"{schema}.", "S.")) for a, b, c in rows)
        out += conn.execute(f'SELECT * FROM "{schema}".outbox_meta'.encode()).fetchall()
    return out


def _mysql_schema(database: str) -> list[tuple[Any, ...]]:
    from outboxkit.stores.mariadb import DATABASE

    conn = DATABASE.connect(MARIADB_URL)
    try:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
                "AND (table_name LIKE 'outbox%%' OR table_name LIKE 'inbox%%') ORDER BY 1",
                (database,),
            ).fetchall()
        ]
        # AUTO_INCREMENT=n is the next id, which depends on rows written, not on the schema.
        out = [
            (t, re.sub(r" AUTO_INCREMENT=\d+", "", conn.execute(f"SHOW CREATE TABLE `{database}`.`{t}`").fetchone()[1]))
            for t in tables
        ]
        return [*out, *conn.execute(f"SELECT * FROM `{database}`.`outbox_meta`").fetchall()]
    finally:
        conn.close()


def test_migrations_make_the_schema_outboxkit_migrate_makes(alias: str, django_env: dict[str, str]) -> None:
    """Django's `migrate` (run by the fixture) and `outboxkit migrate` + `migrate --inbox` give the
    same tables, columns, defaults, indexes, triggers and schema version."""
    if alias == "default":
        fresh = os.path.join(os.path.dirname(django_env["OKT_DJANGO_SQLITE"]), f"{unique('fresh')}.db")
        migrate(f"sqlite:///{fresh}")
        migrate_inbox(f"sqlite:///{fresh}")
        django_side, outboxkit_side = _sqlite_schema(django_env["OKT_DJANGO_SQLITE"]), _sqlite_schema(fresh)
    elif alias == "pg":
        fresh = unique("okt_fresh")
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{fresh}"'.encode())
        try:
            # The same unqualified DDL the Django side ran: the schema is the search_path's first.
            url = f"{PG_URL}?options=-csearch_path%3D{fresh}"
            migrate(url)
            migrate_inbox(url)
            django_side, outboxkit_side = _pg_schema(django_env["OKT_DJANGO_PG_SCHEMA"]), _pg_schema(fresh)
        finally:
            with psycopg.connect(PG_URL, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{fresh}" CASCADE'.encode())
    else:
        from outboxkit.stores.mariadb import DATABASE

        fresh = unique("okt_fresh")
        conn = DATABASE.connect(MARIADB_URL)
        DATABASE.create_namespace(conn, fresh)
        try:
            url = MARIADB_URL.rsplit("/", 1)[0] + f"/{fresh}"
            migrate(url)
            migrate_inbox(url)
            django_side, outboxkit_side = _mysql_schema(django_env["OKT_DJANGO_MYSQL_DB"]), _mysql_schema(fresh)
        finally:
            DATABASE.drop_namespace(conn, fresh)
            conn.close()
    assert len(django_side) > 5
    assert django_side == outboxkit_side


def test_models_match_the_migrations(django_env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    """`makemigrations --check` finds nothing to add: the app ships complete migrations."""
    from django.core.management import call_command

    call_command("makemigrations", "outboxkit", "shop", check=True, dry_run=True, verbosity=1)
    assert "No changes detected" in capsys.readouterr().out


def test_db_url_is_derived_from_databases(alias: str, django_env: dict[str, str]) -> None:
    from outboxkit.contrib.django.conf import db_url

    url = db_url()
    expected = {
        "default": "sqlite:///" + django_env["OKT_DJANGO_SQLITE"],
        "pg": f"postgresql://postgres@127.0.0.1:5432/test?options=-c%20search_path%3D{django_env.get('OKT_DJANGO_PG_SCHEMA')}",
        "mysql": f"mysql://root@127.0.0.1:3306/{django_env.get('OKT_DJANGO_MYSQL_DB')}",
    }[alias]
    assert url == expected


# --------------------------------------------------------------------------------------------
# the admin, through Django's test client


def _dead_letters(alias: str, topic: str, n: int) -> list[str]:
    """``n`` events made dead letters the way the relay makes them (the store's record_failure)."""
    from django.db import transaction

    from outboxkit.contrib.django import emit
    from outboxkit.contrib.django.conf import db_url

    with transaction.atomic(using=alias):
        ids = [emit(topic, {"n": i}, key=f"k{i}", using=alias) for i in range(n)]

    async def kill() -> None:
        store = store_for(db_url(), TableRef())
        await store.open()
        try:
            for event in await store.fetch_committed(ids):
                assert await store.record_failure(event.seq, "rejected by the broker", dead=True)
        finally:
            await store.close()

    asyncio.run(kill())
    return ids


def _seqs(alias: str, ids: list[str]) -> list[int]:
    from outboxkit.contrib.django.models import OutboxEvent

    by_id = dict(OutboxEvent.objects.using(alias).filter(event_id__in=ids).values_list("event_id", "seq"))
    return [by_id[i] for i in ids]


def test_admin_lists_rows_and_retries_and_discards_dead_letters(alias: str) -> None:
    from django.contrib.auth.models import Permission, User
    from django.test import Client

    topic = f"{unique('t')}.paid"
    ids = _dead_letters(alias, topic, 3)
    seqs = _seqs(alias, ids)
    admin = User.objects.create_superuser(unique("admin"), "a@example.com", "pw")
    client = Client()
    client.force_login(admin)

    page = client.get("/admin/outboxkit/deadletter/")
    assert page.status_code == 200
    assert page.content.decode().count(topic) >= 3
    assert "rejected by the broker" in page.content.decode()
    listing = client.get("/admin/outboxkit/outboxevent/", {"q": "k1"})
    assert listing.status_code == 200 and topic in listing.content.decode()
    detail = client.get(f"/admin/outboxkit/outboxevent/{seqs[0]}/change/")
    assert detail.status_code == 200 and html.escape('{"n":0}') in detail.content.decode()  # the payload

    done = client.post("/admin/outboxkit/deadletter/", {"action": "retry", "_selected_action": [seqs[0]]}, follow=True)
    assert [str(m) for m in done.context["messages"]] == ["retried 1 dead letter"]
    done = client.post(
        "/admin/outboxkit/deadletter/", {"action": "discard", "_selected_action": [seqs[1]]}, follow=True
    )
    assert [str(m) for m in done.context["messages"]] == ["discarded 1 dead letter"]
    retried, discarded, still = _rows(alias, topic)
    assert retried == (ids[0], "k0", 0, False, False, "rejected by the broker")  # pending again
    assert discarded[3:5] == (True, False) and discarded[5].startswith("discarded:")
    assert still[3:5] == (False, True)

    # Staff who may only view dead letters get no actions: the row stays dead.
    viewer = User.objects.create_user(unique("viewer"), password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_deadletter"))
    client.force_login(viewer)
    assert client.get("/admin/outboxkit/deadletter/").status_code == 200
    client.post("/admin/outboxkit/deadletter/", {"action": "retry", "_selected_action": [seqs[2]]})
    assert _rows(alias, topic)[2][3:5] == (False, True)
    # Nobody edits or deletes outbox rows through the admin.
    client.force_login(admin)
    page = client.get(f"/admin/outboxkit/deadletter/{seqs[2]}/change/")
    assert page.status_code == 200 and "rejected by the broker" in page.content.decode()
    assert 'name="_save"' not in page.content.decode()
    assert client.post(f"/admin/outboxkit/deadletter/{seqs[2]}/change/", {"topic": "x"}).status_code == 403
    assert client.post(f"/admin/outboxkit/outboxevent/{seqs[2]}/delete/").status_code == 403
    assert client.get("/admin/outboxkit/outboxevent/add/").status_code == 403


# --------------------------------------------------------------------------------------------
# end to end: a view, the relay command, NATS; the consumer command and its inbox


def _stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return proc.returncode, err


def test_view_emits_relay_publishes_consumer_processes_once(
    alias: str, django_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A view writes an order and emits in one atomic block; `outbox_relay` publishes it to NATS;
    `outbox_consume` (inbox tables from the migration) ships it once, also when the relay publishes
    it again after a replay; a declined order (rolled back) publishes nothing."""
    from django.core.management import call_command
    from django.test import Client

    from tests.integration.django_project.shop.models import Shipment

    if not _need("NATS", 4222):
        pytest.skip("NATS is not reachable")
    stream = asyncio.run(make_stream(NATS_URL))
    procs: list[subprocess.Popen[str]] = []
    try:
        topic, customer = stream.topic("orders"), unique("c")
        client = Client()
        declined = client.post("/orders/", {"customer": customer, "total": 7, "topic": topic, "declined": "1"})
        assert declined.status_code == 402
        placed = client.post("/orders/", {"customer": customer, "total": 9, "topic": topic})
        assert placed.status_code == 201, placed.content
        order, event_id = placed.json()["order"], placed.json()["event"]
        assert _orders(alias, customer) == 1 and len(_rows(alias, topic)) == 1

        # Flags after the command name go to `outboxkit relay` (and Django's own still work).
        procs.append(_manage(django_env, alias, "outbox_relay", "--window", "10", f"--settings={SETTINGS}"))
        handler = "tests.integration.django_project.shop.handlers:ship"
        group = unique("shipping")
        procs.append(
            _manage(django_env, alias, "outbox_consume", "--handler", handler, "--group", group, "--topic", topic)
        )
        got = asyncio.run(read_all(NATS_URL, stream.name, expect=1, idle=0.5, timeout=60))
        assert [m.event_id for m in got] == [event_id]  # the declined order published nothing
        assert json.loads(got[0].payload) == {"order": order, "customer": customer, "total": 9}
        assert got[0].headers.get("ce-source") == "/shop" and got[0].key == f"customer-{customer}"
        shipped = Shipment.objects.using(alias).filter(event_id=event_id)
        _wait_for(lambda: shipped.exists() and _rows(alias, topic)[0][3] is True, "shipment and delivered mark")

        # A second copy on the bus (JetStream drops a re-publish with the same Nats-Msg-Id for
        # two minutes, so the copy comes as a redelivery would, under another message id).
        asyncio.run(_publish_copy(topic, got[0]))
        copies = asyncio.run(read_all(NATS_URL, stream.name, expect=2, idle=0.5, timeout=30))
        assert [m.event_id for m in copies] == [event_id, event_id]
        _wait_for(lambda: asyncio.run(_acked(stream.name, group)) >= 2, "the consumer to ack the copy")
        stopped = [_stop(proc) for proc in procs]
        procs.clear()
        assert [rc for rc, _ in stopped] == [0, 0], stopped
        assert "1 processed, 1 duplicates skipped" in stopped[1][1]  # the consumer's last line
        assert list(shipped.values_list("order_id", flat=True)) == [order]

        capsys.readouterr()
        call_command("outbox_status", outboxkit_args=["--json"])
        report = json.loads(capsys.readouterr().out)
        assert report["database"] == {"default": "sqlite", "pg": "postgresql", "mysql": "mariadb"}[alias]
        assert [t["delivered"] for t in report["topics"] if t["topic"] == topic] == [1]
    finally:
        for proc in procs:
            _stop(proc)
        asyncio.run(drop_stream(stream))


async def _publish_copy(topic: str, original: Any) -> None:
    from outboxkit.brokers.nats import connect

    nc = await connect(NATS_URL)
    try:
        headers = {k: v for k, v in original.headers.items() if k != "Nats-Msg-Id"}
        await nc.jetstream().publish(topic, original.payload, headers={**headers, "Nats-Msg-Id": unique("copy")})
    finally:
        await nc.close()


async def _acked(stream: str, durable: str) -> int:
    """The stream sequence up to which the consumer ``durable`` acked everything."""
    from outboxkit.brokers.nats import connect

    nc = await connect(NATS_URL)
    try:
        info = await nc.jetstream().consumer_info(stream, durable)
        return int(info.ack_floor.stream_seq or 0) if info.ack_floor else 0
    except Exception:
        return 0  # not created yet
    finally:
        await nc.close()


def _wait_for(condition: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_bad_settings_fail_at_start_up_in_one_line(
    django_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    from django.conf import settings
    from django.core.management import call_command
    from django.test.utils import override_settings

    bad = {**settings.OUTBOXKIT, "BROKER": "ftp://nowhere"}
    with override_settings(OUTBOXKIT=bad), pytest.raises(SystemExit) as exit_:
        call_command("outbox_relay")
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "unsupported broker URL" in err and "Traceback" not in err
    with override_settings(OUTBOXKIT={"BROKR": "nats://x"}), pytest.raises(Exception, match=r"unknown key.*BROKR"):
        call_command("outbox_status")
