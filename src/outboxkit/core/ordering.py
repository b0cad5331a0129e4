"""Per-key dispatch: which events of a batch may be published now (G5).

A later event of a key is never handed out before the earlier one of the same key is confirmed,
so a failure of the earlier one can never let the later overtake it. Events without a key carry
no order promise and are all independent. Pure state machine; the relay's pipeline does the I/O.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable

from outboxkit.core.envelope import OutboxEvent


class KeyedDispatcher:
    """Hands out a batch's events so that each key has at most one event in flight.

    ``take(n)`` returns up to ``n`` events that may be published now, oldest first;
    ``confirmed(e)`` releases the next event of ``e``'s key; ``failed(e)`` withdraws every remaining
    event of that key from this batch (they are retried later, behind ``e``, keeping order).
    """

    def __init__(self, events: Iterable[OutboxEvent]) -> None:
        self._queues: dict[object, deque[OutboxEvent]] = {}
        self._ready: list[tuple[int, object]] = []
        self._in_flight = 0
        self._taken: set[int] = set()  # seqs handed out and not yet resolved
        self._withdrawn: list[OutboxEvent] = []
        for event in events:
            # Keyless events get a private queue each: nothing orders them.
            lane: object = event.key if event.key is not None else ("", event.seq)
            queue = self._queues.get(lane)
            if queue is None:
                self._queues[lane] = deque([event])
                heapq.heappush(self._ready, (event.seq, lane))
            else:
                if queue[-1].seq > event.seq:
                    raise ValueError("events must be given in ascending seq order")
                queue.append(event)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def withdrawn(self) -> list[OutboxEvent]:
        """Events not attempted because an earlier event of their key failed in this batch."""
        return list(self._withdrawn)

    def finished(self) -> bool:
        return not self._ready and self._in_flight == 0

    def take(self, limit: int) -> list[OutboxEvent]:
        out: list[OutboxEvent] = []
        while self._ready and len(out) < limit:
            _, lane = heapq.heappop(self._ready)
            event = self._queues[lane][0]
            self._taken.add(event.seq)
            out.append(event)
        self._in_flight += len(out)
        return out

    def _resolve(self, event: OutboxEvent) -> deque[OutboxEvent]:
        lane = self._lane(event)
        queue = self._queues.get(lane)
        if event.seq not in self._taken or not queue or queue[0] is not event:
            raise ValueError(f"event {event.seq} is not in flight")
        self._taken.discard(event.seq)
        return queue

    def confirmed(self, event: OutboxEvent) -> None:
        lane = self._lane(event)
        queue = self._resolve(event)
        queue.popleft()
        self._in_flight -= 1
        if queue:
            heapq.heappush(self._ready, (queue[0].seq, lane))
        else:
            del self._queues[lane]

    def failed(self, event: OutboxEvent) -> None:
        queue = self._resolve(event)
        del self._queues[self._lane(event)]
        self._in_flight -= 1
        queue.popleft()
        self._withdrawn.extend(queue)

    @staticmethod
    def _lane(event: OutboxEvent) -> object:
        return event.key if event.key is not None else ("", event.seq)
