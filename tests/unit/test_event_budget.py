"""The demo's event budget: writers sharing it commit exactly its total, rollbacks included
(``outboxkit demo -n 1000`` once committed 1,002: writers stopped only after the count was passed)."""

from __future__ import annotations

import random
import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from outboxkit.testing.workload import EventBudget


@settings(max_examples=50, deadline=None)
@given(
    total=st.integers(min_value=0, max_value=300),
    writers=st.integers(min_value=1, max_value=6),
    seed=st.integers(min_value=0, max_value=10_000),
)
def test_writers_commit_exactly_the_total(total: int, writers: int, seed: int) -> None:
    budget = EventBudget(total)
    committed: list[int] = []
    lock = threading.Lock()

    def writer(rng: random.Random) -> None:
        while True:
            count = budget.take(rng.randint(1, 3))
            if count == 0:
                return
            ok = rng.random() >= 0.2  # a fifth of the transactions roll back and hand their events back
            if ok:
                with lock:
                    committed.append(count)
            budget.settle(count, committed=ok)

    threads = [threading.Thread(target=writer, args=(random.Random(seed + i),)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert sum(committed) == total
