"""Retry timing: exponential backoff with full jitter, so many relays do not retry in lockstep."""

from __future__ import annotations

import random


def backoff_delay(attempt: int, *, base: float = 0.1, cap: float = 5.0, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry ``attempt`` (1-based): uniform in [c/2, c], c = min(cap, base*2^(n-1)).

    "Equal jitter": spreads retries of many relays apart while keeping a floor, so a retry storm
    cannot come back almost immediately."""
    if attempt < 1:
        return 0.0
    ceiling = min(cap, base * (2 ** min(attempt - 1, 30)))
    return (rng or random).uniform(ceiling / 2, ceiling)
