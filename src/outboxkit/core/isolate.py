"""Finding the one input at fault (H13: one input, one casualty). Pure: the relays do the I/O.

Both relays read their inputs in rounds: the table relay a fetch of many rows, the tail relay a
peek of many changes of its log. Every input is guarded where it enters (``core.rows``, the log
decoders), so one bad row or message costs only itself; this is the net under those guards, for a
failure nobody foresaw that fails the whole round (a driver that cannot decode one row, a decoder
bug) and would fail it again every time, stopping every key behind it forever. One mechanism:

* :class:`FetchFaults` notices a round that failed **twice in a row the same way** (the same
  :func:`signature`, from the same position where the relay gives one); once may be an accident, and
  outages (the database's or the broker's fault) never count;
* the round is then narrowed down to the input at fault, with the search its source allows:
  :class:`Bisector` for the table relay, which can read any set of rows (halves, each culprit
  confirmed by a second failing read, so a blip never condemns a good row); :class:`Narrowing` for
  the tail relay, which can only read its log forward from its position (a quarter of the limit each
  time, down to a single input);
* the input found is dead-lettered; :class:`SetAside` is the last resort for an input whose dead
  letter cannot be stored either: a bounded record, kept in memory (``relay/isolate.py`` does the
  I/O for both relays).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

#: Failures of the same kind in a row after which a round is narrowed down.
FAILURES_BEFORE_BISECT = 2
#: Rows found at fault in one narrowing at most (each costs about 2 x log2(round) reads).
MAX_CULPRITS = 64
#: Inputs set aside in memory at most; the oldest are forgotten (and fetched again) beyond that.
SET_ASIDE_LIMIT = 10_000


def signature(exc: BaseException) -> str:
    """What makes two failures "the same way": the exception's class and its first line (bounded)."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first[:200]}"


class FetchFaults:
    """Counts rounds that failed the same way in a row; any round that succeeds resets it."""

    def __init__(self, threshold: int = FAILURES_BEFORE_BISECT) -> None:
        self.threshold = threshold
        self.last: Hashable | None = None
        self.count = 0

    def failed(self, exc: BaseException) -> bool:
        """Record one failed round (not an outage); True when it should be narrowed down now."""
        return self.failed_as(signature(exc))

    def failed_as(self, way: Hashable) -> bool:
        """:meth:`failed` for a failure already described (``(position, signature)`` on a log)."""
        self.count = self.count + 1 if way == self.last else 1
        self.last = way
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
    seq: Hashable  # the table relay's row seq; the tail relay's event (its position moved past it)
    key: str | None  # held: later events of the key wait behind it (None: unknown, or not held)
    reason: str


class SetAside:
    """Inputs this process no longer reads because even their dead letter could not be stored.

    Bounded (``limit``, oldest forgotten first): a flood of such inputs costs memory once, not
    without end; a forgotten one is fetched again and fails again, which is loud but not stuck.
    """

    def __init__(self, limit: int = SET_ASIDE_LIMIT) -> None:
        self.limit = limit
        self.total = 0  # set aside since start (the metric), forgotten ones included
        self._items: OrderedDict[Hashable, Aside] = OrderedDict()

    def add(self, seq: Hashable, key: str | None, reason: str) -> bool:
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
        """The table rows set aside (what its fetches leave out)."""
        return [seq for seq in self._items if isinstance(seq, int)]

    @property
    def keys(self) -> frozenset[str]:
        return frozenset(a.key for a in self._items.values() if a.key is not None)

    def items(self) -> list[Aside]:
        return list(self._items.values())


@dataclass(slots=True)
class Narrowing:
    """The tail relay's search: the peek limit of the next round, and whether its single input is
    to be set aside. A round that fails twice the same way (same start position, same error) is
    read again with a quarter of the limit, down to a single input (one transaction, or one message
    outside any transaction); when that still fails the same way, ``set_aside_due``: the relay
    records it and moves its position past it. Every round that succeeds doubles the limit back
    toward the full one."""

    full: int
    limit: int = 0
    set_aside_due: bool = False
    _faults: FetchFaults = field(default_factory=FetchFaults, repr=False)
    _error: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        if self.full < 1:
            raise ValueError(f"full must be at least 1, got {self.full}")
        self.limit = self.limit or self.full

    @property
    def narrowed(self) -> bool:
        """Whether rounds are read smaller than normal (a fault is being looked for)."""
        return self.limit < self.full or self.set_aside_due

    @property
    def error(self) -> str:
        """The failure being narrowed down ('' when none)."""
        return self._error

    def failed(self, position: Hashable, error: str) -> None:
        """A round that started at ``position`` failed with ``error`` (see :func:`signature`)."""
        self._error = error
        if not self._faults.failed_as((position, error)):
            return  # once may be an accident: read the same round again
        if self.limit > 1:
            self.limit = max(1, self.limit // 4)
        else:
            self.set_aside_due = True

    def succeeded(self) -> None:
        """A round went through (its position moved on)."""
        self._faults.ok()
        self._error = ""
        self.limit = min(self.full, self.limit * 2)

    def set_aside(self) -> None:
        """The single input at fault was recorded and passed: look for the next fault from scratch."""
        self.set_aside_due = False
        self._faults.ok()
        self._error = ""
