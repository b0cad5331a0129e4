"""Per-key dispatch: which events may be published now (G5).

A later event of a key is never handed out before the earlier one of the same key is confirmed,
so a failure of the earlier one can never let the later overtake it. Events without a key carry
no order promise and are all independent. Pure state machine; the relay's pipeline does the I/O.

The dispatcher lives as long as a relay's connected session: fetches keep adding events (a key's
lane grows at its end, in arrival order), and events leave it when confirmed, failed (the rest of
the key is withdrawn with it, to be retried behind it) or withdrawn (a lease lost).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterable

from outboxkit.core.envelope import OutboxEvent


class KeyedDispatcher:
    """Hands out events so that each key has at most one event in flight.

    ``take(n)`` returns up to ``n`` events that may be published now, oldest first;
    ``confirmed(e)`` releases the next event of ``e``'s key; ``failed(e)`` withdraws every remaining
    event of that key (they are retried later, behind ``e``, keeping order); ``add(events)`` appends
    newly fetched events; ``withdraw(pred)`` drops the waiting events of keys whose events match.
    """

    def __init__(self, events: Iterable[OutboxEvent] = ()) -> None:
        self._queues: dict[object, deque[OutboxEvent]] = {}
        self._ready: list[tuple[int, object]] = []
        self._in_flight = 0
        self._size = 0  # events held: waiting or in flight
        self._taken: set[int] = set()  # seqs handed out and not yet resolved
        self._withdrawn: list[OutboxEvent] = []
        self.add(events, strict=True)

    def add(self, events: Iterable[OutboxEvent], *, strict: bool = False) -> None:
        """Append events to their keys' lanes. ``strict``: they must come in ascending seq per key
        (one fetch); later fetches may bring a late-committed lower seq, which goes at the end."""
        for event in events:
            lane = self._lane(event)
            queue = self._queues.get(lane)
            if queue is None:
                self._queues[lane] = deque([event])
                heapq.heappush(self._ready, (event.seq, lane))
            else:
                if strict and queue[-1].seq > event.seq:
                    raise ValueError("events must be given in ascending seq order")
                queue.append(event)
            self._size += 1

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def waiting(self) -> int:
        """Events held and not handed out yet."""
        return self._size - self._in_flight

    @property
    def withdrawn(self) -> list[OutboxEvent]:
        """Events not attempted because an earlier event of their key failed."""
        return list(self._withdrawn)

    def finished(self) -> bool:
        return self._size == 0

    def take(self, limit: int) -> list[OutboxEvent]:
        out: list[OutboxEvent] = []
        while self._ready and len(out) < limit:
            seq, lane = heapq.heappop(self._ready)
            queue = self._queues.get(lane)
            if queue is None or queue[0].seq != seq or seq in self._taken:
                continue  # stale: the lane was withdrawn or failed since it became ready
            event = queue[0]
            self._taken.add(event.seq)
            out.append(event)
        self._in_flight += len(out)
        return out

    def _resolve(self, event: OutboxEvent) -> deque[OutboxEvent]:
        queue = self._queues.get(self._lane(event))
        if event.seq not in self._taken or not queue or queue[0] is not event:
            raise ValueError(f"event {event.seq} is not in flight")
        self._taken.discard(event.seq)
        self._in_flight -= 1
        self._size -= 1
        return queue

    def confirmed(self, event: OutboxEvent) -> None:
        lane = self._lane(event)
        queue = self._resolve(event)
        queue.popleft()
        if queue:
            heapq.heappush(self._ready, (queue[0].seq, lane))
        else:
            del self._queues[lane]

    def failed(self, event: OutboxEvent) -> list[OutboxEvent]:
        """``event`` failed: it and the rest of its key leave; returns the rest (withdrawn)."""
        queue = self._resolve(event)
        del self._queues[self._lane(event)]
        queue.popleft()
        rest = list(queue)
        self._size -= len(rest)
        self._withdrawn.extend(rest)
        return rest

    def withdraw(self, matches: Callable[[OutboxEvent], bool]) -> list[OutboxEvent]:
        """Drop the waiting events of every lane whose events ``matches`` (a lane is one key, so
        one bucket): an event already in flight stays until it is resolved; the rest leave and
        are returned, so nothing of those keys is published out of order later."""
        dropped: list[OutboxEvent] = []
        for lane, queue in list(self._queues.items()):
            if not matches(queue[0]):
                continue
            if queue[0].seq in self._taken:
                head = queue.popleft()
                dropped.extend(queue)
                queue.clear()
                queue.append(head)
            else:
                dropped.extend(queue)
                del self._queues[lane]
        self._size -= len(dropped)
        return dropped

    @staticmethod
    def _lane(event: OutboxEvent) -> object:
        # Keyless events get a private lane each: nothing orders them.
        return event.key if event.key is not None else ("", event.seq)
