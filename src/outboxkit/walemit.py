"""Table-less emit: the event goes into PostgreSQL's log with ``pg_logical_emit_message``, no row.

Same call, same checks and same refusals as :class:`~outboxkit.emit.Outbox` (no open transaction,
an unencodable payload, a bad topic: refused before anything is written), on the same connections
(psycopg 3 sync and async, SQLAlchemy on PostgreSQL). Only ``relay --capture wal`` reads these
events (the table relay never sees them): no table, no index, no vacuum, no bloat (H3).

>>> outbox = MessageOutbox(source="/orders-service")
>>> # with conn.transaction(): outbox.emit(conn, "orders.created", {"id": 1}, key="customer-7")

The message format is a public contract, documented in ``core.walmessage`` and docs/log-tailing.md.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from outboxkit.core import walmessage
from outboxkit.emit import Outbox, _Row
from outboxkit.errors import EmitError

# Transactional (true): decoded only if the transaction commits, at its place in commit order.
_SQL = {
    "format": "SELECT pg_logical_emit_message(true, %s, %s::bytea)",
    "named": "SELECT pg_logical_emit_message(true, :prefix, CAST(:content AS bytea))",
}


class _MessageRow(_Row):
    def ordered(self) -> tuple[Any, ...]:
        return (self.params["prefix"], self.params["content"])


class MessageOutbox(Outbox):
    """An :class:`~outboxkit.emit.Outbox` whose events are logical decoding messages (PostgreSQL)."""

    def _row(
        self, topic: str, payload: Any, key: str | None, headers: Mapping[str, str] | None, type: str | None
    ) -> _Row:
        row = super()._row(topic, payload, key, headers, type)
        p = row.params
        content = walmessage.encode(
            id=row.id,
            topic=topic,
            payload=p["payload"],
            key=p["key"],
            type=p["type"],
            source=p["source"],
            content_type=p["content_type"],
            headers=json.loads(p["headers"]),
            time=datetime.now(UTC),
        )
        return _MessageRow(
            row.id, {"prefix": walmessage.prefix_for(self.ref.table, self.ref.schema), "content": content}
        )

    def _insert_sql(self, dialect: str, paramstyle: str) -> str:
        if dialect != "postgresql":
            raise EmitError(f"table-less events need PostgreSQL's logical decoding; this connection is {dialect}")
        return _SQL["named" if paramstyle == "named" else "format"]
