"""Cutting a replication stream into the units the tailing relay reads (pure: no I/O).

The streaming reader (``walstream``) receives pgoutput messages one by one, as the server sends
them; the relay reads them in rounds of whole inputs (``TailReader.peek``): a transaction from its
Begin to its Commit, or a logical message written outside any transaction. A round must never end
inside a transaction: the relay would advance past what it has not seen. So the messages are kept
here until their unit is whole, then handed out unit by unit.

The position a round is "before" (``upto``) is where the slot may be confirmed once the round is
done:

* the end of the last unit handed out (a Commit's end LSN, or a non-transactional message's LSN,
  the end of its record);
* when every whole unit has been handed out and no transaction is open, the server's WAL end from
  its latest keepalive, if higher: the server sends one only between units, and every transaction
  that committed before it was decoded and sent before it (pgoutput skips the ones of other
  tables). That is the heartbeat (H4): an outbox with no traffic of its own retains no WAL.

A keepalive received while a transaction is open is ignored: its WAL end is before that
transaction's commit, and confirming it would change nothing the next unit does not.
"""

from __future__ import annotations

from collections import deque


def commit_end(message: bytes) -> int:
    """A pgoutput Commit's end LSN ('C', flags, commit LSN, end LSN, time)."""
    return int.from_bytes(message[10:18])


class Framer:
    """Whole units of a replication stream, in arrival order. Not thread-safe (one event loop)."""

    def __init__(self, start: int) -> None:
        #: (messages, end position or None for a stray message that has none)
        self.units: deque[tuple[list[bytes], int | None]] = deque()
        self.count = 0  # messages held in ``units``
        self.safe = start  # everything before it is in ``units`` or was handed out
        self.handed = start  # the ``upto`` of the last round handed out
        self._open: list[bytes] | None = None

    @property
    def open(self) -> bool:
        """Whether a transaction has begun and not yet committed."""
        return self._open is not None

    def data(self, message: bytes) -> bool:
        """One pgoutput message; True when it completed a unit."""
        kind = message[:1]
        if self._open is not None:
            self._open.append(message)
            if kind != b"C":
                return False
            unit, self._open = self._open, None
            self._push(unit, commit_end(message))
            return True
        if kind == b"B":
            self._open = [message]
            return False
        if kind == b"M" and not message[1] & 1:
            # Non-transactional: decoded where it was written; its LSN is the end of its record.
            self._push([message], int.from_bytes(message[2:10]))
            return True
        # Nothing else comes outside a transaction in protocol 1; kept as a unit of its own, with
        # no position, so the decoder sees it and the slot does not move for it.
        self._push([message], None)
        return True

    def keepalive(self, wal_end: int) -> bool:
        """The server's WAL end from a keepalive; True when it moved the heartbeat position."""
        if self._open is not None or wal_end <= self.safe:
            return False
        self.safe = wal_end
        return True

    def rebase(self, start: int) -> None:
        """The stream's start, learnt after it began: nothing received is before it."""
        self.handed = max(self.handed, start)
        self.safe = max(self.safe, start)

    def fresh(self) -> bool:
        """Whether a round would return something new: a unit, or a heartbeat position."""
        return bool(self.units) or self.safe > self.handed

    def take(self, limit: int) -> tuple[list[bytes], int]:
        """Whole units until at least ``limit`` messages (like a peek's ``upto_nchanges``: a unit is
        never cut), and the position every one of them is before (see the module docstring)."""
        out: list[bytes] = []
        end = self.handed
        while self.units and len(out) < limit:
            messages, position = self.units.popleft()
            out.extend(messages)
            self.count -= len(messages)
            if position is not None:
                end = max(end, position)
        upto = end if self.units else max(end, self.safe)
        self.handed = upto
        return out, upto

    def _push(self, messages: list[bytes], end: int | None) -> None:
        self.units.append((messages, end))
        self.count += len(messages)
        if end is not None and end > self.safe:
            self.safe = end
