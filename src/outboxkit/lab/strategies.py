"""The strategies, each a small honest implementation of a known approach.

Every write path runs the same business change (``strategy.business``) and differs only in where
the event goes and when. Crash points are passed where the approach really has them; see
``faults`` for their names. A strategy never retries what the approach itself would not.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import sys
from collections.abc import Mapping
from typing import Any

from outboxkit.capture import CaptureSpec, add_capture
from outboxkit.core.envelope import new_event_id
from outboxkit.errors import TransientError
from outboxkit.lab.faults import Txn
from outboxkit.lab.strategy import (
    Env,
    Strategy,
    WriteContext,
    business,
    encode,
    event,
    identify_by_envelope,
    local_dir,
    payload,
)
from outboxkit.migrate import migrate
from outboxkit.stores.base import TableRef


def _finish(ctx: WriteContext, txn: Txn) -> bool:
    """COMMIT, or ROLLBACK when the business logic fails this transaction. True if it committed.

    A connection dropped at COMMIT leaves the outcome unknown to the writer; it reconnects and
    moves on, and the database (``order_events``) says what really committed."""
    try:
        ctx.conn.execute("ROLLBACK" if txn.rollback else "COMMIT")
    except Exception as exc:
        if not _connection_lost(ctx.env, exc):
            raise
        ctx.reconnect()
        return False
    return not txn.rollback


def _begin(ctx: WriteContext) -> None:
    ctx.conn.execute(ctx.env.database.begin_sql)


def _connection_lost(env: Env, exc: BaseException) -> bool:
    return isinstance(env.database.translate(exc, "lab writer"), TransientError)


class _NoOutbox:
    """Defaults for the strategies that keep no outbox: nothing to set up, no companion process,
    never a backlog to drain."""

    identify = staticmethod(identify_by_envelope)

    def prepare(self, env: Env) -> None:
        return None

    def companion(self, env: Env) -> list[str] | None:
        return None

    def backlog(self, env: Env) -> int:
        return 0


class DualWrite(_NoOutbox):
    """Commit, then publish. A crash or broker failure between the two loses the event."""

    name = "dual-write"
    summary = "commit, then publish"
    choose = "only where a lost event is acceptable (cache invalidation hints, metrics)"

    async def recover(self, ctx: WriteContext) -> None:
        return None  # nothing was recorded anywhere that could be replayed

    async def write(self, ctx: WriteContext, txn: Txn) -> None:
        ids = [new_event_id() for _ in range(txn.events)]
        bodies = [encode(payload(txn, i)) for i in range(txn.events)]
        _begin(ctx)
        business(ctx, txn, ids)
        await ctx.at("mid-tx")
        await ctx.at("before-commit")
        if not _finish(ctx, txn):
            return
        ctx.committed(txn, ids)
        await ctx.at("after-commit")
        await ctx.at("before-publish")
        await ctx.publish([event(ctx.env, i, txn, b) for i, b in zip(ids, bodies, strict=True)])
        await ctx.at("before-mark")


class PublishThenCommit(_NoOutbox):
    """Publish inside the transaction scope, then commit. A failed or cut commit leaves a phantom."""

    name = "publish-then-commit"
    summary = "publish inside the transaction, then commit"
    choose = "never for facts others act on: every commit that fails after the publish is an event about nothing"

    async def recover(self, ctx: WriteContext) -> None:
        return None  # a published event cannot be taken back

    async def write(self, ctx: WriteContext, txn: Txn) -> None:
        ids = [new_event_id() for _ in range(txn.events)]
        bodies = [encode(payload(txn, i)) for i in range(txn.events)]
        _begin(ctx)
        business(ctx, txn, ids)
        await ctx.at("mid-tx")
        await ctx.at("before-publish")
        if not await ctx.publish([event(ctx.env, i, txn, b) for i, b in zip(ids, bodies, strict=True)]):
            ctx.conn.execute("ROLLBACK")  # the approach's one consolation: no commit without a publish
            return
        await ctx.at("before-commit")
        if _finish(ctx, txn):
            ctx.committed(txn, ids)
            await ctx.at("after-commit")


class LocalLog(_NoOutbox):
    """Intent in a local SQLite file (fsync'd) first, then the main commit, then publish, then forget.

    Recovery replays the log: an intent whose id is in the main database is published, one that
    is not is dropped. It survives process crashes, but the log lives with the instance: when the
    instance is replaced, its pending intents are gone."""

    name = "local-log"
    summary = "intent in a local SQLite log, commit, publish; replay at start-up"
    choose = "only where the local disk surely outlives the process; otherwise prefer an outbox"

    def _log(self, env: Env) -> sqlite3.Connection:
        conn = sqlite3.connect(local_dir(env) / "intent-log.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")  # the intent must survive a crash right after it
        conn.execute("CREATE TABLE IF NOT EXISTS intent (id TEXT PRIMARY KEY, key TEXT, body BLOB, tx INTEGER)")
        return conn

    async def recover(self, ctx: WriteContext) -> None:
        log = self._log(ctx.env)
        try:
            rows = log.execute("SELECT id, key, body, tx FROM intent ORDER BY rowid").fetchall()
            if not rows:
                return
            ids = [r[0] for r in rows]
            marks = ",".join("?" * len(ids))
            found = ctx.conn.execute(
                ctx.sql(f"SELECT event_id FROM {ctx.env.table('order_events')} WHERE event_id IN ({marks})"), ids
            ).fetchall()
            committed = {str(r[0]) for r in found}
            events = [event(ctx.env, r[0], Txn(r[3], r[1], 1, False), r[2]) for r in rows if r[0] in committed]
            if await ctx.publish(events):
                log.execute(f"DELETE FROM intent WHERE id IN ({marks})", ids)
        finally:
            log.close()

    async def write(self, ctx: WriteContext, txn: Txn) -> None:
        ids = [new_event_id() for _ in range(txn.events)]
        bodies = [encode(payload(txn, i)) for i in range(txn.events)]
        log = self._log(ctx.env)
        try:
            with log:  # one local transaction for all intents of this business transaction
                log.executemany(
                    "INSERT INTO intent (id, key, body, tx) VALUES (?, ?, ?, ?)",
                    [(i, txn.key, b, txn.index) for i, b in zip(ids, bodies, strict=True)],
                )
            _begin(ctx)
            business(ctx, txn, ids)
            await ctx.at("mid-tx")
            await ctx.at("before-commit")
            if not _finish(ctx, txn):
                if txn.rollback:  # known outcome: forget the intents; an unknown one is left to recovery
                    log.execute(f"DELETE FROM intent WHERE id IN ({','.join('?' * len(ids))})", ids)
                return
            ctx.committed(txn, ids)
            await ctx.at("after-commit")
            await ctx.at("before-publish")
            if await ctx.publish([event(ctx.env, i, txn, b) for i, b in zip(ids, bodies, strict=True)]):
                await ctx.at("before-mark")
                log.execute(f"DELETE FROM intent WHERE id IN ({','.join('?' * len(ids))})", ids)
        finally:
            log.close()


class _Outbox:
    """Shared by the outbox strategies: the event is a row written in the business transaction."""

    name = ""
    summary = ""
    choose = ""
    inline = False
    relay: str | None = None  # "poll" or "notify"
    identify = staticmethod(identify_by_envelope)

    def prepare(self, env: Env) -> None:
        migrate(env.db, env.ref, notify=self.relay == "notify")

    def companion(self, env: Env) -> list[str] | None:
        if self.relay is None:
            return None
        # A stable owner, as a supervisor gives it: the relay started again after a SIGKILL takes
        # its buckets back at once instead of waiting a lease TTL for its own dead leases.
        owner = f"lab-{env.topic.split('.')[0]}"
        args = [sys.executable, "-m", "outboxkit", "relay", "--db", env.db, "--broker", env.broker, "--owner", owner]
        if env.schema:
            args += ["--schema", env.schema]
        return args

    def backlog(self, env: Env) -> int:
        if self.relay is None:
            return 0
        conn = _connect(env)
        try:
            return len(_unmarked(env, conn))
        finally:
            conn.close()

    def stall_report(self, env: Env) -> list[str]:
        """What a stalled relay left: the oldest pending rows, and who holds the leases."""
        conn = _connect(env)
        try:
            rows = _unmarked(env, conn)
            out = [f"{len(rows)} pending rows; oldest: " + ", ".join(f"seq {r[0]} key {r[2]}" for r in rows[:8])]
            try:
                leases = conn.execute(
                    f"SELECT owner, count(*) FROM {env.ref.derived('leases', env.database.quote)}"
                    " WHERE owner IS NOT NULL GROUP BY owner"
                ).fetchall()
                out.append("leases: " + (", ".join(f"{o} holds {n}" for o, n in leases) or "none held"))
            except Exception as exc:  # SQLite keeps no lease table: say so and go on
                out.append(f"leases: not readable ({exc})")
            return out
        finally:
            conn.close()

    async def recover(self, ctx: WriteContext) -> None:
        if self.inline and self.relay is None:
            # No relay: the restarted service itself sends what it committed but did not mark.
            for row in _unmarked(ctx.env, ctx.conn):
                ev = event(ctx.env, str(row[1]), Txn(0, row[2], 1, False), bytes(row[3]))
                if await ctx.publish([ev]):
                    _mark(ctx, [ev.id])

    async def write(self, ctx: WriteContext, txn: Txn) -> None:
        bodies = [payload(txn, i) for i in range(txn.events)]
        _begin(ctx)
        ids = [ctx.outbox.emit(ctx.conn, ctx.env.topic, body, key=txn.key) for body in bodies]
        business(ctx, txn, ids)
        await ctx.at("mid-tx")
        await ctx.at("before-commit")
        if not _finish(ctx, txn):
            return
        ctx.committed(txn, ids)
        await ctx.at("after-commit")
        if not self.inline:
            return
        if self.relay is not None and _key_waits(ctx, txn.key, ids):
            # InlinePublisher's rule: an earlier event of the key is still pending (its writer
            # crashed, its publish failed): the relay sends this key in order, the writer steps
            # aside. Without it the writer's event overtook the relay's (per-key reordering).
            return
        await ctx.at("before-publish")
        events = [event(ctx.env, i, txn, encode(b)) for i, b in zip(ids, bodies, strict=True)]
        if await ctx.publish(events):
            await ctx.at("before-mark")
            _mark(ctx, ids)


def _connect(env: Env) -> Any:
    from outboxkit.testing.workload import OrdersWorkload

    return OrdersWorkload(env.db, schema=env.schema).connect()


def _unmarked(env: Env, conn: Any) -> list[Any]:
    q = env.database.quote  # "key" is a reserved word on MariaDB: quote the column everywhere
    sql = f"SELECT seq, id, {q}key{q}, payload FROM {env.outbox} WHERE delivered_at IS NULL AND dead_at IS NULL"
    return list(conn.execute(sql + " ORDER BY seq").fetchall())


def _key_waits(ctx: WriteContext, key: str, ids: list[str]) -> bool:
    """Whether a pending row of ``key`` precedes these just-committed rows (``fetch_committed``'s
    test in SQL, on the writer's own connection)."""
    q, outbox = ctx.env.database.quote, ctx.env.outbox
    marks = ",".join("?" * len(ids))
    sql = (
        f"SELECT 1 FROM {outbox} p WHERE p.{q}key{q} = ? AND p.delivered_at IS NULL AND p.dead_at IS NULL"
        f" AND p.seq < (SELECT min(o.seq) FROM {outbox} o WHERE o.id IN ({marks})) LIMIT 1"
    )
    try:
        return ctx.conn.execute(ctx.sql(sql), [key, *ids]).fetchone() is not None
    except Exception as exc:
        if not _connection_lost(ctx.env, exc):
            raise
        ctx.reconnect()
        return True  # not known: the relay sends them


def _mark(ctx: WriteContext, ids: list[str]) -> None:
    # The mark is best effort: a dropped connection leaves the row for the relay or the next start-up.
    with contextlib.suppress(Exception):
        marks = ",".join("?" * len(ids))
        ctx.conn.execute(
            ctx.sql(f"UPDATE {ctx.env.outbox} SET delivered_at = {ctx.env.database.now_sql} WHERE id IN ({marks})"),
            ids,
        )


class OutboxInline(_Outbox):
    name, summary, inline = "outbox-inline", "outbox row in the transaction; the writer publishes and marks", True
    choose = "for the lowest latency when every crashed instance is surely restarted (its pending rows wait for it)"


class OutboxRelayPoll(_Outbox):
    name, summary, relay = "outbox-relay-poll", "outbox row; a relay process polls (1 s)", "poll"
    choose = "when up to a poll interval of latency is fine and the write path must stay minimal"


class OutboxRelayNotify(_Outbox):
    name, summary, relay = "outbox-relay-notify", "outbox row; a relay woken by LISTEN/NOTIFY", "notify"
    choose = "as the default: nothing lost or invented, low latency, at the price of running a relay"


class OutboxInlineRelay(_Outbox):
    name, summary = "outbox-inline+relay", "outbox row; writer publishes right away, relay as safety net"
    inline, relay = True, "notify"
    choose = (
        "for the lowest latency without waiting for restarts: the writer steps aside for a key whose earlier"
        " event is still pending, so the relay keeps that key in order"
    )


class Trigger(_Outbox):
    """No emit at all: a capture trigger on ``order_events`` writes the outbox row in the business
    transaction (``outboxkit capture add``), and a relay publishes it. The application is unchanged;
    the event is the changed row, as JSON the database built."""

    name, summary, relay = "trigger", "a database trigger writes the outbox row; a relay publishes", "notify"
    choose = (
        "when writes you cannot change must produce events (other languages, psql, legacy code), at the"
        " price of a trigger on every write and events shaped like the table's rows"
    )

    def prepare(self, env: Env) -> None:
        super().prepare(env)
        target = TableRef("order_events", env.schema)
        add_capture(env.db, CaptureSpec(target, env.topic, key="customer", on=("insert",)), env.ref)

    async def write(self, ctx: WriteContext, txn: Txn) -> None:
        ids = [new_event_id() for _ in range(txn.events)]
        _begin(ctx)
        business(ctx, txn, ids)  # the trigger fires on each order_events row
        await ctx.at("mid-tx")
        await ctx.at("before-commit")
        if _finish(ctx, txn):
            ctx.committed(txn, ids)
            await ctx.at("after-commit")

    @staticmethod
    def identify(headers: Mapping[str, str], data: bytes) -> tuple[str, int | None]:
        # The captured row is the ground truth's own row: its event_id names the event.
        try:
            return str(json.loads(data)["after"]["event_id"]), None
        except (ValueError, KeyError, TypeError):
            return headers.get("ce-id", ""), None


class Wal(_Outbox):
    """The outbox row of ``outbox-relay-notify``, published by ``relay --capture wal`` reading a
    logical replication slot (PostgreSQL only: other databases skip it)."""

    name, summary, relay = "wal", "outbox row; a relay tails PostgreSQL's log (logical decoding)", "notify"
    choose = (
        "when events must leave in exact commit order with no polling of the outbox, at the price of a"
        " replication slot to watch (it retains WAL while the relay is down)"
    )
    databases = ("postgresql",)

    def prepare(self, env: Env) -> None:
        from outboxkit.stores.postgres.wal import migrate_wal

        super().prepare(env)
        migrate_wal(env.db, env.ref)

    def companion(self, env: Env) -> list[str] | None:
        return [*(super().companion(env) or []), "--capture", "wal"]

    def cleanup(self, env: Env) -> None:
        """Drop the slot: a slot left behind keeps the server's WAL forever (H4)."""
        from outboxkit.stores.postgres.wal import drop_slot, resolve_slot

        drop_slot(env.db, env.ref, resolve_slot(env.db, env.ref))


class WalMessage(Wal):
    """No outbox row: ``MessageOutbox`` writes each event into the log (``pg_logical_emit_message``)
    in the business transaction; the wal relay publishes it."""

    name, summary = "wal-message", "table-less: the event is a logical decoding message; the wal relay publishes"
    choose = (
        "when the outbox table's writes, vacuum and bloat must go, at the price of a replication slot and of"
        " events that exist only in the log (an invalidated slot loses them)"
    )

    def backlog(self, env: Env) -> int:
        """This outbox's table-less events still in the slot (1 while the relay holds the slot)."""
        import psycopg

        from outboxkit.core.walmessage import prefix_for
        from outboxkit.stores.postgres.pgoutput import Message, decode
        from outboxkit.stores.postgres.wal import resolve_slot

        name, prefix = resolve_slot(env.db, env.ref), prefix_for(env.ref.table, env.ref.schema)
        sql = (
            "SELECT data FROM pg_logical_slot_peek_binary_changes(%s, NULL, NULL, 'proto_version', '1',"
            " 'publication_names', %s, 'messages', 'true') WHERE substr(data, 1, 1) = 'M'::bytea"
        )
        try:
            with psycopg.connect(env.db, autocommit=True) as conn:
                rows = conn.execute(sql.encode(), [name, name]).fetchall()
        except psycopg.Error:
            return self._streamed(env.db, name)
        return sum(
            1 for (data,) in rows if (m := decode(bytes(data))) and isinstance(m, Message) and m.prefix == prefix
        )

    def _streamed(self, db: str, slot: str) -> int:
        """The backlog while a relay holds the slot (a streaming relay always does), which no
        peek can read: 1 until the slot's confirmed position passes the WAL flush position taken
        at the first such call (every event committed before it is then published), then 0."""
        from outboxkit.errors import OutboxkitError
        from outboxkit.stores.postgres.wal import slot_passed, wal_flush_position

        targets: dict[str, int] = self.__dict__.setdefault("_targets", {})
        try:
            if slot not in targets:
                targets[slot] = wal_flush_position(db)
            if not slot_passed(db, slot, targets[slot]):
                return 1
        except OutboxkitError:
            return 1  # the database is down: the wait goes on
        del targets[slot]
        return 0

    async def write(self, ctx: WriteContext, txn: Txn) -> None:
        from outboxkit.walemit import MessageOutbox

        bodies = [payload(txn, i) for i in range(txn.events)]
        outbox = MessageOutbox(schema=ctx.env.schema, source=ctx.outbox.source)
        _begin(ctx)
        ids = [outbox.emit(ctx.conn, ctx.env.topic, body, key=txn.key) for body in bodies]
        business(ctx, txn, ids)
        await ctx.at("mid-tx")
        await ctx.at("before-commit")
        if _finish(ctx, txn):
            ctx.committed(txn, ids)
            await ctx.at("after-commit")


class Binlog(_Outbox):
    """The outbox row of ``outbox-relay-poll``, published by ``relay --capture binlog`` reading the
    MariaDB/MySQL binlog (other databases skip it). Its position table lives beside the outbox and
    goes with the lab's schema."""

    name, summary, relay = "binlog", "outbox row; a relay tails the MariaDB/MySQL binlog", "notify"
    choose = (
        "on MariaDB/MySQL when events must leave in commit order with no polling of the outbox, at the"
        " price of replication privileges and a binlog kept longer than any relay outage"
    )
    databases = ("mariadb",)

    def prepare(self, env: Env) -> None:
        from outboxkit.stores.mariadb.binlogpos import migrate_binlog

        super().prepare(env)
        migrate_binlog(env.db, env.ref)

    def companion(self, env: Env) -> list[str] | None:
        return [*(super().companion(env) or []), "--capture", "binlog"]


class EventSourcing(_Outbox):
    """No outbox beside the state: the business change appends its events to the customer's
    stream (``outboxkit.eventstore``) at the version the writer read, and a relay publishes the
    event store's table as it would an outbox (``relay --table events``): one write, published.

    The expected version is read before the transaction opens, as a service loads an aggregate and
    then decides; a writer that raced it would get a ConcurrencyError and write nothing. The lab
    writer is the stream's only writer, so a conflict here is a bug and fails the run."""

    name, relay = "event-sourcing", "notify"
    summary = "append to the key's stream at the expected version; a relay publishes the events table"
    choose = (
        "when the events are the state (audit, ledgers, workflows) and read models can be rebuilt from them,"
        " at the price of projections to write and events kept forever"
    )
    databases = ("postgresql", "sqlite")  # the event store has no MariaDB SQL yet
    table = "events"

    def _ref(self, env: Env) -> TableRef:
        return TableRef(self.table, env.schema)

    def prepare(self, env: Env) -> None:
        from outboxkit.eventstore import migrate_event_store

        migrate_event_store(env.db, self._ref(env))

    def companion(self, env: Env) -> list[str] | None:
        return [*(super().companion(env) or []), "--table", self.table]

    def backlog(self, env: Env) -> int:
        conn = _connect(env)
        try:
            table = self._ref(env).quoted(env.database.quote)
            row = conn.execute(
                f"SELECT count(*) FROM {table} WHERE delivered_at IS NULL AND dead_at IS NULL"
            ).fetchone()
            return int(row[0])
        finally:
            conn.close()

    async def recover(self, ctx: WriteContext) -> None:
        return None  # the relay sends whatever committed; nothing is pending in the writer

    async def write(self, ctx: WriteContext, txn: Txn) -> None:
        from outboxkit.eventstore import EventStore, NewEvent

        env = ctx.env
        store = EventStore(table=self.table, schema=env.schema, topic=env.topic, source=ctx.outbox.source)
        events = [NewEvent("OrderPlaced", payload(txn, i)) for i in range(txn.events)]
        version = store.stream_version(ctx.conn, txn.key)  # "load the aggregate": read, then decide
        _begin(ctx)
        try:
            ids = list(store.append(ctx.conn, txn.key, events, expected=version).ids)
        except BaseException:
            with contextlib.suppress(Exception):
                ctx.conn.execute("ROLLBACK")
            raise
        business(ctx, txn, ids)  # the read model the verifier checks against (order_events)
        await ctx.at("mid-tx")
        await ctx.at("before-commit")
        if _finish(ctx, txn):
            ctx.committed(txn, ids)
            await ctx.at("after-commit")


STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        DualWrite(),
        PublishThenCommit(),
        LocalLog(),
        OutboxInline(),
        OutboxRelayPoll(),
        OutboxRelayNotify(),
        OutboxInlineRelay(),
        Trigger(),
        Wal(),
        WalMessage(),
        Binlog(),
        EventSourcing(),
    )
}
