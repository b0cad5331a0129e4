"""docs/faststream.md: its ``shipping.py`` block runs as written, as a process, against the real
PostgreSQL and NATS: the same event published twice makes one shipment and one follow-up event."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from outboxkit import migrate
from outboxkit.brokers.nats import connect
from outboxkit.inbox import migrate_inbox
from outboxkit.stores.base import TableRef
from tests.conftest import NATS_URL, PG_URL, drop_stream, make_stream, require, unique

pytestmark = pytest.mark.xdist_group("faststream")

PAGE = Path(__file__).resolve().parents[2] / "docs" / "faststream.md"


def _block(title: str) -> str:
    found = re.search(rf'^```python title="{re.escape(title)}"\n(.*?)^```$', PAGE.read_text(), re.S | re.M)
    assert found, f"no {title} block in {PAGE.name}"
    return found.group(1)


async def _publish(topic: str, event_id: str, body: dict[str, Any]) -> None:
    nc = await connect(NATS_URL)
    try:  # as the relay sends it, minus JetStream's dedupe id, so the copy really arrives twice
        headers = {"ce-id": event_id, "ce-subject": "customer-1", "ce-specversion": "1.0", "ce-type": topic}
        await nc.jetstream().publish(topic, json.dumps(body).encode(), headers=headers)
    finally:
        await nc.close()


def test_the_shipping_example_ships_a_duplicated_event_once(tmp_path: Path) -> None:
    require("PostgreSQL", "127.0.0.1", 5432)
    require("NATS", "127.0.0.1", 4222)
    (tmp_path / "shipping.py").write_text(_block("shipping.py"))
    schema = unique("okd")
    migrate(PG_URL, TableRef("outbox", schema))
    migrate_inbox(PG_URL, TableRef("inbox", schema))
    stream = asyncio.run(make_stream(NATS_URL))
    env = {
        **os.environ,
        "PGOPTIONS": f"-c search_path={schema}",  # the page's unqualified table names, in this test's schema
        "DATABASE_URL": PG_URL.replace("postgresql://", "postgresql+psycopg://"),
        "NATS_URL": NATS_URL,
        "TOPIC_PREFIX": stream.prefix,
        "NATS_STREAM": stream.name,
    }
    log = (tmp_path / "shipping.log").open("wb")
    command = [sys.executable, "shipping.py"]
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)

    def rows(sql: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(PG_URL, autocommit=True, options=f"-c search_path={schema}") as conn:
            try:
                return list(conn.execute(sql.encode()).fetchall())
            except psycopg.errors.UndefinedTable:
                return []

    try:
        paid = stream.topic("orders.paid")
        twice, marker = str(uuid.uuid4()), str(uuid.uuid4())
        asyncio.run(_publish(paid, twice, {"order_id": 1, "address": "1 Main St"}))
        asyncio.run(_publish(paid, twice, {"order_id": 1, "address": "1 Main St"}))
        asyncio.run(_publish(paid, marker, {"order_id": 2, "address": "2 Main St"}))
        # One consumer takes the stream in order: once the marker is shipped, the copy was handled.
        deadline = time.monotonic() + 60
        while not rows("SELECT 1 FROM shipments WHERE order_id = 2"):
            assert proc.poll() is None, (tmp_path / "shipping.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "shipping.log").read_text()
            time.sleep(0.1)
        assert sorted(rows("SELECT order_id, address FROM shipments")) == [(1, "1 Main St"), (2, "2 Main St")]
        followups = rows("SELECT topic, key, payload FROM outbox ORDER BY seq")
        assert [(t, k, json.loads(bytes(p))) for t, k, p in followups] == [
            (stream.topic("shipments.requested"), "customer-1", {"order_id": 1}),
            (stream.topic("shipments.requested"), "customer-1", {"order_id": 2}),
        ]
    finally:
        proc.terminate()
        proc.wait(20)
        asyncio.run(drop_stream(stream))
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'.encode())
