"""The dashboard over a real socket against real databases (SQLite and PostgreSQL): what the pages
show, that the actions change the outbox the way the CLI's operations do, and the security rules
(token and login, CSRF, Origin, DNS rebinding, loopback by default, refusal to start off loopback
without a token). The browser test is tests/integration/test_dashboard_browser.py."""

from __future__ import annotations

import asyncio
import http.client
import re
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import psycopg
import pytest

from outboxkit import Outbox
from outboxkit.ops import queries as q
from outboxkit.stores.base import TableRef
from outboxkit.web import MetricsServer, RelayMetrics
from outboxkit.web.dashboard import Dashboard, DashboardServer

TOKEN = "dashboard-test-token-0123"
EVIL = "<script>alert(1)</script> no stream"


@dataclass
class Outboxed:
    url: str
    ref: TableRef
    sql: Callable[[str], None]  # a statement on the outbox table, "{t}" for its name
    ids: list[str] = field(default_factory=list)


def _seed(url: str, ref: TableRef) -> Outboxed:
    """Six events: three delivered (2 s after creation), one dead letter, two pending."""
    outbox = Outbox(table=ref.table, schema=ref.schema)
    if url.startswith("sqlite"):
        conn: Any = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("BEGIN")
        now, ago = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')", "strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-2 seconds')"
    else:
        conn = psycopg.connect(url)
        conn.execute("SELECT 1")  # opens the transaction emit() joins
        now, ago = "now()", "now() - interval '2 seconds'"
    ids = [outbox.emit(conn, "orders.created", {"n": i}, key=f"k{i}") for i in range(5)]
    ids.append(outbox.emit(conn, "payments.done", {"n": 5}, key="p"))
    conn.commit()
    table = ref.qualified

    def sql(statement: str) -> None:
        conn.execute(statement.replace("{t}", table).replace("{now}", now).replace("{ago}", ago))
        conn.commit()

    sql("UPDATE {t} SET created_at = {ago}, delivered_at = {now} WHERE seq <= (SELECT min(seq) + 2 FROM {t})")
    sql(f"UPDATE {{t}} SET dead_at = {{now}}, attempts = 20, last_error = '{EVIL}' WHERE key = 'k3'")
    return Outboxed(url, ref, sql, ids)


@pytest.fixture(params=["sqlite", "postgres"])
def outboxed(request: pytest.FixtureRequest, tmp_path: Any) -> Outboxed:
    if request.param == "sqlite":
        url = request.getfixturevalue("sqlite_url")
        return _seed(url, TableRef("outbox"))
    ref = request.getfixturevalue("pg_ref")
    return _seed(request.getfixturevalue("pg_url"), ref)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    cookies: list[str]
    body: str


class Client:
    """A browser-like client: keeps cookies, sends Host, follows no redirects."""

    def __init__(self, port: int, host_header: str | None = None) -> None:
        self.port = port
        self.host_header = host_header or f"127.0.0.1:{port}"
        self.jar: dict[str, str] = {}

    def _call(self, method: str, path: str, form: dict[str, Any] | None, headers: dict[str, str]) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        sent = {"Host": self.host_header, **headers}
        if self.jar:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.jar.items())
        body = None
        if form is not None:
            body = urlencode(form, doseq=True)
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body=body, headers=sent)
        response = conn.getresponse()
        cookies = response.headers.get_all("Set-Cookie") or []
        for cookie in cookies:
            name, _, rest = cookie.partition("=")
            value = rest.split(";")[0]
            if "Max-Age=0" in cookie:
                self.jar.pop(name, None)
            else:
                self.jar[name] = value
        reply = Reply(response.status, {k.lower(): v for k, v in response.headers.items()}, cookies, "")
        reply.body = response.read().decode()
        conn.close()
        return reply

    async def get(self, path: str, **headers: str) -> Reply:
        return await asyncio.to_thread(self._call, "GET", path, None, headers)

    async def post(self, path: str, form: dict[str, Any], **headers: str) -> Reply:
        return await asyncio.to_thread(self._call, "POST", path, form, headers)


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match, "no CSRF field on the page"
    return match.group(1)


@pytest.fixture
async def served(outboxed: Outboxed) -> AsyncIterator[tuple[Outboxed, DashboardServer]]:
    board = Dashboard(outboxed.url, outboxed.ref, host="127.0.0.1", broker_url="nats://user:s3cret@127.0.0.1:4222")
    async with DashboardServer(board, port=0) as server:
        yield outboxed, server


