"""Faults and their schedule. Pure: a seed and a plan of transactions give the same faults every time.

Most faults are tied to a transaction index and a *point* inside the write path, not to a clock, so
a run repeats exactly: the writer reaches transaction ``k``, hits the point, and either SIGKILLs
itself there (an exact crash point) or asks the runner to act (restart the broker, kill the
database connections, SIGKILL the relay) and waits until it has.

Points, in the order a write path may pass them (a strategy passes the ones it has):

* ``mid-tx``         business rows written, events not yet recorded or sent
* ``before-publish`` right before the writer sends the event to the bus
* ``before-commit``  right before COMMIT (for publish-then-commit: after the publish)
* ``after-commit``   COMMIT returned, nothing sent yet (for dual-write: before the publish)
* ``before-mark``    the broker confirmed, the writer has not recorded it yet (outbox row, local log)

A fault whose point the strategy never passes in that transaction fires at the end of it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

POINTS = ("mid-tx", "before-publish", "before-commit", "after-commit", "before-mark")


@dataclass(frozen=True, slots=True)
class FaultKind:
    name: str
    point: str
    crash: bool  # the writer SIGKILLs itself at the point
    action: str | None  # what the runner does when asked (or after the crash)
    meaning: str


FAULTS: dict[str, FaultKind] = {
    f.name: f
    for f in (
        FaultKind("kill-after-commit", "after-commit", True, None, "writer SIGKILLed after commit, before publish"),
        FaultKind("kill-after-publish", "before-commit", True, None, "writer SIGKILLed after publish, before commit"),
        FaultKind("kill-before-mark", "before-mark", True, None, "writer SIGKILLed between publish and mark"),
        FaultKind("kill-random", "", True, None, "writer SIGKILLed at a seeded random point"),
        FaultKind("kill-relay", "after-commit", False, "kill-relay", "relay SIGKILLed, restarted 0.3 s later"),
        FaultKind("broker-restart", "before-publish", False, "broker-restart", "broker down for 1 s, then back"),
        FaultKind("db-kill", "before-commit", False, "db-kill", "database connections terminated before COMMIT"),
        FaultKind("instance-lost", "after-commit", True, "wipe-instance", "writer SIGKILLed, its local files deleted"),
    )
}
DEFAULT_FAULTS = tuple(FAULTS)


@dataclass(frozen=True, slots=True)
class Scheduled:
    """One fault at transaction ``tx``, firing at ``point``."""

    tx: int
    kind: str
    point: str

    @property
    def crash(self) -> bool:
        return FAULTS[self.kind].crash

    @property
    def action(self) -> str | None:
        return FAULTS[self.kind].action

    def as_dict(self) -> dict[str, object]:
        return {"tx": self.tx, "kind": self.kind, "point": self.point}


def schedule(kinds: list[str], transactions: int, seed: int) -> list[Scheduled]:
    """Spread ``kinds`` over the run, one each, at seeded transactions between 25 % and 90 %.

    The first quarter runs without faults: it is where the steady-state latency is measured.
    Faults never share a transaction, so each anomaly can be traced to the one fault that caused it.
    """
    unknown = [k for k in kinds if k not in FAULTS]
    if unknown:
        raise ValueError(f"unknown fault(s) {', '.join(unknown)}; choose from {', '.join(FAULTS)}")
    rng = random.Random(f"faults:{seed}")
    low, high = max(1, transactions // 4), max(2, transactions - transactions // 10)
    slots = list(range(low, high))
    if len(slots) < len(kinds):
        raise ValueError(f"{transactions} transactions are too few for {len(kinds)} faults")
    chosen = sorted(rng.sample(slots, len(kinds)))
    order = list(kinds)
    rng.shuffle(order)
    out = []
    for tx, kind in zip(chosen, order, strict=True):
        point = FAULTS[kind].point or rng.choice(POINTS)
        out.append(Scheduled(tx, kind, point))
    return out


@dataclass(frozen=True, slots=True)
class Txn:
    """What transaction ``index`` does: derived from the seed alone, so a restarted writer agrees."""

    index: int
    key: str
    events: int
    rollback: bool  # the business logic rolls back (a failed commit), after the strategy's publish if any


def plan(events: int, seed: int, *, keys: int = 20, max_events: int = 3, rollback_ratio: float = 0.05) -> list[Txn]:
    """Transactions until ``events`` events would commit."""
    out: list[Txn] = []
    committed = 0
    while committed < events:
        rng = random.Random(f"txn:{seed}:{len(out)}")
        txn = Txn(
            len(out), f"customer-{rng.randrange(keys):03d}", rng.randint(1, max_events), rng.random() < rollback_ratio
        )
        out.append(txn)
        if not txn.rollback:
            committed += txn.events
    return out
