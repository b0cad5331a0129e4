"""emit() on Django's own connection, inside the caller's ``transaction.atomic()``.

The row is built by :class:`outboxkit.Outbox` (validation, encoding, UUIDv7 id, trace headers) and
inserted with the INSERT of the database's outboxkit schema, through Django's cursor: so it is the
same row ``outboxkit.emit`` writes, on any driver Django uses (psycopg 2 or 3, sqlite3,
mysqlclient or PyMySQL), and Django's query logging and ``execute_wrapper`` hooks see it.

The transaction check is Django's own state, not the driver's: inside ``atomic()`` a psycopg
connection has ``autocommit`` off but no transaction opened yet (the INSERT opens it), which
outboxkit's psycopg check would refuse; Django knows the block will commit or roll back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.db import connections

from outboxkit.contrib.django.conf import outbox_ref, setting
from outboxkit.emit import Outbox
from outboxkit.errors import NoTransactionError

_outboxes: dict[tuple[Any, ...], Outbox] = {}


def _outbox() -> Outbox:
    conf = setting()
    ref = outbox_ref()
    source = conf.get("SOURCE")
    cache_key = (ref, source)
    outbox = _outboxes.get(cache_key)
    if outbox is None:
        # One per configuration: an Outbox remembers its INSERT text and the topics it validated.
        outbox = Outbox(table=ref.table, schema=ref.schema, source=str(source) if source else None)
        _outboxes[cache_key] = outbox
    return outbox


def emit(
    topic: str,
    payload: Any,
    *,
    key: str | None = None,
    headers: Mapping[str, str] | None = None,
    type: str | None = None,
    using: str | None = None,
) -> str:
    """Write one event in the open transaction of Django's database ``using`` (default: the
    ``OUTBOXKIT["DATABASE"]`` alias, else ``"default"``) and return its id (a UUIDv7 string).

    >>> with transaction.atomic():                                   # doctest: +SKIP
    ...     order = Order.objects.create(customer="c-7", total=42)
    ...     emit("orders.created", {"order": order.pk}, key=f"order-{order.pk}")

    Raises :class:`~outboxkit.errors.NoTransactionError` outside ``atomic()`` (autocommit: the
    event would commit alone), ``EncodingError`` or ``InvalidTopicError`` before writing anything.
    """
    alias = using or str(setting().get("DATABASE", "default"))
    conn = connections[alias]
    if conn.get_autocommit():
        raise NoTransactionError(
            f"Django database {alias!r} is in autocommit mode: emit inside `with transaction.atomic("
            f"{'' if alias == 'default' else f'using={alias!r}'}):` so the event commits with your change"
        )
    if conn.needs_rollback:
        raise NoTransactionError(
            f"the transaction on Django database {alias!r} is marked for rollback (an error inside "
            "atomic()): the event would be rolled back too"
        )
    outbox = _outbox()
    row = outbox._row(topic, payload, key, headers, type)
    # Django's cursors take %s everywhere (its SQLite cursor rewrites them); SQLite's outboxkit
    # INSERT is written with ?, which that rewrite leaves alone.
    sql = outbox._insert_sql(conn.vendor, "qmark" if conn.vendor == "sqlite" else "format")
    with conn.cursor() as cursor:
        cursor.execute(sql, row.ordered())
    return row.id