async def test_the_page_shows_backlog_charts_topics_and_dead_letters(
    served: tuple[Outboxed, DashboardServer],
) -> None:
    outboxed, server = served
    client = Client(server.port)
    assert (await client.get("/")).headers["location"] == "/dashboard/"
    page = await client.get("/dashboard/")
    assert page.status == 200, page.body
    body = page.body
    assert re.search(r'id="card-pending">.*?<span class="value">2</span>', body)
    assert re.search(r'id="card-dead">.*?<span class="value">1</span>', body)
    assert 'id="chart-throughput"' in body and 'id="chart-lag"' in body
    assert body.count('<rect class="bar"') >= 1  # the three deliveries of this minute
    assert re.search(r"<td>orders.created</td><td class=\"num\">1</td>", body)  # k4 pending
    assert "<td>payments.done</td>" in body
    assert f'data-id="{outboxed.ids[3]}"' in body  # the dead letter, with its actions
    assert EVIL not in body and "&lt;script&gt;alert(1)&lt;/script&gt;" in body  # escaped
    assert "s3cret" not in body and "nats://user:***@127.0.0.1:4222" in body  # redacted
    assert "single relay" in body if outboxed.url.startswith("sqlite") else "buckets leased" in body
    # The headers that keep the page from being framed or loading anything foreign.
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert any(c.startswith("outboxkit_csrf=") and "HttpOnly" in c and "SameSite=Strict" in c for c in page.cookies)
    for asset in ("dashboard.css", "dashboard.js", "favicon.svg"):
        assert (await client.get(f"/dashboard/static/{asset}")).status == 200
    assert (await client.get("/dashboard/static/../app.py")).status == 404
    assert (await client.get("/dashboard/?window=3y")).status == 400
    live = await client.get("/dashboard/live?window=15m")
    assert live.status == 200 and 'id="chart-lag"' in live.body and "<html" not in live.body


async def test_a_topic_held_behind_a_dead_key_is_flagged(served: tuple[Outboxed, DashboardServer]) -> None:
    """The per-topic table says which topics have pending rows that wait behind a dead letter."""
    outboxed, server = served
    outboxed.sql("UPDATE {t} SET key = 'k3' WHERE key = 'k4'")  # the pending k4 row now waits behind dead k3
    body = (await Client(server.port).get("/dashboard/")).body
    held = re.search(r'<tr class="held" title="1 pending row\(s\) wait[^"]*"><td>orders.created</td>'
                     r'<td class="num">1</td><td class="num held-count">1</td>', body)  # fmt: skip
    assert held, body
    assert re.search(r'<tr><td>payments.done</td><td class="num">1</td><td class="num held-count">0</td>', body)
    with q.open_db(outboxed.url, outboxed.ref) as db:
        topics = {t["topic"]: t["held"] for t in q.status(db).to_json()["topics"]}
    assert topics == {"orders.created": 1, "payments.done": 0}


async def test_the_json_view_is_the_cli_status_plus_activity(served: tuple[Outboxed, DashboardServer]) -> None:
    outboxed, server = served
    import json

    doc = json.loads((await Client(server.port).get("/dashboard/api/status")).body)
    with q.open_db(outboxed.url, outboxed.ref) as db:
        expected = q.status(db).to_json()
    for key in ("pending", "dead", "delivered", "dead_keys"):
        assert doc[key] == expected[key]
    buckets = doc["activity"]["buckets"]
    assert sum(b["delivered"] for b in buckets) == 3
    assert all(1.5 < b["lag_mean_s"] < 60 and b["lag_max_s"] >= b["lag_mean_s"] for b in buckets)
    assert doc["dead_letters"]["total"] == 1 and doc["dead_letters"]["first"][0]["id"] == outboxed.ids[3]


