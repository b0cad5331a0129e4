"""psycopg pipeline mode: emit adds no round trip there, and must still refuse without a transaction."""

from __future__ import annotations

import psycopg
import pytest

from outboxkit import NoTransactionError, Outbox
from outboxkit.stores.base import TableRef


def _count(url: str, ref: TableRef) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(f"SELECT count(*) FROM {ref.qualified}".encode()).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("autocommit", [False, True])
def test_emit_inside_pipeline_and_transaction(pg_url: str, pg_ref: TableRef, autocommit: bool) -> None:
    outbox = Outbox(schema=pg_ref.schema)
    with psycopg.connect(pg_url, autocommit=autocommit) as conn:
        with conn.pipeline(), conn.transaction():
            conn.execute("SELECT 1")
            ids = [outbox.emit(conn, "orders.created", {"i": i}, key="k") for i in range(20)]
        if not autocommit:
            conn.commit()
    assert len(set(ids)) == 20
    assert _count(pg_url, pg_ref) == 20


def test_pipeline_rolled_back_leaves_nothing(pg_url: str, pg_ref: TableRef) -> None:
    outbox = Outbox(schema=pg_ref.schema)
    with psycopg.connect(pg_url) as conn, conn.pipeline(), pytest.raises(RuntimeError), conn.transaction():
        conn.execute("SELECT 1")
        outbox.emit(conn, "orders.created", {"i": 1})
        raise RuntimeError("business rule failed")
    assert _count(pg_url, pg_ref) == 0


def test_pipeline_in_autocommit_without_transaction_is_refused(pg_url: str, pg_ref: TableRef) -> None:
    outbox = Outbox(schema=pg_ref.schema)
    with psycopg.connect(pg_url, autocommit=True) as conn, conn.pipeline():
        conn.execute("SELECT 1")
        with pytest.raises(NoTransactionError):
            outbox.emit(conn, "orders.created", {"i": 1})
    assert _count(pg_url, pg_ref) == 0
