"""The lab's recommendation: for each common situation, the strategy this run says to choose.

Which strategies *fit* a situation is knowledge about the approaches (a trigger is the one that
turns other programs' writes into events; without a relay only the writer can publish). Which of
them to *choose*, and every number quoted for it, comes from the run: a candidate that lost,
invented or reordered an event is never recommended, the others are ranked by their steady
latency, and the line names the candidates the run rejected and why. Run it on another database
or with other faults and the lines follow the results, not a table written in advance.

Pure: takes the per-strategy dictionaries of ``report.json`` and the skipped strategies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

DISPLAY = {"postgresql": "PostgreSQL", "mariadb": "MariaDB", "sqlite": "SQLite"}


@dataclass(frozen=True)
class Case:
    situation: str  # "{db}" is replaced by the run's database
    candidates: tuple[str, ...]  # the strategies that fit, in the order to prefer on a tie
    caveat: str = ""  # what the pick costs in this situation, said once


CASES = (
    Case(
        "you control the code and run {db}",
        ("outbox-relay-notify", "outbox-inline+relay", "wal", "wal-message", "binlog", "outbox-relay-poll"),
    ),
    Case(
        "other programs write the tables",
        ("trigger",),
        "events are shaped like the table's rows",
    ),
    Case(
        "you cannot run a relay",
        ("outbox-inline", "local-log", "dual-write", "publish-then-commit"),
        "only if every crashed instance is restarted: its unsent rows wait for it",
    ),
    Case(
        "events are the state",
        ("event-sourcing",),
        "read models are projections you rebuild from the events",
    ),
)
# Strategies a newcomer reaches for first; the "code" case says what they did in this run.
NAIVE = ("dual-write", "publish-then-commit", "local-log")


def safe(run: dict[str, Any]) -> bool:
    """Nothing lost, nothing invented, no key out of order. Duplicates are allowed: consumers
    deduplicate by event id (the inbox), and JetStream drops most re-sends anyway."""
    return not (run["lost"] or run["phantom"] or run["order_violations"])


def duration(ms: float | None) -> str:
    """A latency a newcomer reads at a glance: "1.6 ms", "5.3 s"."""
    if ms is None:
        return "-"
    if ms >= 1000:
        return f"{ms / 1000:.1f} s"
    return f"{ms:.0f} ms" if ms >= 100 else f"{ms:.1f} ms"


def flaws(run: dict[str, Any]) -> str:
    parts = []
    if run["lost"]:
        parts.append(f"lost {run['lost']}")
    if run["phantom"]:
        parts.append(f"invented {run['phantom']}")
    if run["order_violations"]:
        parts.append(f"{run['order_violations']} out of order")
    return ", ".join(parts) or "held"


def evidence(run: dict[str, Any]) -> str:
    """The numbers behind a pick, the same ones the table shows."""
    faults = len(run["per_fault"])
    early = run.get("stored_before_commit") and not run["steady_p50_ms"]
    steady = "stored before commit" if early else f"steady p50 {duration(run['steady_p50_ms'])}"
    return (
        f"0 lost, 0 invented, 0 out of order of {run['committed']} under {faults} faults; {steady}, "
        f"worst wait after a fault {duration(run['recovery_max_ms'])}, request p50 {duration(run['write_p50_ms'])}"
    )


def recommend(runs: Sequence[dict[str, Any]], skipped: Sequence[tuple[str, str]], db: str) -> list[str]:
    """One line per situation: the pick and its numbers, the candidates rejected and why."""
    by_name = {r["strategy"]: r for r in runs}
    why_skipped = dict(skipped)
    lines = []
    for case in CASES:
        label = case.situation.format(db=DISPLAY.get(db, db))
        ran = [by_name[n] for n in case.candidates if n in by_name]
        held = sorted(
            (r for r in ran if safe(r)),
            key=lambda r: (_rank(r["steady_p50_ms"]), _rank(r["recovery_max_ms"])),
        )
        if held:
            pick = held[0]
            line = f"{label}: {pick['strategy']} ({evidence(pick)})"
            if case.caveat:
                line += f"; {case.caveat}"
            others = [r for r in held[1:]]
            if others:
                line += "; also held: " + ", ".join(
                    f"{r['strategy']} (steady p50 {duration(r['steady_p50_ms'])})" for r in others
                )
        elif ran:
            line = (
                f"{label}: nothing this run measured held ("
                + "; ".join(f"{r['strategy']} {flaws(r)}" for r in ran)
                + ")"
            )
        else:
            not_run = [f"{n} skipped: {why_skipped[n]}" for n in case.candidates if n in why_skipped]
            line = f"{label}: not measured in this run" + (f" ({'; '.join(not_run)})" if not_run else "")
        rejected = [r for r in ran if not safe(r)]
        if case is CASES[0]:
            rejected += [by_name[n] for n in NAIVE if n in by_name and not safe(by_name[n])]
        if held and rejected:
            line += "; not " + ", ".join(f"{r['strategy']} ({flaws(r)})" for r in rejected)
        lines.append(line + ".")
    return lines


def _rank(value: float | None) -> float:
    return float("inf") if value is None else value
