"""The event store's append plan without a database: which statement each expected version runs,
what a refused head means, and the rows it inserts (versions, key, stream headers)."""

from __future__ import annotations

import json

import pytest

from outboxkit.errors import ConcurrencyError
from outboxkit.eventstore import ANY, NO_STREAM
from outboxkit.eventstore.plans import Encoded, Query, append, check_expected
from outboxkit.eventstore.sql import Statements, event_store_sql
from outboxkit.stores.base import TableRef

ST = Statements.build(event_store_sql("postgresql"), TableRef("events", "shop"))


def _events(n: int) -> list[Encoded]:
    return [Encoded(f"id-{i}", "orders", "Placed", None, b"{}", "application/json", {"a": "b"}) for i in range(n)]


@pytest.mark.parametrize(
    ("expected", "sql", "params"),
    [
        (ANY, ST.head_any, ("s", 2)),
        (NO_STREAM, ST.head_new, ("s", 2)),
        (0, ST.head_new, ("s", 2)),
        (7, ST.head_exact, (2, "s", 7)),
    ],
)
def test_head_statement_per_expected_version(expected: object, sql: str, params: tuple[object, ...]) -> None:
    plan = append(ST, "s", _events(2), check_expected(expected))
    first = next(plan)
    assert (first.sql, tuple(first.params)) == (sql, params)
    insert = plan.send([(9,)])  # the head moved to 9: the events are versions 8 and 9
    assert insert.sql == ST.insert and insert.many
    rows = list(insert.params)
    assert [(r[0], r[2], r[8], r[9]) for r in rows] == [("id-0", "s", "s", 8), ("id-1", "s", "s", 9)]
    assert [json.loads(r[7]) for r in rows] == [
        {"a": "b", "streamid": "s", "streamversion": "8"},
        {"a": "b", "streamid": "s", "streamversion": "9"},
    ]
    with pytest.raises(StopIteration) as done:
        plan.send([])
    assert (done.value.value.version, done.value.value.first_version, done.value.value.ids) == (9, 8, ("id-0", "id-1"))


@pytest.mark.parametrize(("found", "actual"), [([(4,)], 4), ([], None)])
def test_a_refused_head_reads_the_actual_version_and_inserts_nothing(
    found: list[tuple[int]], actual: int | None
) -> None:
    plan = append(ST, "s", _events(1), 3)
    next(plan)
    lookup: Query = plan.send([])  # no row updated: another writer moved the head (or no stream)
    assert lookup.sql == ST.head_get and tuple(lookup.params) == ("s",)
    with pytest.raises(ConcurrencyError) as info:
        plan.send(found)
    assert (info.value.stream_id, info.value.expected, info.value.actual) == ("s", 3, actual)


@pytest.mark.parametrize("bad", [-1, True, 1.5, "3", None])
def test_bad_expected_versions_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="expected must be a version"):
        check_expected(bad)
