"""The recommendation is derived from the run: the pick is a candidate that held, its numbers are
the run's, and other results give another pick. No database: the runs are report.json dictionaries."""

from __future__ import annotations

import copy
from typing import Any

from outboxkit.lab.advice import CASES, recommend
from outboxkit.lab.report import cell, render_html
from outboxkit.lab.strategies import STRATEGIES
from tests.lab.test_report import fake_run


def runs_of(**overrides: dict[str, Any]) -> list[dict[str, Any]]:
    """One clean fake run per strategy, with the given fields changed."""
    out = []
    for name in STRATEGIES:
        run = copy.deepcopy(fake_run(name))
        run.update(overrides.get(name, {}))
        out.append(run)
    return out


def line_for(lines: list[str], situation: str) -> str:
    return next(line for line in lines if line.startswith(situation))


def test_every_case_names_strategies_the_lab_has() -> None:
    for case in CASES:
        assert set(case.candidates) <= set(STRATEGIES), case.situation


def test_the_pick_held_and_is_quoted_with_the_runs_own_numbers() -> None:
    runs = runs_of(
        **{
            "outbox-relay-notify": {"steady_p50_ms": 1.7, "recovery_max_ms": 4321.0, "committed": 397},
            "outbox-inline+relay": {"steady_p50_ms": 0.9, "lost": 2},  # fastest, but it lost events
            "wal": {"steady_p50_ms": 3.0},
            "wal-message": {"steady_p50_ms": 3.0},
            "binlog": {"steady_p50_ms": 3.0},
            "outbox-relay-poll": {"steady_p50_ms": 520.0},
            "dual-write": {"lost": 4},
            "publish-then-commit": {"phantom": 14},
        }
    )
    line = line_for(recommend(runs, [], "postgresql"), "you control the code and run PostgreSQL: ")
    assert line.startswith("you control the code and run PostgreSQL: outbox-relay-notify (0 lost")
    assert "of 397 under 2 faults" in line and "steady p50 1.7 ms" in line and "4.3 s" in line
    assert "outbox-inline+relay (lost 2)" in line  # rejected, with the reason
    assert "dual-write (lost 4)" in line and "publish-then-commit (invented 14)" in line


def test_other_results_give_another_pick() -> None:
    first = line_for(
        recommend(runs_of(**{"outbox-inline": {"steady_p50_ms": 0.3}}), [], "sqlite"), "you cannot run a relay"
    )
    assert first.startswith("you cannot run a relay: outbox-inline (")
    losing = runs_of(**{"outbox-inline": {"lost": 1}, "local-log": {"steady_p50_ms": 0.5}})
    second = line_for(recommend(losing, [], "sqlite"), "you cannot run a relay")
    assert second.startswith("you cannot run a relay: local-log (") and "outbox-inline (lost 1)" in second


def test_no_pick_when_nothing_that_fits_held_and_a_skip_is_said() -> None:
    runs = [r for r in runs_of(trigger={"lost": 3}) if r["strategy"] != "event-sourcing"]
    why = "needs postgresql or sqlite; this run's database is mariadb"
    lines = recommend(runs, [("event-sourcing", why)], "mariadb")
    assert line_for(lines, "other programs write the tables") == (
        "other programs write the tables: nothing this run measured held (trigger lost 3)."
    )
    assert "event-sourcing skipped: needs postgresql or sqlite" in line_for(lines, "events are the state")


def test_publish_then_commit_latency_reads_before_commit() -> None:
    run = fake_run("publish-then-commit", steady_p50_ms=0.0, steady_p99_ms=0.0, stored_before_commit=380)
    assert cell(run, "steady_p50_ms") == "before commit"
    assert cell(run, "write_p50_ms") == "3.0 ms"
    assert cell(fake_run("x", steady_p50_ms=0.0), "steady_p50_ms") == "0.0 ms"  # not early: a real 0


def test_html_opens_with_the_recommendation_and_lists_skips() -> None:
    runs = runs_of()
    data = {
        "options": {"events": 100, "seed": 1, "strategies": list(STRATEGIES), "faults": [], "db": "d"},
        "elapsed_s": 1.0,
        "strategies": runs,
        "latencies_ms": {},
        "recommendation": recommend(runs, [], "postgresql"),
        "skipped": [{"strategy": "binlog", "reason": "needs mariadb; this run's database is postgresql"}],
    }
    page = render_html(data)
    assert page.index("id='recommendation'") < page.index("id='results'")
    assert "you control the code and run PostgreSQL: " in page
    assert "binlog: skipped, needs mariadb; this run&#x27;s database is postgresql" in page
