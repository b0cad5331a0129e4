"""The inbox middleware for FastStream (any broker FastStream supports; tested on NATS JetStream and
RabbitMQ), on an SQLAlchemy ``AsyncSession``.

Per message, in this order (the same rules as ``outboxkit consume``, see ``outboxkit.inbox``):

1. open a session and record ``(name, event id)`` in the inbox table with the inbox's own claim
   statement (``stores/<database>/inbox.py``): a duplicate inserts nothing, is acknowledged and the
   handler is not called (G7, effectively-once processing);
2. call the handler with an :class:`InboxTransaction` (the session, the event, and ``emit`` into
   the outbox on that same session), so its effects, its follow-up events and the inbox row commit
   together or not at all;
3. mark the inbox row finished, COMMIT, and only then acknowledge the message. A crash between the
   two redelivers the message, which is then a duplicate.

A handler that commits or rolls back the session itself has ended the inbox's transaction (H14):
that attempt fails (its work was not atomic with the inbox row), and the row it may have committed
is still marked unfinished, so the retry runs the handler again instead of counting a duplicate.

A handler that raises rolls everything back (its effects, its follow-up events, the inbox row) and
the message is negatively acknowledged after a backoff (JetStream's ``nak`` delay; other brokers
wait, then requeue), so the broker delivers it again. After ``max_attempts`` failures the message is
written to ``<table>_dead`` with the error, its id is recorded, and it is acknowledged: a poison
message never loops forever. A database that cannot be reached before the handler ran (the claim
failed) is an outage, not the handler's fault: the message is requeued without counting an attempt.

The middleware settles the message itself (ack after commit, nack on failure), so it does not depend
on the subscriber's ``ack_policy``; ``AckPolicy.ACK_FIRST`` would acknowledge before the commit and
is refused.
"""

from __future__ import annotations

import logging
import traceback
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from faststream import Context
from faststream.message import StreamMessage
from faststream.middlewares import AckPolicy, BaseMiddleware
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from outboxkit.contrib.faststream.messages import (
    _KEY_HEADERS,
    _event_of,
    _line,
    _nack_later,
    _named,
    _rollback,
    _settle,
    _text,
    _topic_of,
)
from outboxkit.core.backoff import backoff_delay
from outboxkit.core.lru import BoundedDict
from outboxkit.core.storable import storable
from outboxkit.emit import Outbox
from outboxkit.errors import ConfigurationError
from outboxkit.inbox.runner import UNIDENTIFIED, Event, InboxStats, unidentified
from outboxkit.inbox.transaction import ENDED, TransactionEnded, dead_letter_fields
from outboxkit.stores.base import TableRef
from outboxkit.stores.registry import database_named

log = logging.getLogger("outboxkit.inbox")

#: The FastStream context key the open :class:`InboxTransaction` is stored under.
CONTEXT_KEY = "outboxkit_inbox"

_CLAIM_PARAMS = ("consumer", "event_id")
_DEAD_PARAMS = ("consumer", "event_id", "topic", "key", "payload", "headers", "error", "attempts")


@dataclass(slots=True)
class InboxTransaction:
    """What a handler under the inbox gets (declare a parameter ``tx: InboxTx``).

    ``session`` is an ``AsyncSession`` with the transaction open: use it for the handler's effects,
    never commit or roll it back (the inbox does, after the handler returns). ``event`` is the
    message as the inbox sees it (id, topic, key, payload, headers, attempt)."""

    session: AsyncSession
    event: Event
    outbox: Outbox
    emitted: list[str] = field(default_factory=list)

    async def emit(
        self,
        topic: str,
        payload: Any,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        type: str | None = None,
    ) -> str:
        """Write a follow-up event into the outbox in this transaction; returns its id. It is
        relayed only if the handler's transaction commits (consume -> act -> emit, exactly once)."""
        event_id = await self.outbox.emit_async(self.session, topic, payload, key=key, headers=headers, type=type)
        self.emitted.append(event_id)
        return event_id


#: The handler parameter type: ``async def handle(body: dict, tx: InboxTx) -> None``.
InboxTx = Annotated[InboxTransaction, Context(CONTEXT_KEY)]


@dataclass(frozen=True)
class _Statements:
    """The inbox's statements in SQLAlchemy's ``:name`` form, for one dialect."""

    start: str
    unfinished: str
    finish: str
    claim: str
    dead: str