async def test_retry_discard_and_replay_change_the_outbox(served: tuple[Outboxed, DashboardServer]) -> None:
    outboxed, server = served
    client = Client(server.port)
    csrf = csrf_of((await client.get("/dashboard/")).body)

    def counts() -> dict[str, Any]:
        with q.open_db(outboxed.url, outboxed.ref) as db:
            return q.status(db).to_json()

    reply = await client.post("/dashboard/dead/retry", {"csrf": csrf, "id": outboxed.ids[3]})
    assert reply.status == 303 and reply.headers["location"] == "/dashboard/?done=retried&n=1"
    assert counts()["dead"] == 0 and counts()["pending"] == 3
    notice = await client.get(reply.headers["location"])
    assert "Retried 1 dead letter(s)" in notice.body

    outboxed.sql("UPDATE {t} SET dead_at = {now} WHERE key = 'k3'")
    reply = await client.post("/dashboard/dead/discard", {"csrf": csrf, "scope": "all"})
    assert reply.headers["location"].endswith("done=discarded&n=1")
    assert counts()["dead"] == 0 and counts()["discarded"] == 1

    reply = await client.post("/dashboard/replay", {"csrf": csrf, "topic": "orders.created", "since": "1h"})
    assert reply.headers["location"].endswith("done=replayed&n=3")  # the three delivered, not the discarded
    # A replay needs a selector, as on the CLI; a bad id is a clear 400.
    assert (await client.post("/dashboard/replay", {"csrf": csrf})).status == 400
    bad = await client.post("/dashboard/dead/retry", {"csrf": csrf, "id": "not-a-uuid"})
    assert bad.status == 400 and "invalid event id" in bad.body
    # An unknown verb in the link shows nothing rather than words of the link's choosing.
    assert 'id="notice"' not in (await client.get("/dashboard/?done=pwned&n=1")).body


async def test_state_changes_need_post_csrf_and_the_same_origin(served: tuple[Outboxed, DashboardServer]) -> None:
    outboxed, server = served
    client = Client(server.port)
    csrf = csrf_of((await client.get("/dashboard/")).body)
    target = {"id": outboxed.ids[3]}

    assert (await client.get(f"/dashboard/dead/retry?id={outboxed.ids[3]}")).status == 404  # GET never acts
    assert (await client.post("/dashboard/dead/retry", target)).status == 403  # no token
    assert (await client.post("/dashboard/dead/retry", {**target, "csrf": "forged"})).status == 403
    cross = await client.post("/dashboard/dead/retry", {**target, "csrf": csrf}, Origin="http://evil.example")
    assert cross.status == 403 and "another site" in cross.body
    fetched = await client.post("/dashboard/dead/retry", {**target, "csrf": csrf}, **{"Sec-Fetch-Site": "cross-site"})
    assert fetched.status == 403
    fresh = Client(server.port)  # another browser: its cookie differs, the stolen token is useless
    await fresh.get("/dashboard/")
    assert (await fresh.post("/dashboard/dead/retry", {**target, "csrf": csrf})).status == 403
    with q.open_db(outboxed.url, outboxed.ref) as db:
        assert q.status(db).to_json()["dead"] == 1  # nothing of the above changed anything
    same = await client.post(
        "/dashboard/dead/retry", {**target, "csrf": csrf}, Origin=f"http://127.0.0.1:{server.port}"
    )
    assert same.status == 303


async def test_loopback_dashboard_refuses_foreign_host_names(served: tuple[Outboxed, DashboardServer]) -> None:
    _, server = served
    assert server.host == "127.0.0.1"
    assert (await Client(server.port, host_header=f"localhost:{server.port}").get("/dashboard/")).status == 200
    rebound = await Client(server.port, host_header="attacker.example").get("/dashboard/")
    assert rebound.status == 421


async def test_a_token_guards_pages_actions_and_the_json(outboxed: Outboxed) -> None:
    board = Dashboard(outboxed.url, outboxed.ref, host="127.0.0.1", token=TOKEN)
    async with DashboardServer(board, port=0) as server:
        client = Client(server.port)
        first = await client.get("/dashboard/")
        assert first.status == 303 and first.headers["location"] == "/dashboard/login"
        assert (await client.get("/dashboard/api/status")).status == 401
        login = await client.get("/dashboard/login")
        assert login.status == 200 and 'type="password"' in login.body
        csrf = csrf_of(login.body)
        assert (await client.post("/dashboard/dead/retry", {"csrf": csrf, "scope": "all"})).status == 401
        assert (await client.post("/dashboard/login", {"token": TOKEN})).status == 403  # login CSRF too
        wrong = await client.post("/dashboard/login", {"csrf": csrf, "token": "x" * 20})
        assert wrong.status == 401 and 'id="login-failed"' in wrong.body
        ok = await client.post("/dashboard/login", {"csrf": csrf, "token": TOKEN})
        assert ok.status == 303 and "outboxkit_session" in client.jar
        assert TOKEN not in client.jar["outboxkit_session"] and TOKEN not in ok.headers["location"]
        page = await client.get("/dashboard/")
        assert page.status == 200 and TOKEN not in page.body and "Log out" in page.body
        assert (await client.post("/dashboard/dead/retry", {"csrf": csrf, "scope": "all"})).status == 303
        # A script with the token as a bearer needs no cookie and no CSRF token.
        script = Client(server.port)
        reply = await script.get("/dashboard/api/status", Authorization=f"Bearer {TOKEN}")
        assert reply.status == 200
        assert (await script.get("/dashboard/api/status", Authorization="Bearer nope-nope-nope")).status == 401
        out = await client.post("/dashboard/logout", {"csrf": csrf})
        assert out.status == 303 and "outboxkit_session" not in client.jar
        assert (await client.get("/dashboard/")).status == 303


