"""Narrowing a failed round of the log down to the input at fault (H13). Pure: no I/O.

A tailing relay reads its log in rounds (``peek`` up to ``limit`` changes, decode, publish,
advance). Every input is guarded where it enters, so one hostile row or message costs only itself.
This is the net under those guards: an exception nobody foresaw that fails a whole round would
make the relay fail, reconnect and read the same round again, forever. So:

* a round that fails once may be an accident: it is read again as it was;
* a round that fails **twice the same way** (same start position, same error) is read again with
  a quarter of the limit, then a quarter of that, down to a single input (one transaction, or one
  message outside any transaction);
* when a single input still fails the same way, it is set aside (``set_aside_due``): the relay
  records it with the reason and moves its position past it;
* every round that succeeds doubles the limit back toward the full one, so the relay speeds up
  again once past the fault.

Outages (the database or the broker unreachable) are not input faults and never reach here.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field


def signature(exc: BaseException) -> str:
    """What makes two failures "the same way": the exception's class and first line (bounded)."""
    text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"


@dataclass(slots=True)
class Narrowing:
    """The peek limit of the next round, and whether its single input is to be set aside."""

    full: int
    limit: int = 0
    set_aside_due: bool = False
    _last: tuple[Hashable, str] | None = field(default=None, repr=False)
    _repeats: int = field(default=0, repr=False)

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
        return self._last[1] if self._last else ""

    def failed(self, position: Hashable, error: str) -> None:
        """A round that started at ``position`` failed with ``error`` (see :func:`signature`)."""
        same = self._last == (position, error)
        self._last = (position, error)
        self._repeats = self._repeats + 1 if same else 1
        if self._repeats < 2:
            return  # once may be an accident: read the same round again
        if self.limit > 1:
            self.limit = max(1, self.limit // 4)
        else:
            self.set_aside_due = True

    def succeeded(self) -> None:
        """A round went through (its position moved on)."""
        self._last, self._repeats = None, 0
        self.limit = min(self.full, self.limit * 2)

    def set_aside(self) -> None:
        """The single input at fault was recorded and passed: look for the next fault from scratch."""
        self.set_aside_due = False
        self._last, self._repeats = None, 0
