"""Binlog rows -> outbox events (pure): the same row rules as the table relay."""

from __future__ import annotations

from datetime import UTC, datetime

from outboxkit.stores.base import TableRef
from outboxkit.stores.mariadb.binlog import _gtid_state
from outboxkit.stores.mariadb.binlogevents import BinlogDecoder, RawTransaction
from outboxkit.stores.mariadb.binlogpos import lock_name


def row(seq: int, **values: object) -> dict[str, object]:
    base: dict[str, object] = {
        "seq": seq,
        "id": f"0190c8a0-0000-7000-8000-{seq:012d}",
        "topic": "orders.created",
        "key": "k",
        "type": None,
        "source": None,
        "payload": b'{"a":1}',
        "content_type": "application/json",
        "headers": "{}",
        "created_at": datetime(2026, 12, 7, 3, 0, 0),
        "attempts": 0,
        "dead_at": None,
    }
    return {**base, **values}


def test_rows_become_events_in_log_order_across_transactions() -> None:
    decoder = BinlogDecoder()
    at = datetime(2026, 12, 7, tzinfo=UTC)
    txs = decoder.transactions(
        [RawTransaction(3, at, [row(9), row(4, headers={"h": "v"})]), RawTransaction(7, at, [row(5)])]
    )
    assert [t.end_lsn for t in txs] == [3, 7]
    items = [i for t in txs for i in t.items]
    assert [i.row_seq for i in items] == [9, 4, 5]
    assert [i.event.seq for i in items] == [1, 2, 3]  # log order, not the rows' seq
    assert items[1].event.headers == {"h": "v"}  # MySQL's JSON arrives parsed
    assert items[0].event.created_at is not None and items[0].event.created_at.tzinfo is not None


def test_dead_letters_are_skipped_and_bad_rows_carry_their_defect() -> None:
    decoder = BinlogDecoder()
    (tx,) = decoder.transactions(
        [RawTransaction(1, None, [row(1, dead_at=datetime(2026, 1, 1)), row(2, topic="bad topic!"), row(3)])]
    )
    assert [i.row_seq for i in tx.items] == [2, 3]
    assert tx.items[0].event.defect is not None and tx.items[1].event.defect is None


def test_an_empty_transaction_still_moves_the_position() -> None:
    (tx,) = BinlogDecoder().transactions([RawTransaction(4, None, [row(1, dead_at=datetime(2026, 1, 1))])])
    assert tx.end_lsn == 4 and tx.items == []


def test_gtid_state_and_lock_names() -> None:
    assert _gtid_state("0-1-10,1-2-5") == {"0": "0-1-10", "1": "1-2-5"}
    assert _gtid_state(None) == {}
    assert lock_name(TableRef("outbox", "app"), "db") == "outboxkit-binlog:app.outbox"
    long = lock_name(TableRef("o" * 40, "a" * 40), "db")
    assert len(long) <= 64 and long.startswith("outboxkit-binlog:")


def test_a_row_that_raises_while_read_is_its_own_dead_letter() -> None:
    """H13: headers nested deeper than the JSON parser recurses cost only their row."""
    decoder = BinlogDecoder()
    at = datetime(2026, 12, 7, tzinfo=UTC)
    deep = '{"a":' + "[" * 50_000 + "]" * 50_000 + "}"
    txs = decoder.transactions([RawTransaction(3, at, [row(1, headers=deep), row(2)])])
    assert [(i.row_seq, i.event.defect is None) for i in txs[0].items] == [(1, False), (2, True)]
    assert decoder.unit_end([RawTransaction(3, at), RawTransaction(8, at)]) == 8