async def test_the_relays_http_port_serves_the_dashboard_next_to_metrics(outboxed: Outboxed) -> None:
    board = Dashboard(outboxed.url, outboxed.ref, host="127.0.0.1")
    async with MetricsServer(RelayMetrics(), port=0, dashboard=board) as server:
        client = Client(server.port)
        assert (await client.get("/healthz")).status == 200
        assert (await client.get("/metrics")).status == 200
        page = await client.get("/dashboard/")
        assert page.status == 200 and 'id="dead"' in page.body
    async with MetricsServer(RelayMetrics(), port=0) as plain:
        assert (await Client(plain.port).get("/dashboard/")).status == 404  # off unless asked for


async def test_an_unreachable_database_is_a_503_page_with_the_password_redacted(tmp_path: Any) -> None:
    url = "postgresql://postgres:hunter2-secret@127.0.0.1:1/nowhere"
    board = Dashboard(url, TableRef("outbox"), host="127.0.0.1")
    async with DashboardServer(board, port=0) as server:
        page = await Client(server.port).get("/dashboard/")
    assert page.status == 503 and 'id="error"' in page.body
    assert "hunter2-secret" not in page.body


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--host", "0.0.0.0"], "reachable from other machines"),
        (["--token", "short"], "at least 16 characters"),
        (["--db", "oracle://x"], "oracle"),
    ],
)
def test_the_command_refuses_bad_configuration_in_one_line(args: list[str], message: str, tmp_path: Any) -> None:
    db = ["--db", f"sqlite:///{tmp_path}/x.db"] if "--db" not in args else []
    done = subprocess.run(
        [sys.executable, "-m", "outboxkit", "dashboard", *db, "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_relay_dashboard_off_loopback_needs_a_token(tmp_path: Any) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "outboxkit", "relay", "--db", f"sqlite:///{tmp_path}/x.db", "--broker",
         "nats://127.0.0.1:4222", "--http-port", "9", "--http-host", "0.0.0.0", "--dashboard"],
        capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 2 and "--dashboard-token" in done.stderr, done.stderr


def test_activity_buckets_deliveries_and_lag_on_mariadb(mariadb_url: str, mariadb_ref: TableRef) -> None:
    """The activity statement of the third database (the pages above run on SQLite and PostgreSQL)."""
    import pymysql

    from outboxkit.stores.mariadb.driver import parse_url
    from outboxkit.stores.mariadb.schema import quoted

    conn = pymysql.connect(**parse_url(mariadb_url).kwargs())
    try:
        outbox = Outbox(table=mariadb_ref.table, schema=mariadb_ref.schema)
        ids = [outbox.emit(conn, "orders.created", {"n": i}) for i in range(4)]
        conn.commit()
        with conn.cursor() as cur:
            t = quoted(mariadb_ref)
            now = "UTC_TIMESTAMP(6)"
            cur.execute(
                f"UPDATE {t} SET created_at = {now} - INTERVAL 3 SECOND, delivered_at = {now} WHERE id IN (%s, %s)",
                ids[:2],
            )
            cur.execute(f"UPDATE {t} SET delivered_at = {now}, last_error = 'discarded: x' WHERE id = %s", (ids[2],))
        conn.commit()
    finally:
        conn.close()
    with q.open_db(mariadb_url, mariadb_ref) as db:
        points = q.activity(db, timedelta(minutes=15), 15)
    assert sum(p.delivered for p in points) == 2  # the discarded row is not a delivery
    assert all(p.start % 15 == 0 and 2.5 < p.lag_mean_s < 60 for p in points)


def test_the_documented_command_serves_the_page_and_stops_on_sigterm(sqlite_url: str) -> None:
    """docs/dashboard.md: `outboxkit dashboard --db sqlite:///app.db` serves /dashboard/."""
    from outboxkit.testing import free_port
    from outboxkit.testing.servers import wait_port

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "outboxkit", "dashboard", "--db", sqlite_url, "--port", str(port)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_port(port, 30)
        page = Client(port)._call("GET", "/dashboard/", None, {})
        assert page.status == 200 and 'id="live"' in page.body
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 0, stderr
    assert f"dashboard on http://127.0.0.1:{port}/dashboard/" in stderr
