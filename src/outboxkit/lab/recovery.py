"""Steady state versus recovery: which deliveries a fault disturbed, and for how long. Pure.

A single latency figure over a run with faults mixes two different questions — how fast is it
normally, and how long does it take to get back after a crash — and answers neither (a relay that
spends two seconds restarting shows a p50 of a second). So each committed event's first copy on the
bus is classed:

* **disturbed by fault f** when it was still waiting for the bus when f happened (committed before,
  stored after), or was committed after f but before delivery resumed, or belongs to the transaction
  f hit. Delivery *resumed* when the first event committed after f reached the bus;
* **steady** when no fault disturbed it.

The report then gives the steady-state latency (percentiles of the steady events) and, per fault,
the **recovery**: the longest commit-to-bus wait among the events it disturbed. Lost events never
reached the bus and count as lost, not here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Timed:
    """A committed event's first copy on the bus: when it committed and when the broker stored it."""

    event_id: str
    tx: int
    committed: float  # epoch seconds, COMMIT returned
    stored: float  # epoch seconds, the broker's store time

    @property
    def latency_ms(self) -> float:
        # Publish-then-commit stores the event before its COMMIT returns: early, not fast; shown as 0.
        return max(0.0, (self.stored - self.committed) * 1000)


@dataclass(frozen=True, slots=True)
class FaultAt:
    """A fault as it happened: its kind, the transaction it hit, and when (epoch seconds)."""

    kind: str
    tx: int
    at: float


@dataclass(frozen=True, slots=True)
class Recovery:
    kind: str
    tx: int
    disturbed: int  # events this fault delayed (or that were in flight when it hit)
    recovery_ms: float  # the longest commit-to-bus wait among them (0 when none)
    resumed_ms: float | None  # fault -> the first event committed after it on the bus (None: none came)

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "tx": self.tx,
            "disturbed": self.disturbed,
            "recovery_ms": self.recovery_ms,
            "resumed_ms": self.resumed_ms,
        }


def split(events: Sequence[Timed], faults: Sequence[FaultAt]) -> tuple[list[float], list[Recovery]]:
    """(latencies in ms of the steady events, one :class:`Recovery` per fault, in ``faults`` order)."""
    disturbed_any: set[str] = set()
    recoveries: list[Recovery] = []
    for fault in faults:
        after = [e.stored for e in events if e.committed >= fault.at]
        resumed = min(after) if after else None
        horizon = resumed if resumed is not None else float("inf")
        hit = [e for e in events if e.tx == fault.tx or (e.stored >= fault.at and e.committed <= horizon)]
        disturbed_any.update(e.event_id for e in hit)
        recoveries.append(
            Recovery(
                fault.kind,
                fault.tx,
                len(hit),
                max((e.latency_ms for e in hit), default=0.0),
                None if resumed is None else max(0.0, (resumed - fault.at) * 1000),
            )
        )
    steady = [e.latency_ms for e in events if e.event_id not in disturbed_any]
    return steady, recoveries


__all__ = ["FaultAt", "Recovery", "Timed", "split"]
