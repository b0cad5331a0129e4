"""Finding the one input at fault (H13: one input, one casualty). Pure: the relay does the I/O.

A relay reads its inputs in rounds (a fetch of many rows). Most bad content is caught per row
(``core.rows``), but a driver may fail the whole round while decoding one row (SQLite text that is
not UTF-8, a value the driver cannot convert), and a round that fails the same way every time would
stop every key behind it forever. Three small decisions keep that to one casualty:

* :class:`FetchFaults` notices a round that failed twice in a row the same way (not an outage:
  those are the database's fault and only reconnect);
* :class:`Bisector` narrows that round down by halves to the rows that cannot be read alone, each
  confirmed by a second failing read, so a passing blip never condemns a good row;
* :class:`SetAside` is the last resort for an input whose dead letter cannot be stored either: a
  bounded record, kept in memory, of what this process will no longer fetch.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

#: Failures of the same kind in a row after which a round is narrowed down.
FAILURES_BEFORE_BISECT = 2
#: Rows found at fault in one narrowing at most (each costs about 2 x log2(round) reads).
MAX_CULPRITS = 64
#: Inputs set aside in memory at most; the oldest are forgotten (and fetched again) beyond that.
SET_ASIDE_LIMIT = 10_000


def signature(exc: BaseException) -> str:
    """What makes two failures "the same way": the exception's class and its first line."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first[:300]}"


class FetchFaults:
    """Counts rounds that failed the same way in a row; any round that succeeds resets it."""

    def __init__(self, threshold: int = FAILURES_BEFORE_BISECT) -> None:
        self.threshold = threshold
        self.last: str | None = None
        self.count = 0

    def failed(self, exc: BaseException) -> bool:
        """Record one failed round (not an outage); True when it should be narrowed down now."""
        sig = signature(exc)
        self.count = self.count + 1 if sig == self.last else 1
        self.last = sig
        return self.count >= self.threshold

    @property
    def suspect(self) -> bool:
        return self.count >= self.threshold

    def ok(self) -> None:
        self.last, self.count = None, 0


class Bisector:
    """Splits a failing round until each failing part is one row, read twice.

    ``probe()`` gives the next seqs to read (``None`` when done); ``report(ok)`` gives the outcome
    of reading them. A part that reads fine is innocent as a whole; a failing part is split in
    halves, the lower half first; a single row that fails is read once more before it is named, so
    a failure that came from elsewhere (a blip between two reads) does not condemn it.
    """

    def __init__(self, seqs: Sequence[int], *, max_culprits: int = MAX_CULPRITS) -> None:
        self.max_culprits = max_culprits
        self.culprits: list[int] = []
        self.reads = 0
        self._stack: list[tuple[list[int], bool]] = [(sorted(seqs), False)] if seqs else []

    def probe(self) -> list[int] | None:
        if not self._stack or len(self.culprits) >= self.max_culprits:
            return None
        return list(self._stack[-1][0])

    def report(self, ok: bool) -> None:
        part, confirming = self._stack.pop()
        self.reads += 1
        if ok:
            return
        if len(part) == 1:
            if confirming:
                self.culprits.append(part[0])
            else:
                self._stack.append((part, True))
            return
        mid = len(part) // 2
        # Pushed upper half first: the lower half (older rows, read first by the relay) comes next.
        self._stack.append((part[mid:], False))
        self._stack.append((part[:mid], False))


@dataclass(frozen=True, slots=True)
class Aside:
    seq: int
    key: str | None  # held: later events of the key wait behind it (None: unknown, or not held)
    reason: str


class SetAside:
    """Inputs this process no longer fetches because even their dead letter could not be stored.

    Bounded (``limit``, oldest forgotten first): a flood of such inputs costs memory once, not
    without end; a forgotten one is fetched again and fails again, which is loud but not stuck.
    """

    def __init__(self, limit: int = SET_ASIDE_LIMIT) -> None:
        self.limit = limit
        self.total = 0  # set aside since start (the metric), forgotten ones included
        self._items: OrderedDict[int, Aside] = OrderedDict()

    def add(self, seq: int, key: str | None, reason: str) -> bool:
        """Record ``seq``; False if it was already recorded."""
        if seq in self._items:
            return False
        self._items[seq] = Aside(seq, key, reason)
        self.total += 1
        while len(self._items) > self.limit:
            self._items.popitem(last=False)
        return True

    def __contains__(self, seq: object) -> bool:
        return seq in self._items

    def __len__(self) -> int:
        return len(self._items)

    @property
    def seqs(self) -> list[int]:
        return list(self._items)

    @property
    def keys(self) -> frozenset[str]:
        return frozenset(a.key for a in self._items.values() if a.key is not None)

    def items(self) -> list[Aside]:
        return list(self._items.values())
