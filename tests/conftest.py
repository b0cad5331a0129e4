"""Shared fixtures: real services, isolated per test (own schema, own stream), cleaned up after.

Under CI (CI=true) a missing service fails the test instead of skipping it, so a green run means
everything ran.
"""

from __future__ import annotations

import os
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import psycopg
import pytest

from outboxkit import migrate
from outboxkit.brokers.nats import connect, ensure_stream
from outboxkit.stores.base import TableRef
from outboxkit.stores.registry import database_for
from outboxkit.testing import NatsServer

PG_URL = os.environ.get("OUTBOXKIT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
MARIADB_URL = os.environ.get("OUTBOXKIT_TEST_MARIADB", "mysql://root@127.0.0.1:3306/test")
NATS_URL = os.environ.get("OUTBOXKIT_TEST_NATS", "nats://127.0.0.1:4222")
CI = os.environ.get("CI", "").lower() == "true"

if sys.version_info < (3, 11, 8):
    # CPython before 3.11.8 keeps the AST constructor's recursion count in one structure shared by
    # every thread (python/cpython#106905, fixed by #113035): two threads building an AST at once
    # make one of them fail with "SystemError: AST constructor recursion depth mismatch". In 3.11,
    # formatting a traceback builds an AST (the ^^^ caret anchors), so a relay thread logging an
    # exception while pytest parses a module or a failure could fail the test that ran beside it.
    # The anchors are cosmetic: test processes go without them.
    import traceback

    traceback._extract_caret_anchors_from_line_segment = lambda segment: None  # type: ignore[attr-defined]


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """A test that runs the ``outboxkit`` app in-process (CliRunner) gets a root log handler bound to
    the runner's stderr, closed once the invocation ends: put the root logger back as it was, or the
    next test's log lines fail with "I/O operation on closed file" (and land in its captured stderr)."""
    import logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require(name: str, host: str, port: int) -> None:
    if not _reachable(host, port):
        message = f"{name} is not reachable at {host}:{port}"
        if CI:
            pytest.fail(message + " (CI=true: services are required)")
        pytest.skip(message)


# Every unique name of this test session (one per xdist worker) starts with it, so the session can
# tell its own replication slots from those of other runs on the shared server (see below).
SESSION = "s" + uuid.uuid4().hex[:5]


def unique(prefix: str) -> str:
    return f"{prefix}_{SESSION}{uuid.uuid4().hex[:8]}"


def _our_slots() -> list[tuple[str, bool]]:
    """Replication slots on the shared server named after this session's schemas or databases."""
    if not _reachable("127.0.0.1", 5432):
        return []
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        rows = conn.execute(
            b"SELECT slot_name, active_pid IS NULL FROM pg_replication_slots "
            b"WHERE strpos(slot_name, %s) > 0 OR strpos(database, %s) > 0",
            ["_" + SESSION, "_" + SESSION],
        ).fetchall()
    return [(r[0], r[1]) for r in rows]


_LEFT_BY_WORKERS: list[str] = []


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: object, error: object) -> None:
    """pytest-xdist, in the controller: a worker's session found slots of its own left behind."""
    _LEFT_BY_WORKERS.extend(getattr(node, "workeroutput", {}).get("leftover_slots", []))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A slot left behind keeps the shared server's WAL forever (and a later run of the same name
    would adopt it): fail the run, and drop the inactive ones. Other runs' slots are not ours."""
    left = _our_slots()
    if left:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            for name, inactive in left:
                if inactive:
                    conn.execute(b"SELECT pg_drop_replication_slot(%s)", [name])
    names = sorted([n for n, _ in left] + _LEFT_BY_WORKERS)
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: its controller fails the run
        workeroutput["leftover_slots"] = names
        return
    if names:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line("")
            reporter.write_line(f"replication slots left behind by this run: {names}", red=True)


@pytest.fixture
def pg_url() -> str:
    require("PostgreSQL", "127.0.0.1", 5432)
    return PG_URL