class Inbox:
    """A FastStream middleware factory: pass it in ``middlewares=[inbox]`` of a broker or router.

    ``sessions``: an ``async_sessionmaker`` (or an ``AsyncEngine``) for the consumer's database,
    where ``outboxkit migrate --inbox`` created the inbox table (and ``outboxkit migrate`` the
    outbox, if handlers emit). ``name`` is the consumer's name in the inbox: subscribers that must
    each process the same event once need inboxes of different names (two routers).
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession] | AsyncEngine,
        *,
        name: str,
        table: str = "inbox",
        schema: str | None = None,
        outbox: Outbox | None = None,
        max_attempts: int = 5,
        retry_base: float = 0.5,
        retry_cap: float = 30.0,
        memory: int = 100_000,
    ) -> None:
        if isinstance(sessions, AsyncEngine):
            sessions = async_sessionmaker(sessions, expire_on_commit=False)
        if not isinstance(name, str) or not name:
            raise ConfigurationError("Inbox needs a non-empty consumer name (name=...)")
        if max_attempts < 1:
            raise ConfigurationError(f"max_attempts must be at least 1, got {max_attempts}")
        bind = sessions.kw.get("bind")
        # The longest id the inbox table keeps whole (255 when the database is only known later).
        self._max_event_id = 255
        if bind is not None:
            # A database without an inbox fails here, at start-up.
            self._max_event_id = database_named(bind.dialect.name).inbox().max_event_id
        self.sessions = sessions
        self.name = name
        self.ref = TableRef(table, schema)
        self.outbox = outbox or Outbox()
        self.max_attempts = max_attempts
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        self.stats = InboxStats()
        # Failures per event id, for brokers without a delivery count (bounded: oldest forgotten).
        self._failures: BoundedDict[str, int] = BoundedDict(memory)
        self._outages = 0
        self._sql: dict[str, _Statements] = {}

    def __call__(self, msg: Any, /, *, context: Any) -> _InboxMiddleware:
        """FastStream builds one middleware per message through this call."""
        return _InboxMiddleware(msg, context=context, inbox=self)

    # -- one message --------------------------------------------------------------------------------
    async def process(
        self, call_next: Callable[[StreamMessage[Any]], Awaitable[Any]], msg: StreamMessage[Any], context: Any
    ) -> Any:
        """One message: claim its id, run the handler, commit, then ack (see the module docstring)."""
        # ACK_FIRST acknowledges before the handler (an ack middleware on NATS; on RabbitMQ a
        # consumer without acks, whose messages aio-pika hands over already settled, "locked"): a
        # crash would lose the message, whatever the inbox does.
        subscriber_policy = getattr(context.get("handler_"), "ack_policy", None)
        consumed_without_ack = getattr(msg.raw_message, "locked", False) is True
        if msg.committed is not None or consumed_without_ack or subscriber_policy is AckPolicy.ACK_FIRST:
            raise ConfigurationError(
                "the message was acknowledged before the inbox ran (ack_policy=AckPolicy.ACK_FIRST?): "
                "use the default ack policy, the inbox acknowledges after its commit"
            )
        event = _event_of(msg)
        reason = UNIDENTIFIED if event is None else unidentified(event.id, self._max_event_id)
        if event is None or reason is not None:
            await self._park(msg, reason or UNIDENTIFIED)
            return None
        failures = self._failures.get(event.id) or 0
        event = Event(event.id, event.topic, event.key, event.payload, event.headers, max(event.attempt, failures + 1))
        outage: Exception | None = None
        failure: Exception | None = None
        claimed = False
        result: Any = None
        async with self.sessions() as session:
            try:
                claimed = await self._claim(session, event)
            except Exception as exc:
                await _rollback(session)
                outage = exc
            if outage is None and not claimed:
                await _rollback(session)
            elif outage is None:
                tx = InboxTransaction(session, event, self.outbox)
                try:
                    ours = session.get_transaction()
                    with context.scope(CONTEXT_KEY, tx):
                        result = await call_next(msg)
                    if ours is None or session.get_transaction() is not ours or not ours.is_active:
                        # The handler committed or rolled back the session itself (H14): its work
                        # was not atomic with the inbox row. The row, if committed, is unfinished.
                        raise TransactionEnded(ENDED)
                    await session.execute(text(self._statements(session).finish), self._key(event))
                    await session.commit()
                except Exception as exc:
                    await _rollback(session)
                    failure = exc
        # The session is closed (its connection back in the pool) before any backoff below.
        if outage is not None:
            # The database is not there (or the inbox table is missing): nobody's handler failed,
            # so no attempt is counted.
            self._outages += 1
            delay = backoff_delay(self._outages, base=0.2, cap=5.0)
            log.warning("inbox %s cannot reach its database (%s); requeued in %.1fs", self.name, _line(outage), delay)
            await _nack_later(msg, delay)
            raise outage
        self._outages = 0
        if failure is not None:
            await self._failed(msg, event, failure)
            raise failure
        if not claimed:
            self.stats.duplicates += 1
            self._failures.pop(event.id, None)
            await _settle(msg.ack())
            return None
        self.stats.processed += 1
        self._failures.pop(event.id, None)
        # Acknowledged only now that the effects, the follow-up events and the inbox row committed.
        await _settle(msg.ack())
        return result

    async def _claim(self, session: AsyncSession, event: Event) -> bool:
        """Claim the id, marked unfinished; also take over a claim left unfinished by a handler
        that ended an earlier attempt's transaction (H14). False: a duplicate."""
        sql = self._statements(session)
        result = await session.execute(text(sql.start), self._key(event))
        if getattr(result, "rowcount", 0) == 1:
            return True
        return (await session.execute(text(sql.unfinished), self._key(event))).first() is not None

    def _key(self, event: Event) -> dict[str, str]:
        return {"consumer": self.name, "event_id": event.id}

    def _statements(self, session: AsyncSession) -> _Statements:
        dialect = session.bind.dialect.name if session.bind is not None else ""
        sql = self._sql.get(dialect)
        if sql is None:
            inbox_sql = database_named(dialect).inbox()
            sql = _Statements(
                start=_named(inbox_sql.start_sql(self.ref), _CLAIM_PARAMS),
                unfinished=_named(inbox_sql.unfinished_sql(self.ref), _CLAIM_PARAMS),
                finish=_named(inbox_sql.finish_sql(self.ref), _CLAIM_PARAMS),
                claim=_named(inbox_sql.claim_sql(self.ref), _CLAIM_PARAMS),
                dead=_named(inbox_sql.dead_sql(self.ref), _DEAD_PARAMS),
            )
            self._sql[dialect] = sql
        return sql

    async def _failed(self, msg: StreamMessage[Any], event: Event, exc: BaseException) -> None:
        self.stats.failed += 1
        counted = (self._failures.get(event.id) or 0) + 1
        self._failures[event.id] = counted
        attempts = max(event.attempt, counted)
        error = "".join(traceback.format_exception(exc, limit=5))
        if attempts >= self.max_attempts:
            try:
                await self._dead_letter(event, error, attempts)
            except Exception as dead_exc:
                log.warning("inbox %s could not dead-letter %s (%s); requeued", self.name, event.id, _line(dead_exc))
                await _nack_later(msg, backoff_delay(attempts, base=self.retry_base, cap=self.retry_cap))
                return
            self.stats.dead_lettered += 1
            self._failures.pop(event.id, None)
            log.error("dead-lettered event %s after %d attempts: %s", event.id, attempts, _line(exc))
            await _settle(msg.ack())
            return
        delay = backoff_delay(attempts, base=self.retry_base, cap=self.retry_cap)
        log.warning("handler failed for %s (attempt %d), retrying in %.1fs: %s", event.id, attempts, delay, _line(exc))
        await _nack_later(msg, delay)

    async def _park(self, msg: StreamMessage[Any], reason: str) -> None:
        """A message without an event id cannot be de-duplicated: into the dead letters with the
        reason, under an id of its own, then acknowledged. Never handled, never dropped."""
        headers = {str(k): _text(v) for k, v in (msg.headers or {}).items() if v is not None}
        body = msg.body if isinstance(msg.body, bytes) else bytes(msg.body)
        key = next((headers[h] for h in _KEY_HEADERS if headers.get(h)), None)
        parked = Event(f"unidentified:{uuid.uuid4()}", _topic_of(msg), key, body, headers, 1)
        try:
            await self._dead_letter(parked, reason, 0, claim=False)
        except Exception as exc:
            log.warning("inbox %s could not park a message without an id (%s); requeued", self.name, _line(exc))
            await _nack_later(msg, backoff_delay(1, base=self.retry_base, cap=self.retry_cap))
            return
        self.stats.unidentified += 1
        self.stats.dead_lettered += 1
        log.error("parked a message on %s as dead letter %s: %s", parked.topic, parked.id, reason)
        await _settle(msg.ack())

    async def _dead_letter(self, event: Event, error: str, attempts: int, *, claim: bool = True) -> None:
        async with self.sessions() as session:
            sql = self._statements(session)
            # The id is recorded too (finished), so a later redelivery of the same event is a duplicate.
            if claim:
                await session.execute(text(sql.claim), self._key(event))
                await session.execute(text(sql.finish), self._key(event))
            # Text a producer wrote (a lone surrogate, NUL) is escaped: a dead letter that cannot be
            # stored would requeue the message forever (H13).
            topic, key, payload, headers = dead_letter_fields(event)
            row = {
                "consumer": self.name,
                "event_id": event.id,
                "topic": topic,
                "key": key,
                "payload": payload,
                "headers": headers,
                "error": storable(error),
                "attempts": attempts,
            }
            await session.execute(text(sql.dead), row)
            await session.commit()


class _InboxMiddleware(BaseMiddleware[Any, Any]):
    def __init__(self, msg: Any, /, *, context: Any, inbox: Inbox) -> None:
        super().__init__(msg, context=context)
        self.inbox = inbox

    async def consume_scope(
        self, call_next: Callable[[StreamMessage[Any]], Awaitable[Any]], msg: StreamMessage[Any]
    ) -> Any:
        return await self.inbox.process(call_next, msg, self.context)
