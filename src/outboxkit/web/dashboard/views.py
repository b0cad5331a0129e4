"""What the pages show, gathered through the operations layer (``outboxkit.ops``), never SQL of
its own: the dashboard reads and acts exactly as ``outboxkit status | dead-letters | replay`` do.

:func:`snapshot` does the I/O (sync, one short autocommit connection; the server runs it in a
thread); :func:`charts` and :func:`windows` are pure.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from outboxkit.ops import queries as q
from outboxkit.stores.base import TableRef
from outboxkit.web.dashboard.charts import Series, bar_chart, line_chart

#: The time ranges offered: name -> (window seconds, bucket seconds); about 60 buckets each.
WINDOWS: dict[str, tuple[int, int]] = {"15m": (900, 15), "1h": (3600, 60), "6h": (21600, 360), "24h": (86400, 1440)}
DEFAULT_WINDOW = "1h"
DEAD_SHOWN = 100  # dead letters listed on the page; the count says how many there are in all


@dataclass(frozen=True)
class Snapshot:
    status: q.Status
    activity: list[q.ActivityPoint]
    dead_total: int
    dead: list[q.DeadLetter]
    window: str
    taken_at: float


def snapshot(db_url: str, ref: TableRef, window: str) -> Snapshot:
    span, step = WINDOWS[window]
    with q.open_db(db_url, ref) as db:
        status = q.status(db)
        points = q.activity(db, timedelta(seconds=span), step)
        total, dead = q.list_dead(db, q.Selector(everything=True), DEAD_SHOWN)
    return Snapshot(status, points, total, dead, window, time.time())


def bucket_starts(now: float, span: int, step: int) -> list[int]:
    """The buckets of the window ending now, oldest first (aligned like the SQL's ``floor``)."""
    last = int(now // step) * step
    count = span // step
    return [last - step * (count - 1 - i) for i in range(count)]


def charts(snap: Snapshot) -> dict[str, str]:
    span, step = WINDOWS[snap.window]
    starts = bucket_starts(snap.taken_at, span, step)
    by_start = {p.start: p for p in snap.activity}
    rate = [by_start[s].delivered / step if s in by_start else 0.0 for s in starts]
    mean = [by_start[s].lag_mean_s if s in by_start else None for s in starts]
    worst = [by_start[s].lag_max_s if s in by_start else None for s in starts]
    bucket = f"{step // 60} min" if step >= 60 else f"{step} s"
    return {
        "throughput": bar_chart(
            "chart-throughput", f"Delivered events per second ({bucket} buckets)", starts, rate, "/s"
        ),
        "lag": line_chart(
            "chart-lag",
            f"Created to delivered lag ({bucket} buckets)",
            starts,
            [Series("mean", "series-mean", mean), Series("max", "series-max", worst)],
            "s",
            log=True,  # lag spans decades (ms when keeping up, minutes when behind)
        ),
    }


def age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def when(iso: str) -> str:
    """``2026-12-07T02:29:46.292000+00:00`` -> ``2026-12-07 02:29:46 UTC`` (the ops layer gives UTC)."""
    return iso[:19].replace("T", " ") + " UTC"


def totals(status: q.Status) -> dict[str, Any]:
    doc = status.to_json()
    return {key: doc[key] for key in ("pending", "oldest_pending_age_s", "dead", "dead_keys", "held_pending")}


def buckets_text(buckets: list[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``0-2, 5, 7-8``: a relay's leases on one line."""
    ranges: list[list[int]] = []
    for b in sorted(set(buckets)):
        if ranges and ranges[-1][1] == b - 1:
            ranges[-1][1] = b
        else:
            ranges.append([b, b])
    return ", ".join(str(a) if a == z else f"{a}-{z}" for a, z in ranges)
