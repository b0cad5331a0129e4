"""H13 with generated inputs: whatever other programs write into the outbox table, the table relay
stays up, and each input costs at most itself.

Each example writes a batch of rows with PLAIN SQL into a fresh outbox of PostgreSQL, MariaDB or
SQLite — good events interleaved, on the same and other keys, with hostile ones: JSON headers of any
depth and size, text that is not UTF-8 (SQLite keeps bytes as text), lone surrogates and NULs where
the database stores them, control characters, empty and huge keys, topics and types, values of the
wrong type, oversize payloads — then runs the real relay against NATS and checks, within a generous
deadline (a condition, never a timing):

* the relay is still running;
* every row ends published (once, in seq order within its key), dead-lettered with a non-empty
  reason, set aside in memory by the relay, or held: pending behind a dead letter of its key;
* a good row of a key that no hostile row touched is published;
* a row the relay must refuse (a topic no bus routes, an id that is not one) is never published.

``OUTBOXKIT_FUZZ_EXAMPLES`` sets the examples per database (short profile: 8);
``benchmarks/fuzz.py`` runs a long profile and prints what it tried.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outboxkit import migrate
from outboxkit.relay import RelayConfig
from outboxkit.relay.loop import Relay
from outboxkit.relay.process import build_relay
from outboxkit.stores.base import TableRef
from outboxkit.stores.registry import database_for
from tests.conftest import MARIADB_URL, NATS_URL, PG_URL, Stream, drop_stream, make_stream, require, unique
from tests.helpers import db_connect, key_column, ph, read_all, running_relay, table

EXAMPLES = int(os.environ.get("OUTBOXKIT_FUZZ_EXAMPLES", "8"))
DEADLINE = 90.0
KEYS = ["a", "b", "c", None]


@dataclass
class Tally:
    """What the runs tried and what became of it (printed by benchmarks/fuzz.py)."""

    inputs: int = 0
    hostile: int = 0
    published: int = 0
    dead: int = 0
    set_aside: int = 0
    held: int = 0
    examples: int = 0
    seconds: float = 0.0
    kinds: dict[str, int] = field(default_factory=dict)


TALLY = Tally()

# -- what one input is ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Input:
    kind: str  # "good", or the hostile thing it carries
    key: str | None
    value: Any = None  # the kind's generated value
    refused: bool = False  # the relay must never publish it

    @property
    def hostile(self) -> bool:
        return self.kind != "good"


def _deep(depth: int, width: int) -> str:
    return '{"h": ' + "[" * depth + ",".join(["1"] * width) + "]" * depth + "}"


TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40)
CONTROL = st.text(st.characters(max_codepoint=0x1F) | st.sampled_from("\x7f\x00\x1b"), min_size=1, max_size=5)


def hostile(db: str) -> st.SearchStrategy[Input]:
    keys = st.sampled_from(KEYS)
    sqlite, maria, pg = db == "sqlite", db == "mariadb", db == "postgres"
    kinds: list[st.SearchStrategy[Input]] = [
        st.builds(Input, st.just("deep-headers"), keys, st.tuples(st.integers(1, 32 if maria else 5000), st.just(1))),
        st.builds(Input, st.just("wide-headers"), keys, st.integers(1, 3000)),
        st.builds(Input, st.just("non-object-headers"), keys, st.sampled_from(['"x"', "[1]", "1", "null", "true"])),
        st.builds(Input, st.just("header-not-text"), keys, st.sampled_from(['{"n": 1}', '{"n": {}}', '{"n": null}'])),
        st.builds(Input, st.just("bad-header-name"), keys, st.sampled_from(['{"": "x"}', '{"a b": "x"}'])),
        st.builds(Input, st.just("empty-key"), st.just(""), refused=st.just(True)),
        # Over emit's 1,024 bytes; MariaDB's column holds 1,024 characters, so four-byte ones there.
        st.builds(
            Input,
            st.just("huge-key"),
            st.integers(257, 1024).map(lambda n: "\U0001f600" * n)
            if maria
            else st.integers(1025, 20_000).map(lambda n: "k" * n),
        ),
        st.builds(Input, st.just("bad-topic"), keys, st.sampled_from(["", "not a topic", "a..b", "x" * 300, "*"])),
        st.builds(Input, st.just("text-attribute"), keys, st.one_of(st.just(""), st.just("t" * 2000), TEXT)),
        st.builds(Input, st.just("content-type"), keys, st.sampled_from(["", "garbage", "a/b\n", "x" * 300])),
        st.builds(Input, st.just("oversize-payload"), keys, st.just(1_100_000)),
        st.builds(Input, st.just("control-in-key"), CONTROL.map(lambda c: f"k{c}")),
        st.builds(Input, st.just("control-in-topic"), keys, CONTROL),
        st.builds(Input, st.just("control-in-type"), keys, CONTROL),
        st.builds(Input, st.just("unicode-key"), TEXT.filter(bool)),
    ]
    if not pg:  # PostgreSQL's uuid column takes only uuids
        kinds.append(st.builds(Input, st.just("bad-id"), keys, st.just(None), refused=st.just(True)))
        # NUL and ESC in a header value: legal (emit takes them), so published or dead, never stuck.
        kinds.append(st.builds(Input, st.just("nul-in-header"), keys, CONTROL))
    if sqlite:
        # sqlite3 raises while fetching text that is not UTF-8 (a lone surrogate encoded is not):
        # the whole fetch fails, and the relay must narrow it down to the row.
        raw = st.sampled_from([b"\xff", b"\xed\xa0\x80", b"a\xc3", b"\x80\x80", b"{\xfe}"])
        kinds += [
            st.builds(Input, st.just("not-utf8-key"), raw),
            st.builds(Input, st.just("not-utf8-topic"), keys, raw),
            st.builds(Input, st.just("not-utf8-headers"), keys, raw),
            st.builds(Input, st.just("surrogate-header"), keys, st.sampled_from(["\\ud800", "\\udfff", "a\\udc00"])),
            st.builds(Input, st.just("invalid-json"), keys, st.sampled_from(["{", "{'a': 1}", "not json", "{}}"])),
            st.builds(Input, st.just("wrong-types"), keys, st.sampled_from(["key-int", "payload-text", "time", "id"])),
        ]
    return st.one_of(kinds)


def batches(db: str) -> st.SearchStrategy[list[Input]]:
    good = st.builds(Input, st.just("good"), st.sampled_from(KEYS))
    return st.lists(st.one_of(good, good, hostile(db)), min_size=5, max_size=40)


# -- writing an input with plain SQL --------------------------------------------------------------


def _row(db: str, url: str, item: Input, topic: str) -> tuple[dict[str, str], list[Any], str]:
    """(column -> SQL expression, parameters, id) of one INSERT."""
    mark = ph(url)
    row_id = str(uuid.uuid4())
    cols: dict[str, Any] = {"id": row_id, "topic": topic, "key": item.key, "payload": b'{"ok": 1}'}
    exprs: dict[str, str] = {}
    kind, value = item.kind, item.value
    if kind == "deep-headers":
        cols["headers"] = _deep(*value)
    elif kind == "wide-headers":
        cols["headers"] = "{" + ",".join(f'"h{i}": "{"v" * (i % 7)}"' for i in range(value)) + "}"
    elif kind in ("non-object-headers", "header-not-text", "bad-header-name", "invalid-json"):
        cols["headers"] = value
    elif kind in ("bad-topic", "control-in-topic"):
        cols["topic"] = value if kind == "bad-topic" else f"{topic}{value}"
    elif kind in ("huge-key", "control-in-key", "unicode-key"):
        cols["key"] = value
    elif kind == "text-attribute" or kind == "control-in-type":
        cols["type"] = value if kind == "text-attribute" else f"t{value}"
    elif kind == "content-type":
        cols["content_type"] = value
    elif kind == "oversize-payload":
        cols["payload"] = b"x" * value
    elif kind == "bad-id":
        cols["id"] = "\x01" + uuid.uuid4().hex  # a control character: no header can carry it
    elif kind == "nul-in-header":
        cols["headers"] = '{"h": "a' + "".join(f"\\u{ord(c):04x}" for c in value) + '"}'
    elif kind == "surrogate-header":
        cols["headers"] = '{"h": "' + value + '"}'
    elif kind.startswith("not-utf8-"):
        column = kind.removeprefix("not-utf8-")
        cols[column] = value if column != "topic" else topic.encode() + value
        exprs[column] = f"CAST({mark} AS TEXT)"
        if column == "key":
            cols["key"] = value
    elif kind == "wrong-types":
        if value == "key-int":
            cols["key"] = 42
        elif value == "payload-text":
            cols["payload"] = "text, not bytes \u00e9"
        elif value == "time":
            cols["created_at"] = "yesterday"
        else:
            cols["id"] = 12345
    if db == "postgres" and "headers" in cols:
        exprs["headers"] = f"{mark}::jsonb"
    if db == "postgres":
        exprs["id"] = f"{mark}::uuid"
    columns = {c: exprs.get(c, mark) for c in cols}
    return columns, list(cols.values()), row_id


def _write(db: str, url: str, ref: TableRef, items: list[Input], topic: str) -> list[tuple[Input, str | None]]:
    """Insert each item in its own transaction; (item, id) of those the database took."""
    conn = db_connect(url)
    written: list[tuple[Input, str | None]] = []
    try:
        for item in items:
            columns, params, row_id = _row(db, url, item, topic)
            names = ", ".join(key_column(url) if c == "key" else c for c in columns)
            sql = f"INSERT INTO {table(url, ref)} ({names}) VALUES ({', '.join(columns.values())})"
            try:
                conn.execute(sql, tuple(params))
            except Exception:
                # The database refused it (a CHECK, a type, a length): nothing for the relay to do.
                continue
            written.append((item, row_id))
    finally:
        conn.close()
    return written


# -- checking -------------------------------------------------------------------------------------


def _outcome(url: str, ref: TableRef) -> list[tuple[int, str, bool, bool, str | None, bool]]:
    """(seq, id, delivered, dead, last_error, held) per row; reads no column a hostile row spoils
    except through SQL (hex of the id on SQLite, where it may hold any bytes)."""
    t = table(url, ref)
    k = key_column(url)
    ident = "hex(o.id)" if url.startswith("sqlite") else "CAST(o.id AS CHAR)" if "mysql" in url else "o.id::text"
    rows = _sql(
        url,
        f"SELECT o.seq, {ident}, o.delivered_at IS NOT NULL, o.dead_at IS NOT NULL, o.last_error,"
        f" EXISTS (SELECT 1 FROM {t} d WHERE d.dead_at IS NOT NULL AND d.{k} = o.{k})"
        f" FROM {t} o ORDER BY o.seq",
    )
    out = []
    for seq, ident_value, delivered, dead, error, held in rows:
        row_id = bytes.fromhex(ident_value).decode("utf-8", "replace") if url.startswith("sqlite") else ident_value
        out.append((int(seq), str(row_id), bool(delivered), bool(dead), error, bool(held)))
    return out


def _sql(url: str, statement: str) -> list[tuple[Any, ...]]:
    conn = db_connect(url)
    try:
        return list(conn.execute(statement).fetchall())
    finally:
        conn.close()


def _settled(url: str, ref: TableRef, relay: Relay) -> bool:
    aside = set(relay.casualties.aside.seqs)
    return all(delivered or dead or held or seq in aside for seq, _, delivered, dead, _, held in _outcome(url, ref))


async def _example(db: str, url: str, items: list[Input]) -> None:
    started = time.monotonic()
    ref = TableRef("outbox", unique("okf")) if db != "sqlite" else TableRef()
    if db == "sqlite":
        path = os.path.join(tempfile.gettempdir(), f"{unique('okf')}.db")
        url = f"sqlite:///{path}"
    migrate(url, ref)
    stream: Stream = await make_stream(NATS_URL)
    try:
        topic = stream.topic("fuzz")
        written = _write(db, url, ref, items, topic)
        relay = build_relay(url, stream.url, ref=ref, config=RelayConfig(poll_interval=0.05, retry_cap=0.5))
        async with running_relay(relay) as running:
            deadline = time.monotonic() + DEADLINE
            while not await asyncio.to_thread(_settled, url, ref, relay):
                assert time.monotonic() < deadline, f"not settled within {DEADLINE}s: {_outcome(url, ref)}"
                assert running.task is not None and not running.task.done(), "the relay stopped"
                await asyncio.sleep(0.05)
            assert running.task is not None and not running.task.done(), "the relay is still running"
            outcome = await asyncio.to_thread(_outcome, url, ref)
            delivered = [r for r in outcome if r[2]]
            got = await read_all(stream.url, stream.name, expect=len(delivered), idle=0.3, timeout=DEADLINE)
        _check(written, outcome, got)
        TALLY.examples += 1
        TALLY.inputs += len(written)
        TALLY.hostile += sum(item.hostile for item, _ in written)
        TALLY.published += len(delivered)
        TALLY.dead += sum(r[3] for r in outcome)
        TALLY.set_aside += relay.stats.set_aside
        TALLY.held += sum(1 for r in outcome if not (r[2] or r[3]))
        for item, _ in written:
            TALLY.kinds[item.kind] = TALLY.kinds.get(item.kind, 0) + 1
        TALLY.seconds += time.monotonic() - started
    finally:
        await drop_stream(stream)
        if db == "sqlite":
            for suffix in ("", "-wal", "-shm", ".relay-lock"):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path + suffix)
        else:
            database = database_for(url)
            conn = database.connect(url)
            try:
                database.drop_namespace(conn, ref.schema or "")
            finally:
                conn.close()


def _check(written: list[tuple[Input, str | None]], outcome: list[Any], got: list[Any]) -> None:
    ids = [m.event_id for m in got]
    assert len(ids) == len(set(ids)), "each event published once"
    by_id = {r[1]: r for r in outcome}
    seq_of = {m.event_id: by_id[m.event_id][0] for m in got if m.event_id in by_id}
    assert set(ids) <= set(seq_of), "nothing published that the table does not hold"
    for r in outcome:
        if r[3]:
            assert r[4], f"dead letter {r[0]} has a reason"
    # In seq order within each key.
    per_key: dict[str | None, list[int]] = {}
    for m in got:
        per_key.setdefault(m.key, []).append(seq_of[m.event_id])
    for key, seqs in per_key.items():
        assert seqs == sorted(seqs), f"key {key!r} published out of order: {seqs}"
    # A good row of a key no hostile row touched is published.
    touched = {item.key for item, _ in written if item.hostile}
    published = set(ids)
    for item, row_id in written:
        if item.kind == "good" and (item.key is None or item.key not in touched):
            assert row_id in published, f"good row {row_id} of untouched key {item.key!r} not published"
        if item.refused or item.kind in ("bad-topic", "control-in-topic"):
            assert row_id not in published, f"{item.kind} row was published"


@pytest.fixture(params=["postgres", "mariadb", "sqlite"])
def database(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    require("NATS", "127.0.0.1", 4222)
    if request.param == "postgres":
        require("PostgreSQL", "127.0.0.1", 5432)
        yield "postgres", PG_URL
    elif request.param == "mariadb":
        require("MariaDB", "127.0.0.1", 3306)
        yield "mariadb", MARIADB_URL
    else:
        yield "sqlite", "sqlite:///unused"


def test_generated_hostile_rows_cost_the_relay_nothing_but_themselves(database: tuple[str, str]) -> None:
    db, url = database

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
        derandomize=os.environ.get("OUTBOXKIT_FUZZ_RANDOM") != "1",
        database=None,
    )
    @given(batches(db))
    def run(items: list[Input]) -> None:
        asyncio.run(_example(db, url, items))

    run()
