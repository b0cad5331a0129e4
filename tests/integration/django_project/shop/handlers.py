"""The consumer's handler for ``manage.py outbox_consume``: one shipment per order event, written
on the inbox's connection and transaction (sqlite3, psycopg or PyMySQL: placeholders differ)."""

from __future__ import annotations

import json
from typing import Any


def ship(conn: Any, event: Any) -> None:
    order = json.loads(event.payload)["order"]
    mark = "?" if type(conn).__module__ == "sqlite3" else "%s"
    conn.execute(f"INSERT INTO shop_shipment (order_id, event_id) VALUES ({mark}, {mark})", (order, event.id))
