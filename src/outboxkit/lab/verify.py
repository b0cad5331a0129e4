"""The lab's verifier: ``core.tally`` for lost / phantom / duplicates / order, plus what it costs.

Inputs are facts, never the strategy's own opinion: the database's ``order_events`` (what
committed), every message the stream holds with the broker's own store timestamp, and the
writer's log of commit times and request durations. Each anomaly is attributed to the fault
window it falls in (from a fault's transaction up to the next fault's), so "lost 1 at
kill-after-commit" means the lost event's transaction was in that window.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from outboxkit.core.tally import Delivery, Tally, tally
from outboxkit.lab.faults import Scheduled
from outboxkit.lab.recovery import FaultAt, Recovery, Timed, split


@dataclass(frozen=True, slots=True)
class Received:
    """One message as the stream stored it."""

    event_id: str
    key: str | None
    tx: int | None  # from the payload: which planned transaction sent it
    stored_at: float  # JetStream's timestamp, epoch seconds


@dataclass
class WriterLog:
    """What the writer subprocess(es) wrote to the stats file."""

    commit_at: dict[str, float] = field(default_factory=dict)  # event id -> wall time COMMIT returned
    tx_of: dict[str, int] = field(default_factory=dict)
    busy: list[float] = field(default_factory=list)  # seconds per finished request
    events_done: int = 0
    publish_failures: int = 0
    faults: list[FaultAt] = field(default_factory=list)  # when each fault really happened

    @classmethod
    def read(cls, path: str | Path) -> WriterLog:
        log = cls()
        p = Path(path)
        if not p.exists():
            return log
        for line in p.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a line cut by SIGKILL
            if "commit" in row:
                for event_id in row["ids"]:
                    log.commit_at[event_id] = row["commit"]
                    log.tx_of[event_id] = row["tx"]
            elif "busy" in row:
                log.busy.append(row["busy"])
                log.events_done += row["events"]
            elif "publish_failed" in row:
                log.publish_failures += 1
            elif "fault" in row:
                log.faults.append(FaultAt(row["fault"], row["tx"], row["at"]))
        return log


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[max(0, min(98, round(q) - 1))]


@dataclass
class Verdict:
    tally: Tally
    latencies_ms: list[float]  # every committed event's first copy, faults included
    write_ms: list[float]
    throughput: float  # committed events per second of writer busy time
    per_fault: list[dict[str, Any]]
    publish_failures: int
    steady_ms: list[float] = field(default_factory=list)  # the events no fault disturbed (lab.recovery)
    recoveries: list[Recovery] = field(default_factory=list)
    # Events the broker stored before their COMMIT returned (publish-then-commit): their latency
    # is "before commit", not a fast 0 ms.
    before_commit: int = 0

    @property
    def recovery_max_ms(self) -> float | None:
        return max((r.recovery_ms for r in self.recoveries), default=None)

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.tally.as_dict(),
            "steady_p50_ms": percentile(self.steady_ms, 50),
            "steady_p99_ms": percentile(self.steady_ms, 99),
            "steady_events": len(self.steady_ms),
            "stored_before_commit": self.before_commit,
            "recovery_max_ms": self.recovery_max_ms,
            "latency_all_p50_ms": percentile(self.latencies_ms, 50),
            "latency_all_p99_ms": percentile(self.latencies_ms, 99),
            "write_p50_ms": percentile(self.write_ms, 50),
            "write_p99_ms": percentile(self.write_ms, 99),
            "throughput": self.throughput,
            "publish_failures": self.publish_failures,
            "per_fault": self.per_fault,
        }


def verify(
    committed: Mapping[str, tuple[str | None, int | None]],
    received: Sequence[Received],
    log: WriterLog,
    faults: Sequence[Scheduled],
) -> Verdict:
    deliveries = [Delivery(r.event_id, r.key, None) for r in received]
    total = tally(committed, deliveries)
    # Commit-to-stored latency of each committed event's first copy. Publish-then-commit stores the
    # event before its COMMIT returns: that shows as 0 (it was early, not fast).
    firsts: list[Timed] = []
    seen: set[str] = set()
    for r in received:
        if r.event_id in seen or r.event_id not in committed or r.event_id not in log.commit_at:
            continue
        seen.add(r.event_id)
        firsts.append(Timed(r.event_id, log.tx_of[r.event_id], log.commit_at[r.event_id], r.stored_at))
    latencies = [t.latency_ms for t in firsts]
    steady, recoveries = split(firsts, log.faults)
    busy = sum(log.busy)
    return Verdict(
        tally=total,
        latencies_ms=latencies,
        write_ms=[b * 1000 for b in log.busy],
        throughput=len(committed) / busy if busy > 0 else 0.0,
        per_fault=_with_recovery(_per_fault(committed, received, log, faults), recoveries),
        publish_failures=log.publish_failures,
        steady_ms=steady,
        recoveries=recoveries,
        before_commit=sum(1 for t in firsts if t.stored < t.committed),
    )


def _with_recovery(per_fault: list[dict[str, Any]], recoveries: Sequence[Recovery]) -> list[dict[str, Any]]:
    """Each fault window's tally with the recovery of that fault (None if the fault never fired)."""
    by_fault = {(r.kind, r.tx): r for r in recoveries}
    out = []
    for window in per_fault:
        found = by_fault.get((window["kind"], window["tx"]))
        out.append(
            {
                **window,
                "recovery_ms": None if found is None else found.recovery_ms,
                "resumed_ms": None if found is None else found.resumed_ms,
                "disturbed": None if found is None else found.disturbed,
            }
        )
    return out


def _per_fault(
    committed: Mapping[str, tuple[str | None, int | None]],
    received: Sequence[Received],
    log: WriterLog,
    faults: Sequence[Scheduled],
) -> list[dict[str, Any]]:
    """``tally`` over each fault's window of transactions."""
    bounds = sorted(faults, key=lambda f: f.tx)
    out = []
    for i, fault in enumerate(bounds):
        end = bounds[i + 1].tx if i + 1 < len(bounds) else 1 << 62
        in_window = {eid: kn for eid, kn in committed.items() if eid in log.tx_of and fault.tx <= log.tx_of[eid] < end}
        deliveries = [
            Delivery(r.event_id, r.key, None)
            for r in received
            if r.event_id in in_window or (r.event_id not in committed and r.tx is not None and fault.tx <= r.tx < end)
        ]
        t = tally(in_window, deliveries)
        out.append(
            {
                **fault.as_dict(),
                "lost": t.lost,
                "phantom": t.phantom,
                "duplicates": t.duplicates,
                "order_violations": t.order_violations,
            }
        )
    return out
