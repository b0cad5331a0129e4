"""Where the log-tailing relay puts what it cannot publish: dead letters that never fail (H13).

One input, one casualty: recording an input as a dead letter must not fail because of what the
input holds, or the relay would read the same input again forever. So a dead letter is recorded

1. as it is (the row gets ``dead_at``; a table-less event gets a row of its own);
2. if the store refuses that (a key no index takes, text the driver cannot encode — PostgreSQL
   refuses NUL client-side, without an SQLSTATE, so even an "unavailable" error is retried here),
   with every text made storable and the key cleared (the reason names it);
3. if even that fails without the store being down, as a bounded record in ``records`` (the last
   100), logged at ERROR and counted as a dead letter.

The same holds for a whole input that a narrowed round found at fault (``core.narrowing``): its raw
form, bounded, becomes a dead letter and the position moves past it.
"""

from __future__ import annotations

import json
import logging
from collections import deque

from outboxkit.core.narrowing import Narrowing, signature
from outboxkit.core.storable import storable
from outboxkit.core.tailing import Item
from outboxkit.errors import UnavailableError
from outboxkit.relay.loop import RelayStats
from outboxkit.relay.observer import RelayObserver
from outboxkit.relay.tailbase import TailDecoder, TailReader

log = logging.getLogger("outboxkit.relay")


class SetAside:
    """The tail relay's dead letters, with the fallbacks above. One per relay; not thread-safe."""

    def __init__(self, stats: RelayStats, observer: RelayObserver, *, hold_dead_keys: bool) -> None:
        self.stats = stats
        self.observer = observer
        self.hold_dead_keys = hold_dead_keys
        # Inputs set aside without a dead letter (even a sanitized one could not be stored).
        self.records: deque[str] = deque(maxlen=100)

    async def dead(self, reader: TailReader, item: Item, reason: str, attempts: int, held: set[str]) -> None:
        """Record ``item`` as a dead letter; it never raises for what the item holds (outages do)."""
        event = item.event
        try:
            if item.row_seq is None or not await reader.dead_row(item.row_seq, reason, attempts):
                # A table-less event, or a row its writer deleted: the dead letter gets a row of its own.
                await reader.dead_message(
                    id=event.id,
                    topic=event.topic,
                    key=event.key,
                    type=event.type,
                    source=event.source,
                    payload=event.payload,
                    content_type=event.content_type,
                    headers=json.dumps(dict(event.headers)),
                    attempts=attempts,
                    error=reason,
                )
        except Exception as exc:
            # Even "unavailable" may be the content here (see the module docstring): the sanitized
            # copy tells. If the store is really down, it fails too.
            await self._sanitized(reader, item, reason, attempts, exc)
        if event.key is not None and self.hold_dead_keys:
            held.add(event.key)
        self.stats.dead_lettered += 1
        self.observer.dead_lettered()
        log.error(
            "dead-lettered event %s (topic %s, key %s): %s",
            storable(event.id, 80),
            storable(event.topic, 200),
            storable(event.key, 200),
            storable(reason, 500),
        )

    async def _sanitized(self, reader: TailReader, item: Item, reason: str, attempts: int, first: Exception) -> None:
        event = item.event
        why = f"{reason} (stored sanitized: {signature(first)}; key {storable(event.key, 200)})"
        try:
            if item.row_seq is not None and await reader.dead_row(item.row_seq, why, attempts, keep_key=False):
                return
            await reader.dead_message(
                id=None,
                topic=storable(event.topic, 255),
                key=None,  # a key the store cannot take is no key any valid event holds
                type=None,
                source=None,
                payload=event.payload[:1_000_000],
                content_type="application/octet-stream",
                headers="{}",
                attempts=attempts,
                error=storable(why),
            )
        except Exception as exc:
            if isinstance(exc, UnavailableError | OSError):
                raise  # the store is down: the round is read again once it is back
            # Anything else (a deadlock, a trigger, a check): the event is not lost to a loop.
            self.record(f"event {storable(event.id, 80)} set aside unstored: {storable(why, 500)}; {signature(exc)}")

    def record(self, text: str) -> None:
        """The last resort: a bounded record, a log line at ERROR and the dead-letter counter."""
        self.records.append(text)
        self.observer.dead_lettered()
        log.error("%s", text)

    async def one_input(self, reader: TailReader, decoder: TailDecoder, narrowing: Narrowing) -> None:
        """The single input at the reader's position failed the same way at every narrowing:
        record it (its raw form, bounded) and move past it."""
        messages, _upto = await reader.peek(1)
        end = decoder.unit_end(messages) if messages else None
        if end is None:
            narrowing.set_aside()  # nothing there any more, or nothing to tell its end by
            return
        where = storable(reader.resume_point(), 200)
        reason = f"set aside after failing the same way at every narrowing (from {where}): {narrowing.error}"
        try:
            await reader.dead_message(
                id=None,
                topic="?",
                key=None,
                type=None,
                source=None,
                payload=storable(repr(messages), 100_000).encode(),
                content_type="application/octet-stream",
                headers="{}",
                attempts=0,
                error=storable(reason),
            )
            self.stats.dead_lettered += 1
            self.observer.dead_lettered()
            log.error("%s", reason)
        except Exception as exc:
            if isinstance(exc, UnavailableError | OSError):
                raise
            self.record(f"{reason}; unstored: {signature(exc)}")
        await reader.advance(end)
        narrowing.set_aside()
