"""Every database against the store conformance suite (outboxkit.testing.stores)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from outboxkit import migrate
from outboxkit.stores.base import TableRef
from outboxkit.stores.registry import database_for
from outboxkit.testing.conformance import NotSupported
from outboxkit.testing.stores import STORE_CHECKS, StoreHarness
from tests.conftest import MARIADB_URL, PG_URL, require, unique

store_check = pytest.mark.parametrize(
    "check", STORE_CHECKS, ids=[c.__name__.removeprefix("check_") for c in STORE_CHECKS]
)


@dataclass
class Harness:
    url: str
    ref: TableRef
    shares_buckets: bool
    concurrent_writers: bool


def _namespaced(url: str, shares: bool) -> Iterator[Harness]:
    """A migrated outbox in a namespace (schema / database) of its own, dropped after."""
    ref = TableRef("outbox", unique("okc"))
    database = database_for(url)
    migrate(url, ref)
    try:
        yield Harness(url, ref, shares_buckets=shares, concurrent_writers=True)
    finally:
        conn = database.connect(url)
        try:
            database.drop_namespace(conn, ref.schema or "")
        finally:
            conn.close()


@pytest.fixture
def postgres_harness() -> Iterator[Harness]:
    require("PostgreSQL", "127.0.0.1", 5432)
    yield from _namespaced(PG_URL, shares=True)


@pytest.fixture
def mariadb_harness() -> Iterator[Harness]:
    require("MariaDB", "127.0.0.1", 3306)
    yield from _namespaced(MARIADB_URL, shares=True)


@pytest.fixture
def sqlite_harness(tmp_path: Path) -> Harness:
    url = f"sqlite:///{tmp_path}/outbox.db"
    migrate(url)
    return Harness(url, TableRef(), shares_buckets=False, concurrent_writers=False)


async def _run(check: object, harness: StoreHarness) -> None:
    try:
        await check(harness)  # type: ignore[operator]
    except NotSupported as exc:
        pytest.skip(f"not applicable: {exc}")


@store_check
async def test_postgres_store(check: object, postgres_harness: Harness) -> None:
    await _run(check, postgres_harness)


@store_check
async def test_sqlite_store(check: object, sqlite_harness: Harness) -> None:
    await _run(check, sqlite_harness)


@store_check
async def test_mariadb_store(check: object, mariadb_harness: Harness) -> None:
    await _run(check, mariadb_harness)
