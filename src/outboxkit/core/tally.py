"""The verifier: what was committed against what the bus delivered.

Used by the demo, the fault tests and the lab. Ground truth comes from the business tables, not
from the outbox: ``committed`` are event ids whose business change committed, ``rolled_back``
those whose transaction rolled back, and each delivery carries ``(key, n)`` where ``n`` counts
the key's committed changes (1, 2, 3, ...), so commit order per key is known exactly.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass


@dataclass(frozen=True, slots=True)
class Delivery:
    event_id: str
    key: str | None
    n: int | None


@dataclass(frozen=True, slots=True)
class Tally:
    committed: int
    published: int
    received: int
    lost: int
    phantom: int
    duplicates: int
    order_violations: int

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.phantom == 0 and self.order_violations == 0

    def as_dict(self) -> dict[str, int | bool]:
        return {**asdict(self), "ok": self.ok}


def tally(
    committed: Mapping[str, tuple[str | None, int | None]],
    deliveries: Iterable[Delivery],
    *,
    published: int | None = None,
) -> Tally:
    """Count lost, phantom, duplicate and out-of-order deliveries.

    ``committed`` maps event id -> (key, n). A per-key order violation is a first delivery whose
    ``n`` is lower than a first delivery of the same key seen before it.
    """
    seen: Counter[str] = Counter()
    phantom_ids: set[str] = set()
    highest: dict[str, int] = {}
    violations = 0
    received = 0
    for d in deliveries:
        received += 1
        seen[d.event_id] += 1
        if d.event_id not in committed:
            phantom_ids.add(d.event_id)
            continue
        if seen[d.event_id] > 1:
            continue
        key, n = committed[d.event_id]
        if key is None or n is None:
            continue
        if n < highest.get(key, 0):
            violations += 1
        else:
            highest[key] = n
    distinct = sum(1 for i in seen if i in committed)
    duplicates = sum(count - 1 for count in seen.values())
    return Tally(
        committed=len(committed),
        published=published if published is not None else distinct,
        received=received,
        lost=len(committed) - distinct,
        phantom=len(phantom_ids),
        duplicates=duplicates,
        order_violations=violations,
    )
