"""Per-key dispatch: which events may be published now (G5).

A later event of a key is never handed out before the earlier one of the same key is confirmed,
so a failure of the earlier one can never let the later overtake it. Events without a key carry
no order promise and are all independent. Pure state machine; the relay's pipeline does the I/O.

With ``depth`` > 1 a key may have several events in flight — only on a bus that writes a key's
messages in send order and writes none after one that failed (``Features.ordered_pipeline``: Kafka's
idempotent producer with its gapless guarantee). Events of a key are still *sent* in order; when one
fails, the key's later events already in flight become "orphans": the bus will fail them too, and
whatever becomes of them they are not retried ahead of the failed one.

The dispatcher lives as long as a relay's connected session: fetches keep adding events (a key's
lane grows at its end, in arrival order), and events leave it when confirmed, failed (the rest of
the key is withdrawn with it, to be retried behind it) or withdrawn (a lease lost).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterable

from outboxkit.core.envelope import OutboxEvent


class _Lane:
    __slots__ = ("flying", "queue")

    def __init__(self, event: OutboxEvent) -> None:
        self.queue: deque[OutboxEvent] = deque([event])
        self.flying = 0  # the first ``flying`` events of the queue are in flight


class KeyedDispatcher:
    """Hands out events so that each key has at most ``depth`` events in flight, in seq order.

    ``take(n)`` returns up to ``n`` events that may be published now, oldest first;
    ``confirmed(e)`` lets the key's next event go; ``failed(e)`` withdraws every waiting event of
    that key (they are retried later, behind ``e``, keeping order); ``add(events)`` appends newly
    fetched events; ``withdraw(pred)`` drops the waiting events of keys whose events match.
    ``orphan(e)`` tells whether an event in flight belonged to a key that failed meanwhile; such an
    event is settled with ``settle_orphan(e)``.
    """

    def __init__(self, events: Iterable[OutboxEvent] = (), *, depth: int = 1) -> None:
        if depth < 1:
            raise ValueError("depth must be at least 1")
        self.depth = depth
        self._lanes: dict[object, _Lane] = {}
        self._ready: list[tuple[int, object]] = []
        self._in_flight = 0
        self._size = 0  # events held: waiting or in flight, orphans included
        self._taken: set[int] = set()  # seqs handed out and not yet resolved
        self._orphans: set[int] = set()
        self._withdrawn: list[OutboxEvent] = []
        self.add(events, strict=True)

    def add(self, events: Iterable[OutboxEvent], *, strict: bool = False) -> None:
        """Append events to their keys' lanes. ``strict``: they must come in ascending seq per key
        (one fetch); later fetches may bring a late-committed lower seq, which goes at the end."""
        for event in events:
            key = self._key(event)
            lane = self._lanes.get(key)
            if lane is None:
                self._lanes[key] = _Lane(event)
                heapq.heappush(self._ready, (event.seq, key))
            else:
                if strict and lane.queue[-1].seq > event.seq:
                    raise ValueError("events must be given in ascending seq order")
                lane.queue.append(event)
                if len(lane.queue) == lane.flying + 1 and lane.flying < self.depth:
                    heapq.heappush(self._ready, (event.seq, key))
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
            seq, key = heapq.heappop(self._ready)
            lane = self._lanes.get(key)
            if lane is None or lane.flying >= len(lane.queue) or lane.queue[lane.flying].seq != seq:
                continue  # stale: the lane was withdrawn, failed or advanced since it became ready
            if lane.flying >= self.depth:
                continue
            event = lane.queue[lane.flying]
            lane.flying += 1
            self._taken.add(event.seq)
            out.append(event)
            if lane.flying < self.depth and lane.flying < len(lane.queue):
                heapq.heappush(self._ready, (lane.queue[lane.flying].seq, key))
        self._in_flight += len(out)
        return out

    def _resolve(self, event: OutboxEvent) -> _Lane:
        lane = self._lanes.get(self._key(event))
        if event.seq not in self._taken or event.seq in self._orphans or lane is None:
            raise ValueError(f"event {event.seq} is not in flight")
        for i in range(lane.flying):
            if lane.queue[i] is event:
                del lane.queue[i]
                break
        else:
            raise ValueError(f"event {event.seq} is not in flight")
        lane.flying -= 1
        self._taken.discard(event.seq)
        self._in_flight -= 1
        self._size -= 1
        return lane

    def confirmed(self, event: OutboxEvent) -> None:
        key = self._key(event)
        lane = self._resolve(event)
        if not lane.queue:
            del self._lanes[key]
        elif lane.flying < len(lane.queue) and lane.flying == self.depth - 1:
            # The lane was full: its next waiting event may go now (otherwise it is ready already).
            heapq.heappush(self._ready, (lane.queue[lane.flying].seq, key))

    def failed(self, event: OutboxEvent) -> list[OutboxEvent]:
        """``event`` failed: it and the rest of its key leave; returns the waiting rest (withdrawn).
        The key's other events in flight, if any, become orphans."""
        lane = self._resolve(event)
        del self._lanes[self._key(event)]
        flying = list(lane.queue)[: lane.flying]
        rest = list(lane.queue)[lane.flying :]
        self._orphans.update(e.seq for e in flying)
        self._size -= len(rest)
        self._withdrawn.extend(rest)
        return rest

    def orphan(self, event: OutboxEvent) -> bool:
        return event.seq in self._orphans

    def settle_orphan(self, event: OutboxEvent) -> None:
        """An orphan's outcome arrived (confirmed or failed): it leaves the dispatcher."""
        if event.seq not in self._orphans:
            raise ValueError(f"event {event.seq} is not an orphan")
        self._orphans.discard(event.seq)
        self._taken.discard(event.seq)
        self._in_flight -= 1
        self._size -= 1

    def withdraw(self, matches: Callable[[OutboxEvent], bool]) -> list[OutboxEvent]:
        """Drop the waiting events of every lane whose events ``matches`` (a lane is one key, so
        one bucket): events already in flight stay until they are resolved; the rest leave and
        are returned, so nothing of those keys is published out of order later."""
        dropped: list[OutboxEvent] = []
        for key, lane in list(self._lanes.items()):
            if not matches(lane.queue[0]):
                continue
            flying = list(lane.queue)[: lane.flying]
            dropped.extend(list(lane.queue)[lane.flying :])
            if flying:
                lane.queue = deque(flying)
            else:
                del self._lanes[key]
        self._size -= len(dropped)
        return dropped

    @staticmethod
    def _key(event: OutboxEvent) -> object:
        # Keyless events get a private lane each: nothing orders them.
        return event.key if event.key is not None else ("", event.seq)