@pytest.fixture
def pg_ref(pg_url: str) -> Iterator[TableRef]:
    """A migrated outbox in a schema of its own, dropped after the test."""
    ref = TableRef("outbox", unique("okt"))
    migrate(pg_url, ref)
    yield ref
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{ref.schema}" CASCADE'.encode())


@pytest.fixture
def mariadb_url() -> str:
    require("MariaDB", "127.0.0.1", 3306)
    return MARIADB_URL


@pytest.fixture
def mariadb_ref(mariadb_url: str) -> Iterator[TableRef]:
    """A migrated outbox in a database of its own (MariaDB's schemas), dropped after the test."""
    from outboxkit.stores.mariadb import DATABASE

    ref = TableRef("outbox", unique("okt"))
    migrate(mariadb_url, ref)
    yield ref
    conn = DATABASE.connect(mariadb_url)
    try:
        DATABASE.drop_namespace(conn, ref.schema or "")
    finally:
        conn.close()


@pytest.fixture
def nats_url() -> str:
    require("NATS", "127.0.0.1", 4222)
    return NATS_URL


@dataclass(frozen=True)
class Stream:
    url: str
    name: str
    prefix: str  # topics under it are captured: f"{prefix}.anything"

    def topic(self, name: str = "events") -> str:
        return f"{self.prefix}.{name}"


async def make_stream(url: str, prefix: str | None = None) -> Stream:
    """A stream capturing ``prefix.>`` (a fresh prefix unless given); delete it with drop_stream."""
    name, prefix = unique("OKT").upper(), prefix or unique("okt")
    nc = await connect(url)
    try:
        await ensure_stream(nc, name, [f"{prefix}.>"])
    finally:
        await nc.close()
    return Stream(url, name, prefix)


async def drop_stream(stream: Stream) -> None:
    nc = await connect(stream.url)
    try:
        await nc.jetstream().delete_stream(stream.name)
    except Exception:
        pass
    finally:
        await nc.close()


@pytest.fixture
async def nats_stream(nats_url: str) -> AsyncIterator[Stream]:
    stream = await make_stream(nats_url)
    yield stream
    await drop_stream(stream)


@pytest.fixture
def embedded_nats() -> Iterator[NatsServer]:
    with NatsServer() as server:
        yield server


@pytest.fixture
def sqlite_url(tmp_path: object) -> str:
    url = f"sqlite:///{tmp_path}/outbox.db"
    migrate(url)
    return url


@dataclass(frozen=True)
class Backend:
    """One database + one broker stream, ready to emit into and relay from."""

    name: str
    db: str
    ref: TableRef
    stream: Stream

    @property
    def table(self) -> str:
        """The outbox table quoted for this database."""
        return self.ref.quoted(database_for(self.db).quote)


@pytest.fixture(params=["sqlite+embedded-nats", "postgres+nats", "mariadb+nats"])
async def backend(request: pytest.FixtureRequest, tmp_path: object) -> AsyncIterator[Backend]:
    if request.param.startswith("sqlite"):
        server = NatsServer().start()
        request.addfinalizer(server.close)
        db = f"sqlite:///{tmp_path}/outbox.db"
        migrate(db)
        stream = await make_stream(server.url)
        yield Backend(request.param, db, TableRef(), stream)
        return
    url = MARIADB_URL if request.param.startswith("mariadb") else PG_URL
    require("MariaDB", "127.0.0.1", 3306) if url == MARIADB_URL else require("PostgreSQL", "127.0.0.1", 5432)
    require("NATS", "127.0.0.1", 4222)
    ref = TableRef("outbox", unique("okt"))
    migrate(url, ref)
    stream = await make_stream(NATS_URL)
    try:
        yield Backend(request.param, url, ref, stream)
    finally:
        await drop_stream(stream)
        database = database_for(url)
        conn = database.connect(url)
        try:
            database.drop_namespace(conn, ref.schema or "")
        finally:
            conn.close()
